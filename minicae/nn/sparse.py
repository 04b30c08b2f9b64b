r"""The k-sparse layer: ‖z‖₀ ≤ k exactly, gradient through the kept units."""

from __future__ import annotations

from .. import functional as F
from .._validation import check_positive_int
from ..errors import ShapeError
from .module import Module

__all__ = ["TopK"]


class TopK(Module):
    r"""Keep the k largest activations of each sample and zero the rest.

    Parameters
    ----------
    k : int >= 1
        Number of values kept per sample. Selection is over all non-batch
        axes together: per row of an (N, D) input, over the C·H·W values of
        each sample of an (N, C, H, W) input.

    Notes
    -----
    .. math:: y_{n,j} = x_{n,j}\,[x_{n,j}\in\mathrm{top}_k(x_n)],\qquad
              \frac{\partial L}{\partial x_{n,j}} = \frac{\partial L}{\partial y_{n,j}}
              \,[x_{n,j}\in\mathrm{top}_k(x_n)]

    Ties are broken by the lowest (row-major) index, so exactly k values
    per sample are selected (a selected value may itself be 0).
    See :func:`minicae.functional.top_k`; checked by
    tests/test_penalties.py::test_topk_grad.

    Examples
    --------
    >>> import numpy as np
    >>> from minicae import nn
    >>> nn.TopK(2)(np.array([[0.1, 0.9, 0.5, 0.7]]))
    array([[0. , 0.9, 0. , 0.7]])
    """

    def __init__(self, k):
        self.k = check_positive_int(k, where="TopK", name="k")
        self._mask = None

    def forward(self, x):
        F._common.check_input(x, where=repr(self), name="input")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ShapeError(f"{self!r}: expected input of shape (N, D) or (N, C, H, W) "
                             f"with N >= 1, got {tuple(x.shape)}.")
        units = x.size // x.shape[0]
        if self.k > units:
            raise ValueError(f"{self!r}: k must be at most the {units} units per sample, "
                             f"got {self.k}. Lower k or widen the layer before TopK.")
        y, self._mask = F.top_k(x, self.k, return_mask=True)
        return y

    def backward(self, dy):
        if self._mask is None:
            raise RuntimeError(f"{self!r}: backward called before forward.")
        return F.top_k_backward(dy, self._mask)   # dL/dx = dL/dy ⊙ mask

    def extra_repr(self):
        return f"k={self.k}"
