"""SparseInputLinear: a Linear layer that computes from the active units of a sparse code."""

from __future__ import annotations

from .. import functional as F
from ..functional import sparse_linear as SL
from .layers import Linear

__all__ = ["SparseInputLinear"]


class SparseInputLinear(Linear):
    """Linear whose forward uses only the non-zero inputs when they are few enough.

    The weight is the same (out_features, in_features) parameter as a
    :class:`~minicae.nn.Linear`'s (same state dict), stored column-major so
    that Wᵀ's rows are contiguous for the gathered kernel. Each forward
    counts the non-zeros per sample; at most ``max_density`` * in_features in
    every row and a backend with a gathered kernel: the gathered path
    (:func:`~minicae.functional.sparse_linear.gathered_linear`), otherwise the
    dense one. The gathered input gradient is exact at the active units and
    zero elsewhere, which is what a TopK (or ReLU) before it passes on: use it
    after one.
    """

    max_density = 0.25      # gathered path at k/d <= 1/4 (bench: sparse_decode_*)

    def __init__(self, in_features, out_features, bias=True, **kw):
        super().__init__(in_features, out_features, bias, **kw)
        self._column_major()
        self._sparse = None
        self.last_path = None

    def _column_major(self):
        xp = F.array_module()
        self.weight.data = xp.asfortranarray(self.weight.data)
        self.weight.grad = xp.zeros_like(self.weight.data)

    def forward(self, x):
        self._sparse = None
        if (x.ndim == 2 and x.shape[1] == self.in_features and x.dtype == self.weight.data.dtype
                and SL.has_gather_kernel()):
            k = int((x != 0).sum(axis=1).max()) if len(x) else 0
            if 0 < k <= self.max_density * self.in_features:
                if not self.weight.data.T.flags.c_contiguous:     # e.g. after a load
                    self._column_major()
                self._x = x
                self._sparse = SL.sparse_rows(x, k)
                self.last_path = "gathered"
                return SL.gathered_linear(*self._sparse, self.weight.data,
                                          None if self.bias is None else self.bias.data)
        self.last_path = "dense"
        return super().forward(x)

    def backward(self, dy, *, need_dx=True):
        if self._sparse is None:
            return super().backward(dy, need_dx=need_dx)
        vals, idx = self._sparse
        dvals, dweight, dbias = SL.gathered_linear_backward(dy, vals, idx, self.weight.data)
        self.weight.grad += dweight     # accumulate, never assign
        if self.bias is not None:
            self.bias.grad += dbias
        if not need_dx:
            return None
        dx = F.array_module().zeros(self._x.shape, dtype=dy.dtype)
        F.array_module().put_along_axis(dx, idx, dvals, axis=1)
        return dx
