"""VAE maths: each op's gradient against float64 central differences, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from strategies import seeds

from minicae import to_device, to_numpy
from minicae.errors import ShapeError
from minicae.functional import vae as FV
from minicae.gradcheck import numerical_gradient

cases = st.tuples(st.integers(1, 4), st.integers(1, 5), seeds)
TOL = dict(rtol=1e-6, atol=1e-8)


def _arrays(case, *shapes):
    rng = np.random.default_rng(case[-1])
    return [rng.standard_normal(s) for s in shapes]


def _num(f, x):
    return numerical_gradient(lambda v: f(v), x.copy())


def _f(op, *args, **kw):
    return to_numpy(op(*(to_device(a) for a in args), **kw))


@given(case=cases)
def test_split_gaussian_grad(backend, case):
    n, d, _ = case
    h, r1, r2 = _arrays(case, (n, 2 * d), (n, d), (n, d))
    mu, logvar = (to_numpy(a) for a in FV.split_gaussian(to_device(h)))
    assert_allclose(np.concatenate([mu, logvar], 1), h)
    dh = _f(FV.split_gaussian_backward, r1, r2)

    def loss(v):
        a, b = FV.split_gaussian(to_device(v))
        return float((to_numpy(a) * r1).sum() + (to_numpy(b) * r2).sum())

    assert_allclose(dh, _num(loss, h), **TOL, err_msg=f"{backend.name} {case}")


@given(case=cases)
def test_reparameterize_grad(backend, case):
    mu, logvar, eps, r = _arrays(case, *[case[:2]] * 4)
    dmu, dlogvar = (to_numpy(g) for g in FV.reparameterize_backward(
        to_device(r), to_device(logvar), to_device(eps)))
    msg = f"{backend.name} {case}"
    assert_allclose(dmu, _num(lambda v: (_f(FV.reparameterize, v, logvar, eps) * r).sum(), mu),
                    **TOL, err_msg="dmu " + msg)
    assert_allclose(dlogvar, _num(lambda v: (_f(FV.reparameterize, mu, v, eps) * r).sum(),
                                  logvar), **TOL, err_msg="dlogvar " + msg)


def test_reparameterize_is_reproducible(backend):
    mu, logvar = np.zeros((3, 2)), np.log(np.full((3, 2), 4.0))
    z = [_f(FV.reparameterize, mu, logvar, np.random.default_rng(7).standard_normal((3, 2)))
         for _ in range(2)]
    assert_allclose(z[0], z[1], rtol=0, atol=0)
    assert_allclose(z[0], 2.0 * np.random.default_rng(7).standard_normal((3, 2)), rtol=1e-15)


@given(case=cases)
def test_gaussian_kl_grad(backend, case):
    mu, logvar, r = _arrays(case, *[case[:2]] * 3)
    kl = _f(FV.gaussian_kl, mu, logvar)
    # KL = ½(μ² + σ² − 1 − log σ²), by the definition E_q[log q − log p] in closed form
    assert_allclose(kl, 0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar), rtol=1e-12)
    assert (kl >= -1e-15).all()
    dmu, dlogvar = (to_numpy(g) for g in FV.gaussian_kl_backward(
        to_device(r), to_device(mu), to_device(logvar)))
    msg = f"{backend.name} {case}"
    assert_allclose(dmu, _num(lambda v: (_f(FV.gaussian_kl, v, logvar) * r).sum(), mu),
                    **TOL, err_msg="dmu " + msg)
    assert_allclose(dlogvar, _num(lambda v: (_f(FV.gaussian_kl, mu, v) * r).sum(), logvar),
                    **TOL, err_msg="dlogvar " + msg)


def test_gaussian_kl_matches_monte_carlo(numpy_backend):
    rng = np.random.default_rng(0)
    mu, logvar = np.array([[0.7, -1.2]]), np.array([[-0.5, 0.8]])
    z = mu + np.exp(0.5 * logvar) * rng.standard_normal((200_000, 2))
    mc = (FV.gaussian_log_density(z[:, :1], mu[:, :1], logvar[:, :1])
          - FV.gaussian_log_density(z[:, :1])).mean()
    assert_allclose(mc, FV.gaussian_kl(mu, logvar)[0, 0], rtol=2e-2)


@given(case=cases)
def test_bernoulli_nll_grad(backend, case):
    logits, r = _arrays(case, (case[0], 1, 2, case[1]), (case[0],))
    x = np.random.default_rng(case[-1] + 1).random(logits.shape)
    nll = _f(FV.bernoulli_nll, logits, x)
    p = 1 / (1 + np.exp(-logits))
    want = -(x * np.log(p) + (1 - x) * np.log1p(-p)).reshape(len(x), -1).sum(1)
    assert_allclose(nll, want, rtol=1e-10)
    got = _f(FV.bernoulli_nll_backward, r, logits, x)
    assert_allclose(got, _num(lambda v: (_f(FV.bernoulli_nll, v, x) * r).sum(), logits),
                    **TOL, err_msg=f"{backend.name} {case}")


@pytest.mark.parametrize("per_pixel", [False, True])
@given(case=cases)
def test_gaussian_nll_grad(backend, per_pixel, case):
    mean, x, r = _arrays(case, (case[0], 1, case[1]), (case[0], 1, case[1]), (case[0],))
    rng = np.random.default_rng(case[-1] + 2)
    log_sigma = rng.uniform(-1, 1, (1, case[1]) if per_pixel else ())
    nll = _f(FV.gaussian_nll, mean, x, log_sigma)
    sigma = np.exp(np.broadcast_to(log_sigma, x.shape))
    dens = np.exp(-0.5 * ((x - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    assert_allclose(nll, -np.log(dens).reshape(len(x), -1).sum(1), rtol=1e-10)
    dmean, dls = (to_numpy(g) for g in FV.gaussian_nll_backward(
        *(to_device(a) for a in (r, mean, x, log_sigma))))
    assert dls.shape == log_sigma.shape
    msg = f"{backend.name} {case} per_pixel={per_pixel}"
    assert_allclose(dmean, _num(lambda v: (_f(FV.gaussian_nll, v, x, log_sigma) * r).sum(),
                                mean), **TOL, err_msg="dmean " + msg)
    assert_allclose(dls, _num(lambda v: (_f(FV.gaussian_nll, mean, x, v) * r).sum(),
                              log_sigma), **TOL, err_msg="dlog_sigma " + msg)


@given(case=cases, beta=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
       free_bits=st.sampled_from([0.0, 0.3, 2.0]))
def test_negative_elbo_grad(backend, case, beta, free_bits):
    n, d, seed = case
    nll = np.random.default_rng(seed).random(n) * 10
    kl = np.random.default_rng(seed + 1).random((n, d))
    kw = dict(beta=beta, free_bits=free_bits)
    # keep every unit's mean KL off the floor by > 1e-4 so the difference is smooth
    kl += np.where(np.abs(kl.mean(0) - free_bits) < 1e-4, 1e-3, 0.0)
    value = FV.negative_elbo(to_device(nll), to_device(kl), **kw)
    assert_allclose(value, nll.mean() + beta * np.maximum(kl.mean(0), free_bits).sum(),
                    rtol=1e-12)
    dnll, dkl = (to_numpy(g) for g in FV.negative_elbo_backward(
        to_device(nll), to_device(kl), **kw))
    msg = f"{backend.name} {case} {kw}"
    assert_allclose(dnll, _num(lambda v: FV.negative_elbo(to_device(v), to_device(kl), **kw),
                               nll), **TOL, err_msg="dnll " + msg)
    assert_allclose(dkl, _num(lambda v: FV.negative_elbo(to_device(nll), to_device(v), **kw),
                              kl), **TOL, err_msg="dkl " + msg)


def test_bits_per_dim():
    assert_allclose(FV.bits_per_dim(784 * math.log(2), 784), 1.0)


def test_log_mean_exp_is_stable(backend):
    a = np.array([[1000.0, -1000.0], [1000.0, -1001.0]])
    got = _f(FV.log_mean_exp, a)
    assert_allclose(got, [1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)], rtol=1e-14)


def test_iwae_bound(numpy_backend):
    """L_1 is the ELBO's estimate, L_K rises with K, and is exact for a posterior that is p(z|x).

    Model: z ~ N(0, 1), x | z ~ N(z, 1), so p(x) = N(0, 2), p(z | x) = N(x/2, 1/2).
    With q = p(z|x) every weight equals p(x): the bound is exact for any K.
    """
    x = np.array([0.3, -1.7])
    mu, logvar = (x / 2)[:, None], np.full((2, 1), math.log(0.5))
    rng = np.random.default_rng(0)
    z = mu + np.exp(0.5 * logvar) * rng.standard_normal((64, 2, 1))
    log_px_z = FV.gaussian_log_density(x[None, :, None] - z)
    exact = -0.5 * (x ** 2 / 2 + math.log(2) + FV.LOG_2PI)
    assert_allclose(FV.iwae_bound(log_px_z, z, mu, logvar), exact, rtol=1e-12)
    # a worse q (the prior): on average over 400 draws, L_1 < L_64 < log p(x)
    xs = np.repeat(x, 400)
    mu0, lv0 = np.zeros((len(xs), 1)), np.zeros((len(xs), 1))
    z = rng.standard_normal((64, len(xs), 1))
    log_px_z = FV.gaussian_log_density(xs[None, :, None] - z)
    l64 = FV.iwae_bound(log_px_z, z, mu0, lv0).reshape(2, 400).mean(1)
    l1 = FV.iwae_bound(log_px_z[:1], z[:1], mu0, lv0).reshape(2, 400).mean(1)
    assert (l1 < l64).all() and (l64 < exact).all(), (l1, l64, exact)


def test_bad_shapes_are_named(numpy_backend):
    with pytest.raises(ShapeError, match=r"split_gaussian: expected an even number"):
        FV.split_gaussian(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"reparameterize: expected mu and eps of the same"):
        FV.reparameterize(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ShapeError, match=r"gaussian_nll: expected log_sigma of shape"):
        FV.gaussian_nll(np.ones((2, 3)), np.ones((2, 3)), np.ones(4))
    with pytest.raises(ShapeError, match=r"negative_elbo: expected nll of shape \(2,\)"):
        FV.negative_elbo(np.ones(3), np.ones((2, 4)))
