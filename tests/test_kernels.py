"""The im2col/col2im pairs against their definitions: the reference's (functional/
conv.py, on every backend's xp) and the column kernels of Numba and CuPy.

``cols[c, i, j, n, p, q] = x_pad[n, c, p*sh + i*dil_h, q*sw + j*dil_w]`` (GEMM
layout; the reference's own layout (N, C, kh, kw, oh, ow) is transposed to it
here) and ``col2im_kn`` is its adjoint: ⟨im2col_kn(x), c⟩ = ⟨x, col2im_kn(c)⟩.
Every pair is checked for parity with the reference on NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
import columns
from numpy.testing import assert_allclose, assert_array_equal
from strategies import im2col_configs

from minicae import backend as backend_mod
from minicae import to_device, to_numpy


class _Module:
    """A backend's column kernels (its kernels/_<backend>.py)."""

    def __init__(self, name, module):
        self.name, self.im2col_kn, self.col2im_kn = name, module.im2col_kn, module.col2im_kn


_PAIRS = {"numpy": "reference", "numba": "minicae.kernels._numba",
          "cupy": "minicae.kernels._cupy"}


@pytest.fixture(params=["numpy", "numba", "cupy"])
def pair(request):
    """(the backend active, its im2col_kn/col2im_kn pair): the reference's on NumPy,
    the backend's column kernels elsewhere (CuPy skips without a GPU)."""
    import importlib

    ok, reason = backend_mod.available_backends()[request.param]
    if not ok:
        pytest.skip(f"{request.param} backend: {reason}")
    with backend_mod.use_backend(request.param):
        if _PAIRS[request.param] == "reference":
            yield _Module("reference", columns)
        else:
            yield _Module(request.param, importlib.import_module(_PAIRS[request.param]))


def im2col_definition(x, cfg):
    """The defining loop: read each tap of each window (zero outside the image).

    Columns in GEMM layout (C, kh, kw, N, oh, ow).
    """
    n, c, h, w = x.shape
    oh = (h + cfg.pt + cfg.pb - cfg.dil_h * (cfg.kh - 1) - 1) // cfg.sh + 1
    ow = (w + cfg.pl + cfg.pr - cfg.dil_w * (cfg.kw - 1) - 1) // cfg.sw + 1
    cols = np.zeros((c, cfg.kh, cfg.kw, n, oh, ow))
    for i in range(cfg.kh):
        for j in range(cfg.kw):
            for p in range(oh):
                for q in range(ow):
                    row = p * cfg.sh + i * cfg.dil_h - cfg.pt
                    col = q * cfg.sw + j * cfg.dil_w - cfg.pl
                    if 0 <= row < h and 0 <= col < w:
                        cols[:, i, j, :, p, q] = x[:, :, row, col].T
    return cols


def _x(cfg, dtype=np.float64):
    return np.random.default_rng(cfg.seed).standard_normal(
        (cfg.n, cfg.c, cfg.h, cfg.w)).astype(dtype)


@given(cfg=im2col_configs())
def test_im2col_kn_matches_definition(pair, cfg):
    x = _x(cfg)
    cols = to_numpy(pair.im2col_kn(to_device(x), *cfg.args()))
    assert_array_equal(cols, im2col_definition(x, cfg), err_msg=f"{pair.name} {cfg}")


@given(cfg=im2col_configs())
def test_col2im_kn_is_adjoint_of_im2col_kn(pair, cfg):
    x = _x(cfg)
    cols = pair.im2col_kn(to_device(x), *cfg.args())
    c = np.random.default_rng(cfg.seed + 1).standard_normal(cols.shape)
    back = to_numpy(pair.col2im_kn(to_device(c), cfg.h, cfg.w, *cfg.geometry()))
    assert back.shape == x.shape, f"{pair.name} {cfg}"
    # ⟨im2col_kn(x), c⟩ = ⟨x, col2im_kn(c)⟩
    lhs = float(np.sum(to_numpy(cols) * c))
    rhs = float(np.sum(x * back))
    assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12, err_msg=f"{pair.name} {cfg}")


