r"""Reconstruction and segmentation losses, each beside its gradient.

Every loss returns a 0-d array (a scalar of the prediction's dtype) and its
``<loss>_backward`` partner returns d loss / d prediction for an upstream
gradient of 1, with the prediction's shape and dtype. ``reduction`` is
``'mean'`` (default) or ``'sum'``; for the element-wise losses (MSE, BCE)
``'mean'`` divides by the number of elements, as PyTorch and Keras do.

All of them stay finite, without floating-point warnings, at logits of
±1e4 in float32: exponentials only ever see non-positive arguments.
Derivation: docs/maths.md#losses; checked by tests/test_losses.py.
"""

from __future__ import annotations

from .._validation import check_choice, check_in_open_interval, check_nonnegative_float
from ..errors import ShapeError
from ._common import active, check_input
from .activations import sigmoid

__all__ = ["mse", "mse_backward", "bce", "bce_backward", "bce_with_logits",
           "bce_with_logits_backward", "log_softmax", "softmax", "cross_entropy",
           "cross_entropy_backward", "dice_loss", "dice_loss_backward", "REDUCTIONS",
           "BCE_EPS"]

REDUCTIONS = ("mean", "sum")
BCE_EPS = 1e-7


def _check_pair(pred, target, where, pred_name="pred"):
    check_input(pred, where=where, name=pred_name)
    check_input(target, where=where, name="target")
    if tuple(pred.shape) != tuple(target.shape):
        raise ShapeError(f"{where}: expected target of shape {tuple(pred.shape)} (the "
                         f"{pred_name}'s), got {tuple(target.shape)}.")
    if pred.size == 0:
        raise ShapeError(f"{where}: expected a non-empty {pred_name}, got shape "
                         f"{tuple(pred.shape)}.")


def _scale(n, reduction, where):
    """1/n for 'mean', 1 for 'sum'."""
    check_choice(reduction, REDUCTIONS, where=where, name="reduction")
    return 1.0 / n if reduction == "mean" else 1.0


def _check_unit_interval(values, where, name, hint=""):
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{where}: expected {name} in [0, 1], got values in "
                         f"[{lo:.4g}, {hi:.4g}].{hint}")


def mse(pred, target, *, reduction="mean"):
    r"""Mean (or summed) squared error.

    Parameters
    ----------
    pred, target : ndarray of the same shape, floating
    reduction : {'mean', 'sum'}

    Returns
    -------
    loss : 0-d ndarray of ``pred.dtype``

    Notes
    -----
    .. math:: L = \frac{1}{m} \sum_i (\hat x_i - x_i)^2

    with ``m`` the number of elements for ``'mean'`` and 1 for ``'sum'``.
    Checked by tests/test_losses.py::test_elementwise_loss_grads.
    """
    _check_pair(pred, target, "mse")
    scale = _scale(pred.size, reduction, "mse")
    diff = pred - target
    active().xp.multiply(diff, diff, out=diff)          # in place: one temporary
    return diff.sum() * scale                           # L = (1/m) Σ (x̂ − x)²


def mse_backward(pred, target, *, reduction="mean"):
    r"""Gradient of :func:`mse` with respect to ``pred``.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial \hat x_i} = \frac{2}{m}(\hat x_i - x_i)
    """
    _check_pair(pred, target, "mse_backward")
    scale = _scale(pred.size, reduction, "mse_backward")
    grad = pred - target
    grad *= 2 * scale                                   # dL/dx̂ = 2(x̂ − x)/m
    return grad


def _clip_prob(prob, eps):
    return active().xp.clip(prob, eps, 1 - eps)


