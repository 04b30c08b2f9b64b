"""The workloads of ``minicae bench``: the same work on minicae and on PyTorch.

Each builder returns a :class:`Work`: a ``step()`` closure doing one unit of
work (a forward+backward, a training step, a GEMM), a ``forward()`` closure
where a forward alone is meaningful, the multiply-accumulate count of one step
and the samples it processes. FLOPs are ``2 * MACs``; a convolution's
forward+backward counts three products of the forward's size (y, dx, dW), on
both sides, so the GFLOP/s columns compare like with like.

The minicae side is built from :mod:`minicae.nn` layers and the functional
floor directly; the PyTorch side from ``torch.nn`` with the same shapes,
initialisation scheme, loss and optimiser (Adam, lr 1e-3). Two PyTorch sides:
``torch`` on the CPU and ``torch-cuda`` on the GPU (the peer of the ``cupy``
backend), whose every step ends with ``torch.cuda.synchronize()``, as the CuPy
side's ends with the device's synchronise.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = ["Work", "CONV_CASES", "TRAIN_CASES", "VAE_CASES", "TORCH_SIDES", "build",
           "cae_strided", "conv_macs"]

# the PyTorch sides and the device each runs on
TORCH_SIDES = {"torch": "cpu", "torch-cuda": "cuda"}


class Work(NamedTuple):
    step: Callable[[], object]
    forward: Callable[[], object] | None
    macs: float              # multiply-accumulates of one step()
    forward_macs: float
    samples: int


class ConvSpec(NamedTuple):
    n: int
    c_in: int
    c_out: int
    hw: int
    k: int
    stride: int
    padding: int
    output_padding: int = 0
    transposed: bool = False


# The rows of issue 5's table (batch, channels, image, kernel, stride, padding).
CONV_CASES = {
    "conv_1_16_28_s2": ConvSpec(128, 1, 16, 28, 3, 2, 1),
    "conv_16_32_14_s2": ConvSpec(128, 16, 32, 14, 3, 2, 1),
    "conv_16_16_28_s1": ConvSpec(64, 16, 16, 28, 3, 1, 1),
    "conv_64_64_32_s1": ConvSpec(32, 64, 64, 32, 3, 1, 1),
    "convT_32_16_7_s2": ConvSpec(128, 32, 16, 7, 3, 2, 1, 1, True),
}
TRAIN_CASES = {"cae_strided": (128, 28), "dense_ae": (256, 28), "cae_full": (128, 28)}
# a ConvVAE training step (batch, image); a top-k code's first decoder layer,
# forward and backward, dense and from the k active units: (batch, d, k, out), k/d = 1/8
VAE_CASES = {"vae_conv": (128, 28), "topk_decode_dense": (128, 1024, 128, 512),
             "topk_decode_gathered": (128, 1024, 128, 512)}


def conv_macs(spec: ConvSpec):
    """MACs of the forward: the convolution's (C_out·oh·ow)·(C_in·k²) per image."""
    small = spec.hw if spec.transposed else (spec.hw + 2 * spec.padding - spec.k) \
        // spec.stride + 1
    c_small, c_big = (spec.c_in, spec.c_out) if spec.transposed else (spec.c_out,
                                                                       spec.c_in)
    return float(spec.n * c_small * small * small * c_big * spec.k * spec.k)


def _sync_noop():
    return None


def _minicae_conv(spec: ConvSpec, rng, sync):
    from .. import functional as F

    s, p, k = spec.stride, spec.padding, spec.k
    if spec.transposed:
        w_shape = (spec.c_in, spec.c_out, k, k)
        out_hw = (spec.hw - 1) * s - 2 * p + k + spec.output_padding
        op, op_backward = F.conv_transpose2d, F.conv_transpose2d_backward
        kw = dict(stride=s, padding=p, output_padding=spec.output_padding)
    else:
        w_shape = (spec.c_out, spec.c_in, k, k)
        out_hw = (spec.hw + 2 * p - k) // s + 1
        op, op_backward = F.conv2d, F.conv2d_backward
        kw = dict(stride=s, padding=p)
    x = F.asarray(rng.standard_normal((spec.n, spec.c_in, spec.hw, spec.hw)), np.float32)
    w = F.asarray(rng.standard_normal(w_shape) * 0.1, np.float32)
    b = F.asarray(rng.standard_normal(spec.c_out), np.float32)
    dy = F.asarray(rng.standard_normal((spec.n, spec.c_out, out_hw, out_hw)), np.float32)

    def forward():
        y = op(x, w, b, **kw)
        sync()
        return y

    def step():
        y = op(x, w, b, **kw)
        grads = op_backward(dy, x, w, **kw)
        sync()
        return y, grads
    macs = conv_macs(spec)
    return Work(step, forward, 3 * macs, macs, spec.n)


def _torch_sync(torch, device):
    """A closure ending a torch step: the GPU's queue drained, nothing on the CPU."""
    return torch.cuda.synchronize if device == "cuda" else _sync_noop


