r"""Penalties attachable to a module: L1Activity, KLSparsity, Contractive.

Protocol (used by :class:`minicae.nn.Module`): ``module.attach(penalty)``
calls ``penalty.bind(module)``; after every forward of the module,
``penalty.observe(module, x, y)`` stores the scaled value in
``penalty.value`` (a Python float) and caches what backward needs; during
:meth:`Sequential.backward`, ``penalty.backward()`` returns d penalty / d y,
which is added to the upstream gradient, and adds any *direct* parameter
gradient into ``p.grad`` with ``+=``. The objective being differentiated is
``loss + Σ penalty.value``.

Batch convention, matching the reconstruction loss's ``'mean'``: per-sample
quantities (L1, ‖J‖²_F) are averaged over the batch; KL sparsity is a
function of batch means already. The maths is in
:mod:`minicae.functional.penalties`.

Examples
--------
>>> import numpy as np
>>> from minicae import nn
>>> enc = nn.Sequential(nn.Linear(4, 3, rng=0, dtype=np.float64), nn.Sigmoid())
>>> kl = nn.KLSparsity(rho=0.05, weight=0.1)
>>> _ = enc[1].attach(kl)
>>> z = enc(np.ones((2, 4)))
>>> kl.value > 0
True
"""

from __future__ import annotations

from .. import functional as F
from .._validation import check_choice, check_in_open_interval, check_nonnegative_float
from .layers import Conv2d, Linear

__all__ = ["Penalty", "L1Activity", "KLSparsity", "Contractive"]


class Penalty:
    """Base class of attachable penalties; ``value`` is the last scaled value."""

    def __init__(self, weight):
        self.weight = check_nonnegative_float(weight, where=type(self).__name__,
                                              name="weight")
        self.value = 0.0
        self._module = None
        self._cache = None

    def bind(self, module):
        """Remember the module this penalty watches (one module per penalty)."""
        if self._module is not None and self._module is not module:
            raise ValueError(f"{self!r}: already attached to {self._module!r}. Create "
                             f"one penalty object per module.")
        self._module = module

    def observe(self, module, x, y):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before the module's forward.")
        return self._cache

    def extra_repr(self):
        return f"weight={self.weight}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class L1Activity(Penalty):
    r"""λ times the batch mean of the L1 norm of the module's output.

    Parameters
    ----------
    weight : float >= 0
        λ.

    Notes
    -----
    .. math:: P = \frac{\lambda}{N}\sum_{n}\sum_{j}|z_{n,j}|,\qquad
              \frac{\partial P}{\partial z} = \frac{\lambda}{N}\,\mathrm{sign}(z)

    (a mean over the batch, a sum over units; d|z|/dz = 0 at 0).
    Checked by tests/test_penalties.py::test_penalty_total_gradient_dense.
    """

    def __init__(self, weight=1e-3):
        super().__init__(weight)

    def observe(self, module, x, y):
        self._cache = y
        self.value = self.weight * float(F.l1_activity(y))      # P = λ (1/N) Σ|z|

    def backward(self):
        return F.l1_activity_backward(self._cached()) * self.weight   # λ sign(z)/N


class KLSparsity(Penalty):
    r"""β Σ_j KL(ρ‖ρ̂_j) on a sigmoid code; ρ̂_j is unit j's mean activation.

    Parameters
    ----------
    rho : float in (0, 1)
        Target mean activation ρ.
    weight : float >= 0
        β.

    Notes
    -----
    .. math:: P = \beta\sum_j \rho\log\frac{\rho}{\hat\rho_j}
              + (1-\rho)\log\frac{1-\rho}{1-\hat\rho_j}
    .. math:: \frac{\partial P}{\partial z_{i,j}} = \frac{\beta}{m}\Big(
              -\frac{\rho}{\hat\rho_j} + \frac{1-\rho}{1-\hat\rho_j}\Big)

    A unit is a column of (N, D) codes (m = N) or a channel of (N, C, H, W)
    maps (m = N·H·W). Codes must lie in [0, 1] (attach to a Sigmoid);
    see :func:`minicae.functional.kl_sparsity` for the clipping of ρ̂.
    """

    def __init__(self, rho=0.05, weight=1.0):
        self.rho = check_in_open_interval(rho, 0, 1, where="KLSparsity", name="rho")
        super().__init__(weight)

    def observe(self, module, x, y):
        self._cache = y
        self.value = self.weight * float(F.kl_sparsity(y, self.rho))  # β Σ KL(ρ‖ρ̂)

    def backward(self):
        return F.kl_sparsity_backward(self._cached(), self.rho) * self.weight

    def extra_repr(self):
        return f"rho={self.rho}, weight={self.weight}"


