"""The Numba backend's registered convolution candidates.

Four families compute a convolution without columns, each for the calls it
takes (groups 1, float32/float64, a non-empty batch):

* ``direct`` -- one output channel at stride 1 (the GEMM would be a
  matrix-vector product; kernels/_numba.py);
* ``c1`` -- one input channel, through phase planes (kernels/_numba_c1.py);
* ``s1`` -- stride 1, register-blocked SIMD loops along the rows
  (kernels/_numba_s1.py);
* ``cv`` -- any stride, the channels in the SIMD lanes (kernels/_numba_cv.py);

and the column candidates (kernels/_columns.py) take every call. Each kernel
splits the batch's images over ``threads`` Numba threads (:func:`kernel_threads`).
Which one runs a call is measured by the dispatcher, not ruled here; the order of
``CANDIDATES`` is the ``fixed`` policy's preference. Every family's fastmath
flags allow contraction into fused multiply-adds (and, in c1's weight
gradient, reassociation of the sums): their tolerance is stated below and tested
against the reference by tests/test_kernel_registry.py.
"""

from __future__ import annotations

import os

import numpy as np

from . import Candidate
from ._columns import column_candidates
from ._load import free_cores
from ._numba import (channel_sums, col2im_kn, conv_direct, conv_direct_adjoint,
                     conv_direct_wgrad, im2col_kn)
from ._numba_c1 import (C1_GEOMETRIES, conv_c1, conv_c1_adjoint, conv_c1_t_backward,
                        conv_c1_wgrad)
from ._numba_cv import conv_cv, conv_cv_adjoint, conv_cv_backward, conv_cv_t_backward
from ._numba_gather import gather_linear, gather_linear_backward, sparse_rows
from ._numba_optim import adam_update, adam_update_many
from ._numba_s1 import conv_s1, conv_s1_adjoint, conv_s1_backward

__all__ = ["CANDIDATES", "adam_update", "adam_update_many", "kernel_threads", "gather_linear",
           "gather_linear_backward", "sparse_rows"]

# Columns' worth of bytes per thread from which a kernel splits its images over
# Numba's threads: below it, the fork-join costs more than the second thread saves.
KERNEL_PER_THREAD_BYTES = 64 * 2**10


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                   # not on Linux
        return os.cpu_count() or 1


_CORES = _cores()


