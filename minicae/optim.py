r"""Optimizers (SGD, Adam, AdamW) and per-epoch learning-rate schedules.

An optimizer holds ``(name, Parameter)`` pairs and updates ``p.data`` in place
from ``p.grad``. Its state is plain arrays keyed by parameter *name*
(``"encoder.0.weight.exp_avg"``), never by object identity or position, so a
checkpoint taken from one process loads into the same model built in another.
The update rules are PyTorch's (``torch.optim.SGD``, ``Adam``, ``AdamW``),
formula for formula; the arithmetic is ``xp``-generic, so the same code runs
on NumPy and CuPy arrays.

Notation: :math:`\theta` a parameter, :math:`g` its gradient, :math:`\eta` the
learning rate, :math:`\lambda` the weight decay, :math:`\mu` the momentum,
:math:`t` the number of steps taken (1 on the first step).
"""

from __future__ import annotations

import math
import numbers

from . import functional as F
from ._validation import check_nonnegative_float, check_nonnegative_int, check_positive_float
from ._validation import check_positive_int
from .nn.module import Module, Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineLR"]


def _named_params(params, where):
    """Normalise a Module, (name, Parameter) pairs or Parameters to a list of pairs."""
    if isinstance(params, Module):
        items = list(params.named_parameters())
    elif isinstance(params, Parameter):
        raise TypeError(f"{where}: expected a Module, (name, Parameter) pairs or a list "
                        f"of Parameters, got a single Parameter. Wrap it: [param].")
    else:
        try:
            items = list(params)
        except TypeError:
            raise TypeError(f"{where}: expected a Module, (name, Parameter) pairs or a "
                            f"list of Parameters, got {type(params).__name__}.") from None
        if all(isinstance(p, Parameter) for p in items):
            items = [(str(i), p) for i, p in enumerate(items)]
        for i, item in enumerate(items):
            if not (isinstance(item, tuple) and len(item) == 2
                    and isinstance(item[0], str) and isinstance(item[1], Parameter)):
                raise TypeError(f"{where}: expected a Module, (name, Parameter) pairs or "
                                f"a list of Parameters, got {item!r} at position {i}.")
    pairs, seen_ids, seen_names = [], set(), set()
    for name, p in items:
        if id(p) in seen_ids:
            continue  # a tied weight listed twice is updated once, under its first name
        if name in seen_names:
            raise ValueError(f"{where}: expected unique parameter names, got {name!r} "
                             f"twice for different parameters.")
        seen_ids.add(id(p))
        seen_names.add(name)
        pairs.append((name, p))
    if not pairs:
        raise ValueError(f"{where}: expected at least one parameter, got none.")
    return pairs


def _check_beta(value, where, name):
    v = check_nonnegative_float(value, where=where, name=name)
    if v >= 1:
        raise ValueError(f"{where}: expected {name} to be in [0, 1), got {value!r}.")
    return v


