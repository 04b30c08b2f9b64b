"""im2col_kn / col2im_kn / adam_update as CuPy elementwise kernels (one GPU thread per
output cell).

``col2im_kn`` gathers: each thread owns one input pixel and sums the column
entries that read it, so the result is deterministic and needs no atomics.
``adam_update`` is Adam's ten array operations in one launch (a GPU step of a
small model is bound by launches, benchmarks/history.md round 9), each rounded
once as NumPy rounds it. Written against CuPy's documented ``ElementwiseKernel``
API.
"""

from __future__ import annotations

import cupy

__all__ = ["im2col_kn", "col2im_kn", "adam_update"]

_IM2COL_KN = cupy.ElementwiseKernel(
    "raw T x, int32 n_img, int32 c, int32 h, int32 w, int32 kh, int32 kw, int32 oh, "
    "int32 ow, int32 sh, int32 sw, int32 pt, int32 pl, int32 dil_h, int32 dil_w",
    "T cols",
    """
    // i indexes cols of shape (C, kh, kw, N, oh, ow), C-contiguous
    int q = i % ow;
    int p = (i / ow) % oh;
    int b = (i / (ow * oh)) % n_img;
    int j = (i / (ow * oh * n_img)) % kw;
    int ki = (i / (ow * oh * n_img * kw)) % kh;
    int ch = i / (ow * oh * n_img * kw * kh);
    int row = p * sh - pt + ki * dil_h;
    int col = q * sw - pl + j * dil_w;
    if (row >= 0 && row < h && col >= 0 && col < w) {
        cols = x[((b * c + ch) * h + row) * w + col];
    } else {
        cols = (T)0;
    }
    """,
    "minicae_im2col_kn",
)

_COL2IM_KN = cupy.ElementwiseKernel(
    "raw T cols, int32 n_img, int32 c, int32 h, int32 w, int32 kh, int32 kw, int32 oh, "
    "int32 ow, int32 sh, int32 sw, int32 pt, int32 pl, int32 dil_h, int32 dil_w",
    "T x",
    """
    // i indexes x of shape (N, C, h, w); gather every (ki, j, p, q) that read it,
    // in a fixed order: deterministic, no atomics
    int s = i % w;
    int r = (i / w) % h;
    int ch = (i / (w * h)) % c;
    int b = i / (w * h * c);
    T acc = (T)0;
    for (int ki = 0; ki < kh; ++ki) {
        int y = r + pt - ki * dil_h;
        if (y < 0 || y % sh != 0) continue;
        int p = y / sh;
        if (p >= oh) continue;
        for (int j = 0; j < kw; ++j) {
            int z = s + pl - j * dil_w;
            if (z < 0 || z % sw != 0) continue;
            int q = z / sw;
            if (q >= ow) continue;
            acc += cols[((((ch * kh + ki) * kw + j) * n_img + b) * oh + p) * ow + q];
        }
    }
    x = acc;
    """,
    "minicae_col2im_kn",
)


# IEEE operations rounded to nearest that the compiler may never merge into a
# fused multiply-add (CUDA's __f*_rn / __d*_rn intrinsics): NumPy rounds every
# product before the sum, and so must this kernel to give its results.
_ROUNDED = """
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ inline double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ inline double sqrt_rn(double a) { return __dsqrt_rn(a); }
"""

_ADAM = cupy.ElementwiseKernel(
    "T g, T beta1, T c1, T beta2, T c2, T sqrt_bias2, T eps, T step",
    "T p, T m, T v",
    """
    // m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    T mi = add_rn(mul_rn(m, beta1), mul_rn(c1, g));
    T vi = add_rn(mul_rn(v, beta2), mul_rn(c2, mul_rn(g, g)));
    // p <- p - (lr / (1 - b1^t)) (m / (sqrt(v) / sqrt(1 - b2^t) + eps))
    T denom = add_rn(div_rn(sqrt_rn(vi), sqrt_bias2), eps);
    p = sub_rn(p, mul_rn(step, div_rn(mi, denom)));
    m = mi;
    v = vi;
    """,
    "minicae_adam",
    preamble=_ROUNDED,
)


def adam_update(param, grad, exp_avg, exp_avg_sq, beta1, beta2, sqrt_bias2, eps, step):
    """One Adam step in place in one launch (see kernels/_numba_optim.py for the
    formulas): ``step`` is η/(1−β₁ᵗ), ``sqrt_bias2`` is √(1−β₂ᵗ); the scalars are
    rounded to the arrays' dtype, as NumPy rounds a Python float with an array."""
    _ADAM(grad, beta1, 1 - beta1, beta2, 1 - beta2, sqrt_bias2, eps, step,
          param, exp_avg, exp_avg_sq)


def _buffer(out, shape, dtype):
    if out is None:
        return cupy.empty(shape, dtype=dtype)
    assert out.flags.c_contiguous and out.dtype == dtype   # a reshape must be a view
    return out.reshape(shape)


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """im2col in GEMM layout (C, kh, kw, N, oh, ow); see kernels/_numpy.py."""
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    x = cupy.ascontiguousarray(x)
    cols = _buffer(out, (c, kh, kw, n, oh, ow), x.dtype)
    _IM2COL_KN(x, n, c, h, w, kh, kw, oh, ow, sh, sw, pt, pl, dil_h, dil_w, cols)
    return cols


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """The adjoint of :func:`im2col_kn`: x of shape (N, C, h, w)."""
    c, kh, kw, n, oh, ow = cols.shape
    cols = cupy.ascontiguousarray(cols)
    x = _buffer(out, (n, c, h, w), cols.dtype)
    _COL2IM_KN(cols, n, c, h, w, kh, kw, oh, ow, sh, sw, pt, pl, dil_h, dil_w, x)
    return x
