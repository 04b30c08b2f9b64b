r"""Loss objects: ``loss(pred, target)`` -> float, ``loss.backward()`` -> d loss/d pred.

Each object keeps the arrays its gradient needs from the last call; the maths
lives in :mod:`minicae.functional.losses`.

Examples
--------
>>> import numpy as np
>>> from minicae import nn
>>> loss = nn.MSELoss()
>>> round(loss(np.array([[1.0, 2.0]]), np.array([[0.0, 2.0]])), 3)
0.5
>>> loss.backward()
array([[1., 0.]])
"""

from __future__ import annotations

from .. import functional as F
from .._validation import check_choice

__all__ = ["Loss", "MSELoss", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss",
           "DiceLoss"]


class Loss:
    """Base class: ``__call__`` evaluates and caches, ``backward`` differentiates."""

    def __init__(self, reduction="mean"):
        self.reduction = check_choice(reduction, F.REDUCTIONS, where=type(self).__name__,
                                      name="reduction")
        self._cache = None

    def _value(self, pred, target):
        raise NotImplementedError

    def _grad(self, pred, target):
        raise NotImplementedError

    def forward(self, pred, target):
        """Evaluate the loss as a Python float; keep ``pred`` and ``target``."""
        value = float(self._value(pred, target))
        self._cache = (pred, target)
        return value

    __call__ = forward

    def backward(self):
        """d loss / d pred for the last call (same shape and dtype as pred)."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward. Call "
                               f"loss(pred, target) first.")
        pred, target = self._cache
        return self._grad(pred, target).astype(pred.dtype, copy=False)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class MSELoss(Loss):
    r"""Squared error, :math:`\frac{1}{m}\sum_i(\hat x_i - x_i)^2` (see :func:`F.mse`)."""

    def _value(self, pred, target):
        return F.mse(pred, target, reduction=self.reduction)

    def _grad(self, pred, target):
        return F.mse_backward(pred, target, reduction=self.reduction)


class BCELoss(Loss):
    r"""Binary cross-entropy on probabilities, or on logits with ``from_logits=True``.

    Parameters
    ----------
    reduction : {'mean', 'sum'}
    from_logits : bool, default False
        False: ``pred`` is a probability (e.g. a Sigmoid output), clipped to
        ``[eps, 1 - eps]`` (:func:`minicae.functional.bce`). True: ``pred`` is
        a logit and the stable form
        :math:`\max(z,0) - zt + \log(1+e^{-|z|})` is used
        (:func:`minicae.functional.bce_with_logits`), gradient σ(z) − t.
    eps : float, default 1e-7
        The probability clip; unused with logits.
    """

    def __init__(self, reduction="mean", from_logits=False, *, eps=F.BCE_EPS):
        super().__init__(reduction)
        self.from_logits = bool(from_logits)
        self.eps = eps

    def _value(self, pred, target):
        if self.from_logits:
            return F.bce_with_logits(pred, target, reduction=self.reduction)
        return F.bce(pred, target, reduction=self.reduction, eps=self.eps)

    def _grad(self, pred, target):
        if self.from_logits:
            return F.bce_with_logits_backward(pred, target, reduction=self.reduction)
        return F.bce_backward(pred, target, reduction=self.reduction, eps=self.eps)

    def extra_repr(self):
        return super().extra_repr() + (", from_logits=True" if self.from_logits else "")


class BCEWithLogitsLoss(BCELoss):
    """:class:`BCELoss` with ``from_logits=True`` (PyTorch's name)."""

    def __init__(self, reduction="mean"):
        super().__init__(reduction, from_logits=True)


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy over (N, C) or NCHW logits with integer targets.

    See :func:`minicae.functional.cross_entropy` for the formula, the
    weighted mean and ``ignore_index``.
    """

    def __init__(self, reduction="mean", *, ignore_index=None, weight=None):
        super().__init__(reduction)
        self.ignore_index = ignore_index
        self.weight = weight

    def _kwargs(self):
        return dict(reduction=self.reduction, ignore_index=self.ignore_index,
                    weight=self.weight)

    def _value(self, pred, target):
        return F.cross_entropy(pred, target, **self._kwargs())

    def _grad(self, pred, target):
        return F.cross_entropy_backward(pred, target, **self._kwargs())

    def extra_repr(self):
        text = super().extra_repr()
        if self.ignore_index is not None:
            text += f", ignore_index={self.ignore_index}"
        return text + (", weight=..." if self.weight is not None else "")


class DiceLoss(Loss):
    """Soft multi-class Dice loss on softmax probabilities (already normalised).

    See :func:`minicae.functional.dice_loss`; it takes no reduction.
    """

    def __init__(self, *, eps=1.0):
        super().__init__("mean")
        self.eps = eps

    def _value(self, pred, target):
        return F.dice_loss(pred, target, eps=self.eps)

    def _grad(self, pred, target):
        return F.dice_loss_backward(pred, target, eps=self.eps)

    def extra_repr(self):
        return f"eps={self.eps}"
