"""Registered fast kernels, one module per backend, beside the reference maths.

A backend's kernel module lists its :class:`Candidate` records in ``CANDIDATES``
(in order of preference: the ``fixed`` policy takes the first that applies).
Each candidate names the op it computes, declares the calls it handles
(``applies``) and its tolerance against the reference in functional/, and
builds the function that runs one call signature (``make``). Registering a
candidate puts it under tests/test_kernel_registry.py, which checks it against
the reference on drawn geometries, forward and backward.

The ops and the function ``make(call)`` returns for each (``call`` is a
:class:`ConvCall`; ``relu``: the forward fuses max(·, 0), the backward masks dY
by ``relu_out > 0``):

``conv2d``, ``conv_transpose2d``
    ``run(x, weight, bias) -> y``
``conv2d_backward``, ``conv_transpose2d_backward``
    ``run(dy, x, weight, relu_out, need_dx) -> (dx or None, dweight, dbias)``

A module may also provide ``adam_update`` and ``adam_update_many`` (one Adam
step in place, see kernels/_numba_optim.py), and

``gather_linear(vals, idx, wt, bias) -> y``, ``gather_linear_backward(dy, vals, idx, wt)
-> (dvals, dwt)``
    (optional) a Linear layer whose input has k non-zeros per sample (values
    ``vals`` at units ``idx``, both (N, k)), from ``wt`` = Wᵀ (d, out) C-contiguous,
    and ``sparse_rows(x, k) -> (vals, idx)``, the scan that finds them.

 Kernels import nothing from
minicae and validate nothing: the functional floor has checked every call.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

__all__ = ["Candidate", "ConvCall", "KernelSet", "load_kernels", "column_bytes",
           "COLUMN_LIMIT"]

# Columns beyond this are neither built by a column candidate nor, when a kernel
# without columns takes the call, by the timing of the reference (memory, not speed).
COLUMN_LIMIT = 256 * 2**20


class ConvCall(NamedTuple):
    """What a candidate may know of a convolution call: all of it fixed per signature.

    ``x_shape`` is the op's input, ``w_shape`` its weight, ``out_hw`` the output
    of the forward op; ``g`` the normalised geometry (kh, kw, sh, sw, pt, pb, pl,
    pr, dil_h, dil_w, groups); ``threads`` the thread limit in force.
    """

    x_shape: tuple
    w_shape: tuple
    dtype: object
    g: tuple
    out_hw: tuple
    relu: bool
    threads: int


def column_bytes(op, call):
    """Bytes of the im2col columns a call's convolution builds (for a transposed
    convolution, those of the convolution it is the adjoint of)."""
    g = call.g
    if op.startswith("conv_transpose2d"):
        c_in, (oh, ow) = call.w_shape[1] * g.groups, call.x_shape[2:]
    else:
        c_in, (oh, ow) = call.x_shape[1], call.out_hw
    return call.x_shape[0] * c_in * g.kh * g.kw * oh * ow * call.dtype.itemsize


class Candidate(NamedTuple):
    """One registered kernel for one op."""

    name: str
    op: str
    applies: Callable          # applies(call) -> bool: the geometries and dtypes it takes
    make: Callable             # make(call) -> the run function of that call signature
    rtol: float = 1e-5         # against the reference, float32 (float64: rtol**2)
    atol: float = 1e-5


class KernelSet(NamedTuple):
    name: str
    candidates: tuple = ()
    adam_update: object = None           # optional one-pass Adam step
    adam_update_many: object = None      # optional Adam step of many parameters, one call
    gather_linear: object = None         # optional Linear from a top-k sparse input
    gather_linear_backward: object = None
    sparse_rows: object = None


_MODULES = {"numpy": None, "numba": "._numba_conv", "cupy": "._cupy"}


def load_kernels(name: str) -> KernelSet:
    """Import the kernel module of backend ``name`` (lazily) and return its set."""
    if _MODULES[name] is None:               # the NumPy backend runs the reference
        return KernelSet(name)
    module = importlib.import_module(_MODULES[name], __name__)
    return KernelSet(name, tuple(module.CANDIDATES),
                     *(getattr(module, f, None) for f in
                       ("adam_update", "adam_update_many", "gather_linear",
                        "gather_linear_backward", "sparse_rows")))
