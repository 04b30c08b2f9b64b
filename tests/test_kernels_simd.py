"""The SIMD intrinsics (kernels/_simd.py) and the stride-1 kernels built on them
(kernels/_numba_s1.py): each against a reference that shares no code with it."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
import columns
from numpy.testing import assert_allclose, assert_array_equal
from strategies import Im2colConfig, im2col_configs

from minicae import backend as backend_mod
from minicae import dispatch

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
def test_vector_width_is_the_targets(dtype):
    a = np.zeros(4, dtype)
    want = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    assert numba.njit(lambda a: _simd.lanes(a))(a) == want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lo,hi", [(0, 99), (-5, 3), (2, 7), (6, 2), (0, 0), (3, -1),
                                   (-3, 99)])
def test_masked_load_reads_only_lanes_lo_to_hi(dtype, lo, hi):
    """Lanes outside [lo, hi) (clamped to the vector) are 0; the others are a[at + l]."""
    count = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
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
    count = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    a = np.arange(10, 13, dtype=dtype)
    got = _masked_copy(a, -2, 2, 5, np.full(count, -1, dtype))
    assert_array_equal(got[:5], [0, 0, 10, 11, 12][:count])   # 2 or 4 lanes: fewer
    assert not got[5:].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lo,hi", [(0, 0), (0, 1), (0, 5), (0, 99), (3, 7), (-2, 4), (5, 2)])
def test_masked_store_writes_only_lanes_lo_to_hi(dtype, lo, hi):
    count = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    a = np.full(count + 2, 7, dtype)
    got = _store_span(a, 2.5, lo, hi)
    want = [7] + [2.5 if max(lo, 0) <= lane < min(hi, count) else 7
                  for lane in range(count)] + [7]
    assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_sum_and_relu_lane_by_lane(dtype):
    count = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    nan_at = count - 1           # the last lane (2 lanes of float64 on SSE/NEON)
    a, b, c = (rng.standard_normal(count).astype(dtype) for _ in range(3))
    c[nan_at] = np.nan
    out = np.empty(count, dtype)
    total = _fma_sum_relu(a, b, c, out)
    # one rounding of the exact a*b + c (Fraction is exact; float() rounds once)
    want = np.array([float(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r)))
                     if i != nan_at else np.nan for i, (p, q, r) in enumerate(zip(a, b, c))],
                    dtype)
    keep = np.arange(count) != nan_at
    assert_array_equal(out[keep], np.maximum(want, 0)[keep])
    assert np.isnan(out[nan_at]), "ReLU keeps NaN (as np.maximum)"
    assert np.isnan(total)
    c[nan_at] = 1.0
    total = _fma_sum_relu(a, b, c, out)
    lanes_sum = np.asarray(a, np.float64) * b + c
    assert_allclose(total, lanes_sum.sum(), rtol=1e-5 if dtype == np.float32 else 1e-13)


def _reference(x, weight, bias, dy, cfg):
    """y, dx, dW of a stride-1 convolution from NumPy's im2col/col2im in float64."""

    c_out = weight.shape[0]
    cols = columns.im2col_kn(x.astype(np.float64), *cfg.args())     # (C, kh, kw, N, oh, ow)
    n, oh, ow = cols.shape[3:]
    cols_mat = cols.reshape(-1, n, oh * ow)
    w_mat = weight.reshape(c_out, -1).astype(np.float64)
    y = np.einsum("ok,knp->nop", w_mat, cols_mat).reshape(n, c_out, oh, ow)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    dcols = np.einsum("ok,nop->knp", w_mat, dy.reshape(n, c_out, -1).astype(np.float64))
    dx = columns.col2im_kn(dcols.reshape(cols.shape), cfg.h, cfg.w, *cfg.geometry())
    dw = np.einsum("nop,knp->ok", dy.reshape(n, c_out, -1), cols_mat).reshape(weight.shape)
    return y, dx, dw


