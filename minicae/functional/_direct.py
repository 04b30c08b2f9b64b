"""The convolutions that run without columns, and when they do (Numba backend).

Four kernel families in the active kernel set replace im2col + GEMM for the
shapes where the columns cost more than they save:

* ``conv_direct*`` -- one output channel at stride 1 (the GEMM would be a
  matrix-vector product);
* ``conv_c1*`` -- one input channel (a CAE's first layer, and the transposed
  convolution back to one channel), through phase planes;
* ``conv_s1*`` -- every other stride-1 convolution, with register-blocked
  SIMD loops along the image rows (kernels/_numba_s1.py);
* ``conv_cv*`` -- every other strided convolution, with the channels in the
  SIMD lanes (kernels/_numba_cv.py).

Only grouped convolutions (and non-float dtypes) keep the columns on Numba.

Each function here returns the callables that conv.py runs per chunk of images,
or None when the columns stay; every callable takes the weight (the choice
depends on shapes only, so conv.py remembers it per call signature) and
``threads``, the Numba threads its kernel splits the chunk's images over. A
backward is one call: the strided, stride-1 and one-channel transposed families
mask dY, compute the input gradient and sum dW and db on each thread's images in
one parallel region (round 11); the narrower kernels call their parts in turn.
Every rule cites the benchmark row that set it.
"""

from __future__ import annotations

from ._common import active
from ._gemm import _bias_grad, _chunk_dy, _relu_inplace
from ._geometry import ConvGeometry

__all__ = ["forward", "adjoint", "conv_backward", "conv_t_backward"]


def _simd_dtype(dtype):
    """float32 or float64 (``dtype.name`` is a slow property; this runs per call)."""
    return dtype.kind == "f" and dtype.itemsize in (4, 8)


def _direct_kernels(c_out, g: ConvGeometry):
    """The active kernels when their direct convolution pays for this conv2d, else None.

    Measured rule (benchmarks/README.md, round 2): one output channel, one
    group, stride 1 -- the GEMM is then a matrix-vector product and the columns
    (K times the input) cost more than the product.
    """
    kernels = active().kernels
    if (kernels.conv_direct is None or g.groups != 1 or c_out != 1
            or (g.sh, g.sw) != (1, 1)):
        return None
    return kernels


def _c1_kernels(c_in, g: ConvGeometry):
    """The active kernels when their one-input-channel direct convolution pays
    for this geometry (``c_in`` = the convolution's input channels), else None.

    Measured (one thread, N128 1->16 28² k3 s2 p1; benchmarks/README.md, round
    7): forward 0.46 -> 0.24 ms, input gradient 0.28 ms where col2im's whole
    backward took 1.0, weight gradient 0.38 -> 0.25 ms.
    """
    kernels = active().kernels
    if (kernels.conv_c1 is None or c_in != 1 or g.groups != 1
            or (g.kh, g.kw, g.sh, g.sw, g.dil_h, g.dil_w) not in kernels.c1_geometries):
        return None
    return kernels


def _s1_kernels(x, c_in, c_out, g: ConvGeometry):
    """The active kernels when their stride-1 SIMD convolution serves this
    geometry (``c_in``/``c_out`` the convolution's channels), else None: groups 1,
    stride 1, a kernel larger than 1x1, float32 or float64, and neither of the
    two narrower kernels above takes the shape.

    Measured (one thread, fwd / dx / dW, ms; benchmarks/README.md, round 8):
    N64 16->16 28² 1.94 / 1.94 / 2.77 (119, 119, 83 GFLOP/s) where im2col + GEMM
    took 5.0 forward and 10.7 backward; N32 64->64 32² 20.8 / 20.9 / 28.8 where
    it took 32.3 and 52.7.
    """
    kernels = active().kernels
    if (kernels.conv_s1 is None or g.groups != 1 or (g.sh, g.sw) != (1, 1)
            or g.kh * g.kw == 1 or not _simd_dtype(x.dtype)
            or c_out == 1 or (c_in == 1 and _c1_kernels(c_in, g) is not None)):
        return None
    return kernels