class Contractive(Penalty):
    r"""λ times the batch mean of ‖∂h/∂x‖²_F for h = s(Wx + b).

    Attach it to the :class:`Linear` or :class:`Conv2d` layer whose output is
    the pre-activation a = Wx + b, and name the activation s that follows.

    Parameters
    ----------
    weight : float >= 0
        λ.
    activation : {'sigmoid', 'tanh', 'relu', 'leaky_relu'}
    negative_slope : float
        For 'leaky_relu'.

    Notes
    -----
    .. math:: P = \frac{\lambda}{N}\sum_n \|J_n\|_F^2 =
              \frac{\lambda}{N}\sum_{n} \sum_{o} s'(a_{n,o})^2\, C_o

    with :math:`C_o = \sum_i W_{oi}^2` for a dense layer and
    :math:`C = \mathrm{conv2d}(\mathbb{1}, W^{\odot2})` (same stride,
    padding, dilation, groups) for a convolution. ``backward`` returns
    :math:`\frac{2\lambda}{N} s' s'' \odot C` (d/da) and adds the direct
    weight gradient; the bias enters only through a. See
    :func:`minicae.functional.contractive_dense` and
    :func:`minicae.functional.contractive_conv`.
    """

    def __init__(self, weight=1e-3, activation="sigmoid", negative_slope=0.01):
        super().__init__(weight)
        self.activation = check_choice(activation, tuple(F.ACTIVATIONS),
                                       where="Contractive", name="activation")
        self.negative_slope = check_nonnegative_float(negative_slope, where="Contractive",
                                                      name="negative_slope")

    def bind(self, module):
        if not isinstance(module, (Linear, Conv2d)):
            raise TypeError(f"{self!r}: expected a Linear or Conv2d module (whose output "
                            f"is the pre-activation a = Wx + b), got {module!r}. Attach "
                            f"it to the layer before the activation.")
        super().bind(module)

    def _act(self):
        return dict(activation=self.activation, negative_slope=self.negative_slope)

    @staticmethod
    def _geometry(module):
        return dict(stride=module.stride, padding=module.padding,
                    dilation=module.dilation, groups=module.groups)

    def observe(self, module, x, y):
        weight = module.weight.data
        if isinstance(module, Linear):
            omega = F.contractive_dense(y, weight, **self._act())
            self._cache = (y, None)
        else:
            input_hw = tuple(x.shape[2:])
            omega = F.contractive_conv(y, weight, input_hw, **self._geometry(module),
                                       **self._act())
            self._cache = (y, input_hw)
        self.value = self.weight * float(omega)     # P = λ (1/N) Σ_n ‖J_n‖²_F

    def backward(self):
        a, input_hw = self._cached()
        module = self._module
        weight = module.weight.data
        if input_hw is None:
            da, dweight = F.contractive_dense_backward(a, weight, **self._act())
        else:
            da, dweight = F.contractive_conv_backward(a, weight, input_hw,
                                                      **self._geometry(module),
                                                      **self._act())
        module.weight.grad += dweight * self.weight     # direct part, accumulated
        return da * self.weight                         # dP/da = 2λ s′ s″ ⊙ C / N

    def extra_repr(self):
        text = f"weight={self.weight}, activation={self.activation!r}"
        if self.activation == "leaky_relu":
            text += f", negative_slope={self.negative_slope}"
        return text
