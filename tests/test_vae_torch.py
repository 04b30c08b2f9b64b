"""The same DenseVAE and ConvVAE trained in minicae and in PyTorch agree step by step.

Both start from identical float64 weights, see the same batches and the same
fixed noise eps, and take 30 Adam steps; the negative-ELBO curves must agree
to 1e-9 relative. PyTorch is an optional peer: the test skips without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from minicae import optim, to_device, to_numpy
from minicae.vae import ConvVAE, DenseVAE

torch = pytest.importorskip("torch")
tnn = torch.nn

STEPS, N = 30, 8


def _torch_twin(model):
    """The PyTorch modules of ``model``'s architecture, in the same parameter order."""
    cfg = model.get_config()
    latent = cfg["latent"]
    if isinstance(model, DenseVAE):
        enc = tnn.Sequential(tnn.Flatten(), tnn.Linear(cfg["in_features"], 64), tnn.ReLU(),
                             tnn.Linear(64, 2 * latent))
        dec = tnn.Sequential(tnn.Linear(latent, 64), tnn.ReLU(),
                             tnn.Linear(64, cfg["in_features"]),
                             tnn.Unflatten(1, tuple(cfg["input_shape"])))
    else:
        c1, c2 = cfg["channels"]
        enc = tnn.Sequential(tnn.Conv2d(1, c1, 3, 2, 1), tnn.ReLU(),
                             tnn.Conv2d(c1, c2, 3, 2, 1), tnn.ReLU(), tnn.Flatten(),
                             tnn.Linear(c2 * 7 * 7, 2 * latent))
        dec = tnn.Sequential(tnn.Linear(latent, c2 * 7 * 7), tnn.ReLU(),
                             tnn.Unflatten(1, (c2, 7, 7)),
                             tnn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=1), tnn.ReLU(),
                             tnn.ConvTranspose2d(c1, 1, 3, 2, 1, output_padding=1))
    twin = tnn.ModuleDict({"encoder": enc, "decoder": dec}).double()
    mine = list(model.parameters())
    theirs = list(enc.parameters()) + list(dec.parameters())
    assert [p.shape for p in mine] == [tuple(p.shape) for p in theirs]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            b.copy_(torch.from_numpy(to_numpy(a.data).copy()))
    return twin


def _torch_loss(twin, x, eps, beta, free_bits):
    h = twin["encoder"](x)
    mu, logvar = h.chunk(2, dim=1)
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = twin["decoder"](z)
    nll = tnn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    nll = nll.flatten(1).sum(1)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)
    return nll.mean() + beta * torch.clamp(kl.mean(0), min=free_bits).sum()


@pytest.mark.parametrize("make", [
    lambda: DenseVAE(input_shape=(1, 28, 28), latent=8, beta=0.7, free_bits=0.05,
                     dtype="float64"),
    lambda: ConvVAE(channels=(4, 8), latent=6, beta=1.5, dtype="float64"),
], ids=["dense", "conv"])
def test_vae_trains_like_torch(backend, make):
    model = make()
    twin = _torch_twin(model)
    rng = np.random.default_rng(0)
    data = (rng.random((4 * N, 1, 28, 28)) < 0.3).astype(np.float64)
    mine_opt = optim.Adam(model, lr=1e-3)
    their_opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    beta, free_bits = model.beta, model.free_bits
    curves = ([], [])
    for t in range(STEPS):
        xb = data[(t % 4) * N:(t % 4 + 1) * N]
        eps = np.random.default_rng([1, t]).standard_normal((N, model.latent))
        model.zero_grad()
        loss, _ = model.objective(to_device(xb), eps=to_device(eps))
        mine_opt.step()
        curves[0].append(loss)
        their_opt.zero_grad()
        value = _torch_loss(twin, torch.from_numpy(xb), torch.from_numpy(eps), beta,
                            free_bits)
        value.backward()
        their_opt.step()
        curves[1].append(value.item())
    assert curves[0][-1] < curves[0][0]          # it learned something
    assert_allclose(curves[0], curves[1], rtol=1e-9, atol=0,
                    err_msg=f"{backend.name} {type(model).__name__}")