@given(cfg=im2col_configs())
def test_col2im_kn_counts_every_read(pair, cfg):
    """col2im_kn of all-ones columns counts how many windows read each pixel."""
    cols_shape = pair.im2col_kn(to_device(_x(cfg)), *cfg.args()).shape
    counts = to_numpy(pair.col2im_kn(to_device(np.ones(cols_shape)), cfg.h,
                                                cfg.w, *cfg.geometry()))
    expected = np.zeros((cfg.h, cfg.w))
    for i in range(cfg.kh):
        for j in range(cfg.kw):
            for p in range(cols_shape[4]):
                for q in range(cols_shape[5]):
                    row = p * cfg.sh + i * cfg.dil_h - cfg.pt
                    col = q * cfg.sw + j * cfg.dil_w - cfg.pl
                    if 0 <= row < cfg.h and 0 <= col < cfg.w:
                        expected[row, col] += 1
    assert_array_equal(counts, np.broadcast_to(expected, counts.shape),
                       err_msg=f"{pair.name} {cfg}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(cfg=im2col_configs())
def test_kernel_parity_with_numpy(other_backend, dtype, cfg):
    x = _x(cfg, dtype)
    import importlib

    with backend_mod.use_backend("numpy"):
        cols_ref = columns.im2col_kn(x, *cfg.args())
        back_ref = columns.col2im_kn(cols_ref, cfg.h, cfg.w, *cfg.geometry())
    with backend_mod.use_backend(other_backend):
        be = importlib.import_module(_PAIRS[other_backend])
        cols = be.im2col_kn(to_device(x), *cfg.args())
        back = be.col2im_kn(cols, cfg.h, cfg.w, *cfg.geometry())
        cols, back = to_numpy(cols), to_numpy(back)
    assert cols.dtype == dtype and back.dtype == dtype
    assert_array_equal(cols, cols_ref, err_msg=f"{other_backend} {cfg}")
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    assert_allclose(back, back_ref, rtol=rtol, atol=rtol * (1 + np.abs(back_ref).max()),
                    err_msg=f"{other_backend} {cfg}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_preserve_dtype(pair, dtype):
    x = to_device(np.arange(2 * 3 * 5 * 4, dtype=dtype).reshape(2, 3, 5, 4))
    cols = pair.im2col_kn(x, 3, 2, 2, 1, 1, 0, 0, 1, 1, 2)
    back = pair.col2im_kn(cols, 5, 4, 2, 1, 1, 0, 0, 1, 1, 2)
    assert cols.dtype == dtype and back.dtype == dtype


def test_kernels_accept_non_contiguous_input(pair):
    base = np.random.default_rng(0).standard_normal((2, 3, 10, 7))
    views = {"strided rows": base[:, :, ::2], "transposed": base.transpose(0, 1, 3, 2),
             "channel slice": base[:, 1:]}
    for label, view in views.items():
        assert not view.flags.c_contiguous
        got = to_numpy(pair.im2col_kn(to_device(view),
                                                 2, 3, 1, 2, 1, 1, 0, 2, 1, 1))
        want = to_numpy(pair.im2col_kn(to_device(np.ascontiguousarray(view)),
                                                  2, 3, 1, 2, 1, 1, 0, 2, 1, 1))
        assert_array_equal(got, want, err_msg=f"{pair.name} {label}")
        cols = got.transpose(0, 1, 2, 3, 5, 4).copy().transpose(0, 1, 2, 3, 5, 4)
        assert_allclose(to_numpy(pair.col2im_kn(to_device(cols), *view.shape[2:],
                                                           1, 2, 1, 1, 0, 2, 1, 1)),
                        to_numpy(pair.col2im_kn(to_device(got), *view.shape[2:],
                                                           1, 2, 1, 1, 0, 2, 1, 1)),
                        rtol=1e-12, atol=1e-12, err_msg=f"{pair.name} {label} col2im_kn")


def test_col2im_kn_when_the_stride_skips_trailing_rows(pair):
    """H=6, k=2, s=3: rows 2 and 5 are read by no window and get zero gradient."""
    x = np.arange(1.0, 1 + 6 * 6).reshape(1, 1, 6, 6)
    cols = pair.im2col_kn(to_device(x), 2, 2, 3, 3, 0, 0, 0, 0, 1, 1)
    assert cols.shape == (1, 2, 2, 1, 2, 2)
    back = to_numpy(pair.col2im_kn(cols, 6, 6, 3, 3, 0, 0, 0, 0, 1, 1))
    mask = np.zeros((6, 6), dtype=bool)
    mask[[0, 1, 3, 4]] = True
    mask &= np.array([True, True, False, True, True, False])[None, :]
    assert_array_equal(back[0, 0], np.where(mask, x[0, 0], 0.0))
