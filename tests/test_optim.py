"""Optimizers and schedules against hand-written update formulas.

Each expected value is computed by an independent few-line loop over plain
NumPy arrays written from the formula (not by calling minicae.optim).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from minicae.nn import Linear, Module, Parameter, Sequential
from minicae.optim import SGD, Adam, AdamW, CosineLR, StepLR

pytestmark = pytest.mark.usefixtures("numpy_backend")


def _params(rng):
    return [Parameter(rng.standard_normal((2, 3))), Parameter(rng.standard_normal(4))]


def _grads(rng, steps):
    return [[rng.standard_normal((2, 3)), rng.standard_normal(4)] for _ in range(steps)]


def _run(opt, params, grads):
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad += g
        opt.step()


def test_sgd_single_step_by_hand():
    p = Parameter(np.array([1.0, -2.0]))
    p.grad[...] = [0.5, 0.25]
    SGD([p], lr=0.1, weight_decay=0.1).step()
    # g + λθ = [0.6, 0.05]; θ − 0.1·that
    assert_allclose(p.data, [0.94, -2.005], rtol=0, atol=1e-15)


@pytest.mark.parametrize("momentum,nesterov,weight_decay",
                         [(0.0, False, 0.0), (0.0, False, 0.1), (0.9, False, 0.0),
                          (0.9, True, 0.0), (0.5, True, 0.01)])
def test_sgd_matches_hand_formula(momentum, nesterov, weight_decay):
    rng = np.random.default_rng(0)
    params = _params(rng)
    theta = [p.data.copy() for p in params]
    grads = _grads(rng, 4)
    _run(SGD(params, lr=0.05, momentum=momentum, nesterov=nesterov,
             weight_decay=weight_decay), params, grads)
    bufs = [None, None]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = g + weight_decay * theta[i]
            if momentum:
                bufs[i] = g.copy() if bufs[i] is None else momentum * bufs[i] + g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            theta[i] = theta[i] - 0.05 * g
    for i, p in enumerate(params):
        assert_allclose(p.data, theta[i], rtol=1e-13, atol=1e-13,
                        err_msg=f"SGD momentum={momentum} nesterov={nesterov} "
                                f"wd={weight_decay} param {i}")


def test_adam_first_step_is_lr_times_sign():
    # m̂ = g and v̂ = g² after one step, so the step is η g / (|g| + ε)
    p = Parameter(np.array([1.0, 1.0, 1.0]))
    p.grad[...] = [2.0, -0.5, 1e-3]
    Adam([p], lr=0.01).step()
    expected = 1.0 - 0.01 * np.array([2.0, -0.5, 1e-3]) / (np.array([2.0, 0.5, 1e-3]) + 1e-8)
    assert_allclose(p.data, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("cls,weight_decay,decoupled",
                         [(Adam, 0.0, False), (Adam, 0.1, False), (Adam, 0.1, True),
                          (AdamW, 0.1, True)])
def test_adam_matches_hand_formula(cls, weight_decay, decoupled):
    rng = np.random.default_rng(1)
    params = _params(rng)
    theta = [p.data.copy() for p in params]
    grads = _grads(rng, 5)
    lr, b1, b2, eps = 0.01, 0.8, 0.99, 1e-6
    kwargs = {} if cls is AdamW else {"decoupled": decoupled}
    _run(cls(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay, **kwargs),
         params, grads)
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            if decoupled:
                theta[i] = theta[i] * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * theta[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    for i, p in enumerate(params):
        assert_allclose(p.data, theta[i], rtol=1e-12, atol=1e-14,
                        err_msg=f"{cls.__name__} wd={weight_decay} decoupled={decoupled} "
                                f"param {i}")


def test_adamw_equals_adam_decoupled_bitwise():
    rng = np.random.default_rng(2)
    pa, grads = _params(rng), _grads(rng, 3)
    pb = [Parameter(p.data.copy()) for p in pa]
    _run(AdamW(pa, lr=0.01, weight_decay=0.05), pa, grads)
    _run(Adam(pb, lr=0.01, weight_decay=0.05, decoupled=True), pb, grads)
    for a, b in zip(pa, pb):
        assert_array_equal(a.data, b.data)


def _model(seed):
    return Sequential(Linear(3, 4, rng=seed, dtype=np.float64),
                      Linear(4, 2, rng=seed + 1, dtype=np.float64))


@pytest.mark.parametrize("make", [
    lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda m: Adam(m, lr=0.01, weight_decay=1e-3),
    lambda m: AdamW(m, lr=0.01)], ids=["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_bitwise(make):
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(p.shape) for p in _model(0).parameters()]
             for _ in range(6)]
    model_a, model_b = _model(0), _model(0)
    opt_a = make(model_a)
    _run(opt_a, model_a.parameters(), grads[:3])
    state = opt_a.state_dict()
    json_part = {k: v for k, v in state.items() if k != "state"}
    assert json.loads(json.dumps(json_part)) == json_part
    assert all(k.rsplit(".", 1)[0] in state["param_names"] for k in state["state"])
    model_b.load_state_dict(model_a.state_dict())
    opt_b = make(model_b)
    opt_b.load_state_dict(state)
    _run(opt_a, model_a.parameters(), grads[3:])
    _run(opt_b, model_b.parameters(), grads[3:])
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert_array_equal(pa.data, pb.data, err_msg=name)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["step"] == sb["step"] == 6
    for key in sa["state"]:
        assert_array_equal(sa["state"][key], sb["state"][key], err_msg=key)


def test_state_keys_use_parameter_names():
    model = _model(0)
    opt = Adam(model)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    assert sorted(opt.state_dict()["state"]) == sorted(
        f"{n}.{s}" for n in ("0.weight", "0.bias", "1.weight", "1.bias")
        for s in ("exp_avg", "exp_avg_sq"))


def test_load_state_dict_rejects_mismatches_without_changing_anything():
    model = _model(0)
    opt = Adam(model, lr=0.01)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    good = opt.state_dict()
    other = Adam(Sequential(Linear(3, 5, rng=0, dtype=np.float64)))
    with pytest.raises(ValueError, match="parameter names do not match"):
        other.load_state_dict(good)
    with pytest.raises(ValueError, match="state of a SGD, got one of a 'Adam'"):
        SGD(model, lr=0.1).load_state_dict(good)
    bad_shape = {**good, "state": {**good["state"], "0.bias.exp_avg": np.zeros(7)}}
    with pytest.raises(ValueError, match=r"0\.bias\.exp_avg of shape \(4,\), got \(7,\)"):
        opt.load_state_dict(bad_shape)
    missing = {**good, "state": {k: v for k, v in good["state"].items()
                                 if k != "1.weight.exp_avg_sq"}}
    with pytest.raises(ValueError, match=r"missing \['1\.weight\.exp_avg_sq'\]"):
        opt.load_state_dict(missing)
    bad_lr = {**good, "hyperparameters": {**good["hyperparameters"], "lr": -1.0}}
    with pytest.raises(ValueError, match="lr to be a finite number >= 0, got -1.0"):
        opt.load_state_dict(bad_lr)
    assert opt.lr == 0.01 and opt.steps == 1
    with pytest.raises(TypeError, match="expected a dict"):
        opt.load_state_dict([1, 2])


def test_minimises_a_quadratic():
    # f(θ) = ½ Σ a (θ − c)², ∇f = a (θ − c), minimum at c
    a, c = np.array([1.0, 4.0, 0.5]), np.array([1.0, -2.0, 3.0])
    for make, steps in [(lambda p: SGD(p, lr=0.2, momentum=0.5), 200),
                        (lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True), 300),
                        (lambda p: Adam(p, lr=0.1), 1000)]:
        p = Parameter(np.zeros(3))
        opt = make([p])
        for _ in range(steps):
            opt.zero_grad()
            p.grad += a * (p.data - c)
            opt.step()
        assert_allclose(p.data, c, rtol=0, atol=1e-4, err_msg=repr(opt))


def test_params_forms_and_tied_weights():
    p, q = Parameter(np.zeros(2)), Parameter(np.ones(3))
    assert [n for n, _ in SGD([p, q], lr=1.0).params] == ["0", "1"]
    assert [n for n, _ in SGD([("a", p), ("b", q)], lr=1.0).params] == ["a", "b"]

    class Tied(Module):
        def __init__(self):
            self.enc = Linear(2, 2, rng=0, dtype=np.float64)
            self.dec = Linear(2, 2, rng=1, dtype=np.float64)
            self.dec.weight = self.enc.weight

    names = [n for n, _ in SGD(Tied(), lr=1.0).params]
    assert names == ["enc.weight", "enc.bias", "dec.bias"]


@pytest.mark.parametrize("call,exc,match", [
    (lambda p: SGD(p, lr=-0.1), ValueError,
     r"^SGD: expected lr to be a finite number > 0, got -0\.1\.$"),
    (lambda p: SGD(p, lr=float("nan")), ValueError, "lr to be a finite number > 0"),
    (lambda p: SGD(p, lr=0.1, momentum=1.0), ValueError, r"momentum to be in \[0, 1\)"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), ValueError, "momentum > 0 with nesterov"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\] to be in \[0, 1\)"),
    (lambda p: Adam(p, betas=0.9), TypeError, "betas to be a pair"),
    (lambda p: Adam(p, eps=0.0), ValueError, "eps to be a finite number > 0"),
    (lambda p: Adam(p, lr="1e-3"), TypeError, "lr"),
    (lambda p: SGD(p[0], lr=0.1), TypeError, "single Parameter"),
    (lambda p: SGD([], lr=0.1), ValueError, "at least one parameter"),
    (lambda p: SGD([("a", p[0]), ("a", p[1])], lr=0.1), ValueError, "unique"),
    (lambda p: SGD([1, 2], lr=0.1), TypeError, "at position 0"),
])
def test_validation(call, exc, match):
    params = [Parameter(np.zeros(2)), Parameter(np.zeros(3))]
    with pytest.raises(exc, match=match):
        call(params)


def test_step_lr_values():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    got = [sched.step() for _ in range(6)]
    assert got == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert opt.lr == 0.125


def test_cosine_lr_values_and_state_round_trip():
    opt = Adam([Parameter(np.zeros(1))], lr=1.0)
    sched = CosineLR(opt, t_max=4, eta_min=0.1)
    got = [sched.step() for _ in range(6)]
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * min(e, 4) / 4)) / 2 for e in range(1, 7)]
    assert_allclose(got, expected, rtol=1e-15, atol=0)
    assert got[3] == pytest.approx(0.1) and got[5] == got[3]
    opt2 = Adam([Parameter(np.zeros(1))], lr=1.0)
    sched2 = CosineLR(opt2, t_max=4, eta_min=0.1)
    state = sched.state_dict()
    state_at_2 = {**state, "last_epoch": 2}
    assert json.loads(json.dumps(state)) == state
    sched2.load_state_dict(state_at_2)
    assert opt2.lr == expected[1]
    assert [sched2.step() for _ in range(2)] == expected[2:4]
    with pytest.raises(ValueError, match="state of a StepLR"):
        StepLR(opt2, step_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match="configuration"):
        CosineLR(opt2, t_max=5, eta_min=0.1).load_state_dict(state)


def test_schedule_validation():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="step_size"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="eta_min"):
        CosineLR(opt, t_max=3, eta_min=-1.0)
    with pytest.raises(TypeError, match="expected a minicae.optim optimizer"):
        StepLR(object(), step_size=1)


def _fused_backends():
    from minicae import backend as backend_mod

    params = []
    for name in ("numba", "cupy"):
        ok, reason = backend_mod.available_backends()[name]
        marks = [] if ok else [pytest.mark.skip(reason=f"{name} backend: {reason}")]
        if name == "cupy":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("fused", _fused_backends())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
@pytest.mark.parametrize("one_call", [True, False], ids=["all-in-one-call", "per-parameter"])
def test_fused_adam_equals_the_numpy_passes_bit_for_bit(fused, dtype, weight_decay,
                                                        decoupled, one_call):
    """The one-pass Adam of numba (explicit vectors) and of cupy (one kernel), with no
    fused multiply-add, gives exactly the NumPy backend's parameters and moments,
    step after step, for sizes that end inside a vector, and takes over from a
    NumPy-made state; on numba also with every parameter in one call
    (``adam_update_many``, taken without weight decay), including after a parameter's
    array is replaced between steps."""
    from minicae import backend as backend_mod
    from minicae.backend import to_device, to_numpy
    from minicae.kernels import load_kernels

    assert load_kernels(fused).adam_update is not None
    rng = np.random.default_rng(9)
    shapes = [(7,), (33, 5), (3, 3, 3, 3), (1,)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 3)).astype(dtype)
              for s in shapes] for _ in range(6)]
    out = {}
    for name in ("numpy", fused):
        with backend_mod.use_backend(name) as be:
            params = [Parameter(to_device(t.copy(), backend=be)) for t in init]
            opt = Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                       weight_decay=weight_decay, decoupled=decoupled)
            for step, step_grads in enumerate(grads):
                for p, g in zip(params, step_grads):
                    p.grad[...] = to_device(g, backend=be)
                if step == 4:        # a new array: the one-call path must not keep the old
                    params[1].data = params[1].data.copy()
                if step < 3:
                    # the first three steps through the array operations (the
                    # passes): the kernel then takes over moments that they made
                    _without_fused_adam(opt)
                elif name == "numpy" or one_call:
                    opt.step()
                    many = name != "numpy" and be.kernels.adam_update_many is not None
                    flat = opt.__dict__.get("_flat")
                    assert (flat is not None and flat[2] is not None) == (
                        many and not weight_decay)
                else:
                    _without_fused_adam(opt, "adam_update_many")
        out[name] = [to_numpy(p.data) for p in params] + [
            to_numpy(value) for slots in opt.state.values()
            for _, value in sorted(slots.items())]
    assert len(out[fused]) == 3 * len(shapes)
    for got, want in zip(out[fused], out["numpy"]):
        assert got.dtype == dtype
        assert_array_equal(got, want)


def _without_fused_adam(opt, kernels=("adam_update", "adam_update_many")):
    """opt.step() with the active backend's fused Adam (or only the ``kernels`` named)
    switched off: NumPy's array operations, on the backend's own arrays and device."""
    import dataclasses

    from minicae import backend as backend_mod

    be = backend_mod.get_backend()
    previous = backend_mod._active
    off = {k: None for k in ([kernels] if isinstance(kernels, str) else kernels)}
    backend_mod._active = dataclasses.replace(be, kernels=be.kernels._replace(**off))
    try:
        opt.step()
    finally:
        backend_mod._active = previous
