"""Losses: values against their definitions, gradients against central differences,
stability at ±1e4 logits, validation and the nn loss objects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from minicae import functional as F
from minicae import nn
from minicae.gradcheck import numerical_gradient

seeds = st.integers(0, 2**31 - 1)


def _softmax_ref(z):
    """Plain softmax over axis 1 in float64 (small inputs only)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- values against the definitions --------------------------------------------

def test_elementwise_losses_match_definitions():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.05, 0.95, (3, 4))
    target = rng.uniform(0, 1, (3, 4))
    z = rng.standard_normal((3, 4)) * 3
    assert_allclose(F.mse(pred, target), np.mean((pred - target) ** 2), rtol=1e-12)
    assert_allclose(F.mse(pred, target, reduction="sum"), np.sum((pred - target) ** 2),
                    rtol=1e-12)
    bce_ref = -np.mean(target * np.log(pred) + (1 - target) * np.log(1 - pred))
    assert_allclose(F.bce(pred, target), bce_ref, rtol=1e-12)
    s = 1 / (1 + np.exp(-z))
    logits_ref = -np.sum(target * np.log(s) + (1 - target) * np.log(1 - s))
    assert_allclose(F.bce_with_logits(z, target, reduction="sum"), logits_ref, rtol=1e-10)


def test_cross_entropy_matches_loop_definition():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4, 5))
    target = rng.integers(0, 3, (2, 4, 5))
    weight = np.array([0.5, 2.0, 1.0])
    target[0, 0, :2] = -100
    num = den = 0.0
    for n in range(2):
        for i in range(4):
            for j in range(5):
                t = target[n, i, j]
                if t == -100:
                    continue
                zc = logits[n, :, i, j]
                logp = zc[t] - np.log(np.sum(np.exp(zc)))
                num -= weight[t] * logp
                den += weight[t]
    got = F.cross_entropy(logits, target, ignore_index=-100, weight=weight)
    assert_allclose(got, num / den, rtol=1e-12)
    got_sum = F.cross_entropy(logits, target, reduction="sum", ignore_index=-100,
                              weight=weight)
    assert_allclose(got_sum, num, rtol=1e-12)


def test_log_softmax_and_dice_match_definitions():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, 3, 2, 2))
    assert_allclose(F.log_softmax(z), np.log(_softmax_ref(z)), rtol=1e-12, atol=1e-14)
    target = rng.integers(0, 3, (2, 2, 2))
    p = _softmax_ref(z)
    g = np.stack([(target == c) for c in range(3)], axis=1).astype(float)
    dice = [(2 * (p[:, c] * g[:, c]).sum() + 1.0) / (p[:, c].sum() + g[:, c].sum() + 1.0)
            for c in range(3)]
    assert_allclose(F.dice_loss(z, target), 1 - np.mean(dice), rtol=1e-12)


def test_perfect_prediction_gives_near_zero_dice_and_ce():
    target = np.array([[0, 1], [2, 1]])[None]                   # (1, 2, 2)
    logits = np.where(np.arange(3)[None, :, None, None] == target[:, None], 50.0, -50.0)
    assert F.dice_loss(logits, target, eps=1e-6) < 1e-9
    assert F.cross_entropy(logits, target) < 1e-9


# --- gradients against central differences ---------------------------------------

@st.composite
def elementwise_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    return (draw(st.sampled_from(["mse", "bce", "bce_with_logits"])), shape,
            draw(st.sampled_from(["mean", "sum"])), draw(seeds))


@given(elementwise_cases())
def test_elementwise_loss_grads(case):
    name, shape, reduction, seed = case
    rng = np.random.default_rng(seed)
    target = rng.uniform(0, 1, shape)
    if name == "bce":
        pred = rng.uniform(0.05, 0.95, shape)
    else:
        pred = rng.standard_normal(shape) * 2
    forward = getattr(F, name)
    backward = getattr(F, f"{name}_backward")
    analytic = backward(pred, target, reduction=reduction)
    numeric = numerical_gradient(lambda p: forward(p, target, reduction=reduction),
                                 pred.copy())
    assert analytic.shape == pred.shape and analytic.dtype == pred.dtype
    assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8,
                    err_msg=f"{name} shape={shape} reduction={reduction} seed={seed}")


@st.composite
def class_cases(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    spatial = draw(st.sampled_from([(), (1, 1), (2, 3), (3, 2)]))
    return dict(n=n, c=c, spatial=spatial, reduction=draw(st.sampled_from(["mean", "sum"])),
                ignore=draw(st.booleans()), weighted=draw(st.booleans()),
                eps=draw(st.sampled_from([1.0, 1e-3])), seed=draw(seeds))


@given(class_cases())
def test_cross_entropy_grad(case):
    rng = np.random.default_rng(case["seed"])
    n, c, spatial = case["n"], case["c"], case["spatial"]
    logits = rng.standard_normal((n, c) + spatial) * 2
    target = rng.integers(0, c, (n,) + spatial)
    kwargs = dict(reduction=case["reduction"])
    if case["ignore"]:
        target.reshape(-1)[0] = 255
        kwargs["ignore_index"] = 255
    if case["weighted"]:
        kwargs["weight"] = rng.uniform(0.1, 2.0, c)
    analytic = F.cross_entropy_backward(logits, target, **kwargs)
    numeric = numerical_gradient(lambda z: F.cross_entropy(z, target, **kwargs),
                                 logits.copy())
    assert analytic.shape == logits.shape
    assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=str(case))


