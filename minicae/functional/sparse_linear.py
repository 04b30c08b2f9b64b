r"""A Linear layer from a top-k sparse input: compute from the k active units only.

When each row of the input x (N, d) has at most k non-zeros, at units
``idx`` (N, k) with values ``vals`` (N, k),

    y[n] = b + Σ_t vals[n, t] · W[:, idx[n, t]]

costs N·k·out multiply-adds instead of N·d·out. The reference below gathers
the k columns with NumPy; a backend kernel (``gather_linear``) reads k rows of
Wᵀ in place. Derivation: docs/maths.md#sparse-decoding.
"""

from __future__ import annotations

from ..errors import ShapeError
from ._common import active, check_input

__all__ = ["sparse_rows", "gathered_linear", "gathered_linear_backward",
           "has_gather_kernel"]


def has_gather_kernel():
    """Whether the active backend has a gathered-Linear kernel (faster than the GEMM)."""
    return active().kernels.gather_linear is not None


def sparse_rows(x, k):
    r"""(vals, idx), each (N, k): k units per row holding every non-zero of ``x``.

    Rows with fewer than k non-zeros are padded with zero-valued units, so the
    result is exact as long as no row has more than k non-zeros (the caller
    counts them). The order of the units is unspecified.
    """
    check_input(x, where="sparse_rows", ndim=2, shape_text="(N, d)")
    kernel = active().kernels.sparse_rows
    if kernel is not None:
        return kernel(x, k)
    xp = active().xp
    # the k smallest of "is zero": every non-zero, then zero-valued units
    idx = xp.argpartition(x == 0, k - 1, axis=1)[:, :k].astype(xp.int64)
    return xp.take_along_axis(x, idx, axis=1), idx


def _check(vals, idx, weight, where):
    check_input(vals, where=where, name="vals", ndim=2, shape_text="(N, k)")
    if idx.shape != vals.shape:
        raise ShapeError(f"{where}: expected idx of shape {tuple(vals.shape)} (as vals), "
                         f"got {tuple(idx.shape)}.")
    check_input(weight, where=where, name="weight", ndim=2,
                shape_text="(out_features, in_features)")


def gathered_linear(vals, idx, weight, bias=None):
    r"""y = b + sum_t vals[:, t] * W[:, idx[:, t]]: :func:`linear` of a sparse input.

    Parameters
    ----------
    vals, idx : ndarray of shape (N, k)
        The input's non-zero values and their units (see :func:`sparse_rows`).
    weight : ndarray of shape (out_features, in_features)
    bias : ndarray of shape (out_features,), optional

    Notes
    -----
    .. math:: y_n = b + \sum_{t=1}^{k} v_{nt}\, W_{:, i_{nt}}

    equal to :math:`x W^T + b` when :math:`x_{n, i_{nt}} = v_{nt}` and x is zero
    elsewhere (to rounding: the sum runs over k terms, not d).
    Derivation: docs/maths.md#sparse-decoding; checked by
    tests/test_sparse_decoding.py::test_gathered_linear_grad.
    """
    _check(vals, idx, weight, "gathered_linear")
    kernel = active().kernels.gather_linear
    wt = weight.T
    if kernel is not None and wt.flags.c_contiguous:
        return kernel(vals, idx, wt, bias)
    y = active().xp.einsum("nk,nko->no", vals, wt[idx])     # y_n = Σ_t v_nt Wᵀ[i_nt]
    return y if bias is None else y + bias


def gathered_linear_backward(dy, vals, idx, weight):
    r"""Gradients of :func:`gathered_linear`: ``(dvals, dweight, dbias)``.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial v_{nt}} = dY_n \cdot W_{:, i_{nt}},\qquad
              \frac{\partial L}{\partial W_{:, j}} = \sum_{(n,t):\, i_{nt} = j}
              v_{nt}\, dY_n,\qquad \frac{\partial L}{\partial b} = \sum_n dY_n

    ``dweight`` is the dense (out_features, in_features) gradient (zero in the
    columns no sample used), laid out as Wᵀ rows.
    """
    _check(vals, idx, weight, "gathered_linear_backward")
    xp = active().xp
    kernel = active().kernels.gather_linear_backward
    wt = weight.T
    if kernel is not None and wt.flags.c_contiguous:
        dvals, dwt = kernel(dy, vals, idx, wt)
        return dvals, dwt.T, dy.sum(axis=0)
    rows = wt[idx]                                          # (N, k, out)
    dvals = xp.einsum("no,nko->nk", dy, rows)               # dL/dv_nt = dY_n · W[:, i_nt]
    dwt = xp.zeros(wt.shape, dtype=wt.dtype)
    xp.add.at(dwt, idx.reshape(-1), (vals[:, :, None] * dy[:, None, :]).reshape(-1, wt.shape[1]))
    return dvals, dwt.T, dy.sum(axis=0)
