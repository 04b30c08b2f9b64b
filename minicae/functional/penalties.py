r"""Sparsity and contractive penalties on a code, and the top-k selection.

Each penalty here is the *unscaled* Ω (the attachable objects in
:mod:`minicae.nn.penalties` multiply it by their weight λ or β), returned as
a 0-d array, beside its ``_backward`` partner. The batch convention matches
the reconstruction loss's ``'mean'``: per-sample quantities (L1, contractive)
are averaged over the batch axis; the KL penalty is already a function of
batch means.

Notation: ``N`` batch size, ``z`` a code, ``a = Wx + b`` a pre-activation,
``h = s(a)`` the layer output, ``s′``/``s″`` the activation's derivatives.
Derivation: docs/maths.md#penalties; checked by tests/test_penalties.py.
"""

from __future__ import annotations

from .._validation import check_choice, check_in_open_interval, check_positive_int
from ..errors import ShapeError
from ._common import active, check_input, check_same_dtype
from .activations import ACTIVATIONS
from .conv import conv2d, conv2d_backward

__all__ = ["l1_activity", "l1_activity_backward", "kl_sparsity", "kl_sparsity_backward",
           "kl_divergence_bernoulli", "contractive_dense", "contractive_dense_backward",
           "contractive_conv", "contractive_conv_backward", "top_k", "top_k_backward"]


def _check_batch(z, where, name="z"):
    check_input(z, where=where, name=name)
    if z.ndim < 1 or z.shape[0] == 0:
        raise ShapeError(f"{where}: expected {name} with a non-empty batch axis (N, ...), "
                         f"got {tuple(z.shape)}.")


# --- L1 activity ------------------------------------------------------------

def l1_activity(z):
    r"""Mean over the batch of the L1 norm of each sample's code.

    Parameters
    ----------
    z : ndarray of shape (N, ...)

    Returns
    -------
    omega : 0-d ndarray of ``z.dtype``

    Notes
    -----
    .. math:: \Omega(z) = \frac{1}{N}\sum_{n}\sum_{j} |z_{n,j}|
    .. math:: \frac{\partial\Omega}{\partial z_{n,j}} = \frac{\mathrm{sign}(z_{n,j})}{N}

    with d|z|/dz = 0 at z = 0.
    """
    _check_batch(z, "l1_activity")
    return active().xp.abs(z).sum() / z.shape[0]       # Ω = (1/N) Σ |z|


def l1_activity_backward(z):
    """Gradient of :func:`l1_activity`: sign(z)/N (0 at 0)."""
    _check_batch(z, "l1_activity_backward")
    return active().xp.sign(z) / z.shape[0]            # dΩ/dz = sign(z)/N


# --- KL sparsity ------------------------------------------------------------

def _unit_means(z, where):
    """ρ̂_j: mean of unit j over every axis but 1 (batch, and H, W for maps)."""
    _check_batch(z, where)
    if z.ndim < 2:
        raise ShapeError(f"{where}: expected codes of shape (N, D) or (N, C, H, W), got "
                         f"{tuple(z.shape)}.")
    lo, hi = float(z.min()), float(z.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{where}: expected codes in [0, 1] (a sigmoid output), got "
                         f"values in [{lo:.4g}, {hi:.4g}]. Attach KLSparsity to a "
                         f"Sigmoid layer, or use L1Activity.")
    axes = (0,) + tuple(range(2, z.ndim))
    count = z.size // z.shape[1]
    tiny = active().xp.finfo(z.dtype).eps
    rho_hat = active().xp.clip(z.mean(axis=axes), tiny, 1 - tiny)
    return rho_hat, axes, count


def kl_divergence_bernoulli(rho, rho_hat):
    r"""KL(ρ‖ρ̂) between Bernoulli(ρ) and Bernoulli(ρ̂), elementwise.

    .. math:: \mathrm{KL}(\rho\|\hat\rho) = \rho\log\frac{\rho}{\hat\rho}
              + (1-\rho)\log\frac{1-\rho}{1-\hat\rho}
    """
    xp = active().xp
    return rho * xp.log(rho / rho_hat) + (1 - rho) * xp.log((1 - rho) / (1 - rho_hat))