@given(class_cases())
def test_dice_grad(case):
    rng = np.random.default_rng(case["seed"])
    n, c, spatial = case["n"], case["c"], case["spatial"]
    logits = rng.standard_normal((n, c) + spatial) * 2
    target = rng.integers(0, c, (n,) + spatial)
    analytic = F.dice_loss_backward(logits, target, eps=case["eps"])
    numeric = numerical_gradient(lambda z: F.dice_loss(z, target, eps=case["eps"]),
                                 logits.copy())
    assert analytic.shape == logits.shape
    assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=str(case))


def test_cross_entropy_all_ignored_is_zero_without_warnings():
    logits = np.zeros((2, 3))
    target = np.array([-1, -1])
    assert F.cross_entropy(logits, target, ignore_index=-1) == 0
    assert not np.any(F.cross_entropy_backward(logits, target, ignore_index=-1))


# --- stability at ±1e4 logits in float32 (warnings are errors) -----------------------

def test_bce_with_logits_stable_at_large_logits():
    z = np.array([1e4, -1e4, 1e4, -1e4], dtype=np.float32)
    t = np.array([1, 0, 0, 1], dtype=np.float32)
    loss = F.bce_with_logits(z, t, reduction="sum")
    grad = F.bce_with_logits_backward(z, t, reduction="sum")
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    assert_allclose(loss, 2e4, rtol=1e-6)               # two right (0), two wrong (1e4)
    assert_allclose(grad, [0, 0, 1, -1], atol=0)


def test_bce_on_saturated_probabilities_is_finite():
    p = np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    t = np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32)
    loss = F.bce(p, t, reduction="sum")
    grad = F.bce_backward(p, t)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert_allclose(loss, -2 * np.log(np.float32(1e-7)), rtol=1e-2)  # capped at −log ε
    assert grad[2] > 0 and grad[3] < 0              # saturated wrong outputs still pushed


def test_softmax_losses_stable_at_large_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]], dtype=np.float32)
    target = np.array([1, 1])
    loss = F.cross_entropy(logits, target, reduction="sum")
    grad = F.cross_entropy_backward(logits, target, reduction="sum")
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    assert_allclose(loss, 2e4, rtol=1e-6)
    assert_allclose(grad, [[1, -1, 0], [0, 0, 0]], atol=1e-6)
    assert_allclose(F.log_softmax(logits)[0], [0, -2e4, -1e4], rtol=1e-6)
    dice = F.dice_loss(logits, target)
    ddice = F.dice_loss_backward(logits, target)
    assert np.isfinite(dice) and np.all(np.isfinite(ddice)) and ddice.dtype == np.float32


# --- validation ---------------------------------------------------------------------

def test_loss_validation_messages():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"mse: expected target of shape \(2, 3\)"):
        F.mse(x, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="floating-point"):
        F.mse(x.astype(int), x)
    with pytest.raises(ValueError, match="reduction"):
        F.mse(x, x, reduction="avg")
    with pytest.raises(ValueError, match=r"prob in \[0, 1\].*bce_with_logits"):
        F.bce(x + 2, x)
    with pytest.raises(ValueError, match=r"class targets in \[0, 3\), got values in "
                                         r"\[0, 3\]"):
        F.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class targets"):
        F.cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected target of shape \(2, 4, 4\)"):
        F.dice_loss(np.zeros((2, 3, 4, 4)), np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match=r"weight of shape \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]), weight=np.ones(2))


# --- nn loss objects ----------------------------------------------------------------

@pytest.mark.parametrize("loss, pred, target, grad_fn", [
    (nn.MSELoss(), "real", "real", lambda p, t: F.mse_backward(p, t)),
    (nn.BCELoss(), "prob", "real", lambda p, t: F.bce_backward(p, t)),
    (nn.BCELoss(from_logits=True, reduction="sum"), "real", "real",
     lambda p, t: F.bce_with_logits_backward(p, t, reduction="sum")),
    (nn.BCEWithLogitsLoss(), "real", "real", lambda p, t: F.bce_with_logits_backward(p, t)),
    (nn.CrossEntropyLoss(), "real", "class", lambda p, t: F.cross_entropy_backward(p, t)),
    (nn.DiceLoss(), "real", "class", lambda p, t: F.dice_loss_backward(p, t)),
])
def test_nn_losses_return_float_and_gradient(loss, pred, target, grad_fn):
    rng = np.random.default_rng(3)
    shape = (2, 3, 4, 4)
    p = (rng.uniform(0.1, 0.9, shape) if pred == "prob" else rng.standard_normal(shape))
    p = p.astype(np.float32)
    t = (rng.integers(0, 3, (2, 4, 4)) if target == "class"
         else rng.uniform(0, 1, shape).astype(np.float32))
    value = loss(p, t)
    assert type(value) is float and np.isfinite(value), repr(loss)
    grad = loss.backward()
    assert grad.shape == p.shape and grad.dtype == np.float32, repr(loss)
    assert_allclose(grad, grad_fn(p, t), rtol=1e-6, err_msg=repr(loss))


def test_nn_loss_backward_before_forward_and_repr():
    loss = nn.CrossEntropyLoss(ignore_index=-1)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        loss.backward()
    assert repr(loss) == "CrossEntropyLoss(reduction='mean', ignore_index=-1)"
    assert nn.BCEWithLogitsLoss().from_logits
    with pytest.raises(ValueError, match="MSELoss: expected reduction"):
        nn.MSELoss(reduction="none")
