"""The GEMM-layout kernels beyond their definition (tests/test_kernels.py).

A reused ``out`` buffer is filled, not accumulated; Numba's serial and
parallel drivers agree with NumPy; the direct convolution equals the column
products.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from strategies import im2col_configs

from minicae import backend as backend_mod
from minicae import to_device, to_numpy


def _x(cfg, dtype=np.float64):
    return np.random.default_rng(cfg.seed).standard_normal(
        (cfg.n, cfg.c, cfg.h, cfg.w)).astype(dtype)


@given(cfg=im2col_configs())
def test_out_buffers_are_filled_not_accumulated(backend, cfg):
    """A reused buffer holding stale values gives the same result as a fresh one."""
    xp = backend.xp
    x = to_device(_x(cfg))
    fresh = backend.kernels.im2col_kn(x, *cfg.args())
    stale = xp.full(fresh.size, 7.0)
    cols = backend.kernels.im2col_kn(x, *cfg.args(), out=stale)
    assert_array_equal(to_numpy(cols), to_numpy(fresh), err_msg=f"{backend.name} {cfg}")
    assert_array_equal(to_numpy(stale).reshape(fresh.shape), to_numpy(fresh),
                       err_msg="im2col_kn must write into out")
    out = xp.full(cfg.n * cfg.c * cfg.h * cfg.w, -3.0)
    back = backend.kernels.col2im_kn(fresh, cfg.h, cfg.w, *cfg.geometry(), out=out)
    assert_allclose(to_numpy(back), to_numpy(backend.kernels.col2im_kn(
        fresh, cfg.h, cfg.w, *cfg.geometry())), rtol=1e-12, atol=1e-12,
        err_msg=f"{backend.name} {cfg}")
    assert_allclose(to_numpy(out).reshape(to_numpy(back).shape), to_numpy(back),
                    rtol=0, atol=0, err_msg="col2im_kn must write into out")


@given(cfg=im2col_configs())
def test_numba_col2im_kn_serial_and_parallel_drivers_agree(cfg):
    """Both drivers of the one loop body (the parallel one serves large arrays)."""
    _numba = pytest.importorskip("minicae.kernels._numba")
    from minicae.kernels import _numpy

    cols = _numpy.im2col_kn(_x(cfg), *cfg.args())
    c = np.random.default_rng(cfg.seed + 3).standard_normal(cols.shape)
    want = _numpy.col2im_kn(c, cfg.h, cfg.w, *cfg.geometry())
    geometry = (cfg.sh, cfg.sw, cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w)
    for driver in (_numba._col2im_kn_serial, _numba._col2im_kn_parallel):
        got = np.full(want.shape, 5.0)                 # stale values must be overwritten
        driver(c, got, *geometry)
        assert_allclose(got, want, rtol=1e-12, atol=1e-12,
                        err_msg=f"{driver.__name__} {cfg}")


@given(cfg=im2col_configs())
def test_numba_im2col_kn_drivers_agree(cfg):
    _numba = pytest.importorskip("minicae.kernels._numba")
    from minicae.kernels import _numpy

    x = _x(cfg)
    want = _numpy.im2col_kn(x, *cfg.args())
    for driver in (_numba._im2col_kn_serial, _numba._im2col_kn_parallel,
                   _numba._im2col_kn_gather):
        got = np.full(want.shape, 5.0)                 # stale values must be overwritten
        driver(x, got, cfg.sh, cfg.sw, cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w)
        assert_array_equal(got, want, err_msg=f"{driver.__name__} {cfg}")


@given(cfg=im2col_configs(), c_out=st.integers(1, 3), with_bias=st.booleans())
def test_numba_direct_conv_matches_the_column_products(cfg, c_out, with_bias):
    """conv_direct / _adjoint / _wgrad equal W·cols + b, col2im(Wᵀ·dY), dY·colsᵀ."""
    _numba = pytest.importorskip("minicae.kernels._numba")
    from minicae.kernels import _numpy

    rng = np.random.default_rng(cfg.seed + 1)
    x = _x(cfg)
    weight = rng.standard_normal((c_out, cfg.c, cfg.kh, cfg.kw))
    bias = rng.standard_normal(c_out) if with_bias else None
    cols = _numpy.im2col_kn(x, *cfg.args())                    # (C, kh, kw, N, oh, ow)
    n, oh, ow = cols.shape[3:]
    cols_mat = cols.reshape(-1, n, oh * ow)
    w_mat = weight.reshape(c_out, -1)
    want = np.einsum("ok,knp->nop", w_mat, cols_mat).reshape(n, c_out, oh, ow)
    if with_bias:
        want = want + bias.reshape(1, -1, 1, 1)
    msg = f"c_out={c_out} bias={with_bias} {cfg}"
    got = _numba.conv_direct(x, weight, bias, *cfg.args()[2:],
                             out=np.full((n, c_out, oh, ow), 7.0))
    assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg="y " + msg)

    dy = rng.standard_normal((n, c_out, oh, ow))
    dcols = np.einsum("ok,nop->knp", w_mat, dy.reshape(n, c_out, -1))
    want_dx = _numpy.col2im_kn(dcols.reshape(cols.shape), cfg.h, cfg.w, *cfg.args()[2:])
    got_dx = _numba.conv_direct_adjoint(dy, weight, cfg.h, cfg.w, *cfg.args()[2:])
    assert_allclose(got_dx, want_dx, rtol=1e-10, atol=1e-10, err_msg="dx " + msg)
    into = np.full(want_dx.shape, 3.0)                 # stale values must be overwritten
    assert _numba.conv_direct_adjoint(dy, weight, cfg.h, cfg.w, *cfg.args()[2:],
                                      out=into) is into
    assert_array_equal(into, got_dx, err_msg="dx into out " + msg)

    want_dw = np.einsum("nop,knp->ok", dy.reshape(n, c_out, -1), cols_mat)
    got_dw = _numba.conv_direct_wgrad(dy, x, cfg.kh, cfg.kw, *cfg.args()[2:])
    assert_allclose(got_dw.reshape(c_out, -1), want_dw, rtol=1e-10, atol=1e-10,
                    err_msg="dW " + msg)


@pytest.mark.parametrize("padding", [0, "full", (2, 1)])
def test_numba_direct_path_of_conv2d_equals_numpy(padding):
    """One output channel, stride 1: functional conv2d takes the direct kernels."""
    pytest.importorskip("minicae.kernels._numba")
    from minicae import functional as F

    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 4, 9, 8))
    weight = rng.standard_normal((1, 4, 3, 2))
    bias = rng.standard_normal(1)
    results = {}
    for name in ("numpy", "numba"):
        with backend_mod.use_backend(name):
            if name == "numba":
                assert F.conv._direct_kernels(weight, F.conv_geometry(
                    (3, 2), 1, padding, 1, 1, where="test")) is not None
            y = F.conv2d(x, weight, bias, padding=padding)
            dy = np.cos(np.arange(y.size)).reshape(y.shape)
            results[name] = (y, *F.conv2d_backward(dy, x, weight, padding=padding))
    for got, want, what in zip(results["numba"], results["numpy"], ("y", "dx", "dW", "db")):
        assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=f"{what} {padding!r}")


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_kn_to_nchw_matches_numpy_bit_for_bit(with_bias, relu, dtype):
    """The copy-back from a (C, m·P) product to NCHW, with the bias and a fused ReLU,
    gives NumPy's values exactly: -0 stays -0 in a plain copy and becomes +0 under
    max(·, 0), NaN stays NaN."""
    _numba = pytest.importorskip("minicae.kernels._numba")
    rng = np.random.default_rng(7)
    m, c, oh, ow = 3, 4, 2, 5
    prod = rng.standard_normal((c, m * oh * ow)).astype(dtype)
    prod.flat[[0, 7, 13]] = [-0.0, np.nan, 0.0]
    bias = rng.standard_normal(c).astype(dtype) if with_bias else None
    want = prod.reshape(c, m, oh, ow).transpose(1, 0, 2, 3).copy()
    if with_bias:
        want = want + bias.reshape(1, -1, 1, 1)
    if relu:
        want = np.maximum(want, 0)
    got = np.full((m, c, oh, ow), 9.0, dtype)
    _numba.kn_to_nchw(prod, got, bias, relu)
    assert_array_equal(got, want)
    assert_array_equal(np.signbit(got), np.signbit(want))