def kl_sparsity(z, rho):
    r"""Sum over units of KL(ρ‖ρ̂_j), ρ̂_j the mean activation of unit j.

    Parameters
    ----------
    z : ndarray of shape (N, D) or (N, C, H, W), values in [0, 1]
        A sigmoid code. For feature maps a unit is a channel, averaged over
        N, H and W; for (N, D) a unit is a column, averaged over N.
    rho : float in (0, 1)
        Target mean activation.

    Notes
    -----
    With :math:`m` the number of values averaged per unit:

    .. math:: \Omega(z) = \sum_j \mathrm{KL}(\rho\|\hat\rho_j),\qquad
              \hat\rho_j = \frac{1}{m}\sum_{i} z_{i,j}
    .. math:: \frac{\partial\Omega}{\partial z_{i,j}} = \frac{1}{m}\Big(
              -\frac{\rho}{\hat\rho_j} + \frac{1-\rho}{1-\hat\rho_j}\Big)

    A float32 sigmoid saturates to exactly 0 or 1, so codes are accepted in
    the closed interval [0, 1] and :math:`\hat\rho_j` is clipped to
    :math:`[\epsilon, 1-\epsilon]` (ε the dtype's machine epsilon) before the
    logarithms; the gradient is evaluated at the clipped value
    (straight-through), which keeps pushing a dead or saturated unit back.

    Raises
    ------
    ValueError
        If ``rho`` is not in (0, 1) or a code value is outside [0, 1].
    """
    where = "kl_sparsity"
    rho = check_in_open_interval(rho, 0, 1, where=where, name="rho")
    rho_hat, _, _ = _unit_means(z, where)
    # Ω = Σ_j [ρ log(ρ/ρ̂_j) + (1 − ρ) log((1 − ρ)/(1 − ρ̂_j))]
    return kl_divergence_bernoulli(rho, rho_hat).sum()


def kl_sparsity_backward(z, rho):
    """Gradient of :func:`kl_sparsity` with respect to the code ``z``."""
    where = "kl_sparsity_backward"
    rho = check_in_open_interval(rho, 0, 1, where=where, name="rho")
    rho_hat, _, count = _unit_means(z, where)
    # dΩ/dz_ij = (−ρ/ρ̂_j + (1 − ρ)/(1 − ρ̂_j)) / m
    per_unit = (-rho / rho_hat + (1 - rho) / (1 - rho_hat)) / count
    shape = (1, z.shape[1]) + (1,) * (z.ndim - 2)
    return active().xp.broadcast_to(per_unit.reshape(shape), z.shape).astype(z.dtype)


# --- contractive --------------------------------------------------------------

def _derivatives(a, activation, negative_slope, where):
    """s′(a) and s″(a) for a named activation."""
    check_choice(activation, tuple(ACTIVATIONS), where=where, name="activation")
    _, grad, grad2 = ACTIVATIONS[activation]
    if activation == "leaky_relu":
        return grad(a, negative_slope), grad2(a, negative_slope)
    return grad(a), grad2(a)


def _check_dense(a, weight, where):
    check_input(a, where=where, name="a", ndim=2, shape_text="(N, out_features)")
    check_input(weight, where=where, name="weight", ndim=2,
                shape_text="(out_features, in_features)")
    check_same_dtype(a, weight, where=where, names=("a", "weight"))
    if a.shape[1] != weight.shape[0] or a.shape[0] == 0:
        raise ShapeError(f"{where}: expected a of shape (N, {weight.shape[0]}) for weight "
                         f"{tuple(weight.shape)}, got {tuple(a.shape)}.")


def contractive_dense(a, weight, *, activation="sigmoid", negative_slope=0.01):
    r"""Mean over the batch of ‖∂h/∂x‖²_F for h = s(x Wᵀ + b).

    Parameters
    ----------
    a : ndarray of shape (N, out_features)
        The pre-activation x Wᵀ + b.
    weight : ndarray of shape (out_features, in_features)
    activation : {'sigmoid', 'tanh', 'relu', 'leaky_relu'}
        The elementwise s applied to ``a``.
    negative_slope : float
        Slope of 'leaky_relu' for negative inputs.

    Notes
    -----
    Since :math:`J_{n,ji} = \partial h_{n,j}/\partial x_{n,i} = s'(a_{n,j})W_{ji}`:

    .. math:: \Omega = \frac{1}{N}\sum_n \|J_n\|_F^2
              = \frac{1}{N}\sum_{n,j} s'(a_{n,j})^2 \sum_i W_{ji}^2
    """
    where = "contractive_dense"
    _check_dense(a, weight, where)
    ds, _ = _derivatives(a, activation, negative_slope, where)
    row_norms = (weight * weight).sum(axis=1)          # r_j = Σ_i W_ji²
    # Ω = (1/N) Σ_{n,j} s′(a_nj)² r_j
    return (ds * ds * row_norms).sum() / a.shape[0]


