"""ConvVAE in minicae against the same architecture in PyTorch, on shapes and digits.

    .venv/bin/python benchmarks/vae_vs_torch.py --epochs 20 --seeds 0 1 2

For each data set (the built-in shapes at 28x28, textured and flat, and scikit-learn's bundled
8x8 handwritten digits upsampled bilinearly to 28x28, ``pip install
"minicae[realdata]"``) and each seed, both sides train the ConvVAE (stride-2
convs 16, 32; latent 16; Bernoulli likelihood; Adam lr 1e-3; batch 64) on the
same training images for the same epochs, each with its own initialisation,
shuffling and noise from that seed. Both are scored on the same held-out
images: the negative ELBO (one sample, nats per image) and the IWAE bound
with K=64, beside the standard-normal-prior + mean-image-decoder baseline.
Prints a table and writes benchmarks/results/vae_vs_torch.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from minicae import data
from minicae.data import train_val_split
from minicae.train import fit
from minicae.vae import ConvVAE, iwae_log_likelihood, prior_baseline

CHANNELS, LATENT, LR, BATCH = (16, 32), 16, 1e-3, 64


def load_digits_28():
    """sklearn's 1797 digits (8x8, values 0..16) upsampled bilinearly to 28x28, in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images / 16.0
    src = np.linspace(0, 7, 28)                     # sample positions in the 8x8 grid
    i0 = np.minimum(np.floor(src).astype(int), 6)
    t = src - i0
    rows = x[:, i0, :] * (1 - t)[None, :, None] + x[:, i0 + 1, :] * t[None, :, None]
    out = rows[:, :, i0] * (1 - t)[None, None, :] + rows[:, :, i0 + 1] * t[None, None, :]
    return out[:, None].astype(np.float32), bunch.target


def load_shapes_28(n=1500, texture=True):
    images, _ = data.make_shapes(n, size=28, texture=texture, seed=123)
    return images, None


def torch_run(x_train, x_val, epochs, seed):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c1, c2 = CHANNELS
    enc = nn.Sequential(nn.Conv2d(1, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(c2 * 49, 2 * LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, c2 * 49), nn.ReLU(), nn.Unflatten(1, (c2, 7, 7)),
                        nn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(c1, 1, 3, 2, 1, output_padding=1))
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    xt = torch.from_numpy(x_train)
    gen = torch.Generator().manual_seed(seed)

    def terms(xb, k=1, g=None):
        mu, logvar = enc(xb).chunk(2, dim=1)
        mu_k, lv_k = mu.repeat(k, 1), logvar.repeat(k, 1)
        eps = torch.randn(mu_k.shape, generator=g)
        z = mu_k + torch.exp(0.5 * lv_k) * eps
        logits = dec(z)
        nll = nn.functional.binary_cross_entropy_with_logits(
            logits, xb.repeat(k, 1, 1, 1), reduction="none").flatten(1).sum(1)
        return mu, logvar, z, eps, nll

    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(BATCH):
            xb = xt[idx]
            mu, logvar, _, _, nll = terms(xb, g=gen)
            kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)
            loss = nll.mean() + kl.mean(0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        xv = torch.from_numpy(x_val)
        g = torch.Generator().manual_seed(0)
        mu, logvar, _, _, nll = terms(xv, g=g)
        nelbo = float((nll + (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)).sum(1)).mean())
        k, n = 64, len(xv)
        mu, logvar, z, eps, nll = terms(xv, k=k, g=g)
        log_pz = -0.5 * (z ** 2 + math.log(2 * math.pi)).sum(1)
        log_q = -0.5 * (eps ** 2 + logvar.repeat(k, 1) + math.log(2 * math.pi)).sum(1)
        log_w = (-nll + log_pz - log_q).reshape(k, n)
        iwae = float((torch.logsumexp(log_w, 0) - math.log(k)).mean())
    return nelbo, iwae


def minicae_run(x_train, x_val, epochs, seed):
    model = ConvVAE(channels=CHANNELS, latent=LATENT, input_size=28, seed=seed)
    history = fit(model, x_train, x_val=x_val, epochs=epochs, batch_size=BATCH, lr=LR,
                  seed=seed, progress=False)
    last = history.epochs[-1]
    return last["val_loss"], iwae_log_likelihood(model, x_val, k=64), model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", nargs="+", default=["shapes", "shapes-flat", "digits"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "vae_vs_torch.json"))
    args = ap.parse_args()
    loaders = {"shapes": load_shapes_28, "digits": load_digits_28,
               "shapes-flat": lambda: load_shapes_28(texture=False)}
    results = {"epochs": args.epochs, "seeds": args.seeds, "rows": {}}
    for name in args.data:
        images, _ = loaders[name]()
        train_idx, val_idx = train_val_split(len(images), 0.2, seed=0)
        x_train, x_val = images[train_idx], images[val_idx]
        row = {"minicae": [], "torch": []}
        for seed in args.seeds:
            t0 = time.perf_counter()
            nelbo, iwae, model = minicae_run(x_train, x_val, args.epochs, seed)
            t1 = time.perf_counter()
            row["minicae"].append({"seed": seed, "nelbo": nelbo, "iwae64": iwae,
                                   "seconds": t1 - t0})
            nelbo_t, iwae_t = torch_run(x_train, x_val, args.epochs, seed)
            row["torch"].append({"seed": seed, "nelbo": nelbo_t, "iwae64": iwae_t,
                                 "seconds": time.perf_counter() - t1})
            print(f"{name} seed {seed}: minicae -ELBO {nelbo:.2f} IWAE64 {iwae:.2f} | "
                  f"torch -ELBO {nelbo_t:.2f} IWAE64 {iwae_t:.2f}", flush=True)
        row["baseline_nelbo"] = prior_baseline(model, x_train, x_val)
        for side in ("minicae", "torch"):
            row[f"{side}_mean_nelbo"] = float(np.mean([r["nelbo"] for r in row[side]]))
            row[f"{side}_mean_iwae64"] = float(np.mean([r["iwae64"] for r in row[side]]))
        row["relative_gap"] = (row["minicae_mean_nelbo"] / row["torch_mean_nelbo"]) - 1
        results["rows"][name] = row
    print(f"\n{args.epochs} epochs, seeds {args.seeds}; held-out nats per image")
    print(f"{'data':<8}{'baseline':>10}{'minicae -ELBO':>15}{'torch -ELBO':>13}{'gap':>8}"
          f"{'minicae IWAE64':>16}{'torch IWAE64':>14}")
    for name, row in results["rows"].items():
        print(f"{name:<8}{row['baseline_nelbo']:>10.2f}{row['minicae_mean_nelbo']:>15.2f}"
              f"{row['torch_mean_nelbo']:>13.2f}{100 * row['relative_gap']:>7.2f}%"
              f"{row['minicae_mean_iwae64']:>16.2f}{row['torch_mean_iwae64']:>14.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