def kernel_threads(n_images, nbytes, limit):
    """Threads for one kernel call: one per ``KERNEL_PER_THREAD_BYTES`` of the columns
    it does without, at most the images, the cores and ``limit`` (the thread limit)."""
    return max(1, min(n_images, free_cores(_CORES), nbytes // KERNEL_PER_THREAD_BYTES, limit))


def _transposed(op):
    return op.startswith("conv_transpose2d")


def _conv_shape(op, call):
    """(c_in, c_out, oh, ow) of the convolution behind ``op`` (a transposed
    convolution is the adjoint of the convolution from its output to its input)."""
    if _transposed(op):
        return call.w_shape[1] * call.g.groups, call.w_shape[0], *call.x_shape[2:]
    return call.x_shape[1], call.w_shape[0], *call.out_hw


def _threads(op, call):
    c_in, _, oh, ow = _conv_shape(op, call)
    n = call.x_shape[0]
    per_image = c_in * call.g.kh * call.g.kw * oh * ow * call.dtype.itemsize
    return kernel_threads(n, n * per_image, call.threads)


def _simd(call):
    return (call.g.groups == 1 and call.x_shape[0] > 0 and call.dtype.kind == "f"
            and call.dtype.itemsize in (4, 8))


def _stride1(call):
    return (call.g.sh, call.g.sw) == (1, 1)


def _c1_args(g):
    return g.sh, g.sw, g.pt, g.pl, g.dil_h, g.dil_w


def _s1_args(g):
    return g.pt, g.pl, g.dil_h, g.dil_w


def _kernel_args(g):
    return g.sh, g.sw, g.pt, g.pb, g.pl, g.pr, g.dil_h, g.dil_w


def _out_shape(op, call):
    c_out = call.w_shape[1] * call.g.groups if _transposed(op) else call.w_shape[0]
    return (call.x_shape[0], c_out, *call.out_hw)


def _forward(kernel, args_of, op):
    """make(call) for a forward op: ``kernel(x, W, b, *args, out, relu=, threads=)``."""
    def make(call):
        args, shape, t = args_of(call.g), _out_shape(op, call), _threads(op, call)

        def run(x, weight, bias):
            return kernel(x, weight, bias, *args, np.empty(shape, x.dtype),
                          relu=call.relu, threads=t)
        return run
    return make


def _backward(kernel, args_of, op, **extra):
    """make(call) for a backward op: ``kernel(dy, x, W, *args, relu_out=, dx=, threads=)
    -> (dW, db)``, the whole backward in one parallel region."""
    def make(call):
        args, t = args_of(call.g), _threads(op, call)

        def run(dy, x, weight, relu_out, need_dx):
            dx = np.empty(x.shape, x.dtype) if need_dx else None
            dweight, dbias = kernel(dy, x, weight, *args, relu_out=relu_out, dx=dx,
                                    threads=t, **extra)
            return dx, dweight.reshape(weight.shape), dbias
        return run
    return make


def _s1_adjoint(dy, weight, bias, *args, relu, threads):
    out = args[-1]
    return conv_s1_adjoint(dy, weight, *args[:-1], out, bias=bias, relu=relu,
                           threads=threads)


def _c1_backward(dy, x, weight, *args, relu_out, dx, threads):
    if dx is not None:           # the input gradient reads dY masked, once
        dy, relu_out = (dy if relu_out is None else dy * (relu_out > 0)), None
        conv_c1_adjoint(dy, weight, None, *args, dx, threads=threads)
    return conv_c1_wgrad(dy, x, weight.shape[2], weight.shape[3], *args,
                         relu_out=relu_out, threads=threads)


def _direct_forward(call):
    args, t = _kernel_args(call.g), _threads("conv2d", call)
    shape = _out_shape("conv2d", call)

    def run(x, weight, bias):
        y = conv_direct(x, weight, bias, *args, np.empty(shape, x.dtype), threads=t)
        return np.maximum(y, 0, out=y) if call.relu else y
    return run


def _direct_backward(call):
    args, t = _kernel_args(call.g), _threads("conv2d", call)
    h, w = call.x_shape[2:]

    def run(dy, x, weight, relu_out, need_dx):
        dy = np.ascontiguousarray(dy if relu_out is None else dy * (relu_out > 0))
        dx = (conv_direct_adjoint(dy, weight, h, w, *args, threads=t) if need_dx
              else None)
        dweight = conv_direct_wgrad(dy, x, weight.shape[2], weight.shape[3], *args,
                                    threads=t)
        return dx, dweight, channel_sums(dy)
    return run


def _is_direct(call):
    return _simd(call) and _stride1(call) and call.w_shape[0] == 1


def _is_c1(op):
    def applies(call):
        c_in = _conv_shape(op, call)[0]
        g = call.g
        return (_simd(call) and c_in == 1
                and (g.kh, g.kw, g.sh, g.sw, g.dil_h, g.dil_w) in C1_GEOMETRIES)
    return applies


def _is_s1(op):
    def applies(call):
        return (_simd(call) and _stride1(call) and call.g.kh * call.g.kw > 1
                and _conv_shape(op, call)[1] > 1)
    return applies


def _is_cv(op):
    def applies(call):
        return _simd(call) and not _stride1(call) and _conv_shape(op, call)[1] > 1
    return applies


# fastmath "contract" (FMA) in every family: one rounding fewer per product
_TOL = dict(rtol=1e-4, atol=1e-5)


def _family(name, kernels, args_of):
    """The four ops' candidates of one family: kernels = (forward, adjoint, backward,
    transposed backward), each None where the family has none."""
    fwd, adj, bwd, t_bwd = kernels
    ops = (("conv2d", fwd, _forward), ("conv_transpose2d", adj, _forward),
           ("conv2d_backward", bwd, _backward),
           ("conv_transpose2d_backward", t_bwd, _backward))
    applies = {"c1": _is_c1, "s1": _is_s1, "cv": _is_cv}[name]
    out = []
    for op, kernel, maker in ops:
        if kernel is None:
            continue
        extra = {"transposed": True} if (name == "s1" and op.startswith("conv_t")
                                         and op.endswith("backward")) else {}
        out.append(Candidate(f"numba.{name}", op, applies(op),
                             maker(kernel, args_of, op, **extra), **_TOL))
    return out


CANDIDATES = (
    Candidate("numba.direct", "conv2d", _is_direct, _direct_forward, **_TOL),
    Candidate("numba.direct", "conv2d_backward", _is_direct, _direct_backward, **_TOL),
    *_family("c1", (conv_c1, conv_c1_adjoint, _c1_backward, conv_c1_t_backward), _c1_args),
    *_family("s1", (conv_s1, _s1_adjoint, conv_s1_backward, conv_s1_backward), _s1_args),
    *_family("cv", (conv_cv, conv_cv_adjoint, conv_cv_backward, conv_cv_t_backward),
             _c1_args),
    *column_candidates("numba", np, im2col_kn, col2im_kn),
)