def _cv_kernels(x, c_in, c_out, g: ConvGeometry):
    """The active kernels when their strided SIMD convolution (the channels in the
    lanes) serves this geometry, else None: groups 1, a stride above 1, float32 or
    float64, and the one-channel kernels do not take the shape.

    Measured (one thread, fwd / dx / dW, ms; benchmarks/README.md, round 8):
    N128 16->32 14² s2 0.69 / 0.76 / 0.81 where im2col + GEMM took 1.40
    forward and 2.58 backward; N64 16->16 28² s2 3.98 in all against 5.57;
    N128 32->64 7² s2 even (3.55 vs 3.52). Two threads, strided CAE step
    7.25-7.41 -> 5.45-5.93 ms.
    """
    kernels = active().kernels
    if (kernels.conv_cv is None or g.groups != 1 or (g.sh, g.sw) == (1, 1)
            or not _simd_dtype(x.dtype) or c_out == 1
            or (c_in == 1 and _c1_kernels(c_in, g) is not None)):
        return None
    return kernels


def _s1_args(g: ConvGeometry):
    return g.pt, g.pl, g.dil_h, g.dil_w


def _c1_args(g: ConvGeometry):
    return g.sh, g.sw, g.pt, g.pl, g.dil_h, g.dil_w


def forward(x, c_out, g: ConvGeometry):
    """``f(x, weight, bias, out, relu, threads)``: out = W ⋆ x (+ b, then max(·, 0))
    for this conv2d (to ``c_out`` channels) without columns, its images split over
    ``threads`` Numba threads, or None."""
    c1_args, s1_args = _c1_args(g), _s1_args(g)   # once per plan, not per call
    direct = _direct_kernels(c_out, g)
    if direct is not None:
        def run(xs, weight, bias, out, relu, threads):
            direct.conv_direct(xs, weight, bias, *g.kernel_args(), out=out, threads=threads)
            if relu:
                _relu_inplace(out)
        return run
    c1 = _c1_kernels(x.shape[1], g)
    if c1 is not None:
        return lambda xs, weight, bias, out, relu, threads: c1.conv_c1(
            xs, weight, bias, *c1_args, out, relu=relu, threads=threads)
    s1 = _s1_kernels(x, x.shape[1], c_out, g)
    if s1 is not None:
        return lambda xs, weight, bias, out, relu, threads: s1.conv_s1(
            xs, weight, bias, *s1_args, out, relu=relu, threads=threads)
    cv = _cv_kernels(x, x.shape[1], c_out, g)
    if cv is not None:
        return lambda xs, weight, bias, out, relu, threads: cv.conv_cv(
            xs, weight, bias, *c1_args, out, relu=relu, threads=threads)
    return None


def adjoint(y, g: ConvGeometry, c_in):
    """``f(y, weight, bias, out, relu, threads)``: out = Wᵀ ⋆ y (+ b, then max(·, 0)),
    the transposed convolution to ``c_in`` channels without columns, or None."""
    c1_args, s1_args = _c1_args(g), _s1_args(g)   # once per plan, not per call
    c1 = _c1_kernels(c_in, g)
    if c1 is not None:
        return lambda ys, weight, bias, out, relu, threads: c1.conv_c1_adjoint(
            ys, weight, bias, *c1_args, out, relu=relu, threads=threads)
    s1 = _s1_kernels(y, c_in, y.shape[1], g)
    if s1 is not None:
        return lambda ys, weight, bias, out, relu, threads: s1.conv_s1_adjoint(
            ys, weight, *s1_args, out, bias=bias, relu=relu, threads=threads)
    cv = _cv_kernels(y, c_in, y.shape[1], g)
    if cv is not None:
        return lambda ys, weight, bias, out, relu, threads: cv.conv_cv_adjoint(
            ys, weight, bias, *c1_args, out, relu=relu, threads=threads)
    return None


