"""The SIMD intrinsics (kernels/_simd.py) and the stride-1 kernels built on them
(kernels/_numba_s1.py): each against a reference that shares no code with it."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from strategies import Im2colConfig, im2col_configs

from minicae import backend as backend_mod
from minicae.functional import _direct

numba = pytest.importorskip("numba", reason="the SIMD kernels need Numba")
_numba = pytest.importorskip("minicae.kernels._numba")
from minicae.kernels import _simd  # noqa: E402  (needs numba)

DTYPES = [np.float32, np.float64]


@numba.njit
def _masked_copy(a, at, lo, hi, out):
    _simd.vstore(out, 0, _simd.vload(a, at, lo, hi), 0, _simd.lanes(a))
    return out


@numba.njit
def _store_span(a, value, lo, hi):
    _simd.vstore(a, 1, _simd.vsplat(a, value), lo, hi)
    return a


@numba.njit
def _fma_sum_relu(a, b, c, out):
    v = _simd.lanes(a)
    r = _simd.vfma(_simd.vload(a, 0, 0, v), _simd.vload(b, 0, 0, v),
                   _simd.vload(c, 0, 0, v))
    _simd.vstore(out, 0, _simd.vrelu(r), 0, v)
    return _simd.vsum(r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_width_is_64_bytes(dtype):
    a = np.zeros(4, dtype)
    assert numba.njit(lambda a: _simd.lanes(a))(a) == 64 // np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lo,hi", [(0, 99), (-5, 3), (2, 7), (6, 2), (0, 0), (3, -1),
                                   (-3, 99)])
def test_masked_load_reads_only_lanes_lo_to_hi(dtype, lo, hi):
    """Lanes outside [lo, hi) (clamped to the vector) are 0; the others are a[at + l]."""
    count = 64 // np.dtype(dtype).itemsize
    a = np.arange(1, 3 * count + 1, dtype=dtype)
    at = count
    got = _masked_copy(a, at, lo, hi, np.full(count, -1, dtype))
    want = np.array([a[at + lane] if max(lo, 0) <= lane < min(hi, count) else 0
                     for lane in range(count)], dtype)
    assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_load_never_touches_masked_lanes(dtype):
    """The lanes before the array's start and past its end are not read: a view of
    the first cells, read from index -2 with lanes [2, 5), sees only a[0:3]."""
    count = 64 // np.dtype(dtype).itemsize
    a = np.arange(10, 13, dtype=dtype)
    got = _masked_copy(a, -2, 2, 5, np.full(count, -1, dtype))
    assert_array_equal(got[:5], [0, 0, 10, 11, 12])
    assert not got[5:].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lo,hi", [(0, 0), (0, 1), (0, 5), (0, 99), (3, 7), (-2, 4), (5, 2)])
def test_masked_store_writes_only_lanes_lo_to_hi(dtype, lo, hi):
    count = 64 // np.dtype(dtype).itemsize
    a = np.full(count + 2, 7, dtype)
    got = _store_span(a, 2.5, lo, hi)
    want = [7] + [2.5 if max(lo, 0) <= lane < min(hi, count) else 7
                  for lane in range(count)] + [7]
    assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_sum_and_relu_lane_by_lane(dtype):
    count = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(count).astype(dtype) for _ in range(3))
    c[3] = np.nan
    out = np.empty(count, dtype)
    total = _fma_sum_relu(a, b, c, out)
    # one rounding of the exact a*b + c (Fraction is exact; float() rounds once)
    want = np.array([float(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r)))
                     if i != 3 else np.nan for i, (p, q, r) in enumerate(zip(a, b, c))],
                    dtype)
    keep = np.arange(count) != 3
    assert_array_equal(out[keep], np.maximum(want, 0)[keep])
    assert np.isnan(out[3]), "ReLU keeps NaN (as np.maximum)"
    assert np.isnan(total)
    c[3] = 1.0
    total = _fma_sum_relu(a, b, c, out)
    lanes_sum = np.asarray(a, np.float64) * b + c
    assert_allclose(total, lanes_sum.sum(), rtol=1e-5 if dtype == np.float32 else 1e-13)


def _reference(x, weight, bias, dy, cfg):
    """y, dx, dW of a stride-1 convolution from NumPy's im2col/col2im in float64."""
    from minicae.kernels import _numpy

    c_out = weight.shape[0]
    cols = _numpy.im2col_kn(x.astype(np.float64), *cfg.args())     # (C, kh, kw, N, oh, ow)
    n, oh, ow = cols.shape[3:]
    cols_mat = cols.reshape(-1, n, oh * ow)
    w_mat = weight.reshape(c_out, -1).astype(np.float64)
    y = np.einsum("ok,knp->nop", w_mat, cols_mat).reshape(n, c_out, oh, ow)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    dcols = np.einsum("ok,nop->knp", w_mat, dy.reshape(n, c_out, -1).astype(np.float64))
    dx = _numpy.col2im_kn(dcols.reshape(cols.shape), cfg.h, cfg.w, *cfg.geometry())
    dw = np.einsum("nop,knp->ok", dy.reshape(n, c_out, -1), cols_mat).reshape(weight.shape)
    return y, dx, dw