class Optimizer:
    """Base class: named parameters, a step count and per-parameter state slots.

    Subclasses implement ``_check(hp, where, from_state)`` (validate and
    normalise a dict of hyperparameters, without side effects),
    ``_slot_names(hp)`` (the per-parameter arrays those hyperparameters need)
    and ``_update(p, slots)``. The hyperparameters live as attributes named
    like the constructor arguments.
    """

    _hyper_names: tuple = ()

    def __init__(self, params):
        self.params = _named_params(params, type(self).__name__)
        self.state = {}  # parameter name -> {slot name: array}, created on first step
        self.steps = 0

    def zero_grad(self):
        """Set every parameter's gradient to zero (backward passes accumulate)."""
        for _, p in self.params:
            p.zero_grad()

    def step(self):
        """Update every parameter once from its accumulated gradient."""
        self.steps += 1
        for name, p in self.params:
            self._update(p, self.state.setdefault(name, {}))

    def _check(self, hp, where, from_state):
        raise NotImplementedError

    def _slot_names(self, hp):
        raise NotImplementedError

    def _update(self, p, slots):
        raise NotImplementedError

    def _hyperparameters(self):
        """The hyperparameters as a JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in ((k, getattr(self, k)) for k in self._hyper_names)}

    def _apply(self, hp):
        for k in self._hyper_names:
            setattr(self, k, hp[k])

    def state_dict(self):
        """Return the optimizer's state: JSON-able fields plus a dict of arrays.

        Returns
        -------
        dict
            ``{"type": class name, "hyperparameters": {...}, "step": int,
            "param_names": [...], "state": {"<param name>.<slot>": array}}``.
            Everything but ``"state"`` is plain JSON; the arrays are copies on
            the active device.
        """
        arrays = {}
        for name, slots in self.state.items():
            for slot, value in slots.items():
                arrays[f"{name}.{slot}"] = value.copy()
        return {"type": type(self).__name__, "hyperparameters": self._hyperparameters(),
                "step": self.steps, "param_names": [name for name, _ in self.params],
                "state": arrays}

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`, after checking it fits these parameters.

        Nothing changes unless every check passes: the type, the parameter
        names, the hyperparameters, the step count, and for ``step > 0`` one
        array per parameter and slot with the parameter's shape.

        Raises
        ------
        TypeError
            ``state`` is not a dict of the expected form.
        ValueError
            Names, slots, shapes or hyperparameters do not match.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{where}: expected a dict from state_dict(), got "
                            f"{type(state).__name__}.")
        missing = [k for k in ("type", "hyperparameters", "step", "param_names", "state")
                   if k not in state]
        if missing:
            raise ValueError(f"{where}: expected keys type, hyperparameters, step, "
                             f"param_names and state, got {sorted(state)}; missing "
                             f"{missing}.")
        if state["type"] != type(self).__name__:
            raise ValueError(f"{where}: expected the state of a {type(self).__name__}, "
                             f"got one of a {state['type']!r}.")
        names = [name for name, _ in self.params]
        saved = list(state["param_names"])
        if sorted(saved) != sorted(names):
            raise ValueError(
                f"{where}: parameter names do not match: missing "
                f"{[n for n in names if n not in saved]}, unexpected "
                f"{[n for n in saved if n not in names]}. Build the optimizer on the "
                f"same model the state came from.")
        steps = check_nonnegative_int(state["step"], where=where, name="step")
        hp = state["hyperparameters"]
        if not isinstance(hp, dict):
            raise TypeError(f"{where}: expected hyperparameters to be a dict, got "
                            f"{type(hp).__name__}.")
        if set(hp) != set(self._hyper_names):
            raise ValueError(f"{where}: expected hyperparameters "
                             f"{sorted(self._hyper_names)}, got {sorted(hp)}.")
        hp = self._check(hp, where, from_state=True)
        arrays = state["state"]
        if not isinstance(arrays, dict):
            raise TypeError(f"{where}: expected state to be a dict of arrays, got "
                            f"{type(arrays).__name__}.")
        slot_names = self._slot_names(hp) if steps else ()
        expected = {f"{n}.{s}" for n in names for s in slot_names}
        if set(arrays) != expected:
            raise ValueError(
                f"{where}: expected state arrays {sorted(expected)} for step {steps}, "
                f"got missing {sorted(expected - set(arrays))}, unexpected "
                f"{sorted(set(arrays) - expected)}.")
        new_state = {}
        for name, p in self.params:
            slots = {}
            for slot in slot_names:
                value = arrays[f"{name}.{slot}"]
                if tuple(getattr(value, "shape", ())) != tuple(p.data.shape):
                    raise ValueError(
                        f"{where}: expected {name}.{slot} of shape "
                        f"{tuple(p.data.shape)}, got {tuple(getattr(value, 'shape', ()))}.")
                slots[slot] = F.asarray(value, dtype=p.data.dtype).copy()
            new_state[name] = slots
        self._apply(hp)
        self.state = new_state
        self.steps = steps
        return self

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {hp})"


def _check_lr(lr, where, from_state):
    # a schedule may drive lr to 0 (CosineLR with eta_min=0), so a saved 0 is valid
    if from_state:
        return check_nonnegative_float(lr, where=where, name="lr")
    return check_positive_float(lr, where=where, name="lr")


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional (Nesterov) momentum.

    Parameters
    ----------
    params : Module, iterable of (str, Parameter), or list of Parameter
        What to optimise; a plain list is named ``'0', '1', ...``.
    lr : float
        Learning rate :math:`\eta > 0`.
    momentum : float, default 0
        :math:`\mu \in [0, 1)`.
    nesterov : bool, default False
        Use Nesterov momentum (needs ``momentum > 0``).
    weight_decay : float, default 0
        L2 coefficient :math:`\lambda \ge 0`, added to the gradient.

    Notes
    -----
    PyTorch's ``torch.optim.SGD`` with ``dampening=0``:

    .. math::

        g \leftarrow g + \lambda\theta, \quad
        b_1 = g, \quad b_t = \mu b_{t-1} + g, \quad
        d = g + \mu b_t \text{ (Nesterov) or } d = b_t, \quad
        \theta \leftarrow \theta - \eta d

    and :math:`d = g` without momentum. State slot: ``momentum_buffer``.
    Checked by tests/test_optim.py::test_sgd_matches_hand_formula.
    """

    _hyper_names = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params)
        self._apply(self._check({"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                 "weight_decay": weight_decay}, "SGD", from_state=False))

    def _check(self, hp, where, from_state):
        momentum = _check_beta(hp["momentum"], where, "momentum")
        nesterov = hp["nesterov"]
        if not isinstance(nesterov, bool):
            raise TypeError(f"{where}: expected nesterov to be a bool, got {nesterov!r}.")
        if nesterov and momentum == 0:
            raise ValueError(f"{where}: expected momentum > 0 with nesterov=True, got "
                             f"momentum={hp['momentum']!r}. Set momentum (e.g. 0.9) or "
                             f"nesterov=False.")
        return {"lr": _check_lr(hp["lr"], where, from_state), "momentum": momentum,
                "nesterov": nesterov,
                "weight_decay": check_nonnegative_float(hp["weight_decay"], where=where,
                                                        name="weight_decay")}

    def _slot_names(self, hp):
        return ("momentum_buffer",) if hp["momentum"] else ()

    def _update(self, p, slots):
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data  # g ← g + λθ
        if self.momentum:
            if "momentum_buffer" not in slots:
                slots["momentum_buffer"] = g.copy()  # b₁ = g
            else:
                buf = slots["momentum_buffer"]
                buf *= self.momentum
                buf += g  # b ← μ b + g
            buf = slots["momentum_buffer"]
            g = g + self.momentum * buf if self.nesterov else buf  # d = g + μ b  or  d = b
        p.data -= self.lr * g  # θ ← θ − η d


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with L2 or decoupled (AdamW) weight decay.

    Parameters
    ----------
    params : Module, iterable of (str, Parameter), or list of Parameter
        What to optimise; a plain list is named ``'0', '1', ...``.
    lr : float, default 1e-3
        Learning rate :math:`\eta > 0`.
    betas : (float, float), default (0.9, 0.999)
        :math:`\beta_1, \beta_2 \in [0, 1)`.
    eps : float, default 1e-8
        :math:`\epsilon > 0`, added to :math:`\sqrt{\hat v}`.
    weight_decay : float, default 0
        :math:`\lambda \ge 0`.
    decoupled : bool, default False
        If False, :math:`\lambda\theta` is added to the gradient (L2, PyTorch
        ``Adam``); if True, the parameter is shrunk by :math:`1 - \eta\lambda`
        before the step (Loshchilov & Hutter, PyTorch ``AdamW``).

    Notes
    -----
    PyTorch's ``torch.optim.Adam`` / ``AdamW`` (``amsgrad=False``):

    .. math::

        m_t = \beta_1 m_{t-1} + (1-\beta_1) g, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2, \quad
        \hat m = \frac{m_t}{1-\beta_1^t}, \quad
        \hat v = \frac{v_t}{1-\beta_2^t}, \quad
        \theta \leftarrow \theta - \eta \frac{\hat m}{\sqrt{\hat v} + \epsilon}

    with :math:`m_0 = v_0 = 0`; L2 decay uses :math:`g + \lambda\theta` in
    place of :math:`g`, decoupled decay first sets
    :math:`\theta \leftarrow (1 - \eta\lambda)\theta`. The computation order
    is PyTorch's, :math:`\theta - (\eta / (1-\beta_1^t))\, m_t /
    (\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon)`; PyTorch updates :math:`m`
    with ``lerp``, the same formula rounded differently. State slots:
    ``exp_avg`` (m) and ``exp_avg_sq`` (v).
    Checked by tests/test_optim.py::test_adam_matches_hand_formula.

    References
    ----------
    D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", 2015.
    I. Loshchilov, F. Hutter, "Decoupled Weight Decay Regularization", 2019.
    """

    _hyper_names = ("lr", "betas", "eps", "weight_decay", "decoupled")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False):
        super().__init__(params)
        self._apply(self._check({"lr": lr, "betas": betas, "eps": eps,
                                 "weight_decay": weight_decay, "decoupled": decoupled},
                                type(self).__name__, from_state=False))

    def _check(self, hp, where, from_state):
        betas = hp["betas"]
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, numbers.Real) for b in betas)):
            raise TypeError(f"{where}: expected betas to be a pair of numbers in [0, 1), "
                            f"got {betas!r}.")
        decoupled = hp["decoupled"]
        if not isinstance(decoupled, bool):
            raise TypeError(f"{where}: expected decoupled to be a bool, got "
                            f"{decoupled!r}.")
        return {"lr": _check_lr(hp["lr"], where, from_state),
                "betas": (_check_beta(betas[0], where, "betas[0]"),
                          _check_beta(betas[1], where, "betas[1]")),
                "eps": check_positive_float(hp["eps"], where=where, name="eps"),
                "weight_decay": check_nonnegative_float(hp["weight_decay"], where=where,
                                                        name="weight_decay"),
                "decoupled": decoupled}

    def _slot_names(self, hp):
        return ("exp_avg", "exp_avg_sq")

    def step(self):
        """Update every parameter once; the bias corrections are computed once per
        step, and the fused kernel (where the backend has one) is looked up once."""
        beta1, beta2 = self.betas
        t = self.steps + 1
        kernels = F.active().kernels
        self._per_step = (1 - beta1**t, 1 - beta2**t,  # m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)
                          kernels.adam_update)
        flat = self._flat_arrays() if kernels.adam_update_many else None
        if flat is None:
            super().step()
            return
        self.steps += 1              # every parameter in one call, with _update's values
        bias1, bias2, _ = self._per_step
        kernels.adam_update_many(*flat, beta1, beta2, math.sqrt(bias2), self.eps,
                                 self.lr / bias1)

    def _flat_arrays(self):
        """(θs, gs, ms, vs): every parameter's four arrays as tuples of flat views, for
        the backend's ``adam_update_many``; or None, for :meth:`_update` one by one
        (weight decay, a parameter without state yet, arrays the fused kernel does not
        take). Remembered while every parameter keeps the same four arrays."""
        if self.weight_decay:
            return None
        known = self.__dict__.get("_flat")
        if known is not None and known[0] is self.state and all(
                p.data is d and p.grad is g and s["exp_avg"] is m and s["exp_avg_sq"] is v
                for p, s, d, g, m, v in known[1]):
            return known[2]
        held = [(p, self.state.get(name)) for name, p in self.params]
        if not held or not all(slots for _, slots in held):
            return None
        quads = [(p.data, p.grad, s["exp_avg"], s["exp_avg_sq"]) for p, s in held]
        flat = None
        if all(_one_pass(*q) and q[0].dtype == quads[0][0].dtype for q in quads):
            flat = tuple(tuple(q[k].reshape(-1) for q in quads) for k in range(4))
        self._flat = (self.state, [(p, s, *q) for (p, s), q in zip(held, quads)], flat)
        return flat

    def _update(self, p, slots):
        beta1, beta2 = self.betas
        bias1, bias2, fused = self._per_step
        g = p.grad
        if self.weight_decay and self.decoupled:
            p.data *= 1 - self.lr * self.weight_decay  # θ ← (1 − ηλ) θ
        elif self.weight_decay:
            g = g + self.weight_decay * p.data  # g ← g + λθ
        if not slots:
            xp = F.array_module()
            slots["exp_avg"] = xp.zeros_like(p.data)  # m₀ = 0
            slots["exp_avg_sq"] = xp.zeros_like(p.data)  # v₀ = 0
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        if fused is not None and self._takes_fused(p, g, m, v):
            # the same operations in one pass (kernels/_numba_optim.py, _cupy.py),
            # bit for bit
            fused(p.data, g, m, v, beta1, beta2, math.sqrt(bias2), self.eps,
                  self.lr / bias1)
            return
        xp = F.array_module()
        m *= beta1
        m += (1 - beta1) * g  # m ← β₁ m + (1 − β₁) g
        v *= beta2
        v += (1 - beta2) * (g * g)  # v ← β₂ v + (1 − β₂) g²
        denom = xp.sqrt(v) / math.sqrt(bias2) + self.eps  # √v̂ + ε
        p.data -= (self.lr / bias1) * (m / denom)  # θ ← θ − η m̂ / (√v̂ + ε)

    def _takes_fused(self, p, *arrays):
        """Whether the fused kernel takes (θ, g, m, v): the answer of
        :func:`_one_pass`, remembered while ``p`` keeps the same four arrays (the
        flags and dtype checks cost ~1 us a parameter, every step)."""
        arrays = (p.data, *arrays)
        known = self.__dict__.setdefault("_fusable", {}).get(id(p))
        if known is not None:
            (d, g, m, v), ok = known
            if d is arrays[0] and g is arrays[1] and m is arrays[2] and v is arrays[3]:
                return ok
        ok = _one_pass(*arrays)
        self._fusable[id(p)] = (arrays, ok)
        return ok


def _one_pass(*arrays):
    """Whether the fused Adam kernel takes these: C-contiguous, one float dtype."""
    dtype = arrays[0].dtype
    return dtype.kind == "f" and dtype.itemsize in (4, 8) and all(
        a.dtype == dtype and a.flags.c_contiguous and a.shape == arrays[0].shape
        for a in arrays)


class AdamW(Adam):
    r"""Adam with decoupled weight decay: ``Adam(..., decoupled=True)``.

    Defaults follow PyTorch's ``AdamW`` (``weight_decay=1e-2``). See
    :class:`Adam` for the formulas (Loshchilov & Hutter, 2019).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled=True)

    def _check(self, hp, where, from_state):
        if hp["decoupled"] is not True:
            raise ValueError(f"{where}: expected decoupled=True (AdamW always decouples "
                             f"weight decay), got {hp['decoupled']!r}. Use Adam instead.")
        return super()._check(hp, where, from_state)


class _Schedule:
    """Base of per-epoch schedules: ``lr = lr_at(epoch)`` in closed form."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a minicae.optim optimizer, "
                            f"got {type(optimizer).__name__}.")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch):
        raise NotImplementedError

    def _config(self):
        raise NotImplementedError

    def step(self):
        """Advance one epoch, set ``optimizer.lr`` and return it."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def state_dict(self):
        """JSON-able state: type, configuration, ``base_lr`` and ``last_epoch``."""
        return {"type": type(self).__name__, **self._config(), "base_lr": self.base_lr,
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` of the same schedule and set ``optimizer.lr``."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            got = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}: expected the state of a {type(self).__name__}, "
                             f"got {got!r}.")
        if {k: state.get(k) for k in self._config()} != self._config():
            raise ValueError(f"{where}: expected configuration {self._config()}, got "
                             f"{ {k: state.get(k) for k in self._config()} }. Build the "
                             f"schedule with the saved arguments.")
        base_lr = check_positive_float(state.get("base_lr"), where=where, name="base_lr")
        last_epoch = check_nonnegative_int(state.get("last_epoch"), where=where,
                                           name="last_epoch")
        self.base_lr, self.last_epoch = base_lr, last_epoch
        self.optimizer.lr = self.lr_at(last_epoch)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args}, last_epoch={self.last_epoch})"


