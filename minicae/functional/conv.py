r"""2-D convolution and transposed convolution, forward and backward.

Notation: ``n`` batch, ``c_in``/``c_out`` channels, ``g`` groups,
``kh``/``kw`` kernel, ``oh``/``ow`` output size, ``K = (c_in/g)*kh*kw`` the
length of one column, ``P = oh*ow`` the number of output pixels.

Everything here is built from three products on one im2col/col2im pair:

* ``_forward_part``  y  = W · im2col(x)          (the convolution)
* ``_adjoint_part``  x' = col2im(Wᵀ · y)         (its adjoint, the transposed
  convolution)
* the weight gradient dW = Σ_n dY · im2col(x)ᵀ

``conv2d_backward`` takes its input gradient from the adjoint product and
``conv_transpose2d_backward`` takes its input gradient from the forward one,
so the transposed convolution is the adjoint of the convolution by
construction, not by a second copy of the index maths.

On the Numba backend the ungrouped float convolutions skip the columns
(``_direct``: one output channel at stride 1, one input channel, and
register-blocked SIMD kernels at stride 1 and at larger strides), per image
group on threads; the columns serve NumPy, CuPy, grouped convolutions and 1x1
kernels at stride 1.

The columns are kept in GEMM layout (C_in, kh, kw, n, oh, ow): reshaped to
(K, n*P) they are one operand, so a whole chunk of images is one matrix
product per group; outputs and gradients are transposed to (C, n*P) and back
around it (``_gemm._to_kn`` / ``_from_kn``), which costs K times less than the
columns. Intermediates live in reused per-thread work buffers.

The columns of a batch are built in chunks of images so that they never take
more than :func:`get_workspace_limit` bytes, and on the CPU no more than a
cache-sized 4 MiB (results are identical up to the order of the sums over
chunks). On the CPU with a multi-threaded BLAS, the chunks of a large enough
call run on one thread per core, each with a one-thread BLAS (see
``_parallel``); the weight gradient is then summed per thread, then over
threads in chunk order.
"""

from __future__ import annotations

from .._validation import as_pair, check_positive_int
from ..errors import ShapeError
from . import _direct
from ._common import active, check_input, check_same_dtype
from ._gemm import (_chunk_dy, _matmul, _matmul_nt, _product_nchw,
                    _relu_inplace, _small_k, _to_kn, _wgrad_per_image, _work)
from ._parallel import kernel_threads, run_groups, thread_groups
from ._plans import _planned, _sig
from ._geometry import (ConvGeometry, check_fits, conv_geometry,
                        conv_transpose_output_size)

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d",
           "conv_transpose2d_backward", "set_workspace_limit", "get_workspace_limit"]

_WORKSPACE_LIMIT = [256 * 2**20]


def set_workspace_limit(nbytes):
    """Bound the im2col columns of one call to ``nbytes`` (default 256 MiB).

    A batch whose columns would be larger is processed in chunks of images;
    the results are identical. Returns the previous limit.
    """
    previous = _WORKSPACE_LIMIT[0]
    _WORKSPACE_LIMIT[0] = check_positive_int(nbytes, where="set_workspace_limit",
                                             name="nbytes")
    return previous


def get_workspace_limit():
    """The current bound, in bytes, on one call's im2col columns."""
    return _WORKSPACE_LIMIT[0]