def bce(prob, target, *, reduction="mean", eps=BCE_EPS):
    r"""Binary cross-entropy on probabilities (e.g. a sigmoid output).

    Parameters
    ----------
    prob : ndarray, values in [0, 1]
    target : ndarray of the same shape, values in [0, 1] (soft targets allowed)
    reduction : {'mean', 'sum'}
    eps : float, default 1e-7
        ``prob`` is clipped to ``[eps, 1 - eps]`` so the logarithms never see
        0 (a float32 sigmoid output is exactly 1.0 beyond x ≈ 17).

    Notes
    -----
    With :math:`\tilde p = \mathrm{clip}(p, \epsilon, 1 - \epsilon)`:

    .. math:: L = -\frac{1}{m}\sum_i \big[t_i \log \tilde p_i
              + (1 - t_i)\log(1 - \tilde p_i)\big]

    The loss is bounded by :math:`-\log\epsilon \approx 16.1` per element.
    Prefer :func:`bce_with_logits`, which needs no clipping.

    Raises
    ------
    ValueError
        If ``prob`` or ``target`` has values outside [0, 1].
    """
    where = "bce"
    _check_pair(prob, target, where, pred_name="prob")
    scale = _scale(prob.size, reduction, where)
    check_in_open_interval(eps, 0, 0.5, where=where, name="eps")
    _check_unit_interval(prob, where, "prob",
                         " Pass logits to bce_with_logits instead.")
    _check_unit_interval(target, where, "target")
    xp = active().xp
    p = _clip_prob(prob, eps)
    # L = −(1/m) Σ [t log p̃ + (1 − t) log(1 − p̃)]
    return -(target * xp.log(p) + (1 - target) * xp.log(1 - p)).sum() * scale


def bce_backward(prob, target, *, reduction="mean", eps=BCE_EPS):
    r"""Gradient of :func:`bce` with respect to ``prob``.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial p_i}
              = \frac{1}{m}\,\frac{\tilde p_i - t_i}{\tilde p_i (1 - \tilde p_i)}

    The clip is treated as the identity in the backward pass
    (straight-through), so a saturated wrong prediction still receives a
    large, finite gradient instead of 0. Inside ``[eps, 1 - eps]`` this is
    the exact derivative.
    """
    where = "bce_backward"
    _check_pair(prob, target, where, pred_name="prob")
    scale = _scale(prob.size, reduction, where)
    check_in_open_interval(eps, 0, 0.5, where=where, name="eps")
    p = _clip_prob(prob, eps)
    return (p - target) / (p * (1 - p)) * scale     # dL/dp = (p̃ − t) / (p̃(1 − p̃) m)


def bce_with_logits(logits, target, *, reduction="mean"):
    r"""Binary cross-entropy of ``sigmoid(logits)``, computed from the logits.

    Parameters
    ----------
    logits : ndarray, any real values
    target : ndarray of the same shape, values in [0, 1]
    reduction : {'mean', 'sum'}

    Notes
    -----
    .. math:: L = \frac{1}{m}\sum_i \big[\max(z_i, 0) - z_i t_i
              + \log(1 + e^{-|z_i|})\big]

    which equals :math:`-[t\log\sigma(z) + (1-t)\log(1-\sigma(z))]` but never
    exponentiates a positive number, so it is exact and finite at any z.
    """
    where = "bce_with_logits"
    _check_pair(logits, target, where, pred_name="logits")
    scale = _scale(logits.size, reduction, where)
    _check_unit_interval(target, where, "target")
    xp = active().xp
    # L = (1/m) Σ [max(z, 0) − z t + log(1 + e^{−|z|})]
    per = xp.maximum(logits, 0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))
    return per.sum() * scale


def bce_with_logits_backward(logits, target, *, reduction="mean"):
    r"""Gradient of :func:`bce_with_logits` with respect to ``logits``.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial z_i} = \frac{1}{m}(\sigma(z_i) - t_i)
    """
    where = "bce_with_logits_backward"
    _check_pair(logits, target, where, pred_name="logits")
    scale = _scale(logits.size, reduction, where)
    return (sigmoid(logits) - target) * scale       # dL/dz = (σ(z) − t)/m


