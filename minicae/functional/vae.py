r"""Variational autoencoder maths: Gaussian posterior, KL, likelihoods, ELBO, IWAE.

Symbols: ``N`` images, ``d`` latent units, ``D`` values per image; the encoder
gives :math:`\mu, \log\sigma^2 \in \mathbb{R}^{N\times d}`, the noise
:math:`\varepsilon \sim N(0, I)` is an input (drawn by the caller from a
seeded ``numpy.random.Generator``), so every op here is deterministic and its
gradient is checked with :math:`\varepsilon` held fixed.
Derivation: docs/maths.md#variational-autoencoder.
"""

from __future__ import annotations

import math

from ..errors import ShapeError
from .._validation import check_nonnegative_float
from ._common import active, check_input
from .activations import sigmoid

__all__ = ["split_gaussian", "split_gaussian_backward", "reparameterize",
           "reparameterize_backward", "gaussian_kl", "gaussian_kl_backward",
           "bernoulli_nll", "bernoulli_nll_backward", "gaussian_nll", "gaussian_nll_backward",
           "negative_elbo", "negative_elbo_backward", "bits_per_dim", "gaussian_log_density",
           "log_mean_exp", "iwae_bound", "LOG_2PI"]

LOG_2PI = math.log(2 * math.pi)


def _same_shape(a, b, where, names):
    if a.shape != b.shape:
        raise ShapeError(f"{where}: expected {names[0]} and {names[1]} of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}.")


def split_gaussian(h):
    r"""Split an encoder output (N, 2d) into the posterior's (mu, logvar).

    Notes
    -----
    .. math:: \mu = h_{:, :d},\qquad \log\sigma^2 = h_{:, d:}

    Checked by tests/test_functional_vae.py::test_split_gaussian_grad.
    """
    check_input(h, where="split_gaussian", ndim=2, shape_text="(N, 2*latent)")
    if h.shape[1] % 2:
        raise ShapeError(f"split_gaussian: expected an even number of features (mu and "
                         f"logvar), got {tuple(h.shape)}.")
    d = h.shape[1] // 2
    return h[:, :d], h[:, d:]


def split_gaussian_backward(dmu, dlogvar):
    r"""Gradient of :func:`split_gaussian`: :math:`\partial L/\partial h = [dmu, dlogvar]`."""
    _same_shape(dmu, dlogvar, "split_gaussian_backward", ("dmu", "dlogvar"))
    return active().xp.concatenate([dmu, dlogvar], axis=1)


def reparameterize(mu, logvar, eps):
    r"""Draw z = mu + sigma * eps with sigma = exp(logvar / 2).

    Parameters
    ----------
    mu, logvar, eps : ndarray of shape (N, d)

    Notes
    -----
    .. math:: z = \mu + e^{\frac12\log\sigma^2}\odot\varepsilon

    .. math:: \frac{\partial L}{\partial\mu} = \frac{\partial L}{\partial z},\qquad
              \frac{\partial L}{\partial\log\sigma^2} = \frac{\partial L}{\partial z}
              \odot\tfrac12\sigma\odot\varepsilon

    Derivation: docs/maths.md#reparameterisation; checked by
    tests/test_functional_vae.py::test_reparameterize_grad.
    """
    where = "reparameterize"
    check_input(mu, where=where, name="mu", ndim=2)
    _same_shape(mu, logvar, where, ("mu", "logvar"))
    _same_shape(mu, eps, where, ("mu", "eps"))
    return mu + active().xp.exp(0.5 * logvar) * eps     # z = μ + σ ε


def reparameterize_backward(dz, logvar, eps):
    r"""Gradients of :func:`reparameterize`: ``(dmu, dlogvar)`` with eps fixed."""
    _same_shape(dz, logvar, "reparameterize_backward", ("dz", "logvar"))
    # dL/dlogvar = dL/dz · ½ σ ε
    return dz, dz * (0.5 * active().xp.exp(0.5 * logvar)) * eps


def gaussian_kl(mu, logvar):
    r"""KL(N(mu, sigma^2) || N(0, 1)) per image and latent unit, shape (N, d).

    Notes
    -----
    .. math:: \mathrm{KL}_{nj} = \tfrac12\big(\mu_{nj}^2 + \sigma_{nj}^2 - 1
              - \log\sigma_{nj}^2\big)

    .. math:: \frac{\partial\mathrm{KL}}{\partial\mu} = \mu,\qquad
              \frac{\partial\mathrm{KL}}{\partial\log\sigma^2} = \tfrac12(\sigma^2 - 1)

    Derivation: docs/maths.md#gaussian-kl; checked by
    tests/test_functional_vae.py::test_gaussian_kl_grad.
    """
    _same_shape(mu, logvar, "gaussian_kl", ("mu", "logvar"))
    # KL = ½ (μ² + σ² − 1 − log σ²)
    return 0.5 * (mu * mu + active().xp.exp(logvar) - 1.0 - logvar)