class StepLR(_Schedule):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Notes
    -----
    .. math:: \eta_e = \eta_0 \, \gamma^{\lfloor e / s \rfloor}

    Computed in closed form from :math:`\eta_0` (``base_lr``), so a resumed
    run gets bitwise the same rates. Checked by
    tests/test_optim.py::test_step_lr_values.
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = check_positive_int(step_size, where="StepLR", name="step_size")
        self.gamma = check_positive_float(gamma, where="StepLR", name="gamma")

    def _config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)  # η₀ γ^⌊e/s⌋


class CosineLR(_Schedule):
    r"""Cosine annealing from the optimizer's lr to ``eta_min`` over ``t_max`` epochs.

    Notes
    -----
    .. math::

        \eta_e = \eta_{min} + \tfrac12 (\eta_0 - \eta_{min})
                 \left(1 + \cos\frac{\pi \min(e, T)}{T}\right)

    PyTorch's ``CosineAnnealingLR`` closed form, except that past
    :math:`T` = ``t_max`` the rate stays at :math:`\eta_{min}` instead of
    rising again. Checked by
    tests/test_optim.py::test_cosine_lr_values_and_state_round_trip.
    """

    def __init__(self, optimizer, t_max, eta_min=0.0):
        super().__init__(optimizer)
        self.t_max = check_positive_int(t_max, where="CosineLR", name="t_max")
        self.eta_min = check_nonnegative_float(eta_min, where="CosineLR", name="eta_min")

    def _config(self):
        return {"t_max": self.t_max, "eta_min": self.eta_min}

    def lr_at(self, epoch):
        e = min(epoch, self.t_max)
        # η = η_min + (η₀ − η_min)(1 + cos(π e / T)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * e / self.t_max)) / 2