def log_softmax(logits, axis=1):
    r"""Logarithm of the softmax along ``axis`` (the class axis, 1 in NCHW).

    Notes
    -----
    .. math:: \log\mathrm{softmax}(z)_c = (z_c - \max_k z_k)
              - \log\sum_k e^{z_k - \max_k z_k}

    Subtracting the maximum keeps every exponent ≤ 0 (no overflow) and the
    sum ≥ 1 (no log of 0).
    """
    check_input(logits, where="log_softmax", name="logits")
    xp = active().xp
    shifted = logits - logits.max(axis=axis, keepdims=True)   # z − max z
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits, axis=1):
    r"""Softmax along ``axis``: :math:`e^{z_c - \max z} / \sum_k e^{z_k - \max z}`."""
    check_input(logits, where="softmax", name="logits")
    xp = active().xp
    e = xp.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _class_last(logits, target, where, ignore_index=None):
    """Validate and flatten to (M, C) logits and (M,) int targets."""
    check_input(logits, where=where, name="logits")
    if logits.ndim not in (2, 4):
        raise ShapeError(f"{where}: expected logits of shape (N, C) or (N, C, H, W), "
                         f"got {tuple(logits.shape)}.")
    n, c = logits.shape[:2]
    want = (n,) + tuple(logits.shape[2:])
    if not hasattr(target, "dtype") or target.dtype.kind not in "iu":
        raise TypeError(f"{where}: expected integer class targets, got "
                        f"{getattr(target, 'dtype', type(target).__name__)}. Convert "
                        f"with target.astype(numpy.int64).")
    if tuple(target.shape) != want:
        raise ShapeError(f"{where}: expected target of shape {want} for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}.")
    if logits.size == 0:
        raise ShapeError(f"{where}: expected non-empty logits, got shape "
                         f"{tuple(logits.shape)}.")
    flat_t = target.reshape(-1)
    valid = flat_t != ignore_index if ignore_index is not None else None
    checked = flat_t[valid] if valid is not None else flat_t
    if checked.size and (int(checked.min()) < 0 or int(checked.max()) >= c):
        raise ValueError(f"{where}: expected class targets in [0, {c}), got values in "
                         f"[{int(checked.min())}, {int(checked.max())}].")
    z = logits if logits.ndim == 2 else logits.transpose(0, 2, 3, 1).reshape(-1, c)
    return z, flat_t, valid


def _restore(grad2d, shape):
    """(M, C) -> the logits' layout ((N, C) or (N, C, H, W))."""
    if len(shape) == 2:
        return grad2d
    n, c, h, w = shape
    grad = grad2d.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return active().xp.ascontiguousarray(grad)


def _ce_terms(logits, target, reduction, ignore_index, weight, where):
    """Per-row class weights (0 where ignored), safe targets and the scale."""
    xp = active().xp
    z, t, valid = _class_last(logits, target, where, ignore_index)
    check_choice(reduction, REDUCTIONS, where=where, name="reduction")
    safe_t = xp.where(valid, t, 0) if valid is not None else t
    if weight is None:
        w_row = xp.ones(t.shape, dtype=z.dtype)
    else:
        check_input(weight, where=where, name="weight", ndim=1)
        if weight.shape[0] != z.shape[1]:
            raise ShapeError(f"{where}: expected weight of shape ({z.shape[1]},), got "
                             f"{tuple(weight.shape)}.")
        if float(weight.min()) < 0:
            raise ValueError(f"{where}: expected non-negative class weights, got a "
                             f"minimum of {float(weight.min())!r}.")
        w_row = weight.astype(z.dtype)[safe_t]
    if valid is not None:
        w_row = w_row * valid
    total = float(w_row.sum())
    # 'mean' divides by Σ w_{t_i} over non-ignored rows (PyTorch); 0 rows -> loss 0
    scale = (1.0 / total if total > 0 else 0.0) if reduction == "mean" else 1.0
    return z, safe_t, w_row, scale


def cross_entropy(logits, target, *, reduction="mean", ignore_index=None, weight=None):
    r"""Softmax cross-entropy of integer class targets.

    Parameters
    ----------
    logits : ndarray of shape (N, C) or (N, C, H, W)
    target : int ndarray of shape (N,) or (N, H, W), values in [0, C)
        (or equal to ``ignore_index``)
    reduction : {'mean', 'sum'}
    ignore_index : int, optional
        Targets equal to it contribute neither loss nor gradient.
    weight : ndarray of shape (C,), optional
        Non-negative per-class weights :math:`w_c`.

    Notes
    -----
    Over the rows i (samples, or pixels of NCHW logits):

    .. math:: L = \frac{1}{Z}\sum_i -w_{t_i}\log\mathrm{softmax}(z_i)_{t_i},
              \qquad Z = \sum_i w_{t_i}

    for ``'mean'`` (PyTorch's weighted mean; Z = 1 for ``'sum'``; ignored rows
    are left out of both sums, and a batch with no valid row has loss 0).
    Stable at any logit size through :func:`log_softmax`.
    """
    where = "cross_entropy"
    z, t, w_row, scale = _ce_terms(logits, target, reduction, ignore_index, weight, where)
    xp = active().xp
    logp = log_softmax(z, axis=1)
    picked = xp.take_along_axis(logp, t[:, None], axis=1)[:, 0]   # log p_{t_i}
    return -(w_row * picked).sum() * scale        # L = −(1/Z) Σ w_t log p_t