def gaussian_kl_backward(dkl, mu, logvar):
    r"""Gradients of :func:`gaussian_kl`: ``(dmu, dlogvar)``."""
    _same_shape(dkl, mu, "gaussian_kl_backward", ("dkl", "mu"))
    # dKL/dμ = μ, dKL/dlogvar = ½(σ² − 1)
    return dkl * mu, dkl * (0.5 * (active().xp.exp(logvar) - 1.0))


def _flat(a):
    return a.reshape(a.shape[0], -1)


def bernoulli_nll(logits, x):
    r"""Negative Bernoulli log-likelihood per image from logits, shape (N,).

    Notes
    -----
    .. math:: -\log p(x\mid z) = \sum_i \big[\max(\ell_i, 0) - \ell_i x_i
              + \log(1 + e^{-|\ell_i|})\big]

    .. math:: \frac{\partial}{\partial\ell_i} = \sigma(\ell_i) - x_i

    Checked by tests/test_functional_vae.py::test_bernoulli_nll_grad.
    """
    _same_shape(logits, x, "bernoulli_nll", ("logits", "x"))
    xp = active().xp
    # −log p = Σ max(ℓ, 0) − ℓ x + log(1 + e^{−|ℓ|})
    per = xp.maximum(logits, 0) - logits * x + xp.log1p(xp.exp(-xp.abs(logits)))
    return _flat(per).sum(axis=1)


def bernoulli_nll_backward(dnll, logits, x):
    r"""Gradient of :func:`bernoulli_nll` with respect to the logits."""
    _same_shape(logits, x, "bernoulli_nll_backward", ("logits", "x"))
    scale = dnll.reshape((-1,) + (1,) * (logits.ndim - 1))
    return scale * (sigmoid(logits) - x)        # d/dℓ = σ(ℓ) − x


def gaussian_nll(mean, x, log_sigma):
    r"""Negative Gaussian log-likelihood per image, shape (N,).

    Parameters
    ----------
    mean, x : ndarray of shape (N, ...)
    log_sigma : ndarray of shape () (one learned or fixed scale) or of one
        image's shape (a scale per pixel)

    Notes
    -----
    .. math:: -\log p(x\mid z) = \sum_i \Big[\frac{(x_i - m_i)^2}{2\sigma_i^2}
              + \log\sigma_i + \tfrac12\log 2\pi\Big]

    .. math:: \frac{\partial}{\partial m_i} = \frac{m_i - x_i}{\sigma_i^2},\qquad
              \frac{\partial}{\partial\log\sigma_i} = 1 - \frac{(x_i - m_i)^2}{\sigma_i^2}

    Derivation: docs/maths.md#likelihoods; checked by
    tests/test_functional_vae.py::test_gaussian_nll_grad.
    """
    where = "gaussian_nll"
    _same_shape(mean, x, where, ("mean", "x"))
    if log_sigma.ndim and tuple(log_sigma.shape) != tuple(x.shape[1:]):
        raise ShapeError(f"{where}: expected log_sigma of shape () or {tuple(x.shape[1:])}, "
                         f"got {tuple(log_sigma.shape)}.")
    xp = active().xp
    r = (x - mean) * xp.exp(-log_sigma)         # r = (x − m)/σ
    per = 0.5 * r * r + log_sigma + 0.5 * LOG_2PI
    return _flat(per).sum(axis=1)


def gaussian_nll_backward(dnll, mean, x, log_sigma):
    r"""Gradients of :func:`gaussian_nll`: ``(dmean, dlog_sigma)``.

    ``dlog_sigma`` has the shape of ``log_sigma`` (summed over what it was
    broadcast over).
    """
    xp = active().xp
    scale = dnll.reshape((-1,) + (1,) * (mean.ndim - 1))
    inv_var = xp.exp(-2 * log_sigma)
    diff = mean - x
    dmean = scale * diff * inv_var                          # (m − x)/σ²
    dls = (scale * (1.0 - diff * diff * inv_var)).sum(axis=0)   # 1 − (x − m)²/σ²
    return dmean, (dls.sum() if log_sigma.ndim == 0 else dls).astype(mean.dtype)