def contractive_dense_backward(a, weight, *, activation="sigmoid", negative_slope=0.01):
    r"""Gradients of :func:`contractive_dense`: ``(da, dweight)``.

    Notes
    -----
    .. math:: \frac{\partial\Omega}{\partial a_{n,j}}
              = \frac{2}{N} s'(a_{n,j})\,s''(a_{n,j}) \sum_i W_{ji}^2
    .. math:: \frac{\partial\Omega}{\partial W_{ji}}\Big|_{a}
              = \frac{2}{N} W_{ji} \sum_n s'(a_{n,j})^2

    ``dweight`` is the direct dependence only; the part through ``a`` (and
    the bias, which enters only through ``a``) is left to the layer's
    backward, fed ``da``.
    """
    where = "contractive_dense_backward"
    _check_dense(a, weight, where)
    ds, dds = _derivatives(a, activation, negative_slope, where)
    n = a.shape[0]
    row_norms = (weight * weight).sum(axis=1)          # r_j = Σ_i W_ji²
    da = ds * dds * row_norms * (2 / n)                # dΩ/da = 2 s′ s″ r_j / N
    dweight = weight * ((ds * ds).sum(axis=0) * (2 / n))[:, None]   # 2 W_ji Σ_n s′² / N
    return da, dweight


def _ones_image(weight, input_hw, groups):
    c_in = weight.shape[1] * groups
    h, w = input_hw
    return active().xp.ones((1, c_in, h, w), dtype=weight.dtype)


def _check_conv(a, weight, input_hw, where):
    check_input(a, where=where, name="a", ndim=4, shape_text="(N, C_out, oh, ow)")
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_out, C_in/groups, kh, kw)")
    check_same_dtype(a, weight, where=where, names=("a", "weight"))
    if not (isinstance(input_hw, (tuple, list)) and len(input_hw) == 2):
        raise TypeError(f"{where}: expected input_hw to be a pair (H, W), got "
                        f"{input_hw!r}.")
    for v in input_hw:
        check_positive_int(v, where=where, name="input_hw entries")


def _tap_sums(weight, input_hw, geometry):
    """C[o,p,q] = conv2d(𝟙, W²): Σ of W² over the taps inside the padded image."""
    ones = _ones_image(weight, input_hw, geometry["groups"])
    return conv2d(ones, weight * weight, **geometry)[0]       # (C_out, oh, ow)


def _check_taps(a, taps, where):
    if a.shape[1:] != taps.shape or a.shape[0] == 0:
        raise ShapeError(f"{where}: expected a of shape (N, {', '.join(map(str, taps.shape))})"
                         f" for this weight, input size and geometry, got "
                         f"{tuple(a.shape)}.")


def contractive_conv(a, weight, input_hw, *, stride=1, padding=0, dilation=1, groups=1,
                     activation="sigmoid", negative_slope=0.01):
    r"""Mean over the batch of ‖∂h/∂x‖²_F for h = s(conv2d(x, W) + b).

    Parameters
    ----------
    a : ndarray of shape (N, C_out, oh, ow)
        The pre-activation conv2d(x, W) + b.
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    input_hw : (int, int)
        Height and width (H, W) of the convolution's input x.
    stride, padding, dilation, groups
        The convolution's geometry, as for :func:`conv2d`.
    activation : {'sigmoid', 'tanh', 'relu', 'leaky_relu'}
    negative_slope : float

    Notes
    -----
    Each output h[n,o,p,q] depends on x through one weight per kernel tap
    whose (stride, dilation)-placed position falls inside the *unpadded*
    image, so the squared Jacobian entries sum to s′(a)² times the sum of
    W² over those taps. That sum is the all-ones image convolved with the
    squared kernel, which counts only the taps inside the image:

    .. math:: C = \mathrm{conv2d}(\mathbb{1}_{C_{in}\times H\times W}, W^{\odot 2}),
              \qquad \Omega = \frac{1}{N}\sum_{n,o,p,q} s'(a_{n,o,p,q})^2\,C_{o,p,q}
    """
    where = "contractive_conv"
    _check_conv(a, weight, input_hw, where)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    taps = _tap_sums(weight, input_hw, geometry)
    _check_taps(a, taps, where)
    ds, _ = _derivatives(a, activation, negative_slope, where)
    return (ds * ds * taps).sum() / a.shape[0]        # Ω = (1/N) Σ s′(a)² ⊙ C