def _family(name):
    """(forward, adjoint, wgrad) of a kernel family with one calling convention:
    f(x, W, b, cfg, out, relu), f(dy, W, b, cfg, out, relu), f(dy, x, W, cfg)."""
    if name == "s1":
        def geo(cfg):
            return cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w
        return (lambda x, w, b, cfg, out, relu: _numba.conv_s1(x, w, b, *geo(cfg), out,
                                                               relu=relu),
                lambda d, w, b, cfg, out, relu: _numba.conv_s1_adjoint(
                    d, w, *geo(cfg), out, bias=b, relu=relu),
                lambda d, x, w, cfg: _numba.conv_s1_backward(d, x, w, *geo(cfg))[0])

    def geo(cfg):
        return cfg.sh, cfg.sw, cfg.pt, cfg.pl, cfg.dil_h, cfg.dil_w
    return (lambda x, w, b, cfg, out, relu: _numba.conv_cv(x, w, b, *geo(cfg), out,
                                                           relu=relu),
            lambda d, w, b, cfg, out, relu: _numba.conv_cv_adjoint(d, w, b, *geo(cfg), out,
                                                                   relu=relu),
            lambda d, x, w, cfg: _numba.conv_cv_backward(d, x, w, *geo(cfg))[0])


def _check_family(name, cfg, c_out, with_bias, relu, dtype):
    """A direct kernel family's forward (+ bias, ReLU), adjoint (+ bias of the input's
    channels, ReLU) and weight gradient against the column products; stale values in
    the outputs must be overwritten."""
    forward, adjoint, wgrad = _family(name)
    rng = np.random.default_rng(cfg.seed + 3)
    x = rng.standard_normal((cfg.n, cfg.c, cfg.h, cfg.w)).astype(dtype)
    weight = rng.standard_normal((c_out, cfg.c, cfg.kh, cfg.kw)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    oh = (cfg.h + cfg.pt + cfg.pb - cfg.dil_h * (cfg.kh - 1) - 1) // cfg.sh + 1
    ow = (cfg.w + cfg.pl + cfg.pr - cfg.dil_w * (cfg.kw - 1) - 1) // cfg.sw + 1
    dy = rng.standard_normal((cfg.n, c_out, oh, ow)).astype(dtype)
    want_y, want_dx, want_dw = _reference(x, weight, bias, dy, cfg)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4,
                                                                       atol=2e-4)
    msg = f"{name} c_out={c_out} bias={with_bias} relu={relu} {dtype.__name__} {cfg}"
    out = np.full(want_y.shape, 7.0, dtype)
    assert forward(x, weight, bias, cfg, out, relu) is out
    assert_allclose(out, np.maximum(want_y, 0) if relu else want_y, **tol,
                    err_msg="y " + msg)
    b_in = rng.standard_normal(cfg.c).astype(dtype) if with_bias else None
    want_x = want_dx + (0 if b_in is None else b_in.reshape(1, -1, 1, 1))
    into = np.full(x.shape, 3.0, dtype)
    assert adjoint(dy, weight, b_in, cfg, into, relu) is into
    assert_allclose(into, np.maximum(want_x, 0) if relu else want_x, **tol,
                    err_msg="dx " + msg)
    dw = wgrad(dy, x, weight, cfg)
    assert dw.shape == weight.shape and dw.dtype == dtype
    assert_allclose(dw, want_dw, **tol, err_msg="dW " + msg)