# On the CPU the columns of a chunk are written by im2col and read at once by
# the GEMM; chunks that stay within the caches (L2 is 2 MiB a core on the
# benchmark machine) make a stride-1 conv step ~30% faster than one 28 MiB
# block (benchmarks/README.md). Each kernel set names the size that suits it
# (``CHUNK_BYTES``: NumPy 4 MiB, Numba 1 MiB); a GPU (0) wants the largest
# launches instead.
def _chunks(n, bytes_per_image, scale=1):
    limit = _WORKSPACE_LIMIT[0]
    cache = active().kernels.chunk_bytes
    if cache:
        limit = min(limit, cache * scale)
    step = max(1, limit // max(1, bytes_per_image))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _chunk_groups(n, bytes_per_image):
    """The chunks of ``_chunks``, split into one contiguous group per thread.

    On the CPU, when ``_parallel.thread_groups`` says threads pay, the chunks
    (of twice the cache size, see below) are re-cut into a multiple of the
    thread count of equal size (never larger) so that the threads get the same
    work. Otherwise one group.
    """
    threads, hold = (thread_groups(n, n * bytes_per_image)
                     if active().kernels.chunk_bytes else (1, False))
    if threads < 2:
        return [_chunks(n, bytes_per_image)], hold
    # On threads, chunks twice the cache size: half as many Python steps per
    # thread, each of which takes the GIL the other thread may hold (strided
    # CAE step, 2 threads, four A/B runs: 7.49/7.51/7.45/7.32 -> 6.84/7.05/
    # 7.05/6.90 ms; benchmarks/README.md, round 6).
    parts = _chunks(n, bytes_per_image, scale=2)
    count = -(-len(parts) // threads) * threads
    step = -(-n // count)
    parts = [slice(i, min(n, i + step)) for i in range(0, n, step)]
    k = len(parts)
    return [parts[k * i // threads:k * (i + 1) // threads] for i in range(threads)
            if k * i // threads < k * (i + 1) // threads], hold


def _sum_partials(results):
    """(Σ dW, Σ db) from the groups' lists of per-chunk (dW, db): each group's chunks
    added in chunk order, then the groups in group order."""
    return _add_pairs([_add_pairs(chunks) for chunks in results])


def _add_pairs(pairs):
    """(Σ a, Σ b) over a list of (a, b), added left to right."""
    total_a, total_b = pairs[0]
    for a, b in pairs[1:]:
        total_a = total_a + a
        total_b = total_b + b
    return total_a, total_b


def _columns(x, g: ConvGeometry, oh, ow, out=None):
    """im2col(x) in GEMM layout (groups, K, m*oh*ow), in ``out`` or the 'cols' buffer."""
    m, c = x.shape[:2]
    kernels = active().kernels
    natural = g.output_hw(x.shape[2], x.shape[3])
    shape = (c, g.kh, g.kw, m, natural[0], natural[1])
    if out is None or natural != (oh, ow):
        out = _work("cols", shape, x.dtype)
    cols = kernels.im2col_kn(x, g.kh, g.kw, *g.kernel_args(), out=out)
    if natural != (oh, ow):          # the transposed conv's output_padding rows
        cols = active().xp.ascontiguousarray(cols[..., :oh, :ow])
    return cols.reshape(g.groups, -1, m * oh * ow)


def _w_mat(weight, groups):
    """The weight as (groups, C_out/groups, K) matrices."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def _forward_part(x, w_mat, g, y, bias, keep=None, relu=False):
    """y = W · im2col(x) (+ b) (then max(·, 0)), per group, for one chunk of images."""
    cols = _columns(x, g, y.shape[2], y.shape[3], out=keep)     # (g, K, m*P)
    _product_nchw(w_mat, cols, y, bias, relu)                    # y = W · cols (+ b)


def _adjoint_part(y_kn, w_mat, g, x, oh, ow):
    """x = col2im(Wᵀ · y) for one chunk; ``y_kn`` is y (m, C_out, oh, ow) in GEMM layout."""
    m, c_in, h, w = x.shape
    dcols = _matmul(w_mat.transpose(0, 2, 1), y_kn,
                    _work("cols", (g.groups, w_mat.shape[2], y_kn.shape[2]), x.dtype))
    # dcols = Wᵀ · dY, per group; then every column entry goes back to its pixel
    active().kernels.col2im_kn(dcols.reshape(c_in, g.kh, g.kw, m, oh, ow), h, w,
                               *g.kernel_args(), out=x)


def _per_image(c, g, oh, ow, itemsize):
    return c * g.kh * g.kw * oh * ow * itemsize


# Images per call of a direct kernel: as many as 4 MiB of the columns they do
# without, so that their own buffers (padded and channels-last copies) stay near
# the caches at large batches. Strided CAE step, one thread, µs per sample at
# batch 128/256/512: 54.2/57.1/63.9 -> 52.0/50.2/52.5 (2 and 8 MiB: no better;
# two threads unchanged). But never fewer than 32 images: a call has fixed costs
# (weights packed, the weight gradient's accumulators zeroed and summed), and one
# 64->64 32² image a call took that row from 61 to 77 ms at one thread
# (benchmarks/README.md, round 8).
_DIRECT_CHUNK_BYTES = 4 * 2**20
_DIRECT_CHUNK_MIN = 32


def _direct_chunks(n, per_image):
    """The chunks of a direct convolution's images (of ``_DIRECT_CHUNK_BYTES``, at least
    ``_DIRECT_CHUNK_MIN`` images), run one after the other on this thread, and the
    Numba threads each chunk's kernel splits its images over
    (``_parallel.kernel_threads``). Until round 9 the chunks went to Python threads,
    one group each, at ~75 us a hand-off; two threads, numba, two alternating
    runs: strided CAE step 5.02/4.94 -> 4.17/4.17 ms, conv 16->16 3.59/3.50 ->
    3.52/3.40, 64->64 even (benchmarks/README.md, round 9).
    """
    step = max(_DIRECT_CHUNK_MIN, _DIRECT_CHUNK_BYTES // max(1, per_image))
    if n <= step:
        chunks = [slice(0, n)]
    else:
        chunks = [slice(i, min(n, i + step)) for i in range(0, n, step)]
    size = chunks[0].stop
    return chunks, kernel_threads(size, size * per_image)


def _direct_run(kernel, out_shape, per_image):
    """``run(src, weight, bias, relu) -> out``: a plan's direct forward or adjoint
    (``_direct.forward`` / ``adjoint``, the kernel) into a new ``out_shape`` array,
    chunk by chunk (:func:`_direct_chunks`, asked each call: its limits are settings).
    A plan keeps it, so that a layer repeating its call signature goes from the
    layer to the kernel in one call (nn.layers._ConvBase, benchmarks/README.md,
    round 12)."""
    xp = active().xp

    def run(src, weight, bias, relu):
        out = xp.empty(out_shape, dtype=src.dtype)
        chunks, threads = _direct_chunks(out_shape[0], per_image)
        if len(chunks) == 1:                 # the whole batch: no views to make
            kernel(src, weight, bias, out, relu, threads)
        else:
            for part in chunks:
                kernel(src[part], weight, bias, out[part], relu, threads)
        return out
    return run


def _direct_backward_run(kernel, n, per_image, weight_shape):
    """``run(dy, x, weight, relu_out, need_dx) -> (dx, dW, db)`` from a plan's direct
    backward (``_direct.conv_backward`` / ``conv_t_backward``, the kernel), chunk by
    chunk (:func:`_direct_chunks`), the chunks' partial sums added in order; None
    for an empty batch (nothing to sum: the generic path returns zeros)."""
    if n == 0:
        return None
    xp = active().xp

    def run(dy, x, weight, relu_out, need_dx):
        dx = xp.empty(x.shape, dtype=x.dtype) if need_dx else None
        chunks, threads = _direct_chunks(n, per_image)
        if len(chunks) == 1:
            dweight, dbias = kernel(dy, x, weight, relu_out, dx, threads)
        else:
            dweight, dbias = _add_pairs([
                kernel(dy[p], x[p], weight, None if relu_out is None else relu_out[p],
                       None if dx is None else dx[p], threads) for p in chunks])
        return dx, dweight.reshape(weight_shape), dbias
    return run


def _kept_part(keep, part, per_image, itemsize):
    """The slice of a kept-columns buffer (flat) that holds chunk ``part``."""
    if keep is None:
        return None
    per = per_image // itemsize
    return keep[part.start * per:part.stop * per]


def _correlate(x, weight, g: ConvGeometry, oh, ow, bias=None, keep=None, relu=False):
    """y[n, o] = Σ_k W[o, k] · cols[n, k] (+ b[o]): one GEMM per group and chunk (the
    direct kernels, where a plan has one, are its :func:`_direct_run`).

    ``keep``: a flat buffer of the whole batch's columns, written chunk by
    chunk for a later weight gradient (see :func:`_conv2d_keeping_columns`).
    ``relu``: apply max(·, 0) to each chunk of y as soon as it is written.
    """
    xp = active().xp
    n, c_in = x.shape[:2]
    y = xp.empty((n, weight.shape[0], oh, ow), dtype=x.dtype)
    per_image = _per_image(c_in, g, oh, ow, x.dtype.itemsize)
    w_mat = _w_mat(weight, g.groups)                             # (g, c_out/g, K)

    def body(parts):
        for part in parts:
            _forward_part(x[part], w_mat, g, y[part], bias,
                          _kept_part(keep, part, per_image, x.dtype.itemsize), relu)

    run_groups(body, *_chunk_groups(n, per_image))
    return y


def _correlate_t(y, weight, g: ConvGeometry, h, w, bias=None, relu=False):
    """x[n] = col2im(Wᵀ · y[n]) (+ b, then max(·, 0) if ``relu``): the adjoint of
    ``_correlate``; the bias and the ReLU are applied per chunk, while it is in cache."""
    xp = active().xp
    n, c_out, oh, ow = y.shape
    c_in = weight.shape[1] * g.groups
    x = xp.empty((n, c_in, h, w), dtype=y.dtype)
    per_image = _per_image(c_in, g, oh, ow, y.dtype.itemsize)
    w_mat = _w_mat(weight, g.groups)

    def body(parts):
        for part in parts:
            _adjoint_part(_to_kn(y[part], g.groups), w_mat, g, x[part], oh, ow)
            if bias is not None:
                x[part] += bias.reshape(1, -1, 1, 1)
            if relu:
                _relu_inplace(x[part])

    run_groups(body, *_chunk_groups(n, per_image))
    return x


def _conv_backward(dy, x, weight, g, weight_shape, *, need_dx, kept=None, relu_out=None):
    """(dx, dW, db) of y = conv(x, W) in one pass over the chunks.

    Per chunk, dY is put in GEMM layout once and serves both products:
    dx = col2im(Wᵀ · dY) and dW += dY · colsᵀ. ``kept``: the columns the
    forward kept (the same chunks), used instead of recomputing them.
    ``relu_out``: the forward fused a ReLU and this is its output; ``dy`` is the
    gradient w.r.t. it, masked per chunk (see :func:`_chunk_dy`). (The direct
    kernels' backward, where a plan has one, is its :func:`_direct_backward_run`.)
    """
    xp = active().xp
    n, c_out, oh, ow = dy.shape
    c_in = x.shape[1]
    per_image = _per_image(c_in, g, oh, ow, x.dtype.itemsize)
    dx = xp.empty(x.shape, dtype=x.dtype) if need_dx else None
    if n == 0:                          # an empty batch: nothing to sum
        return dx, xp.zeros(weight_shape, x.dtype), xp.zeros(c_out, x.dtype)
    w_mat = _w_mat(weight, g.groups) if need_dx else None
    small_k = _small_k(weight.reshape(g.groups, c_out // g.groups, -1))

    def body(parts):
        partials = []
        for part in parts:
            dyp = _chunk_dy(dy, part, relu_out)
            dy_kn = None
            if need_dx or not small_k:
                dy_kn = _to_kn(dyp, g.groups)                    # (g, c_out/g, m*P)
            if need_dx:              # before the columns: its dcols share their buffer
                _adjoint_part(dy_kn, w_mat, g, dx[part], oh, ow)
            if kept is None:
                cols = _columns(x[part], g, oh, ow)              # (g, K, m*P)
            else:
                cols = _kept_part(kept, part, per_image, x.dtype.itemsize).reshape(
                    g.groups, -1, (part.stop - part.start) * oh * ow)
            if dy_kn is None:
                dw, db = _wgrad_per_image(dyp, cols), dyp.sum(axis=(0, 2, 3))
            else:
                # dL/dW_g += dY_g · cols_gᵀ ; dL/db = Σ_{n,p} dY
                dw = _matmul_nt(dy_kn, cols)
                db = dy_kn.reshape(c_out, -1).sum(axis=1)
            partials.append((dw, db))
        return partials

    # per-thread partial sums of dW and db, added in chunk order at the end
    dweight, dbias = _sum_partials(run_groups(body, *_chunk_groups(n, per_image)))
    return dx, dweight.reshape(weight_shape), dbias


def _conv_t_backward(dy, x, weight, g, *, need_dx, relu_out=None):
    """(dx, dW, db) of y = conv_transpose(x, W), sharing im2col(dY) between dx and dW.

    dx = conv(dY, W) = W · cols(dY) and dW = Σ_n x[n] · cols(dY[n])ᵀ.
    ``relu_out``: as in :func:`_conv_backward`.
    """
    xp = active().xp
    n, c_out, oh, ow = dy.shape
    c_in, h, w = x.shape[1:]
    dx = xp.empty(x.shape, dtype=x.dtype) if need_dx else None
    if n == 0:                          # an empty batch: nothing to sum
        return dx, xp.zeros(weight.shape, x.dtype), xp.zeros(c_out, x.dtype)
    per_image = _per_image(c_out, g, h, w, x.dtype.itemsize)
    w_mat = _w_mat(weight, g.groups)                             # (g, c_in/g, K)

    def body(parts):
        partials = []
        for part in parts:
            dyp = _chunk_dy(dy, part, relu_out)
            cols = _columns(dyp, g, h, w)                        # (g, K, m*h*w)
            if need_dx:
                _product_nchw(w_mat, cols, dx[part], None)       # dx = W · cols(dY)
            # dL/dW_g += x_g · cols(dY)_gᵀ ; dL/db = Σ_{n,p} dY
            dw = (_wgrad_per_image(x[part], cols) if _small_k(w_mat)
                  else _matmul_nt(_to_kn(x[part], g.groups), cols))
            db = dyp.sum(axis=(0, 2, 3))
            partials.append((dw, db))
        return partials

    dweight, dbias = _sum_partials(run_groups(body, *_chunk_groups(n, per_image)))
    return dx, dweight.reshape(weight.shape), dbias


def _check_conv_args(x, weight, bias, g, where, transposed):
    check_input(x, where=where, ndim=4, shape_text="(N, C_in, H, W)")
    check_input(weight, where=where, name="weight", ndim=4)
    check_same_dtype(x, weight, where=where)
    c_in = x.shape[1]
    if transposed:
        c_out = weight.shape[1] * g.groups
        want_in, layout = weight.shape[0], "(C_in, C_out/groups, kh, kw)"
    else:
        c_out = weight.shape[0]
        want_in, layout = weight.shape[1] * g.groups, "(C_out, C_in/groups, kh, kw)"
    if weight.shape[2:] != (g.kh, g.kw):
        raise ShapeError(f"{where}: expected weight of shape {layout} with kernel "
                         f"{g.kh}x{g.kw}, got {tuple(weight.shape)}.")
    if c_in % g.groups or c_out % g.groups:
        raise ValueError(f"{where}: groups={g.groups} must divide both C_in={c_in} "
                         f"and C_out={c_out}.")
    if c_in != want_in:
        raise ShapeError(f"{where}: expected input of shape (N, {want_in}, H, W) for "
                         f"weight {tuple(weight.shape)} with groups={g.groups}, got "
                         f"{tuple(x.shape)}.")
    if bias is not None:
        check_input(bias, where=where, name="bias", ndim=1)
        if bias.shape[0] != c_out:
            raise ShapeError(f"{where}: expected bias of shape ({c_out},), got "
                             f"{tuple(bias.shape)}.")
        check_same_dtype(x, bias, where=where, names=("input", "bias"))
    return c_out


def _check_grad(dy, shape, where, x):
    check_input(dy, where=where, name="dy", ndim=4)
    check_same_dtype(x, dy, where=where, names=("input", "dy"))
    if tuple(dy.shape) != tuple(shape):
        raise ShapeError(f"{where}: expected dy of shape {tuple(shape)} (the output's), "
                         f"got {tuple(dy.shape)}.")


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    r"""Apply a 2-D convolution (cross-correlation, as in PyTorch).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid', 'same' or 'full'
        'same' keeps H and W at stride 1 (an odd total pads the extra row and
        column at the bottom/right); 'full' pads ``d*(k-1)`` on each side.
    groups : int
        Channels split into ``groups`` independent convolutions.

    Returns
    -------
    y : ndarray of shape (N, C_out, oh, ow)

    Notes
    -----
    .. math:: y_{n,o,p,q} = b_o + \sum_{c,i,j} W_{o,c,i,j}\,
              x^{pad}_{n,\,c,\,p s_h + i d_h,\,q s_w + j d_w}

    with ``oh = floor((H + p_t + p_b - d_h (kh-1) - 1)/s_h) + 1``. Computed as
    one matrix product per group, ``Y = W · im2col(x)``.
    Derivation: docs/maths.md#convolution; checked by
    tests/test_functional_conv.py::test_conv2d_matches_loop_reference.

    Examples
    --------
    >>> import numpy as np
    >>> from minicae import functional as F
    >>> F.conv2d(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), padding='same').shape
    (1, 2, 5, 5)
    """
    return _conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                   groups=groups)


def _checked_conv2d(x, weight, bias, stride, padding, dilation, groups, where="conv2d"):
    """The checks of a conv2d call; returns its geometry, output size and output
    channels (g, oh, ow, c_out)."""
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_out, C_in/groups, kh, kw)")
    g = conv_geometry(weight.shape[2:], stride, padding, dilation, groups, where=where)
    c_out = _check_conv_args(x, weight, bias, g, where, transposed=False)
    check_fits(g, x.shape[2], x.shape[3], where)
    return (g, *g.output_hw(x.shape[2], x.shape[3]), c_out)


def _conv2d_plan(x, weight, bias, stride, padding, dilation, groups):
    """(g, oh, ow, run) of a conv2d call: its checked geometry and output size, and
    the :func:`_direct_run` of its direct kernel (or None), remembered per call
    signature (:func:`_planned`)."""
    def make():
        g, oh, ow, c_out = _checked_conv2d(x, weight, bias, stride, padding, dilation,
                                           groups)
        direct = _direct.forward(x, c_out, g)
        return g, oh, ow, direct and _direct_run(
            direct, (x.shape[0], c_out, oh, ow),
            _per_image(x.shape[1], g, oh, ow, x.dtype.itemsize))
    return _planned(("conv2d", _sig(x), _sig(weight), _sig(bias)),
                    (stride, padding, dilation, groups), make)


def _conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
            relu=False):
    """:func:`conv2d`, with ``relu``: max(·, 0) fused into it, chunk by chunk (for a
    layer followed by a ReLU; see nn.Sequential)."""
    g, oh, ow, run = _conv2d_plan(x, weight, bias, stride, padding, dilation, groups)
    if run is not None:                      # y = W ⋆ x + b, without columns
        return run(x, weight, bias, relu)
    # y = W · im2col(x) + b
    return _correlate(x, weight, g, oh, ow, bias, relu=relu)


def conv2d_backward(dy, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    need_dx=True):
    r"""Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Returns
    -------
    dx : ndarray of shape (N, C_in, H, W), or None when ``need_dx`` is False
    dweight : ndarray of shape (C_out, C_in/groups, kh, kw)
    dbias : ndarray of shape (C_out,)

    Notes
    -----
    .. math:: \frac{\partial L}{\partial W} = \sum_n dY_n\,\mathrm{cols}(x_n)^T
    .. math:: \frac{\partial L}{\partial x} = \mathrm{col2im}(W^T dY)
              = \mathrm{conv\_transpose2d}(dY, W)
    .. math:: \frac{\partial L}{\partial b_o} = \sum_{n,p,q} dY_{n,o,p,q}

    Derivation: docs/maths.md#convolution-backward; checked by
    tests/test_functional_conv.py::test_conv2d_grad.
    """
    # the same checks and maths as the kept-columns variant, with no kept columns
    return _conv2d_backward_kept(dy, x, weight, None, stride=stride, padding=padding,
                                 dilation=dilation, groups=groups, need_dx=need_dx)


def _transposed_geometry(x, weight, stride, padding, output_padding, dilation,
                         groups, where):
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_in, C_out/groups, kh, kw)")
    g = conv_geometry(weight.shape[2:], stride, padding, dilation, groups, where=where,
                      allow_modes=("valid",))
    oph, opw = as_pair(output_padding, where=where, name="output_padding", minimum=0)
    for op, s, d, axis in ((oph, g.sh, g.dil_h, "height"), (opw, g.sw, g.dil_w, "width")):
        if op >= s and op >= d:
            raise ValueError(f"{where}: output_padding must be smaller than stride or "
                             f"dilation, got output_padding={op} with stride={s} and "
                             f"dilation={d} along the {axis}.")
    return g, (oph, opw)


def _checked_conv_t(x, weight, bias, stride, padding, output_padding, dilation, groups,
                    where):
    """The checks of a conv_transpose2d call: (g, oh, ow, c_out)."""
    g, op = _transposed_geometry(x, weight, stride, padding, output_padding, dilation,
                                 groups, where)
    c_out = _check_conv_args(x, weight, bias, g, where, transposed=True)
    return (g, *_transposed_out_hw(x, g, op, where), c_out)


def _transposed_out_hw(x, g, op, where):
    h, w = x.shape[2], x.shape[3]
    oh = conv_transpose_output_size(h, g.kh, g.sh, g.pt, g.dil_h, op[0])
    ow = conv_transpose_output_size(w, g.kw, g.sw, g.pl, g.dil_w, op[1])
    if oh < 1 or ow < 1:
        raise ShapeError(f"{where}: output size {(oh, ow)} is not positive for input "
                         f"{(h, w)} with kernel {(g.kh, g.kw)}, stride {(g.sh, g.sw)}, "
                         f"padding {(g.pt, g.pl)}. Reduce the padding.")
    return oh, ow


def conv_transpose2d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                     dilation=1, groups=1):
    r"""Apply a 2-D transposed convolution: the adjoint of :func:`conv2d`.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_in, C_out/groups, kh, kw)
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int) or 'valid'
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right of the output; must be smaller
        than the stride or the dilation.

    Returns
    -------
    y : ndarray of shape (N, C_out, oh, ow)
        ``oh = (H-1)*s - 2p + d*(kh-1) + output_padding + 1``.

    Notes
    -----
    .. math:: y = \mathrm{col2im}(W^T x) + b

    i.e. exactly the input gradient of the convolution with the same weight,
    which maps (oh, ow) to (H, W). Derivation: docs/maths.md#transposed-convolution;
    checked by tests/test_functional_conv.py::test_adjoint_identity.

    Examples
    --------
    >>> import numpy as np
    >>> from minicae import functional as F
    >>> F.conv_transpose2d(np.ones((1, 4, 7, 7)), np.ones((4, 2, 3, 3)),
    ...                    stride=2, padding=1, output_padding=1).shape
    (1, 2, 14, 14)
    """
    return _conv_transpose2d(x, weight, bias, stride=stride, padding=padding,
                             output_padding=output_padding, dilation=dilation,
                             groups=groups)


def _conv_transpose2d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                      dilation=1, groups=1, relu=False):
    """:func:`conv_transpose2d`, with ``relu``: max(·, 0) fused into it (for a layer
    followed by a ReLU; see nn.Sequential)."""
    g, oh, ow, run = _conv_transpose2d_plan(x, weight, bias, stride, padding,
                                            output_padding, dilation, groups)
    if run is not None:                      # y = Wᵀ ⋆ x + b, without columns
        return run(x, weight, bias, relu)
    # y = col2im(Wᵀ x) + b
    return _correlate_t(x, weight, g, oh, ow, bias, relu)


def _conv_transpose2d_plan(x, weight, bias, stride, padding, output_padding, dilation,
                           groups):
    """(g, oh, ow, run) of a conv_transpose2d call, as :func:`_conv2d_plan`'s."""
    def make():
        g, oh, ow, c_out = _checked_conv_t(x, weight, bias, stride, padding,
                                           output_padding, dilation, groups,
                                           "conv_transpose2d")
        direct = _direct.adjoint(x, g, c_out)
        return g, oh, ow, direct and _direct_run(
            direct, (x.shape[0], c_out, oh, ow),
            _per_image(c_out, g, x.shape[2], x.shape[3], x.dtype.itemsize))
    return _planned(("conv_transpose2d", _sig(x), _sig(weight), _sig(bias)),
                    (stride, padding, output_padding, dilation, groups), make)


def conv_transpose2d_backward(dy, x, weight, *, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, need_dx=True):
    r"""Gradients of :func:`conv_transpose2d` (input, weight, bias).

    Notes
    -----
    The transposed convolution is ``y = T x`` with ``T = Cᵀ`` (C the
    convolution), so ``dx = C dY`` is a plain convolution of ``dY`` and the
    weight gradient is the convolution's weight gradient with the roles of
    input and output exchanged:

    .. math:: \frac{\partial L}{\partial x} = \mathrm{conv2d}(dY, W),\quad
              \frac{\partial L}{\partial W} = \sum_n x_n\,\mathrm{cols}(dY_n)^T

    Derivation: docs/maths.md#transposed-convolution; checked by
    tests/test_functional_conv.py::test_conv_transpose2d_grad.
    """
    return _conv_transpose2d_backward(dy, x, weight, stride=stride, padding=padding,
                                      output_padding=output_padding, dilation=dilation,
                                      groups=groups, need_dx=need_dx)


def _conv_transpose2d_backward(dy, x, weight, *, stride=1, padding=0, output_padding=0,
                               dilation=1, groups=1, need_dx=True, relu_out=None):
    """:func:`conv_transpose2d_backward`; with ``relu_out`` (the output of a forward
    with ``relu=True``), ``dy`` is the gradient w.r.t. that output."""
    g, run = _conv_transpose2d_backward_plan(dy, x, weight, relu_out, stride, padding,
                                             output_padding, dilation, groups)
    if run is not None:              # dx = W ⋆ dY and dW = Σ x ⋆ dY, without columns
        return run(dy, x, weight, relu_out, need_dx)
    # dx = conv2d(dY, W), dW = Σ_n x_n · cols(dY_n)ᵀ, db = Σ dY
    return _conv_t_backward(dy, x, weight, g, need_dx=need_dx, relu_out=relu_out)


def _conv_transpose2d_backward_plan(dy, x, weight, relu_out, stride, padding,
                                    output_padding, dilation, groups):
    """(g, run) of a conv_transpose2d_backward call: its checked geometry and the
    :func:`_direct_backward_run` of its direct kernel (or None), per signature."""
    def make():
        where = "conv_transpose2d_backward"
        g, oh, ow, c_out = _checked_conv_t(x, weight, None, stride, padding,
                                           output_padding, dilation, groups, where)
        _check_grad(dy, (x.shape[0], c_out, oh, ow), where, x)
        _check_relu_out(relu_out, dy, where)
        direct = _direct.conv_t_backward(x, dy, g)
        return g, direct and _direct_backward_run(
            direct, x.shape[0], _per_image(c_out, g, x.shape[2], x.shape[3],
                                           x.dtype.itemsize), weight.shape)
    return _planned(
        ("conv_transpose2d_backward", _sig(dy), _sig(x), _sig(weight), _sig(relu_out)),
        (stride, padding, output_padding, dilation, groups), make)


def _check_relu_out(relu_out, dy, where):
    if relu_out is not None and (tuple(relu_out.shape) != tuple(dy.shape)
                                 or relu_out.dtype != dy.dtype):
        raise ShapeError(f"{where}: expected relu_out like dy {tuple(dy.shape)} "
                         f"{dy.dtype}, got {tuple(relu_out.shape)} {relu_out.dtype}.")



# Columns of one forward kept for the weight gradient only up to this size: the
# CAE's layers keep 0.9-4 MiB and skip one im2col each in their backward;
# larger batches recompute them (bounded memory, as in round 1).
_KEEP_MAX_BYTES = 16 * 2**20


def _conv2d_keeping_columns(x, weight, bias=None, *, stride=1, padding=0, dilation=1,
                            groups=1, buffer=None, relu=False):
    """:func:`conv2d`, also returning im2col(x) for :func:`_conv2d_backward_kept`.

    For a layer in training. Returns ``(y, kept)``: ``kept`` is the whole
    batch's columns (flat, in ``buffer`` when it is large enough), or None when
    they would exceed ``_KEEP_MAX_BYTES``. ``y`` is exactly conv2d's: the
    columns are written chunk by chunk where the work buffer would have been.
    ``relu``: max(·, 0) fused into y, chunk by chunk (see nn.Sequential).
    """
    g, oh, ow, run = _conv2d_plan(x, weight, bias, stride, padding, dilation, groups)
    if run is not None:                      # the direct kernels make no columns
        return run(x, weight, bias, relu), None
    nbytes = x.shape[0] * _per_image(x.shape[1], g, oh, ow, x.dtype.itemsize)
    if nbytes > _KEEP_MAX_BYTES:
        return _correlate(x, weight, g, oh, ow, bias, relu=relu), None
    size = nbytes // x.dtype.itemsize
    xp = active().xp
    if (buffer is None or not isinstance(buffer, xp.ndarray) or buffer.size < size
            or buffer.dtype != x.dtype):
        buffer = xp.empty(size, dtype=x.dtype)
    kept = buffer[:size]
    # y = W · cols + b
    return _correlate(x, weight, g, oh, ow, bias, keep=kept, relu=relu), kept


def _conv2d_backward_kept(dy, x, weight, kept, *, stride=1, padding=0, dilation=1,
                          groups=1, need_dx=True, relu_out=None):
    """:func:`conv2d_backward` with the columns of the forward (``kept``, or None).

    dW = Σ_n dY_n · cols(x_n)ᵀ reads the kept columns instead of recomputing
    them; they are im2col of x as it was at the forward. ``relu_out``: the
    output of a forward with ``relu=True``; ``dy`` is then the gradient w.r.t. it.
    """
    g, oh, ow, run = _conv2d_backward_plan(dy, x, weight, relu_out, stride, padding,
                                           dilation, groups)
    if run is not None:      # dx = W ⋆ᵀ dY, dW = Σ dY · windows of x, db = Σ dY
        return run(dy, x, weight, relu_out, need_dx)
    if kept is not None and kept.size * kept.dtype.itemsize != x.shape[0] * _per_image(
            x.shape[1], g, oh, ow, x.dtype.itemsize):
        kept = None                                   # not this input's columns
    # dx = col2im(Wᵀ · dY), dW = Σ_n dY_n · cols(x_n)ᵀ, db = Σ dY
    return _conv_backward(dy, x, weight, g, weight.shape, need_dx=need_dx, kept=kept,
                          relu_out=relu_out)


def _conv2d_backward_plan(dy, x, weight, relu_out, stride, padding, dilation, groups):
    """(g, oh, ow, run) of a conv2d_backward call, as
    :func:`_conv_transpose2d_backward_plan`'s."""
    def make():
        where = "conv2d_backward"
        g, oh, ow, c_out = _checked_conv2d(x, weight, None, stride, padding, dilation,
                                           groups, where)
        _check_grad(dy, (x.shape[0], c_out, oh, ow), where, x)
        _check_relu_out(relu_out, dy, where)
        direct = _direct.conv_backward(x, c_out, g)
        return g, oh, ow, direct and _direct_backward_run(
            direct, x.shape[0], _per_image(x.shape[1], g, oh, ow, x.dtype.itemsize),
            weight.shape)
    return _planned(("conv2d_backward", _sig(dy), _sig(x), _sig(weight), _sig(relu_out)),
                    (stride, padding, dilation, groups), make)