def contractive_conv_backward(a, weight, input_hw, *, stride=1, padding=0, dilation=1,
                              groups=1, activation="sigmoid", negative_slope=0.01):
    r"""Gradients of :func:`contractive_conv`: ``(da, dweight)``.

    Notes
    -----
    .. math:: \frac{\partial\Omega}{\partial a} = \frac{2}{N}\, s'(a)\,s''(a)\odot C
    .. math:: \frac{\partial\Omega}{\partial W}\Big|_a = \frac{2}{N}\, W \odot
              \frac{\partial}{\partial V}\Big\langle \sum_n s'(a_n)^2,\,
              \mathrm{conv2d}(\mathbb{1}, V)\Big\rangle

    the second factor being the weight gradient of a convolution of the ones
    image with upstream gradient :math:`\sum_n s'(a_n)^2`, i.e. the
    correlation of :math:`s'(a)^2` with the ones image
    (:func:`conv2d_backward`'s ``dweight``). ``dweight`` is the direct
    dependence only; the bias enters only through ``a``.
    """
    where = "contractive_conv_backward"
    _check_conv(a, weight, input_hw, where)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    taps = _tap_sums(weight, input_hw, geometry)
    _check_taps(a, taps, where)
    ds, dds = _derivatives(a, activation, negative_slope, where)
    n = a.shape[0]
    da = ds * dds * taps * (2 / n)                    # dΩ/da = 2 s′ s″ ⊙ C / N
    ds2 = (ds * ds).sum(axis=0, keepdims=True)        # Σ_n s′(a_n)², as one image
    ones = _ones_image(weight, input_hw, groups)
    _, corr, _ = conv2d_backward(ds2, ones, weight, need_dx=False, **geometry)
    dweight = weight * corr * (2 / n)                 # dΩ/dW = 2 W ⊙ corr(s′², 𝟙) / N
    return da, dweight


# --- top-k --------------------------------------------------------------------

def top_k(x, k, *, return_mask=False):
    r"""Keep the k largest values of each sample, zero the rest.

    Parameters
    ----------
    x : ndarray of shape (N, ...)
        Selection is over all non-batch axes together: per row of (N, D),
        over C·H·W values of each (N, C, H, W) sample.
    k : int, 1 <= k <= values per sample
    return_mask : bool
        Also return the boolean mask of kept values (what backward needs).

    Notes
    -----
    .. math:: y_{n,j} = x_{n,j}\,[x_{n,j} \in \mathrm{top}_k(x_n)],\qquad
              \frac{\partial L}{\partial x_{n,j}} = \frac{\partial L}{\partial y_{n,j}}
              [x_{n,j} \in \mathrm{top}_k(x_n)]

    so :math:`\|y_n\|_0 \le k`. Ties are broken by the lowest (row-major)
    index, so exactly k values are kept.
    """
    where = "top_k"
    _check_batch(x, where, name="x")
    k = check_positive_int(k, where=where, name="k")
    xp = active().xp
    n = x.shape[0]
    flat = x.reshape(n, -1)
    units = flat.shape[1]
    if k > units:
        raise ValueError(f"{where}: k must be at most the {units} units per sample, got "
                         f"{k}.")
    # stable sort of −x: equal values keep index order, so ties go to the lowest index
    order = xp.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = xp.zeros(flat.shape, dtype=bool)
    mask[xp.arange(n)[:, None], order] = True
    mask = mask.reshape(x.shape)
    y = x * mask                                       # y = x ⊙ [x ∈ top_k]
    return (y, mask) if return_mask else y


def top_k_backward(dy, mask):
    """dL/dx = dL/dy ⊙ mask: the gradient flows through the kept units only."""
    check_input(dy, where="top_k_backward", name="dy")
    if tuple(dy.shape) != tuple(mask.shape):
        raise ShapeError(f"top_k_backward: expected dy of shape {tuple(mask.shape)}, got "
                         f"{tuple(dy.shape)}.")
    return dy * mask