def _check_s1(cfg, c_out, with_bias, relu, dtype):
    cfg = dataclasses.replace(cfg, sh=1, sw=1)
    rng = np.random.default_rng(cfg.seed + 3)
    x = rng.standard_normal((cfg.n, cfg.c, cfg.h, cfg.w)).astype(dtype)
    weight = rng.standard_normal((c_out, cfg.c, cfg.kh, cfg.kw)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    oh = cfg.h + cfg.pt + cfg.pb - cfg.dil_h * (cfg.kh - 1)
    ow = cfg.w + cfg.pl + cfg.pr - cfg.dil_w * (cfg.kw - 1)
    dy = rng.standard_normal((cfg.n, c_out, oh, ow)).astype(dtype)
    want_y, want_dx, want_dw = _reference(x, weight, bias, dy, cfg)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4,
                                                                       atol=2e-4)
    geometry = (cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w)
    msg = f"c_out={c_out} bias={with_bias} relu={relu} {dtype.__name__} {cfg}"
    out = np.full(want_y.shape, 7.0, dtype)            # stale values must be overwritten
    assert _numba.conv_s1(x, weight, bias, *geometry, out, relu=relu) is out
    assert_allclose(out, np.maximum(want_y, 0) if relu else want_y, **tol,
                    err_msg="y " + msg)
    # the adjoint (the transposed convolution), with a bias of the input's channels
    b_in = rng.standard_normal(cfg.c).astype(dtype) if with_bias else None
    want_x = want_dx + (0 if b_in is None else b_in.reshape(1, -1, 1, 1))
    into = np.full(x.shape, 3.0, dtype)
    assert _numba.conv_s1_adjoint(dy, weight, *geometry, into, bias=b_in, relu=relu) \
        is into
    assert_allclose(into, np.maximum(want_x, 0) if relu else want_x, **tol,
                    err_msg="dx " + msg)
    dw = _numba.conv_s1_wgrad(dy, x, cfg.kh, cfg.kw, *geometry)
    assert dw.shape == weight.shape and dw.dtype == dtype
    assert_allclose(dw, want_dw, **tol, err_msg="dW " + msg)


@given(cfg=im2col_configs(max_c=5), c_out=st.integers(1, 10), with_bias=st.booleans(),
       relu=st.booleans())
def test_stride1_simd_conv_matches_the_column_products(cfg, c_out, with_bias, relu):
    """conv_s1 / _adjoint / _wgrad equal W·cols + b, col2im(Wᵀ·dY) + b and dY·colsᵀ
    at any stride-1 geometry: kernel 1-4, dilation, asymmetric padding, channel
    counts that leave partial blocks of output channels."""
    _check_s1(cfg, c_out, with_bias, relu, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w,c_out,kw,pads", [(40, 9, 3, (1, 1, 1, 1)),
                                             (70, 17, 5, (2, 0, 0, 3)),
                                             (33, 16, 3, (0, 0, 0, 0)),
                                             (17, 5, 7, (3, 3, 3, 3)),
                                             (16, 8, 2, (0, 1, 1, 0))])