def _torch_conv(spec: ConvSpec, rng, device="cpu"):
    import torch

    s, p, k = spec.stride, spec.padding, spec.k
    tf = torch.nn.functional
    sync = _torch_sync(torch, device)
    w_shape = (spec.c_in, spec.c_out, k, k) if spec.transposed else (spec.c_out,
                                                                       spec.c_in, k, k)

    def tensor(a, grad=True):
        return torch.tensor(a, dtype=torch.float32, device=device, requires_grad=grad)

    x = tensor(rng.standard_normal((spec.n, spec.c_in, spec.hw, spec.hw)))
    w = tensor(rng.standard_normal(w_shape) * 0.1)
    b = tensor(rng.standard_normal(spec.c_out))
    kw = dict(output_padding=spec.output_padding) if spec.transposed else {}
    conv = tf.conv_transpose2d if spec.transposed else tf.conv2d

    def op(x_):
        return conv(x_, w, b, stride=s, padding=p, **kw)
    with torch.no_grad():
        dy = tensor(rng.standard_normal(tuple(op(x).shape)), grad=False)

    def forward():
        with torch.no_grad():
            y = op(x)
        sync()
        return y

    def step():
        y = op(x)
        # dx, dW, db without accumulating into .grad (same work as minicae's backward)
        grads = torch.autograd.grad(y, (x, w, b), dy)
        sync()
        return grads
    macs = conv_macs(spec)
    return Work(step, forward, 3 * macs, macs, spec.n)


def _layers(name, nn):
    """The models of the training rows, from a namespace with torch.nn's names."""
    if name == "cae_strided":
        return [nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                nn.ConvTranspose2d(32, 16, 3, 2, 1, 1), nn.ReLU(),
                nn.ConvTranspose2d(16, 1, 3, 2, 1, 1), nn.Sigmoid()]
    if name == "cae_full":
        # the 'full' scheme: pad by k-1 ('full'), decode with a 'valid' conv
        return [nn.Conv2d(1, 16, 3, 1, padding="full"), nn.ReLU(),
                nn.Conv2d(16, 1, 3, 1, padding=0), nn.Sigmoid()]
    return [nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
            nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 784), nn.Sigmoid()]


def _train_macs(name, n, hw):
    if name == "dense_ae":
        return 3.0 * n * (784 * 64 * 2 + 64 * 64 * 2)
    if name == "cae_full":
        return 3.0 * n * ((hw + 2) ** 2 * 16 * 9 + hw * hw * 16 * 9)
    h1 = (hw + 1) // 2
    h2 = (h1 + 1) // 2
    return 3.0 * n * (h1 * h1 * 16 * 9 + h2 * h2 * 32 * 16 * 9 + h2 * h2 * 32 * 16 * 9
                      + h1 * h1 * 16 * 9)


def _minicae_train(name, n, hw, rng, sync):
    from .. import functional as F
    from .. import nn
    from ..optim import Adam

    model = nn.Sequential(*_layers(name, nn))
    shape = (n, 784) if name == "dense_ae" else (n, 1, hw, hw)
    x = F.asarray(rng.random(shape), np.float32)
    opt = Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()

    def step():
        opt.zero_grad()          # through the optimizer, as on torch's side
        loss = loss_fn(model(x), x)
        # the input is data: no input gradient, as on torch's side
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        sync()
        return loss
    return model, Work(step, None, _train_macs(name, n, hw), 0.0, n)


def _torch_train(name, n, hw, rng, device="cpu"):
    import torch

    sync = _torch_sync(torch, device)
    model = torch.nn.Sequential(*_layers(name, _TorchNN(torch))).to(device)
    shape = (n, 784) if name == "dense_ae" else (n, 1, hw, hw)
    x = torch.tensor(rng.random(shape), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), x)
        loss.backward()
        opt.step()
        sync()
        return loss
    return model, Work(step, None, _train_macs(name, n, hw), 0.0, n)


class _TorchNN:
    """torch.nn with minicae's padding='full' spelled as an explicit k-1."""

    def __init__(self, torch):
        self._nn = torch.nn

    def __getattr__(self, name):
        return getattr(self._nn, name)

    def Conv2d(self, c_in, c_out, k, stride=1, padding=0):  # noqa: N802 (torch's name)
        if padding == "full":
            padding = k - 1
        return self._nn.Conv2d(c_in, c_out, k, stride, padding)


def _gemm(side, n, rng, sync):
    """One n×n·n×n float32 product: NumPy's BLAS, cuBLAS through CuPy, or torch's."""
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    if side in TORCH_SIDES:
        import torch

        device = TORCH_SIDES[side]
        sync = _torch_sync(torch, device)
        a, b = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    elif side == "cupy":
        from .. import functional as F

        a, b = F.asarray(a), F.asarray(b)

    def step():
        c = a @ b
        sync()
        return c
    return Work(step, None, float(n) ** 3, 0.0, 0)


def _vae_torch_modules(torch, latent=16):
    nn = torch.nn
    enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(32 * 49, 2 * latent))
    dec = nn.Sequential(nn.Linear(latent, 32 * 49), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
                        nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(16, 1, 3, 2, 1, output_padding=1))
    return enc, dec