def negative_elbo(nll, kl, *, beta=1.0, free_bits=0.0):
    r"""The training objective: batch mean of -log p(x|z) plus beta times the KL.

    Parameters
    ----------
    nll : ndarray of shape (N,)
        Reconstruction term per image (:func:`bernoulli_nll`, :func:`gaussian_nll`).
    kl : ndarray of shape (N, d)
        :func:`gaussian_kl`.
    beta : float
        KL weight (beta-VAE; the warm-up schedule multiplies it).
    free_bits : float
        Floor, in nats, of each unit's batch-mean KL: a unit below it gets no
        KL gradient (Kingma et al. 2016, per dimension).

    Returns
    -------
    loss : float, in nats per image

    Notes
    -----
    .. math:: \mathcal L = \frac1N\sum_n -\log p(x_n\mid z_n)
              + \beta\sum_j \max\Big(\frac1N\sum_n \mathrm{KL}_{nj},\ \lambda\Big)

    .. math:: \frac{\partial\mathcal L}{\partial\,\mathrm{nll}_n} = \frac1N,\qquad
              \frac{\partial\mathcal L}{\partial\,\mathrm{KL}_{nj}} =
              \frac{\beta}{N}\,[\overline{\mathrm{KL}}_j \ge \lambda]

    With beta = 1 and lambda = 0 it is the negative ELBO (the bound on
    -log p(x)). At the floor (a tie) the gradient flows.
    Derivation: docs/maths.md#elbo; checked by
    tests/test_functional_vae.py::test_negative_elbo_grad.
    """
    where = "negative_elbo"
    check_input(kl, where=where, name="kl", ndim=2)
    if nll.shape != (kl.shape[0],):
        raise ShapeError(f"{where}: expected nll of shape ({kl.shape[0]},), got "
                         f"{tuple(nll.shape)}.")
    check_nonnegative_float(beta, where=where, name="beta")
    check_nonnegative_float(free_bits, where=where, name="free_bits")
    kl_mean = kl.mean(axis=0)
    # L = mean(nll) + β Σ_j max(mean_n KL_nj, λ)
    return float(nll.mean()) + beta * float(active().xp.maximum(kl_mean, free_bits).sum())


def negative_elbo_backward(nll, kl, *, beta=1.0, free_bits=0.0):
    r"""Gradients of :func:`negative_elbo`: ``(dnll, dkl)``."""
    xp = active().xp
    n = kl.shape[0]
    dnll = xp.full(nll.shape, 1.0 / n, dtype=nll.dtype)
    live = (kl.mean(axis=0) >= free_bits).astype(kl.dtype)    # [KL̄_j ≥ λ]
    dkl = xp.broadcast_to(live * (beta / n), kl.shape).astype(kl.dtype)
    return dnll, dkl


def bits_per_dim(nats_per_image, dims):
    r"""Convert nats per image to bits per dimension: :math:`L / (D\ln 2)`."""
    return nats_per_image / (dims * math.log(2))


def gaussian_log_density(z, mu=None, logvar=None):
    r"""log N(z; mu, diag(exp(logvar))) summed over the last axis.

    ``mu=None, logvar=None`` is the standard normal prior.

    Notes
    -----
    .. math:: \log N(z;\mu,\sigma^2) = -\tfrac12\sum_j\Big[\frac{(z_j-\mu_j)^2}{\sigma_j^2}
              + \log\sigma_j^2 + \log 2\pi\Big]
    """
    if mu is None:
        return -0.5 * (z * z + LOG_2PI).sum(axis=-1)
    xp = active().xp
    diff = z - mu
    return -0.5 * (diff * diff * xp.exp(-logvar) + logvar + LOG_2PI).sum(axis=-1)


def log_mean_exp(a, axis=0):
    r"""log((1/K) sum_k exp(a_k)) along ``axis``, without overflow.

    Notes
    -----
    .. math:: \log\frac1K\sum_k e^{a_k} = a^* + \log\sum_k e^{a_k - a^*} - \log K,
              \quad a^* = \max_k a_k
    """
    xp = active().xp
    top = a.max(axis=axis, keepdims=True)
    # a* + log Σ e^{a − a*} − log K: the largest term is e⁰ = 1, nothing overflows
    out = top + xp.log(xp.exp(a - top).sum(axis=axis, keepdims=True)) - math.log(a.shape[axis])
    return out.squeeze(axis)


def iwae_bound(log_px_given_z, z, mu, logvar):
    r"""The importance-weighted bound on log p(x) from K samples, shape (N,).

    Parameters
    ----------
    log_px_given_z : ndarray of shape (K, N)
    z : ndarray of shape (K, N, d), drawn from q(z|x) = N(mu, exp(logvar))
    mu, logvar : ndarray of shape (N, d)

    Notes
    -----
    .. math:: \log p(x) \ge \mathcal L_K = \log\frac1K\sum_{k=1}^K
              \frac{p(x\mid z_k)\,p(z_k)}{q(z_k\mid x)}

    :math:`\mathcal L_1` is the ELBO and :math:`\mathcal L_K` rises towards
    :math:`\log p(x)` with K (Burda et al. 2016). An evaluation, not a
    training objective, so no backward.
    Derivation: docs/maths.md#iwae; checked by
    tests/test_functional_vae.py::test_iwae_bound.
    """
    log_w = log_px_given_z + gaussian_log_density(z) - gaussian_log_density(z, mu, logvar)
    return log_mean_exp(log_w, axis=0)