def test_stride1_simd_conv_wide_rows(dtype, w, c_out, kw, pads):
    """Rows wider than one block of two vectors (float32: 32 lanes, float64: 16), a row
    that ends exactly on a vector, kernels wider than the weight gradient's block of
    three columns, in both dtypes."""
    cfg = Im2colConfig(n=2, c=3, h=5, w=w, kh=3, kw=kw, sh=1, sw=1, pt=pads[0],
                       pb=pads[1], pl=pads[2], pr=pads[3], dil_h=1, dil_w=1, seed=w)
    for relu in (False, True):
        _check_s1(cfg, c_out, True, relu, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stride1_path_of_conv_layers_equals_numpy(dtype):
    """conv2d and conv_transpose2d at stride 1 with several channels take the SIMD
    kernels on numba: the same values and gradients as NumPy's columns, with a
    fused ReLU and its masked backward, with and without the input gradient."""
    from minicae import functional as F
    from minicae.functional import conv as C

    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 6, 13, 35)).astype(dtype)
    w = rng.standard_normal((10, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    z = rng.standard_normal((5, 10, 13, 35)).astype(dtype)
    bt = rng.standard_normal(6).astype(dtype)
    kw = dict(padding=1)
    kt = dict(padding=2, dilation=2, output_padding=1)
    results = {}
    for name in ("numpy", "numba"):
        with backend_mod.use_backend(name):
            g = F.conv_geometry((3, 3), 1, 1, 1, 1, where="test")
            assert (_direct._s1_kernels(x, 6, 10, g) is not None) == (name == "numba")
            y = C._conv2d(x, w, b, relu=True, **kw)
            dy = np.cos(np.arange(y.size)).reshape(y.shape).astype(dtype)
            grads = C._conv2d_backward_kept(dy, x, w, None, relu_out=y, **kw)
            no_dx = C._conv2d_backward_kept(dy, x, w, None, relu_out=y, need_dx=False, **kw)
            assert no_dx[0] is None
            yt = F.conv_transpose2d(z, w, bt, **kt)
            dyt = np.sin(np.arange(yt.size)).reshape(yt.shape).astype(dtype)
            gt = F.conv_transpose2d_backward(dyt, z, w, **kt)
            results[name] = (y, *grads, *no_dx[1:], yt, *gt)
    names = ("y", "dx", "dW", "db", "dW no dx", "db no dx", "yt", "dz", "dWt", "dbt")
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for got, want, what in zip(results["numba"], results["numpy"], names):
        assert got.dtype == dtype, what
        assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"{what} {dtype.__name__}")


def test_stride1_kernels_are_not_taken_where_they_do_not_apply():
    """Strided, grouped, 1x1, one-output-channel and float16 convolutions keep their
    other paths (columns, or the narrower direct kernels)."""
    from minicae import functional as F

    x32 = np.zeros((2, 4, 8, 8), np.float32)
    with backend_mod.use_backend("numba"):
        def geo(k=3, s=1, groups=1):
            return F.conv_geometry((k, k), s, 1, 1, groups, where="test")
        assert _direct._s1_kernels(x32, 4, 8, geo()) is not None
        assert _direct._s1_kernels(x32, 4, 8, geo(s=2)) is None
        assert _direct._s1_kernels(x32, 4, 8, geo(groups=2)) is None
        assert _direct._s1_kernels(x32, 4, 8, geo(k=1)) is None
        assert _direct._s1_kernels(x32, 4, 1, geo()) is None            # conv_direct's
        assert _direct._s1_kernels(x32, 1, 8, geo()) is None            # conv_c1's (3x3 s1)
        assert _direct._s1_kernels(x32, 1, 8, geo(k=5)) is not None     # not a c1 geometry
        assert _direct._s1_kernels(x32.astype(np.float16), 4, 8, geo()) is None