def _vae_train(side, n, rng, sync):
    """One ConvVAE step: negative ELBO (Bernoulli, KL), backward, Adam; eps drawn beforehand."""
    x = (rng.random((n, 1, 28, 28)) < 0.3).astype(np.float32)
    eps = rng.standard_normal((n, 16)).astype(np.float32)
    macs = _train_macs("cae_strided", n, 28) + 3.0 * n * (2 * 32 * 49 * 16 + 32 * 49 * 16)
    if side in TORCH_SIDES:
        import torch

        device = TORCH_SIDES[side]
        sync = _torch_sync(torch, device)
        enc, dec = (m.to(device) for m in _vae_torch_modules(torch))
        opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
        xt, et = torch.from_numpy(x).to(device), torch.from_numpy(eps).to(device)

        def step():
            opt.zero_grad(set_to_none=True)
            mu, logvar = enc(xt).chunk(2, dim=1)
            logits = dec(mu + torch.exp(0.5 * logvar) * et)
            nll = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, xt, reduction="sum") / n
            loss = nll + (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)).sum() / n
            loss.backward()
            opt.step()
            sync()
            return loss
        return Work(step, None, macs, 0.0, n)
    from .. import functional as F
    from ..optim import Adam
    from ..vae import ConvVAE

    model = ConvVAE(channels=(16, 32), latent=16, input_size=28)
    opt = Adam(model.parameters(), lr=1e-3)
    xd, ed = F.asarray(x), F.asarray(eps)

    def step():
        opt.zero_grad()
        loss, _ = model.objective(xd, eps=ed)
        opt.step()
        sync()
        return loss
    return Work(step, None, macs, 0.0, n)


def _topk_decode(case, side, n, d, k, out, rng, sync):
    """The first decoder layer on a top-k code (k of d units per sample): y and dx, dW, db."""
    z = np.zeros((n, d), np.float32)
    for i in range(n):
        z[i, rng.choice(d, k, replace=False)] = rng.random(k)
    dy = rng.standard_normal((n, out)).astype(np.float32)
    if side in TORCH_SIDES:             # the dense product on both rows
        import torch

        device = TORCH_SIDES[side]
        sync = _torch_sync(torch, device)
        layer = torch.nn.Linear(d, out).to(device)
        zt = torch.from_numpy(z).to(device).requires_grad_(True)
        dyt = torch.from_numpy(dy).to(device)

        def forward():
            with torch.no_grad():
                y = layer(zt)
            sync()
            return y

        def step():
            grads = torch.autograd.grad(layer(zt), (zt, layer.weight, layer.bias), dyt)
            sync()
            return grads
        return Work(step, forward, 3.0 * n * d * out, 1.0 * n * d * out, n)
    from .. import functional as F
    from ..nn.gather import SparseInputLinear

    layer = SparseInputLinear(d, out, rng=rng)
    if case == "topk_decode_dense":
        layer.max_density = 0.0         # the dense GEMMs on the same weights
    zd, dyd = F.asarray(z), F.asarray(dy)

    def forward():
        y = layer(zd)
        sync()
        return y

    def step():
        y = layer(zd)
        dx = layer.backward(dyd)
        sync()
        return y, dx
    share = 1.0 if case == "topk_decode_dense" else k / d     # multiply-adds done
    return Work(step, forward, 3.0 * n * d * out * share, 1.0 * n * d * out * share, n)


def build(case, side, *, quick=False, batch=None, hw=None, sync=_sync_noop, seed=0):
    """Build the :class:`Work` of ``case`` on ``side`` ('torch' or the active backend)."""
    rng = np.random.default_rng(seed)
    if case == "sgemm":                  # a GPU needs a larger product to be busy
        big = 4096 if side in ("cupy", "torch-cuda") else 1024
        return _gemm(side, 64 if quick else big, rng, sync)
    if case in CONV_CASES:
        spec = CONV_CASES[case]
        if quick:
            spec = spec._replace(n=2, hw=min(spec.hw, 8), c_in=min(spec.c_in, 4),
                                 c_out=min(spec.c_out, 4))
        if side in TORCH_SIDES:
            return _torch_conv(spec, rng, TORCH_SIDES[side])
        return _minicae_conv(spec, rng, sync)
    if case == "vae_conv":
        return _vae_train(side, batch or (4 if quick else VAE_CASES[case][0]), rng, sync)
    if case in VAE_CASES:
        n, d, k, out = (4, 64, 8, 16) if quick else VAE_CASES[case]
        return _topk_decode(case, side, batch or n, d, k, out, rng, sync)
    n, size = TRAIN_CASES[case]
    n = batch or (4 if quick else n)
    size = hw or (8 if quick and case != "dense_ae" else size)
    size = 28 if case == "dense_ae" else size
    if side in TORCH_SIDES:
        return _torch_train(case, n, size, rng, TORCH_SIDES[side])[1]
    return _minicae_train(case, n, size, rng, sync)[1]


def cae_strided(side, n, hw, seed=0):
    """The strided CAE training step at batch ``n`` and image ``hw``² (scaling, RSS)."""
    return build("cae_strided", side, batch=n, hw=hw, seed=seed)