def _check_s1(cfg, c_out, with_bias, relu, dtype):
    _check_family("s1", dataclasses.replace(cfg, sh=1, sw=1), c_out, with_bias, relu,
                  dtype)


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
@pytest.mark.parametrize("stride", [1, 2])
def test_simd_paths_of_conv_layers_equal_numpy(dtype, stride):
    """conv2d and conv_transpose2d with several channels take the SIMD kernels on
    numba (stride 1: along the rows; stride 2: channels in the lanes): the same values
    and gradients as NumPy's columns, with a fused ReLU and its masked backward, with
    and without the input gradient."""
    from minicae import functional as F

    rng = np.random.default_rng(11 + stride)
    x = rng.standard_normal((5, 6, 14, 35)).astype(dtype)
    w = rng.standard_normal((10, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    z = rng.standard_normal((5, 10, 7, 17)).astype(dtype)
    bt = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=stride, padding=1)
    kt = dict(stride=stride, padding=2 // stride, dilation=3 - stride, output_padding=1)
    family = "numba.s1" if stride == 1 else "numba.cv"
    results = {}
    for name in ("numpy", "numba"):
        with backend_mod.use_backend(name), dispatch.use_policy("fixed"), \
                dispatch.trace() as calls:
            y = F.conv2d(x, w, b, relu=True, **kw)
            dy = np.cos(np.arange(y.size)).reshape(y.shape).astype(dtype)
            grads = F.conv2d_backward(dy, x, w, relu_out=y, **kw)
            no_dx = F.conv2d_backward(dy, x, w, relu_out=y, need_dx=False, **kw)
            assert no_dx[0] is None
            yt = F.conv_transpose2d(z, w, bt, **kt)
            dyt = np.sin(np.arange(yt.size)).reshape(yt.shape).astype(dtype)
            gt = F.conv_transpose2d_backward(dyt, z, w, **kt)
            results[name] = (y, *grads, *no_dx[1:], yt, *gt)
        assert {c.name for c in calls} == ({family} if name == "numba" else {"reference"})
    names = ("y", "dx", "dW", "db", "dW no dx", "db no dx", "yt", "dz", "dWt", "dbt")
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for got, want, what in zip(results["numba"], results["numpy"], names):
        assert got.dtype == dtype, what
        assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"{what} s{stride} "
                        f"{dtype.__name__}")


def test_stride1_kernels_are_not_taken_where_they_do_not_apply():
    """Strided, grouped, 1x1, one-output-channel and float16 convolutions are not
    taken by the stride-1 kernels, nor stride 1, grouped or one-output-channel ones
    by the strided kernels (their registered ``applies``)."""
    from minicae import functional as F
    from minicae.kernels import ConvCall

    with backend_mod.use_backend("numba") as be:
        found = {c.name: c for c in be.kernels.candidates if c.op == "conv2d"}

    def takes(name, c_in, c_out, k=3, s=1, groups=1, dtype=np.float32):
        g = F.conv_geometry((k, k), s, 1, 1, groups, where="test")
        oh, ow = g.output_hw(8, 8)
        return found[name].applies(ConvCall((2, c_in, 8, 8), (c_out, c_in // groups, k, k),
                                            np.dtype(dtype), g, (oh, ow), False, 1))

    assert takes("numba.s1", 4, 8)
    assert not takes("numba.s1", 4, 8, s=2)
    assert not takes("numba.s1", 4, 8, groups=2)
    assert not takes("numba.s1", 4, 8, k=1)
    assert not takes("numba.s1", 4, 1)                          # conv_direct's
    assert takes("numba.s1", 1, 8, k=5)
    assert not takes("numba.s1", 4, 8, dtype=np.float16)
    # strides above 1: the channel-vector kernels, except grouped and one-channel
    assert takes("numba.cv", 4, 8, s=2)
    assert not takes("numba.cv", 4, 8)
    assert not takes("numba.cv", 4, 8, s=2, groups=2)
    assert not takes("numba.cv", 4, 1, s=2)
    assert takes("numba.c1", 1, 8, s=2) and not takes("numba.c1", 1, 8, k=5)


@numba.njit
def _scatter_lanes(a, at, stride, src, hi):
    _simd.vscatter(a, at, stride, _simd.vload(src, 0, 0, _simd.lanes(src)), hi)
    return a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,hi", [(1, 99), (7, 5), (3, 0), (16, 16), (2, -1)])
def test_scatter_puts_lane_l_stride_l_apart(dtype, stride, hi):
    count = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    src = np.arange(1, count + 1, dtype=dtype)
    a = np.zeros(3 + stride * count + 1, dtype)
    got = _scatter_lanes(a, 3, stride, src, hi)
    want = np.zeros_like(a)
    for lane in range(max(0, min(hi, count))):
        want[3 + lane * stride] = src[lane]
    assert_array_equal(got, want)


def _check_strided(cfg, c_out, with_bias, relu, dtype):
    _check_family("cv", cfg, c_out, with_bias, relu, dtype)


@given(cfg=im2col_configs(max_c=5), c_out=st.integers(1, 10), with_bias=st.booleans(),
       relu=st.booleans())
def test_strided_simd_conv_matches_the_column_products(cfg, c_out, with_bias, relu):
    """conv_cv / _adjoint / _wgrad (channels in the lanes) equal W·cols + b,
    col2im(Wᵀ·dY) + b and dY·colsᵀ at any geometry: strides 1-3, dilation,
    asymmetric padding, kernels 1-4, partial blocks of channels and of pixels."""
    _check_strided(cfg, c_out, with_bias, relu, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,c_out,hw,stride", [(16, 32, 14, 2), (3, 40, 17, 2),
                                               (20, 5, 9, 3), (17, 33, 30, 2)])
def test_strided_simd_conv_channel_blocks(dtype, c, c_out, hw, stride):
    """More channels than one vector on both sides (float32: 16 lanes, float64: 8;
    the forward's block is two vectors), rows longer than one 7-pixel block."""
    cfg = Im2colConfig(n=2, c=c, h=hw, w=hw + 3, kh=3, kw=3, sh=stride, sw=stride,
                       pt=1, pb=1, pl=1, pr=0, dil_h=1, dil_w=1, seed=c + hw)
    for relu in (False, True):
        _check_strided(cfg, c_out, True, relu, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stride1_weight_gradient_in_groups_of_channel_blocks(dtype, monkeypatch):
    """With room for one block of 8 output channels at a time (many channels would
    otherwise need a large scratch), the weight gradient is the same."""
    from minicae.kernels import _numba_s1

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 9, 20)).astype(dtype)
    dy = rng.standard_normal((3, 19, 9, 20)).astype(dtype)
    w = np.empty((19, 5, 3, 3), dtype)
    whole = _numba.conv_s1_backward(dy, x, w, 1, 1, 1, 1)[0]
    monkeypatch.setattr(_numba_s1, "_SCRATCH_BYTES", 1)
    grouped = _numba.conv_s1_backward(dy, x, w, 1, 1, 1, 1)[0]
    assert_array_equal(grouped, whole)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", ["s1", "cv", "c1", "direct"])
