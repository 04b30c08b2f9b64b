"""Sparse codes three ways: none, KL sparsity, and a k-sparse (top-k) layer.

The sparse autoencoder for segmentation (docs/maths.md) asks for a sparse
code, Omega(z) = ||z||_0, which
has no gradient (docs/maths.md, "Penalties"). minicae realises it as

- KL sparsity on a sigmoid code: beta * sum_j KL(rho || rho_hat_j), where
  rho_hat_j is unit j's mean activation over the batch. It drives every
  rho_hat_j to the target rho, but a sigmoid is never exactly 0, so
  ||z||_0 stays at the code size: the code becomes *small*, not zero;
- a TopK layer: keep the k largest units of each sample, zero the rest, so
  ||z||_0 <= k exactly, with the gradient flowing through the kept units.

The script trains the same dense autoencoder on generated shapes with each
choice and reports, on held-out images, the reconstruction MSE, the mean
||z||_0, the mean of rho_hat_j and its spread over units, and how many
units are above 0.1 on average. Sizes: default 1,200 images of 16x16 for
25 epochs, ``--full`` 5,000 images of 28x28 for 60 epochs, ``--tiny`` a smoke
test.
"""

from __future__ import annotations

import sys

import numpy as np

from minicae import data, plots, to_device, to_numpy
from minicae.models import DenseAutoencoder
from minicae.train import fit

from _common import out_path, parser, pick, setup


def code_stats(model, x):
    """Mean ||z||_0, rho_hat per unit and mean count of units above 0.1."""
    model.eval()
    model(to_device(x))
    z = to_numpy(model.code_).reshape(len(x), -1)
    return (float((z != 0).sum(axis=1).mean()), z.mean(axis=0),
            float((z > 0.1).sum(axis=1).mean()))


def save_activity(rho_hats, rho, path):
    """Bar chart of each unit's mean activation rho_hat_j, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rho_hats), figsize=(4 * len(rho_hats), 2.8),
                             squeeze=False)
    for ax, (name, values) in zip(axes[0], rho_hats.items()):
        ax.bar(np.arange(len(values)), values, color="tab:blue")
        ax.axhline(rho, color="tab:red", ls="--", lw=1, label=f"rho = {rho}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("code unit j")
        ax.set_ylim(0, max(1e-3, float(np.max(values)) * 1.1))
    axes[0][0].set_ylabel("mean activation rho_hat_j")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv=None):
    p = parser(__doc__.splitlines()[0], out="runs/examples/sparse")
    p.add_argument("--rho", type=float, default=0.05, help="KL target activation")
    p.add_argument("--beta", type=float, default=3.0, help="KL weight")
    p.add_argument("--k", type=int, default=4, help="top-k: units kept per sample")
    args = p.parse_args(argv)
    backend = setup(args)
    n = pick(args, tiny=64, quick=1200, full=5000)
    size = pick(args, tiny=16, quick=16, full=28)
    code = pick(args, tiny=16, quick=32, full=64)
    epochs = args.epochs or pick(args, tiny=1, quick=25, full=60)
    images, _ = data.make_shapes(n, size=size, texture=False, seed=args.seed)
    held_out, train = images[: n // 8], images[n // 8:]
    common = dict(hidden=[code], decoder_hidden=[], input_shape=[1, size, size],
                  seed=args.seed)
    models = {
        "sigmoid code": DenseAutoencoder(size * size, code_activation="sigmoid", **common),
        "KL sparsity": DenseAutoencoder(
            size * size, code_activation="sigmoid",
            penalty={"kind": "kl", "rho": args.rho, "weight": args.beta}, **common),
        f"top-{args.k}": DenseAutoencoder(size * size, code_activation="relu", topk=args.k,
                                          **common),
    }
    print(f"backend {backend}; {len(train)} training, {len(held_out)} held-out images of "
          f"{size}x{size}; code of {code} units")
    print(f"{'model':<14} {'val MSE':>8} {'||z||_0':>8} {'mean rho_hat':>13} "
          f"{'std rho_hat':>12} {'units>0.1':>10}")
    rho_hats = {}
    for name, model in models.items():
        fit(model, train, lr=1e-2, epochs=epochs, batch_size=32, seed=args.seed,
            val_fraction=0, progress=False)
        model.eval()
        mse = float(((to_numpy(model(to_device(held_out))) - held_out) ** 2).mean())
        l0, rho_hat, active = code_stats(model, held_out)
        rho_hats[name] = rho_hat
        print(f"{name:<14} {mse:8.5f} {l0:8.1f} {rho_hat.mean():13.4f} {rho_hat.std():12.4f} "
              f"{active:10.1f}")
        slug = name.replace(" ", "_")
        print(f"  reconstructions: "
              f"{plots.save_reconstructions(model, held_out, out_path(args, slug + '.png'))}")
    print(f"code activity: "
          f"{save_activity(rho_hats, args.rho, out_path(args, 'code_activity.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
