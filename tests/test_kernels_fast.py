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
from minicae.functional import _direct
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
def test_numba_col2im_kn_row_and_scatter_drivers_agree(cfg):
    """Both drivers: row by row, and through the window offsets (short rows)."""
    _numba = pytest.importorskip("minicae.kernels._numba")
    from minicae.kernels import _numpy

    cols = _numpy.im2col_kn(_x(cfg), *cfg.args())
    c = np.random.default_rng(cfg.seed + 3).standard_normal(cols.shape)
    want = _numpy.col2im_kn(c, cfg.h, cfg.w, *cfg.geometry())
    geometry = (cfg.sh, cfg.sw, cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w)
    for driver in (_numba._col2im_kn_serial, _numba._col2im_kn_scatter):
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
    for driver in (_numba._im2col_kn_serial, _numba._im2col_kn_gather):
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
                assert _direct._direct_kernels(weight.shape[0], F.conv_geometry(
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


def _single_channel_case(cfg, c_out, with_bias, dtype=np.float64):
    """x with one channel, W, b and dy for the one-input-channel kernels, and the
    reference products from NumPy's columns (themselves checked against loops)."""
    from minicae.kernels import _numpy

    rng = np.random.default_rng(cfg.seed + 2)
    x = _x(cfg, dtype)[:, :1].copy()
    weight = rng.standard_normal((c_out, 1, cfg.kh, cfg.kw)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    cols = _numpy.im2col_kn(x.astype(np.float64), *cfg.args())      # (1, kh, kw, N, oh, ow)
    n, oh, ow = cols.shape[3:]
    cols_mat = cols.reshape(-1, n, oh * ow)
    w_mat = weight.reshape(c_out, -1).astype(np.float64)
    y = np.einsum("ok,knp->nop", w_mat, cols_mat).reshape(n, c_out, oh, ow)
    if with_bias:
        y = y + bias.reshape(1, -1, 1, 1)
    dy = rng.standard_normal((n, c_out, oh, ow)).astype(dtype)
    dcols = np.einsum("ok,nop->knp", w_mat, dy.reshape(n, c_out, -1).astype(np.float64))
    dx = _numpy.col2im_kn(dcols.reshape(cols.shape), cfg.h, cfg.w, *cfg.geometry())
    dw = np.einsum("nop,knp->ok", dy.reshape(n, c_out, -1), cols_mat).reshape(weight.shape)
    return x, weight, bias, dy, (y, dx, dw, dy.sum(axis=(0, 2, 3)))


def _check_single_channel(cfg, c_out, with_bias, relu, dtype=np.float64):
    _numba = pytest.importorskip("minicae.kernels._numba")
    x, weight, bias, dy, (want_y, want_dx, want_dw, want_db) = _single_channel_case(
        cfg, c_out, with_bias, dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4,
                                                                       atol=1e-4)
    geometry = (cfg.sh, cfg.sw, cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w)
    msg = f"c_out={c_out} bias={with_bias} relu={relu} {dtype.__name__} {cfg}"
    out = np.full(want_y.shape, 7.0, dtype)            # stale values must be overwritten
    assert _numba.conv_c1(x, weight, bias, *geometry, out, relu=relu) is out
    assert_allclose(out, np.maximum(want_y, 0) if relu else want_y, **tol,
                    err_msg="y " + msg)
    # the adjoint (a transposed convolution to one channel), with that one channel's bias
    b1 = None if bias is None else bias[:1]
    want_x = want_dx + (0 if b1 is None else b1[0])
    into = np.full(x.shape, 3.0, dtype)
    assert _numba.conv_c1_adjoint(dy, weight, b1, *geometry, into, relu=relu) is into
    assert_allclose(into, np.maximum(want_x, 0) if relu else want_x, **tol,
                    err_msg="dx " + msg)
    dw, db = _numba.conv_c1_wgrad(dy, x, cfg.kh, cfg.kw, *geometry)
    assert dw.shape == weight.shape and db.shape == (c_out,)
    assert_allclose(dw, want_dw, **tol, err_msg="dW " + msg)
    assert_allclose(db, want_db, **tol, err_msg="db " + msg)
    # a fused ReLU's mask applied on the way: the gradients of dy ⊙ [r > 0], exactly
    r = np.random.default_rng(cfg.seed + 5).standard_normal(dy.shape).astype(dtype)
    r[r < -1] = -0.0
    masked = _numba.conv_c1_wgrad(dy * (r > 0), x, cfg.kh, cfg.kw, *geometry)
    for got, want, what in zip(_numba.conv_c1_wgrad(dy, x, cfg.kh, cfg.kw, *geometry,
                                                    relu_out=r), masked, ("dW", "db")):
        assert_array_equal(got, want, err_msg=f"{what} with relu_out " + msg)


@given(cfg=im2col_configs(), c_out=st.integers(1, 3), with_bias=st.booleans(),
       relu=st.booleans())
def test_numba_single_channel_conv_matches_the_column_products(cfg, c_out, with_bias,
                                                               relu):
    """conv_c1 / _adjoint / _wgrad (one input channel, phase planes) equal W·cols + b,
    col2im(Wᵀ·dY) + b and dY·colsᵀ, Σ dY, at any geometry (the runtime-loop branch)."""
    _check_single_channel(cfg, c_out, with_bias, relu)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pads,hw", [((1, 1, 1, 1), (9, 9)), ((0, 0, 0, 0), (8, 7)),
                                     ((2, 2, 2, 2), (6, 9)), ((1, 0, 0, 2), (7, 10)),
                                     ((0, 2, 1, 0), (5, 6))])
def test_numba_single_channel_conv_compiled_geometries(dtype, stride, pads, hw):
    """The same at the geometries compiled with constant trip counts (C1_GEOMETRIES),
    a separate branch of each kernel: odd and even sizes, asymmetric padding."""
    from strategies import Im2colConfig

    _numba = pytest.importorskip("minicae.kernels._numba")
    assert (3, 3, stride, stride, 1, 1) in _numba.C1_GEOMETRIES
    cfg = Im2colConfig(n=3, c=1, h=hw[0], w=hw[1], kh=3, kw=3, sh=stride, sw=stride,
                       pt=pads[0], pb=pads[1], pl=pads[2], pr=pads[3], dil_h=1, dil_w=1,
                       seed=sum(pads) + hw[0])
    for relu in (False, True):
        _check_single_channel(cfg, 4, True, relu, dtype)
    _check_single_channel(cfg, 2, False, False, dtype)


@pytest.mark.parametrize("stride", [1, 2])
def test_numba_single_channel_path_of_conv_layers_equals_numpy(stride):
    """conv2d with one input channel and conv_transpose2d with one output channel
    (3x3, stride 1 or 2) take the phase-plane kernels on numba: the same values and
    gradients as NumPy's columns, with a fused ReLU and its masked backward too."""
    pytest.importorskip("minicae.kernels._numba")
    from minicae import functional as F
    from minicae.functional import conv as C

    rng = np.random.default_rng(5 + stride)
    x = rng.standard_normal((6, 1, 11, 10))
    w = rng.standard_normal((4, 1, 3, 3))
    b = rng.standard_normal(4)
    z = rng.standard_normal((6, 4, 6, 5))
    bt = rng.standard_normal(1)
    kw = dict(stride=stride, padding=1)
    kt = dict(stride=stride, padding=1, output_padding=stride - 1)
    results = {}
    for name in ("numpy", "numba"):
        with backend_mod.use_backend(name):
            if name == "numba":
                g = F.conv_geometry((3, 3), stride, 1, 1, 1, where="test")
                assert _direct._c1_kernels(1, g) is not None
            y = C._conv2d(x, w, b, relu=True, **kw)
            dy = np.cos(np.arange(y.size)).reshape(y.shape)
            grads = C._conv2d_backward_kept(dy, x, w, None, relu_out=y, **kw)
            # without dx, the mask is applied inside the weight gradient's kernel
            grads_no_dx = C._conv2d_backward_kept(dy, x, w, None, relu_out=y,
                                                  need_dx=False, **kw)
            assert grads_no_dx[0] is None
            grads = (*grads, *grads_no_dx[1:])
            yt = F.conv_transpose2d(z, w, bt, **kt)
            dyt = np.sin(np.arange(yt.size)).reshape(yt.shape)
            gt = F.conv_transpose2d_backward(dyt, z, w, **kt)
            results[name] = (y, *grads, yt, *gt)
    names = ("y", "dx", "dW", "db", "dW no dx", "db no dx", "yt", "dz", "dWt", "dbt")
    for got, want, what in zip(results["numba"], results["numpy"], names):
        assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=f"{what} s{stride}")