def test_direct_kernels_on_numba_threads_equal_one_thread(family, dtype):
    """Each direct kernel with its images split over Numba threads (a prange over
    image ranges, ranges of unequal size) gives one thread's output and input
    gradient exactly, and its weight gradient up to the order of the range sums."""
    from minicae.kernels import _numba, _numba_c1, _numba_cv, _numba_s1

    rng = np.random.default_rng(5)
    c_in = 1 if family == "c1" else 5
    c_out = 1 if family == "direct" else 6
    stride = 2 if family in ("cv", "c1") else 1
    x = rng.standard_normal((7, c_in, 12, 11)).astype(dtype)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    oh, ow = (12 + 2 - 3) // stride + 1, (11 + 2 - 3) // stride + 1
    s = (stride, stride, 1, 1, 1, 1)              # sh, sw, pt, pl, dil_h, dil_w
    kernels = {
        "s1": (lambda x_, o, t: _numba_s1.conv_s1(x_, w, b, 1, 1, 1, 1, o, True, t),
               lambda d, o, t: _numba_s1.conv_s1_adjoint(d, w, 1, 1, 1, 1, o, None, True,
                                                         t),
               lambda d, t: _numba_s1.conv_s1_backward(d, x, w, 1, 1, 1, 1, threads=t)[0]),
        "cv": (lambda x_, o, t: _numba_cv.conv_cv(x_, w, b, *s, o, True, t),
               lambda d, o, t: _numba_cv.conv_cv_adjoint(d, w, None, *s, o, False, t),
               lambda d, t: _numba_cv.conv_cv_backward(d, x, w, *s, threads=t)[0]),
        "c1": (lambda x_, o, t: _numba_c1.conv_c1(x_, w, b, *s, o, True, t),
               lambda d, o, t: _numba_c1.conv_c1_adjoint(d, w, None, *s, o, False, t),
               lambda d, t: _numba_c1.conv_c1_wgrad(d, x, 3, 3, *s, relu_out=d,
                                                    threads=t)[0]),
        "direct": (lambda x_, o, t: _numba.conv_direct(x_, w, b, 1, 1, 1, 1, 1, 1, 1, 1, o,
                                                       threads=t),
                   lambda d, o, t: _numba.conv_direct_adjoint(d, w, 12, 11, 1, 1, 1, 1, 1, 1,
                                                              1, 1, out=o, threads=t),
                   lambda d, t: _numba.conv_direct_wgrad(d, x, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1,
                                                         threads=t)),
    }
    forward, adjoint, wgrad = kernels[family]
    outs = {}
    for threads in (1, 3):
        y = forward(x, np.empty((7, c_out, oh, ow), dtype), threads)
        dx = adjoint(y, np.empty_like(x), threads)
        outs[threads] = (y, dx, wgrad(y, threads))
    assert_array_equal(outs[3][0], outs[1][0])
    assert_array_equal(outs[3][1], outs[1][1])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose(outs[3][2], outs[1][2], rtol=tol, atol=tol * np.abs(outs[1][2]).max())
    assert np.abs(outs[1][2]).max() > 0


