"""max_pool2d and upsample: loop reference, argmax routing, gradients, parity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from reference import max_pool2d_ref, upsample_ref
from strategies import pool_configs, seeds

from minicae import backend as backend_mod
from minicae import functional as F
from minicae import to_device, to_numpy
from minicae.errors import ShapeError
from minicae.gradcheck import numerical_gradient


def _pool(x, cfg):
    y, argmax = F.max_pool2d(to_device(x), **cfg.kwargs(), return_indices=True)
    return to_numpy(y), argmax


def _pool_backward(dy, x, argmax, cfg):
    return to_numpy(F.max_pool2d_backward(to_device(dy), to_device(x), argmax,
                                          **cfg.kwargs()))


def _routed(dy, where, x_shape):
    """The reference backward: add each dY at the input pixel holding its maximum."""
    dx = np.zeros(x_shape)
    n, c, oh, ow = dy.shape
    for a in range(n):
        for b in range(c):
            for p in range(oh):
                for q in range(ow):
                    r, s = where[a, b, p, q]
                    dx[a, b, r, s] += dy[a, b, p, q]
    return dx


@given(cfg=pool_configs())
def test_max_pool2d_matches_loop_reference(backend, cfg):
    x = cfg.array()
    y, _ = _pool(x, cfg)
    want, _ = max_pool2d_ref(x, cfg.kernel, cfg.stride, cfg.padding)
    assert y.shape == want.shape, f"{backend.name} {cfg}"
    assert_array_equal(y, want, err_msg=f"{backend.name} {cfg}")


@given(cfg=pool_configs())
def test_max_pool2d_backward_routes_to_the_argmax(backend, cfg):
    x = cfg.array()
    y, argmax = _pool(x, cfg)
    dy = np.random.default_rng(cfg.seed).standard_normal(y.shape)
    _, where = max_pool2d_ref(x, cfg.kernel, cfg.stride, cfg.padding)
    assert_allclose(_pool_backward(dy, x, argmax, cfg), _routed(dy, where, x.shape),
                    rtol=1e-12, atol=1e-12, err_msg=f"{backend.name} {cfg}")


@given(cfg=pool_configs(max_n=2, max_c=2, max_hw=5))
def test_max_pool2d_grad(backend, cfg):
    """Distinct values 0.1 apart: an ε = 1e-6 step never changes the argmax."""
    x = cfg.array()
    y, argmax = _pool(x, cfg)
    r = np.random.default_rng(cfg.seed + 1).standard_normal(y.shape)
    numeric = numerical_gradient(lambda v: np.sum(_pool(v, cfg)[0] * r), x.copy())
    assert_allclose(_pool_backward(r, x, argmax, cfg), numeric, rtol=1e-6, atol=1e-8,
                    err_msg=f"{backend.name} {cfg}")


@given(cfg=pool_configs())
def test_max_pool2d_ties_route_to_the_first_maximum(backend, cfg):
    """On a constant input every window ties; the first real pixel gets the gradient."""
    x = np.zeros((cfg.n, cfg.c, cfg.h, cfg.w))
    y, argmax = _pool(x, cfg)
    dy = np.arange(1.0, 1 + y.size).reshape(y.shape)
    _, where = max_pool2d_ref(x, cfg.kernel, cfg.stride, cfg.padding)
    assert_array_equal(_pool_backward(dy, x, argmax, cfg), _routed(dy, where, x.shape),
                       err_msg=f"{backend.name} {cfg}")


def test_max_pool2d_padding_is_minus_infinity(backend):
    x = -np.arange(1.0, 17.0).reshape(1, 1, 4, 4)       # all negative
    y = to_numpy(F.max_pool2d(to_device(x), 3, stride=1, padding=1))
    assert y.max() < 0, "zero padding would have won every border window"
    assert_array_equal(y, max_pool2d_ref(x, 3, 1, 1)[0])


@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5),
       fh=st.integers(1, 3), fw=st.integers(1, 3), seed=seeds)
def test_upsample_matches_reference_and_gradient(backend, n, c, h, w, fh, fw, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    y = to_numpy(F.upsample(to_device(x), (fh, fw)))
    msg = f"{backend.name} x{(n, c, h, w)} scale {(fh, fw)}"
    assert_array_equal(y, upsample_ref(x, (fh, fw)), err_msg=msg)
    r = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dx = to_numpy(F.upsample_backward(to_device(r), (fh, fw)))
    numeric = numerical_gradient(
        lambda v: np.sum(to_numpy(F.upsample(to_device(v), (fh, fw))) * r), x.copy())
    assert_allclose(dx, numeric, rtol=1e-7, atol=1e-8, err_msg=msg)
    # the backward is the adjoint: ⟨up(x), r⟩ = ⟨x, up_backward(r)⟩
    assert_allclose(np.sum(y * r), np.sum(x * dx), rtol=1e-12, err_msg=msg)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(cfg=pool_configs())
def test_pool_parity_with_numpy(other_backend, dtype, cfg):
    x = cfg.array(dtype)
    results = {}
    for name in ("numpy", other_backend):
        with backend_mod.use_backend(name):
            y, argmax = F.max_pool2d(to_device(x), **cfg.kwargs(), return_indices=True)
            dx = F.max_pool2d_backward(y, to_device(x), argmax, **cfg.kwargs())
            up = F.upsample(to_device(x), 2)
            results[name] = [to_numpy(a) for a in (y, argmax, dx, up)]
    for label, a, b in zip(("y", "argmax", "dx", "upsample"), results[other_backend],
                           results["numpy"]):
        assert a.dtype == b.dtype, label
        assert_array_equal(a, b, err_msg=f"{label} on {other_backend}: {cfg}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_dtype_and_non_contiguous(backend, dtype):
    base = np.random.default_rng(0).permutation(2 * 3 * 12 * 7).reshape(2, 3, 12, 7)
    x = base.astype(dtype)[:, :, ::2].transpose(0, 1, 3, 2)         # (2, 3, 7, 6)
    assert not x.flags.c_contiguous
    y, argmax = F.max_pool2d(to_device(x), 2, padding=1, return_indices=True)
    dx = F.max_pool2d_backward(y, to_device(x), argmax, 2, padding=1)
    assert y.dtype == dtype and dx.dtype == dtype
    y_c, argmax_c = F.max_pool2d(to_device(x.copy()), 2, padding=1, return_indices=True)
    assert_array_equal(to_numpy(y), to_numpy(y_c))
    assert_array_equal(to_numpy(dx), to_numpy(
        F.max_pool2d_backward(y_c, to_device(x.copy()), argmax_c, 2, padding=1)))
    up = F.upsample(to_device(x), 2)
    assert up.dtype == dtype and F.upsample_backward(up, 2).dtype == dtype
    assert_array_equal(to_numpy(F.upsample_backward(up, 2)), 4 * x)


def test_max_pool2d_batch_of_one(backend):
    x = np.random.default_rng(1).permutation(3 * 2 * 6 * 6).reshape(3, 2, 6, 6) * 1.0
    y = to_numpy(F.max_pool2d(to_device(x), 2))
    assert_array_equal(to_numpy(F.max_pool2d(to_device(x[2:3]), 2)), y[2:3])


BAD_POOL = [
    ("rank", dict(x=np.ones((4, 4)), kernel_size=2), ShapeError,
     r"max_pool2d: expected input of shape \(N, C, H, W\), got \(4, 4\)"),
    ("int input", dict(x=np.ones((1, 1, 4, 4), dtype=np.int64), kernel_size=2), TypeError,
     r"max_pool2d: expected a floating-point input, got dtype int64"),
    ("padding", dict(x=np.ones((1, 1, 4, 4)), kernel_size=2, padding=2), ValueError,
     r"max_pool2d: padding must be at most half the kernel size"),
    ("too large", dict(x=np.ones((1, 1, 2, 2)), kernel_size=3), ShapeError,
     r"max_pool2d: kernel 3x3 .* larger than the padded input 2x2"),
    ("stride 0", dict(x=np.ones((1, 1, 4, 4)), kernel_size=2, stride=0), ValueError,
     r"max_pool2d: expected stride >= 1, got 0"),
]


@pytest.mark.parametrize("case,args,error,match", BAD_POOL, ids=[c[0] for c in BAD_POOL])
def test_max_pool2d_rejects_bad_input(numpy_backend, case, args, error, match):
    args = dict(args)
    with pytest.raises(error, match=match):
        F.max_pool2d(args.pop("x"), **args)


def test_upsample_rejects_bad_input(numpy_backend):
    with pytest.raises(ShapeError, match=r"upsample: expected input of shape "
                                         r"\(N, C, H, W\), got \(3, 4\)"):
        F.upsample(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"upsample: expected scale_factor >= 1, got 0"):
        F.upsample(np.ones((1, 1, 2, 2)), 0)
    with pytest.raises(TypeError, match=r"upsample: expected a floating-point input"):
        F.upsample(np.ones((1, 1, 2, 2), dtype=np.int8))
    with pytest.raises(ShapeError, match=r"upsample_backward: expected dy height and "
                                         r"width divisible by \(2, 2\), got \(1, 1, 3, 4\)"):
        F.upsample_backward(np.ones((1, 1, 3, 4)), 2)
