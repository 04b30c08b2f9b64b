"""Penalties and TopK: values against their definitions (the contractive one
against a Jacobian built by central differences), total gradients through a
Sequential against float64 central differences, stability and validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from minicae import functional as F
from minicae import nn
from minicae.backend import to_numpy, use_backend
from minicae.gradcheck import check_layer, numerical_gradient
from strategies import conv_configs

seeds = st.integers(0, 2**31 - 1)
ACTS = ["sigmoid", "tanh", "relu", "leaky_relu"]


def _act_layer(name):
    return nn.LeakyReLU(0.1) if name == "leaky_relu" else nn.activation(name)


def _contractive(weight, name):
    return nn.Contractive(weight, activation=name, negative_slope=0.1)


def _jacobian_norms(f, x, eps=1e-6):
    """Σ_n ‖∂f(x)_n/∂x_n‖²_F, the Jacobian built column by column.

    Samples are independent, so perturbing input entry j of every sample at
    once gives column j of every sample's Jacobian.
    """
    total = 0.0
    flat = x.reshape(x.shape[0], -1)
    for j in range(flat.shape[1]):
        step = np.zeros_like(flat)
        step[:, j] = eps
        col = (f((flat + step).reshape(x.shape)) - f((flat - step).reshape(x.shape))) / (
            2 * eps)
        total += float(np.sum(col ** 2))
    return total


# --- contractive penalty equals λ‖J‖²_F ----------------------------------------------

@pytest.mark.parametrize("act", ACTS)
def test_contractive_dense_equals_jacobian_norm(act):
    rng = np.random.default_rng(0)
    lin = nn.Linear(5, 4, rng=1, dtype=np.float64)
    penalty = _contractive(0.3, act)
    lin.attach(penalty)
    encoder = nn.Sequential(lin, _act_layer(act))
    x = rng.standard_normal((3, 5))
    encoder(x)
    value = penalty.value
    expected = 0.3 * _jacobian_norms(encoder.forward, x) / x.shape[0]
    assert_allclose(value, expected, rtol=1e-7, err_msg=act)


@given(conv_configs(max_n=2, max_c=4, max_hw=6), st.sampled_from(ACTS))
def test_contractive_conv_equals_jacobian_norm(cfg, act):
    x, _, _ = cfg.arrays()
    conv = nn.Conv2d(cfg.c_in, cfg.c_out, cfg.kernel, stride=cfg.stride,
                     padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups,
                     bias=cfg.bias, rng=cfg.seed, dtype=np.float64)
    penalty = _contractive(0.5, act)
    conv.attach(penalty)
    encoder = nn.Sequential(conv, _act_layer(act))
    encoder(x)
    expected = 0.5 * _jacobian_norms(encoder.forward, x) / x.shape[0]
    assert_allclose(penalty.value, expected, rtol=1e-6, atol=1e-10,
                    err_msg=f"{cfg} act={act}")


def test_conv_tap_sums_count_taps_inside_image():
    # With W = 1 the tap sum is the number of kernel taps landing inside the image:
    # a 3x3 kernel, padding 1, on a 3x3 image sees 4 taps at a corner, 6 on an edge,
    # 9 in the middle.
    weight = np.ones((1, 1, 3, 3))
    a = np.zeros((1, 1, 3, 3))              # s′(0) = 1/4 for the sigmoid
    value = F.contractive_conv(a, weight, (3, 3), padding=1)
    taps = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    assert_allclose(value, np.sum(taps) / 16, rtol=1e-12)


# --- total gradients through a Sequential ---------------------------------------------

def _check_total_gradient(model, x, rng, err_msg):
    """Objective Σ r ⊙ model(x) + Σ penalty values: backward vs central differences."""
    y = model(x)
    r = rng.standard_normal(y.shape)

    def objective(x_in):
        out = model(x_in)
        return float(np.sum(out * r)) + sum(p.value for _, p in model.named_penalties())

    model.zero_grad()
    objective(x)
    dx = model.backward(r)
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    numeric_dx = numerical_gradient(objective, x.copy())
    assert_allclose(dx, numeric_dx, rtol=1e-5, atol=1e-7, err_msg=f"dx {err_msg}")
    for name, p in model.named_parameters():
        # perturbs p.data in place (and restores it)
        numeric = numerical_gradient(lambda _: objective(x), p.data)
        assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-7,
                        err_msg=f"{name} {err_msg}")


@st.composite
def dense_cases(draw):
    return dict(n=draw(st.integers(1, 4)), d_in=draw(st.integers(1, 5)),
                d_out=draw(st.integers(1, 5)), act=draw(st.sampled_from(ACTS)),
                penalty=draw(st.sampled_from(["l1", "kl", "contractive"])),
                weight=draw(st.sampled_from([0.1, 1.0, 3.0])), seed=draw(seeds))


@given(dense_cases())
def test_penalty_total_gradient_dense(case):
    rng = np.random.default_rng(case["seed"])
    lin = nn.Linear(case["d_in"], case["d_out"], rng=rng, dtype=np.float64)
    act = _act_layer("sigmoid" if case["penalty"] == "kl" else case["act"])
    head = nn.Linear(case["d_out"], 2, rng=rng, dtype=np.float64)
    model = nn.Sequential(lin, act, head)
    if case["penalty"] == "l1":
        act.attach(nn.L1Activity(case["weight"]))
    elif case["penalty"] == "kl":
        act.attach(nn.KLSparsity(rho=0.2, weight=case["weight"]))
    else:
        lin.attach(_contractive(case["weight"], case["act"]))
    x = rng.standard_normal((case["n"], case["d_in"])) * 2
    _check_total_gradient(model, x, rng, str(case))


@given(conv_configs(max_n=2, max_c=4, max_hw=6),
       st.sampled_from(["l1", "kl", "contractive"]), st.sampled_from(ACTS))
def test_penalty_total_gradient_conv(cfg, which, act_name):
    x, _, _ = cfg.arrays()
    rng = np.random.default_rng(cfg.seed)
    conv = nn.Conv2d(cfg.c_in, cfg.c_out, cfg.kernel, stride=cfg.stride,
                     padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups,
                     bias=cfg.bias, rng=rng, dtype=np.float64)
    act = _act_layer("sigmoid" if which == "kl" else act_name)
    model = nn.Sequential(conv, act)
    if which == "l1":
        act.attach(nn.L1Activity(0.7))
    elif which == "kl":
        act.attach(nn.KLSparsity(rho=0.1, weight=2.0))
    else:
        conv.attach(_contractive(1.5, act_name))
    _check_total_gradient(model, x, rng, f"{cfg} penalty={which} act={act_name}")


# --- values, conventions and stability ---------------------------------------------------

def test_l1_value_and_zero_convention():
    z = np.array([[1.0, -2.0, 0.0], [0.5, 0.0, -0.5]])
    assert_allclose(F.l1_activity(z), 4.0 / 2, rtol=1e-12)      # (1/N) Σ|z|
    assert_allclose(F.l1_activity_backward(z),
                    np.array([[1, -1, 0], [1, 0, -1]]) / 2, atol=0)  # d|z|/dz(0) = 0


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_kl_value_matches_definition(shape):
    rng = np.random.default_rng(4)
    z = rng.uniform(0.01, 0.99, shape)
    axes = (0,) + tuple(range(2, len(shape)))
    rho_hat = z.mean(axis=axes)
    rho = 0.1
    expected = np.sum(rho * np.log(rho / rho_hat)
                      + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    assert_allclose(F.kl_sparsity(z, rho), expected, rtol=1e-12, err_msg=str(shape))
    at_target = np.full(shape, rho)
    assert_allclose(F.kl_sparsity(at_target, rho), 0, atol=1e-15)
    assert_allclose(F.kl_sparsity_backward(at_target, rho), 0, atol=1e-12)


@pytest.mark.parametrize("fill", [0.0, 1.0, 1e-7, 1 - 1e-7])
def test_kl_stable_near_saturated_codes(fill):
    z = np.full((8, 4), fill, dtype=np.float32)
    value = F.kl_sparsity(z, 0.05)
    grad = F.kl_sparsity_backward(z, 0.05)
    assert np.isfinite(value) and value > 0, fill
    assert grad.dtype == np.float32 and np.all(np.isfinite(grad)), fill
    # the gradient pushes ρ̂ back towards ρ = 0.05
    assert np.all(grad > 0) if fill > 0.05 else np.all(grad < 0), fill


# --- validation ----------------------------------------------------------------------------

def test_penalty_validation_messages():
    with pytest.raises(ValueError, match=r"KLSparsity: rho must be in \(0, 1\), got 1\.5\."):
        nn.KLSparsity(rho=1.5)
    with pytest.raises(ValueError, match="L1Activity: expected weight to be a finite "
                                         "number >= 0"):
        nn.L1Activity(-1.0)
    with pytest.raises(ValueError, match=r"expected codes in \[0, 1\].*Sigmoid"):
        nn.Sequential(nn.Linear(2, 2, rng=0).attach(nn.KLSparsity()))(
            np.ones((1, 2), dtype=np.float32) * 100)
    with pytest.raises(TypeError, match="expected a Linear or Conv2d module"):
        nn.Sigmoid().attach(nn.Contractive(0.1))
    with pytest.raises(ValueError, match="Contractive: expected activation"):
        nn.Contractive(0.1, activation="softplus")
    with pytest.raises(RuntimeError, match="backward called before"):
        nn.L1Activity(0.1).backward()
    shared = nn.L1Activity(0.1)
    nn.ReLU().attach(shared)
    with pytest.raises(ValueError, match="one penalty object per module"):
        nn.ReLU().attach(shared)


def test_contractive_on_float32_keeps_dtype():
    conv = nn.Conv2d(2, 3, 3, padding="same", rng=0)
    penalty = nn.Contractive(0.1, activation="tanh")
    conv.attach(penalty)
    model = nn.Sequential(conv, nn.Tanh())
    y = model(np.ones((2, 2, 5, 5), dtype=np.float32))
    dx = model.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and conv.weight.grad.dtype == np.float32
    assert type(penalty.value) is float and penalty.value > 0


# --- TopK -------------------------------------------------------------------------------------

@given(st.sampled_from([(3, 7), (2, 3, 2, 2), (1, 1)]), seeds, st.data())
def test_topk_keeps_exactly_k_largest(shape, seed, data):
    units = int(np.prod(shape[1:]))
    k = data.draw(st.integers(1, units))
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.arange(1, np.prod(shape) + 1)).reshape(shape).astype(float)
    y = nn.TopK(k)(x)
    flat_x, flat_y = x.reshape(shape[0], -1), y.reshape(shape[0], -1)
    for n in range(shape[0]):
        kept = np.flatnonzero(flat_y[n])
        assert kept.size == k, (shape, k, n)
        assert set(kept) == set(np.argsort(-flat_x[n])[:k]), (shape, k, n)
        assert_allclose(flat_y[n, kept], flat_x[n, kept], atol=0)


def test_topk_ties_go_to_lowest_index():
    x = np.array([[1.0, 2.0, 2.0, 2.0, 0.5]])
    y, mask = F.top_k(x, 2, return_mask=True)
    assert mask.tolist() == [[False, True, True, False, False]]
    assert y.tolist() == [[0.0, 2.0, 2.0, 0.0, 0.0]]


@pytest.mark.parametrize("shape, k", [((3, 6), 2), ((2, 2, 3, 3), 5)])
def test_topk_grad(shape, k):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    report = check_layer(nn.TopK(k), x, rng=6)
    assert report.worst < 1e-7, str(report)
    layer = nn.TopK(k)
    layer(x)
    dx = layer.backward(np.ones(shape))
    assert np.all(dx.reshape(shape[0], -1).sum(axis=1) == k)     # flows through k units


def test_topk_validation():
    with pytest.raises(ValueError, match=r"TopK: expected k to be an integer >= 1, got 0"):
        nn.TopK(0)
    with pytest.raises(ValueError, match=r"TopK\(k=100\): k must be at most the 64 units "
                                         r"per sample, got 100"):
        nn.TopK(100)(np.zeros((2, 4, 4, 4)))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        nn.TopK(1).backward(np.zeros((1, 2)))


def test_contractive_conv_same_on_every_backend(backend):
    """The conv contractive penalty and its gradients agree with the NumPy backend."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 4, 3, 3))
    weight = rng.standard_normal((4, 1, 3, 3))
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2, activation="tanh")
    value = F.contractive_conv(F.asarray(a), F.asarray(weight), (6, 6), **kwargs)
    da, dweight = F.contractive_conv_backward(F.asarray(a), F.asarray(weight), (6, 6),
                                              **kwargs)
    with use_backend("numpy"):
        ref = F.contractive_conv(a, weight, (6, 6), **kwargs)
        ref_da, ref_dweight = F.contractive_conv_backward(a, weight, (6, 6), **kwargs)
    assert_allclose(float(value), ref, rtol=1e-12, err_msg=backend.name)
    assert_allclose(to_numpy(da), ref_da, rtol=1e-12, err_msg=backend.name)
    assert_allclose(to_numpy(dweight), ref_dweight, rtol=1e-12, err_msg=backend.name)