@given(n=st.integers(1, 9), c=st.integers(1, 5), h=st.integers(1, 7), w=st.integers(1, 19),
       dtype=st.sampled_from(DTYPES))
def test_channel_sums_match_a_loop(n, c, h, w, dtype):
    """A bias gradient's vector sums per (image, channel) plane equal a float64 loop
    over images and pixels."""
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    dy = rng.standard_normal((n, c, h, w)).astype(dtype)
    want = np.zeros(c)
    for i in range(n):
        for ch in range(c):
            for p in range(h):
                for q in range(w):
                    want[ch] += float(dy[i, ch, p, q])
    got = _numba.channel_sums(dy)
    assert got.dtype == dtype and got.shape == (c,)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose(got, want, rtol=tol, atol=tol * n * h * w)


def _range_sums(d, threads):
    """Σ dY per channel as the one-call backwards sum it: per range of images (as
    kernels/_numba_ranges.image_range splits them), then over ranges in order."""
    n = d.shape[0]
    threads = min(threads, n)
    total = _numba.channel_sums(d[:n // threads])
    for t in range(1, threads):
        total += _numba.channel_sums(d[t * n // threads:(t + 1) * n // threads])
    return total


@given(n=st.integers(1, 7), threads=st.integers(1, 3), relu=st.booleans(),
       need_dx=st.booleans(), family=st.sampled_from(["cv", "cv_t", "c1_t", "s1", "s1_t"]),
       dtype=st.sampled_from(DTYPES))
def test_one_call_backwards_equal_their_parts_called_in_turn(n, threads, relu, need_dx,
                                                             family, dtype):
    """A whole backward in one parallel region (conv_cv_backward, conv_cv_t_backward,
    conv_c1_t_backward, conv_s1_backward) gives exactly what its parts give called
    one after the other on the same threads: dY masked by [relu_out > 0] (a NaN in
    dY stays NaN), the input gradient (the family's forward or adjoint), the weight
    gradient (the convolution's backward on the masked dY, without input gradient;
    for the one-channel family conv_c1_wgrad) and the bias gradient."""
    from minicae.kernels import _numba_c1, _numba_cv, _numba_s1

    rng = np.random.default_rng(n * 100 + threads * 10 + relu)
    stride = 1 if family.startswith("s1") else 2
    s = (stride, stride, 1, 1, 1, 1)              # sh, sw, pt, pl, dil_h, dil_w
    small = (6, 6) if stride == 2 else (12, 11)
    if not family.endswith("_t"):   # conv 5 -> 6 channels, 12x11 -> small
        x, dy = rng.standard_normal((n, 5, 12, 11)), rng.standard_normal((n, 6, *small))
        w = rng.standard_normal((6, 5, 3, 3))
    else:                           # transposed 6 (c1_t: 4) -> 5 (c1_t: 1), small -> 12x11
        c_in, c_out = (4, 1) if family == "c1_t" else (6, 5)
        x, dy = rng.standard_normal((n, c_in, *small)), rng.standard_normal((n, c_out, 12, 11))
        w = rng.standard_normal((c_in, c_out, 3, 3))
    x, dy, w = x.astype(dtype), dy.astype(dtype), w.astype(dtype)
    relu_out = np.maximum(rng.standard_normal(dy.shape), 0).astype(dtype) if relu else None
    dy.flat[0] = np.nan
    if relu:
        relu_out.flat[0] = 0.0
    d = dy * (relu_out > 0).astype(dtype) if relu else dy
    dx, want_dx = (np.empty_like(x), np.empty_like(x)) if need_dx else (None, None)
    kw = dict(relu_out=relu_out, dx=dx, threads=threads)
    if family == "cv":
        dw, db = _numba_cv.conv_cv_backward(dy, x, w, *s, **kw)
        if need_dx:
            _numba_cv.conv_cv_adjoint(d, w, None, *s, want_dx, threads=threads)
        want_dw = _numba_cv.conv_cv_backward(d, x, w, *s, threads=threads)[0]
    elif family == "cv_t":
        dw, db = _numba_cv.conv_cv_t_backward(dy, x, w, *s, **kw)
        if need_dx:
            _numba_cv.conv_cv(d, w, None, *s, want_dx, threads=threads)
        want_dw = _numba_cv.conv_cv_backward(x, d, w, *s, threads=threads)[0]
    elif family == "c1_t":
        dw, db = _numba_c1.conv_c1_t_backward(dy, x, w, *s, **kw)
        if need_dx:
            _numba_c1.conv_c1(d, w, None, *s, want_dx, threads=threads)
        want_dw = _numba_c1.conv_c1_wgrad(x, d, 3, 3, *s, threads=threads)[0]
    else:
        transposed = family == "s1_t"
        dw, db = _numba_s1.conv_s1_backward(dy, x, w, *s[2:], transposed=transposed, **kw)
        if need_dx and transposed:
            _numba_s1.conv_s1(d, w, None, *s[2:], want_dx, threads=threads)
        elif need_dx:
            _numba_s1.conv_s1_adjoint(d, w, *s[2:], want_dx, threads=threads)
        want_dw = _numba_s1.conv_s1_backward(x if transposed else d, d if transposed else x,
                                             w, *s[2:], threads=threads)[0]
    if need_dx:
        assert_array_equal(dx, want_dx)
    assert dw.dtype == db.dtype == dtype and dw.shape == w.shape
    assert_array_equal(dw, want_dw)
    assert_array_equal(db, _range_sums(d, threads))
    assert np.isnan(db[0]) and not np.isnan(db[1:]).any()


def _strided_copy(a):
    """The values of ``a`` in a view of every other column of a wider array
    (non-contiguous unless ``a`` holds one value)."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2]
    wide[...] = a
    assert a.size == 1 or not wide.flags.c_contiguous
    return wide


@pytest.mark.slow
@pytest.mark.parametrize("family,x_shape,w_shape,stride", [
    ("cv", (3, 16, 14, 14), (32, 16, 3, 3), 2),
    ("s1", (3, 16, 14, 14), (16, 16, 3, 3), 1),
    ("c1", (3, 1, 28, 28), (16, 1, 3, 3), 2),
    ("direct", (3, 16, 14, 14), (1, 16, 3, 3), 1)])
def test_direct_kernels_take_non_contiguous_arrays(family, x_shape, w_shape, stride):
    """conv2d, conv_transpose2d and their backwards on numba, given non-contiguous
    input, weight, bias and output gradient (views, as a user's slices are), give
    NumPy's values: the direct kernels' wrappers make them contiguous (the strided
    family used to fail to compile for them)."""
    from minicae import functional as F

    rng = np.random.default_rng(len(family))
    kw = dict(stride=stride, padding=1)
    kt = dict(kw, output_padding=stride - 1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b, bt = (rng.standard_normal(w_shape[i]).astype(np.float32) for i in (0, 1))
    results = {}
    for name, view in (("numpy", lambda a: a), ("numba", _strided_copy)):
        with backend_mod.use_backend(name):
            y = F.conv2d(view(x), view(w), view(b), **kw)
            dy = np.cos(np.arange(y.size)).reshape(y.shape).astype(np.float32)
            yt = F.conv_transpose2d(view(y), view(w), view(bt), **kt)
            dyt = np.sin(np.arange(yt.size)).reshape(yt.shape).astype(np.float32)
            results[name] = (y, *F.conv2d_backward(view(dy), view(x), view(w), **kw), yt,
                             *F.conv_transpose2d_backward(view(dyt), view(y), view(w), **kt))
    for got, want, what in zip(results["numba"], results["numpy"],
                               ("y", "dx", "dW", "db", "yt", "dy", "dWt", "dbt")):
        assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=f"{what} {family}")