def conv_backward(x, c_out, g: ConvGeometry):
    """``run(dy, x, weight, relu_out, dx, threads) -> (dW, db)``: the backward without
    columns of the direct convolution that pays for this conv2d (to ``c_out``
    channels), or None. dY is first masked by [relu_out > 0] when a fused ReLU's
    output is given; the input gradient goes into ``dx`` when given. The strided and
    stride-1 families run it all in one parallel region (kernels' ``conv_cv_backward``,
    ``conv_s1_backward``)."""
    c1_args, s1_args = _c1_args(g), _s1_args(g)   # once per plan, not per call
    direct = _direct_kernels(c_out, g)
    if direct is not None:                  # mask, adjoint, wgrad, bias: a call each
        args = g.kernel_args()

        def run_direct(dy, x, weight, relu_out, dx, t):
            dy = _chunk_dy(dy, slice(None), relu_out)
            if dx is not None:
                direct.conv_direct_adjoint(dy, weight, dx.shape[2], dx.shape[3], *args,
                                           out=dx, threads=t)
            return (direct.conv_direct_wgrad(dy, x, g.kh, g.kw, *args, threads=t),
                    _bias_grad(dy))
        return run_direct
    c1 = _c1_kernels(x.shape[1], g)
    if c1 is not None:
        def run_c1(dy, x, weight, relu_out, dx, t):
            if dx is not None:
                dy, relu_out = _chunk_dy(dy, slice(None), relu_out), None
                c1.conv_c1_adjoint(dy, weight, None, *c1_args, dx, threads=t)
            # the weight gradient masks dY itself (conv 1->16 backward after a
            # ReLU, N128 28² s2, one thread: 0.55 -> 0.42 ms) and sums db
            return c1.conv_c1_wgrad(dy, x, g.kh, g.kw, *c1_args, relu_out=relu_out,
                                    threads=t)
        return run_c1
    s1 = _s1_kernels(x, x.shape[1], c_out, g)
    if s1 is not None:
        return lambda dy, x, weight, r, dx, t: s1.conv_s1_backward(
            dy, x, weight, *s1_args, relu_out=r, dx=dx, threads=t)
    cv = _cv_kernels(x, x.shape[1], c_out, g)
    if cv is not None:
        return lambda dy, x, weight, r, dx, t: cv.conv_cv_backward(
            dy, x, weight, *c1_args, relu_out=r, dx=dx, threads=t)
    return None


def conv_t_backward(x, dy, g: ConvGeometry):
    """``run(dy, x, weight, relu_out, dx, threads) -> (dW, db)`` of y =
    conv_transpose(x, W) without columns, as :func:`conv_backward`'s, or None: dx =
    W ⋆ dY, the convolution, and dW[c, o] = Σ x[c] ⋆ dY[o], the convolution's
    weight gradient with x in the place of dY. Every family here runs it in one
    parallel region."""
    c1_args, s1_args = _c1_args(g), _s1_args(g)   # once per plan, not per call
    c1 = _c1_kernels(dy.shape[1], g)
    if c1 is not None:
        return lambda d, xs, weight, r, dx, t: c1.conv_c1_t_backward(
            d, xs, weight, *c1_args, relu_out=r, dx=dx, threads=t)
    s1 = _s1_kernels(x, dy.shape[1], x.shape[1], g)
    if s1 is not None:
        return lambda d, xs, weight, r, dx, t: s1.conv_s1_backward(
            d, xs, weight, *s1_args, relu_out=r, dx=dx, threads=t, transposed=True)
    cv = _cv_kernels(x, dy.shape[1], x.shape[1], g)
    if cv is not None:
        return lambda d, xs, weight, r, dx, t: cv.conv_cv_t_backward(
            d, xs, weight, *c1_args, relu_out=r, dx=dx, threads=t)
    return None
