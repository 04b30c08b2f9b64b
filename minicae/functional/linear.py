r"""Fully connected layer maths: y = x Wᵀ + b."""

from __future__ import annotations

from ..errors import ShapeError
from ._common import active, check_input, check_same_dtype

__all__ = ["linear", "linear_backward"]


def _check(x, weight, where):
    check_input(x, where=where, ndim=2, shape_text=f"(N, {weight.shape[1]})"
                if getattr(weight, "ndim", 0) == 2 else "(N, in_features)")
    check_input(weight, where=where, name="weight", ndim=2,
                shape_text="(out_features, in_features)")
    check_same_dtype(x, weight, where=where)
    if x.shape[1] != weight.shape[1]:
        raise ShapeError(f"{where}: expected input of shape (N, {weight.shape[1]}), got "
                         f"{tuple(x.shape)}.")


def linear(x, weight, bias=None):
    r"""Apply an affine map.

    Parameters
    ----------
    x : ndarray of shape (N, in_features)
    weight : ndarray of shape (out_features, in_features)
    bias : ndarray of shape (out_features,), optional

    Returns
    -------
    y : ndarray of shape (N, out_features)

    Notes
    -----
    .. math:: y = x W^T + b

    Derivation: docs/maths.md#linear; checked by
    tests/test_functional.py::test_linear_grad.
    """
    _check(x, weight, "linear")
    if bias is not None:
        check_input(bias, where="linear", name="bias", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ShapeError(f"linear: expected bias of shape ({weight.shape[0]},), got "
                             f"{tuple(bias.shape)}.")
        check_same_dtype(x, bias, where="linear", names=("input", "bias"))
    y = active().xp.matmul(x, weight.T)     # y = x Wᵀ
    if bias is not None:
        y += bias
    return y


def linear_backward(dy, x, weight, *, need_dx=True):
    r"""Gradients of :func:`linear`: ``(dx, dweight, dbias)``.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial x} = dY\,W,\quad
              \frac{\partial L}{\partial W} = dY^T x,\quad
              \frac{\partial L}{\partial b} = \textstyle\sum_n dY_n

    Checked by tests/test_functional.py::test_linear_grad.
    """
    _check(x, weight, "linear_backward")
    check_input(dy, where="linear_backward", name="dy", ndim=2)
    check_same_dtype(x, dy, where="linear_backward", names=("input", "dy"))
    if dy.shape != (x.shape[0], weight.shape[0]):
        raise ShapeError(f"linear_backward: expected dy of shape "
                         f"{(x.shape[0], weight.shape[0])}, got {tuple(dy.shape)}.")
    xp = active().xp
    dx = xp.matmul(dy, weight) if need_dx else None   # dL/dx = dY · W
    dweight = xp.matmul(dy.T, x)                      # dL/dW = dYᵀ · x
    return dx, dweight, dy.sum(axis=0)
