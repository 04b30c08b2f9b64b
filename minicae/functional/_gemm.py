"""The products of one chunk of a convolution in GEMM layout, and their work buffers.

conv.py builds every convolution from im2col/col2im and these: the GEMM per
group (``_matmul``, ``_matmul_nt``, ``_product_nchw``), the weight gradient of
short columns (``_wgrad_per_image``), the layout copies between NCHW and the
(C, n*P) layout of a product (``_to_kn``, ``_from_kn``), the fused ReLU's two
halves (``_relu_inplace``, ``_chunk_dy``), and the reused per-thread work
buffers (``_work``). Each rule about a shape cites its benchmark row.
"""

from __future__ import annotations

import threading

from ._common import active
from .activations import _numba_relu, relu_backward

_WORK = threading.local()


def _work(slot, shape, dtype):
    """A reused contiguous buffer of ``shape`` for one intermediate ``slot``.

    Refilling a buffer kept from the previous call is measured ~3x cheaper
    than a fresh large allocation (fresh pages fault in and are zeroed).
    Buffers only ever hold intermediates (columns, transposed gradients,
    products) and are never returned; one set per thread. They stay bounded by
    the workspace limit: a batch whose columns exceed it is chunked.
    """
    xp = active().xp
    size = 1
    for d in shape:
        size *= d
    bufs = _WORK.__dict__.setdefault("bufs", {})
    key = (slot, xp.__name__, xp.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        bufs[key] = buf = xp.empty(max(size, 1), dtype=dtype)
    return buf[:size].reshape(shape)


def _matmul(a, b, out):
    """out = a · b per group; a plain 2-D GEMM when there is one group."""
    xp = active().xp
    if a.shape[2] == 1:
        # an outer product (one channel on the summed side): a broadcast multiply
        # measured 7x faster than BLAS' GEMM path (0.26 vs 1.91 ms, 144 x 12544)
        xp.multiply(a, b, out=out)
    elif a.shape[0] == 1:
        xp.matmul(a[0], b[0], out=out[0])
    else:
        xp.matmul(a, b, out=out)
    return out


def _matmul_nt(a, b):
    """a · bᵀ per group, computed as (b · aᵀ)ᵀ (transposes are views: BLAS reads them
    transposed, nothing is copied).

    a has the fewer rows (the channels, against K = C·kh·kw): OpenBLAS runs
    the product with the few columns faster, one thread, per chunk: 32x1078 ·
    (144x1078)ᵀ 77 -> 111 GFLOP/s, 16 x 4096 by 144: 51 -> 83, 64 x 2048 by
    576: 106 -> 133 (benchmarks/README.md, round 4).
    """
    xp = active().xp
    if a.shape[0] == 1:
        return xp.matmul(b[0], a[0].T).T[None]
    return xp.matmul(b, a.transpose(0, 2, 1)).transpose(0, 2, 1)


def _small_k(mat):
    """Whether dW comes from :func:`_wgrad_per_image`: ``mat`` (groups, rows, K)
    has one group and K < 32, on the CPU."""
    return mat.shape[0] == 1 and mat.shape[2] < 32 and active().kernels.name != "cupy"


def _wgrad_per_image(a, cols):
    """dW (1, C, K) = Σ_n a[n] · cols_nᵀ from ``a`` (m, C, ...) in NCHW, no GEMM layout.

    For K < 32 one batched product of the images and a sum beat the copy of
    ``a`` to (C, m·P) plus one long GEMM: K = 9, 16 channels 14², 64 images
    0.153 -> 0.041 ms; with K = 144 it lost (0.31 -> 0.49; benchmarks/README.md,
    round 5).
    """
    m, c = a.shape[:2]
    k, p = cols.shape[1], cols.shape[2] // m
    per = active().xp.matmul(a.reshape(m, c, p), cols[0].reshape(k, m, p).transpose(1, 2, 0))
    return per.sum(axis=0)[None]


def _to_kn(y, groups):
    """(m, C, oh, ow) -> (groups, C/groups, m*oh*ow): the GEMM layout of an output."""
    m, c = y.shape[:2]
    kn = _work("kn", (c, m, y.shape[2] * y.shape[3]), y.dtype)
    kn[...] = y.reshape(m, c, -1).transpose(1, 0, 2)
    return kn.reshape(groups, c // groups, -1)


def _layout_kernels(prod, y, bias):
    """The numba kernels' NCHW copy-back when they suit prod and y, else None
    (NumPy's strided copy of the transposed view)."""
    if (active().kernels.name != "numba" or prod.dtype != y.dtype
            or (bias is not None and bias.dtype != y.dtype)
            or not (prod.flags.c_contiguous and y.flags.c_contiguous)):
        return None
    from ..kernels import _numba
    return _numba


def _from_kn(prod, y, bias, relu=False):
    """y[n, o] = prod[o, n] (+ b[o]) (then max(·, 0)): back from GEMM layout to NCHW."""
    m, c, oh, ow = y.shape
    layout = _layout_kernels(prod, y, bias)
    if layout is not None:
        layout.kn_to_nchw(prod.reshape(c, -1), y, bias, relu)   # the ReLU in the same pass
        return
    _copy_back(prod.reshape(c, m, oh, ow).transpose(1, 0, 2, 3), y, bias, relu)


def _copy_back(view, y, bias, relu):
    """y = view (+ b) (then max(·, 0)): NumPy's strided copy of a product's view."""
    if bias is None:
        y[...] = view
    else:
        active().xp.add(view, bias.reshape(1, -1, 1, 1), out=y)
    if relu:
        _relu_inplace(y)


def _product_nchw(w_mat, cols, y, bias, relu=False):
    """y (m, C_out, oh, ow) = W · cols (+ b) per group, from the GEMM layout; then
    max(·, 0) with ``relu`` (in the copy-back pass where a kernel does it)."""
    m, c_out, oh, ow = y.shape
    if w_mat.shape[0] == 1 and cols.shape[1] >= 32 and active().kernels.name != "cupy":
        # Yᵀ = colsᵀ · Wᵀ: OpenBLAS runs the few-row product faster this way
        # round (32x144 by 144x1078: 119 -> 136 GFLOP/s; 2 threads, fwd 16->16
        # 28² 3.5 -> 3.0 ms, 16->32 14² s2 1.00 -> 0.93), and the result comes
        # back per image as (P, C_out). With K = 9 (1->16) it lost: 0.58 -> 0.65
        # (benchmarks/README.md, round 4).
        prod = active().xp.matmul(cols[0].T, w_mat[0].T,
                                  out=_work("gemm", (m * oh * ow, c_out), y.dtype))
        _copy_back(prod.reshape(m, oh, ow, c_out).transpose(0, 3, 1, 2), y, bias, relu)
        return
    prod = _matmul(w_mat, cols, _work("gemm", (w_mat.shape[0], w_mat.shape[1], m * oh * ow),
                                      y.dtype))                  # Y = W · cols
    _from_kn(prod, y, bias, relu)


def _relu_inplace(y):
    """y = max(y, 0) in place: a ReLU fused into the forward, on a chunk just
    written (still in cache), instead of a pass of its own over the batch."""
    active().xp.maximum(y, 0, out=y)


def _chunk_dy(dy, part, relu_out):
    """dy[part], or dy[part] ⊙ [relu_out[part] > 0] when the forward fused a ReLU
    (its backward, on the chunk while it is in cache; ``dy`` is then dL/d(ReLU output))."""
    if relu_out is None:
        return dy[part]
    d, r = dy[part], relu_out[part]
    return relu_backward(d, r, out=_work("relu_dy", d.shape, d.dtype))


def _bias_grad(dy):
    """dL/db = Σ_{n,p,q} dY per channel, on the numba set's vector loops where they
    take dY (32x16x14x14, called alone: numpy's sum over axes (0, 2, 3) 24 us, the
    loops' 10 on one thread; benchmarks/README.md, rounds 10-11), else numpy's."""
    kernels = _numba_relu(dy, dy, min_size=1)
    if kernels is None:
        return dy.sum(axis=(0, 2, 3))
    return kernels.channel_sums(dy)
