"""Hot loops, one module per backend, one signature.

Every kernel set provides

``im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None) -> cols``
    ``x`` of shape (N, C, H, W) to ``cols`` in GEMM layout (C, kh, kw, N, oh, ow)
    with ``cols[c, i, j, n, p, q] = x_pad[n, c, p*sh + i*dil_h, q*sw + j*dil_w]``
    where ``x_pad`` is ``x`` zero-padded by (pt, pb) rows and (pl, pr)
    columns and ``oh = (H + pt + pb - dil_h*(kh-1) - 1) // sh + 1``. Reshaped
    to (C*kh*kw, N*oh*ow) it is the operand of one matrix product for a whole
    batch; max-pooling reshapes it to (C, kh*kw, N, oh, ow) windows.

``col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None) -> x``
    the adjoint of ``im2col_kn``: every column entry is added back to the
    input pixel it was read from, padding is dropped; ``x`` has shape
    (N, C, h, w).

Both take ``out``, an optional contiguous work buffer (of the result's size)
filled instead of allocating.

``conv_direct(x, W, b, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out)``,
``conv_direct_adjoint(dy, W, h, w, ..., out=None)``, ``conv_direct_wgrad(dy, x, kh, kw, ...)``
    (optional) a convolution without columns (groups 1): its output, input gradient and
    weight gradient, for the shapes where the columns cost more than they
    save (Numba only; functional/conv.py decides when).

``conv_c1(x, W, b, sh, sw, pt, pl, dil_h, dil_w, out, relu=False)``,
``conv_c1_adjoint(dy, W, b, ..., out, relu=False)``,
``conv_c1_wgrad(dy, x, kh, kw, ...) -> (dW, db)``
    (optional) a convolution with one input channel without columns, and
    ``C1_GEOMETRIES``, the (kh, kw, sh, sw, dil_h, dil_w) where it pays (Numba only).

``conv_s1(x, W, b, pt, pl, dil_h, dil_w, out, relu=False)``,
``conv_s1_adjoint(dy, W, pt, pl, dil_h, dil_w, out, bias=None, relu=False)``,
``conv_s1_backward(dy, x, W, pt, pl, dil_h, dil_w, relu_out=None, dx=None,
transposed=False) -> (dW, db)``
    (optional) a convolution at stride 1 without columns (groups 1; float32 and
    float64): output, transposed convolution (input gradient), and the whole
    backward of either in one call (as ``conv_cv_backward`` below).

``conv_cv(x, W, b, sh, sw, pt, pl, dil_h, dil_w, out, relu=False)``,
``conv_cv_adjoint(dy, W, b, ..., out, relu=False)``
    (optional) a strided convolution without columns (groups 1; float32 and
    float64), the channels in the SIMD lanes, and its transposed convolution.

``conv_cv_backward(dy, x, W, sh, sw, pt, pl, dil_h, dil_w, relu_out=None, dx=None) -> (dW, db)``,
``conv_cv_t_backward(...)``, ``conv_c1_t_backward(...)`` (same arguments)
    (optional) the whole backward of ``conv_cv``, of the transposed convolution
    ``conv_cv_adjoint`` and of ``conv_c1_adjoint`` in one call: dY masked by a
    fused ReLU's output, the input gradient into ``dx`` when given, dW and db.

``adam_update(p, g, m, v, beta1, beta2, sqrt_bias2, eps, step)``
    (optional) one Adam step in place, in one pass, with the NumPy path's
    roundings (optim.py uses it for contiguous float arrays).

``adam_update_many(ps, gs, ms, vs, beta1, beta2, sqrt_bias2, eps, step)``
    (optional) the same over tuples of flat arrays, one call for all parameters.

``gather_linear(vals, idx, wt, bias) -> y``, ``gather_linear_backward(dy, vals, idx, wt)
-> (dvals, dwt)``
    (optional) a Linear layer whose input has k non-zeros per sample (values
    ``vals`` at units ``idx``, both (N, k)), from ``wt`` = Wᵀ (d, out) C-contiguous,
    and ``sparse_rows(x, k) -> (vals, idx)``, the scan that finds them.

``CHUNK_BYTES`` (optional module constant)
    the size of the columns of one chunk of images that this backend's loops
    and GEMM handle best (the CPU caches); absent or 0: whole batches.

Kernels import nothing from minicae and validate nothing: callers (the
functional floor) have checked shapes and dtypes before calling them.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

__all__ = ["KernelSet", "load_kernels"]


class KernelSet(NamedTuple):
    name: str
    im2col_kn: object
    col2im_kn: object
    chunk_bytes: int = 0     # columns per chunk that suit the caches; 0: whole batches
    conv_direct: object = None           # optional direct convolution (see below)
    conv_direct_adjoint: object = None
    conv_direct_wgrad: object = None
    conv_c1: object = None               # optional one-input-channel convolution
    conv_c1_adjoint: object = None
    conv_c1_wgrad: object = None
    c1_geometries: tuple = ()
    conv_s1: object = None               # optional stride-1 convolution, SIMD
    conv_s1_adjoint: object = None
    conv_s1_backward: object = None
    conv_cv: object = None               # optional strided convolution, SIMD channels
    conv_cv_adjoint: object = None
    adam_update: object = None           # optional one-pass Adam step
    conv_cv_backward: object = None      # optional whole backwards, one call each
    conv_cv_t_backward: object = None
    conv_c1_t_backward: object = None
    adam_update_many: object = None      # optional Adam step of many parameters, one call
    gather_linear: object = None         # optional Linear from a top-k sparse input
    gather_linear_backward: object = None
    sparse_rows: object = None


_MODULES = {"numpy": "._numpy", "numba": "._numba", "cupy": "._cupy"}


def load_kernels(name: str) -> KernelSet:
    """Import the kernel module of backend ``name`` (lazily) and return its set."""
    module = importlib.import_module(_MODULES[name], __name__)
    return KernelSet(name, module.im2col_kn, module.col2im_kn,
                     getattr(module, "CHUNK_BYTES", 0),
                     *(getattr(module, f, None) for f in
                       ("conv_direct", "conv_direct_adjoint", "conv_direct_wgrad",
                        "conv_c1", "conv_c1_adjoint", "conv_c1_wgrad")),
                     getattr(module, "C1_GEOMETRIES", ()),
                     *(getattr(module, f, None) for f in
                       ("conv_s1", "conv_s1_adjoint", "conv_s1_backward",
                        "conv_cv", "conv_cv_adjoint", "adam_update",
                        "conv_cv_backward", "conv_cv_t_backward", "conv_c1_t_backward",
                        "adam_update_many", "gather_linear", "gather_linear_backward",
                        "sparse_rows")))