def cross_entropy_backward(logits, target, *, reduction="mean", ignore_index=None,
                           weight=None):
    r"""Gradient of :func:`cross_entropy` with respect to ``logits``.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial z_{i,c}} = \frac{w_{t_i}}{Z}
              \big(\mathrm{softmax}(z_i)_c - [c = t_i]\big)
    """
    where = "cross_entropy_backward"
    z, t, w_row, scale = _ce_terms(logits, target, reduction, ignore_index, weight, where)
    xp = active().xp
    grad = softmax(z, axis=1)
    grad[xp.arange(t.shape[0]), t] -= 1                        # softmax − onehot
    grad *= (w_row * scale)[:, None]                           # · w_t / Z
    return _restore(grad, logits.shape)


def _dice_parts(logits, target, eps, where):
    xp = active().xp
    z, t, _ = _class_last(logits, target, where)
    check_nonnegative_float(eps, where=where, name="eps")
    p = softmax(z, axis=1)                                     # (M, C)
    g = xp.zeros_like(p)
    g[xp.arange(t.shape[0]), t] = 1                            # one-hot targets
    inter = (p * g).sum(axis=0)                                # I_c = Σ_i p g
    denom = p.sum(axis=0) + g.sum(axis=0) + eps                # S_c = Σp + Σg + ε
    return p, g, inter, denom


def dice_loss(logits, target, *, eps=1.0):
    r"""Soft multi-class Dice loss on softmax probabilities.

    Parameters
    ----------
    logits : ndarray of shape (N, C) or (N, C, H, W)
    target : int ndarray of shape (N,) or (N, H, W), values in [0, C)
    eps : float, default 1.0
        Smoothing added to numerator and denominator; keeps a class absent
        from both prediction and target at Dice 1 and the ratio defined.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)` over classes, :math:`g` the one-hot
    targets and sums over the whole batch (every sample and pixel i):

    .. math:: L = 1 - \frac{1}{C}\sum_c
              \frac{2\sum_i p_{ic} g_{ic} + \epsilon}
                   {\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}

    The loss is already normalised (in [0, 1]), so it takes no reduction.
    """
    _, _, inter, denom = _dice_parts(logits, target, eps, "dice_loss")
    c = inter.shape[0]
    # L = 1 − (1/C) Σ_c (2 I_c + ε) / S_c
    return 1 - ((2 * inter + eps) / denom).sum() / c


def dice_loss_backward(logits, target, *, eps=1.0):
    r"""Gradient of :func:`dice_loss` with respect to ``logits``.

    Notes
    -----
    With :math:`D_c = (2 I_c + \epsilon)/S_c`, first with respect to the
    probabilities, then through the softmax Jacobian:

    .. math:: \frac{\partial L}{\partial p_{ic}} = -\frac{1}{C}\,
              \frac{2 g_{ic} - D_c}{S_c}
    .. math:: \frac{\partial L}{\partial z_{ic}} = p_{ic}\Big(
              \frac{\partial L}{\partial p_{ic}}
              - \sum_k p_{ik}\frac{\partial L}{\partial p_{ik}}\Big)
    """
    p, g, inter, denom = _dice_parts(logits, target, eps, "dice_loss_backward")
    c = inter.shape[0]
    dice = (2 * inter + eps) / denom                           # D_c
    dp = -(2 * g - dice) / (denom * c)                         # dL/dp = −(2g − D_c)/(C S_c)
    # dL/dz = p ⊙ (dL/dp − Σ_k p_k dL/dp_k)
    dz = p * (dp - (p * dp).sum(axis=1, keepdims=True))
    return _restore(dz, logits.shape)
