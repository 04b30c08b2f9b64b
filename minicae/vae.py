r"""Variational autoencoders: DenseVAE and ConvVAE, written on the functional VAE ops.

A VAE's encoder gives the posterior q(z|x) = N(mu, diag(sigma^2)) through one
Linear layer of 2*latent outputs (split into mu and log sigma^2), a code is
drawn as z = mu + sigma * eps, and the decoder gives the logits of a
Bernoulli likelihood (or the mean of a Gaussian one). Training minimises the
negative ELBO (docs/maths.md#elbo)

    L = mean_n [-log p(x_n | z_n)] + beta_t * sum_j max(mean_n KL_nj, free_bits)

with beta_t = beta * min(1, (epoch + 1) / kl_warmup) (linear KL warm-up).
The model gives :func:`minicae.train.fit` its objective: ``objective(x, target,
epoch=, rng=)`` does the forward and the backward and returns the loss, and
``validation_metrics(x)`` the held-out negative ELBO (beta = 1, no floor), bits
per dimension, KL and active units. ``forward(x)`` returns the reconstruction
from the posterior mean (what pictures and segmentation features use).
"""

from __future__ import annotations

import numpy

from . import nn
from ._validation import check_choice, check_nonnegative_float, check_positive_int
from .backend import to_device, to_numpy
from .functional import output_padding_for
from .functional import vae as FV
from .functional.activations import sigmoid

__all__ = ["VAE", "DenseVAE", "ConvVAE", "iwae_log_likelihood", "kl_per_dimension",
           "active_units", "prior_baseline", "ACTIVE_THRESHOLD"]

LIKELIHOODS = ("bernoulli", "gaussian")
SIGMAS = ("fixed", "scalar", "pixel")
ACTIVE_THRESHOLD = 0.01     # nats: a unit whose mean KL is below it carries no information


class VAE(nn.Module):
    """Shared VAE machinery; subclasses build ``encoder`` (x -> 2*latent) and ``decoder``."""

    def _setup(self, where, latent, beta, kl_warmup, free_bits, likelihood, sigma,
               log_sigma, image_shape, dtype):
        self.latent = check_positive_int(latent, where=where, name="latent")
        self.beta = check_nonnegative_float(beta, where=where, name="beta")
        self.kl_warmup = int(kl_warmup)
        if self.kl_warmup < 0:
            raise ValueError(f"{where}: expected kl_warmup >= 0 epochs, got {kl_warmup!r}.")
        self.free_bits = check_nonnegative_float(free_bits, where=where, name="free_bits")
        self.likelihood = check_choice(likelihood, LIKELIHOODS, where=where,
                                       name="likelihood")
        self.sigma = check_choice(sigma, SIGMAS, where=where, name="sigma")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.dtype = numpy.dtype(dtype)
        shape = self.image_shape if sigma == "pixel" else ()
        data = to_device(numpy.full(shape, float(log_sigma)), dtype=self.dtype)
        if likelihood == "gaussian" and sigma != "fixed":
            self.log_sigma = nn.Parameter(data)    # learned: a scalar or one per pixel
        else:
            self._log_sigma = data
        self.code_ = None

    def _log_sigma_data(self):
        return self.log_sigma.data if "log_sigma" in vars(self) else self._log_sigma

    def encode(self, x):
        """(mu, logvar) of q(z|x), each of shape (N, latent)."""
        return FV.split_gaussian(self.encoder(x))

    def decode(self, z):
        """The decoder's output: Bernoulli logits or the Gaussian mean, image-shaped."""
        return self.decoder(z)

    def mean_image(self, out):
        """E[x | z] from the decoder's output: sigmoid(logits) or the Gaussian mean."""
        return sigmoid(out) if self.likelihood == "bernoulli" else out

    def forward(self, x):
        """Reconstruction from the posterior mean, E[x | z = mu]; the code is kept in ``code_``."""
        mu, _ = self.encode(x)
        self.code_ = mu
        return self.mean_image(self.decode(mu))

    def backward(self, dx_hat, *, need_input_grad=True):
        raise NotImplementedError(f"{type(self).__name__}: train with objective(x) (fit "
                                  f"does), not with backward of a reconstruction loss.")

    def beta_at(self, epoch):
        """beta_t = beta * min(1, (epoch + 1) / kl_warmup); epoch None or no warm-up: beta."""
        if epoch is None or not self.kl_warmup:
            return self.beta
        return self.beta * min(1.0, (epoch + 1) / self.kl_warmup)

    def nll(self, out, x):
        """-log p(x | z) per image, shape (N,)."""
        if self.likelihood == "bernoulli":
            return FV.bernoulli_nll(out, x)
        return FV.gaussian_nll(out, x, self._log_sigma_data())

    def _nll_backward(self, dnll, out, x):
        if self.likelihood == "bernoulli":
            return FV.bernoulli_nll_backward(dnll, out, x)
        dout, dls = FV.gaussian_nll_backward(dnll, out, x, self._log_sigma_data())
        if "log_sigma" in vars(self):
            self.log_sigma.grad += dls      # accumulate, never assign
        return dout

    def draw_eps(self, n, rng):
        """eps ~ N(0, I) of shape (n, latent) from a numpy Generator, on the device."""
        return to_device(rng.standard_normal((n, self.latent)), dtype=self.dtype)

    def objective(self, x, target=None, *, epoch=None, rng=None, eps=None, backward=True,
                  beta=None, free_bits=None):
        """Forward and (by default) backward of the training loss; returns (loss, parts).

        ``eps`` (shape (N, latent)) fixes the noise; otherwise it is drawn from
        ``rng`` (a numpy Generator; default seed 0). ``beta``/``free_bits``
        override the schedule (evaluation passes 1 and 0: the true negative
        ELBO). Gradients are added into every parameter's ``grad``.
        """
        target = x if target is None else target
        if eps is None:
            eps = self.draw_eps(len(x), rng if rng is not None else numpy.random.default_rng(0))
        beta = self.beta_at(epoch) if beta is None else beta
        free_bits = self.free_bits if free_bits is None else free_bits
        mu, logvar = self.encode(x)
        z = FV.reparameterize(mu, logvar, eps)           # z = μ + σ ε
        self.code_ = z
        out = self.decode(z)
        nll = self.nll(out, target)
        kl = FV.gaussian_kl(mu, logvar)
        loss = FV.negative_elbo(nll, kl, beta=beta, free_bits=free_bits)
        if backward:
            dnll, dkl = FV.negative_elbo_backward(nll, kl, beta=beta, free_bits=free_bits)
            dz = self.decoder.backward(self._nll_backward(dnll, out, target))
            dmu, dlogvar = FV.reparameterize_backward(dz, logvar, eps)
            dmu_kl, dlogvar_kl = FV.gaussian_kl_backward(dkl, mu, logvar)
            dh = FV.split_gaussian_backward(dmu + dmu_kl, dlogvar + dlogvar_kl)
            self.encoder.backward(dh, need_input_grad=False)
        return loss, {"nll": float(nll.mean()), "kl": float(kl.mean(axis=0).sum()),
                      "beta": float(beta)}

    def fit_step(self, x, target, *, epoch, rng):
        """The hook :func:`minicae.train.fit` calls: (loss, penalties) after backward."""
        loss, _ = self.objective(x, target, epoch=epoch, rng=rng)
        return loss, {}

    def validation_metrics(self, x, *, batch_size=256, seed=0):
        """Held-out negative ELBO (nats/image, beta 1, no floor), bits/dim, KL, active units."""
        was = self.training
        self.eval()
        rng = numpy.random.default_rng(seed)
        nelbo, kl_sum, n = 0.0, 0.0, len(x)
        kl_dims = numpy.zeros(self.latent)
        for start in range(0, n, batch_size):
            xb = to_device(x[start:start + batch_size], dtype=self.dtype)
            loss, parts = self.objective(xb, rng=rng, backward=False, beta=1.0, free_bits=0.0)
            nelbo += loss * len(xb)
            mu, logvar = self.encode(xb)
            kl_dims += to_numpy(FV.gaussian_kl(mu, logvar)).sum(axis=0)
            kl_sum += parts["kl"] * len(xb)
        self.train(was)
        kl_dims /= n
        return {"val_loss": nelbo / n, "val_bpd": FV.bits_per_dim(nelbo / n, self.dims),
                "val_kl": kl_sum / n, "active_units": int((kl_dims > ACTIVE_THRESHOLD).sum())}

    @property
    def dims(self):
        return int(numpy.prod(self.image_shape))

    def sample(self, n, rng):
        """E[x | z] for n codes z drawn from the prior N(0, I)."""
        return self.mean_image(self.decode(self.draw_eps(n, rng)))

    def get_config(self):
        return dict(self._config)


def kl_per_dimension(model, x, *, batch_size=256):
    """Mean KL(q(z_j|x) || N(0, 1)) over the images, per latent unit (host array)."""
    total = numpy.zeros(model.latent)
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode(to_device(x[start:start + batch_size], dtype=model.dtype))
        total += to_numpy(FV.gaussian_kl(mu, logvar)).sum(axis=0)
    return total / len(x)


def active_units(model, x, *, threshold=ACTIVE_THRESHOLD):
    """How many latent units carry more than ``threshold`` nats of KL on average."""
    return int((kl_per_dimension(model, x) > threshold).sum())


def iwae_log_likelihood(model, x, *, k=64, batch_size=64, seed=0):
    """Mean over images of the K-sample importance-weighted bound on log p(x), in nats.

    Each image gets K codes z_k ~ q(z|x); log-sum-exp of the weights
    log p(x|z_k) + log p(z_k) - log q(z_k|x), minus log K (docs/maths.md#iwae).
    """
    check_positive_int(k, where="iwae_log_likelihood", name="k")
    rng = numpy.random.default_rng(seed)
    xp_total = 0.0
    for start in range(0, len(x), batch_size):
        xb = to_device(x[start:start + batch_size], dtype=model.dtype)
        mu, logvar = model.encode(xb)
        n = len(xb)
        eps = model.draw_eps(k * n, rng).reshape(k, n, model.latent)
        z = FV.reparameterize(mu[None].repeat(k, 0).reshape(k * n, -1),
                              logvar[None].repeat(k, 0).reshape(k * n, -1),
                              eps.reshape(k * n, -1)).reshape(k, n, -1)
        out = model.decode(z.reshape(k * n, -1))
        x_rep = xb[None].repeat(k, 0).reshape((k * n,) + tuple(xb.shape[1:]))
        log_px_z = -model.nll(out, x_rep).reshape(k, n)
        xp_total += float(FV.iwae_bound(log_px_z, z, mu, logvar).sum())
    return xp_total / len(x)


def _vae_kwargs(where, latent, beta, kl_warmup, free_bits, likelihood, sigma, log_sigma):
    return dict(latent=latent, beta=beta, kl_warmup=kl_warmup, free_bits=free_bits,
                likelihood=likelihood, sigma=sigma, log_sigma=log_sigma)


class DenseVAE(VAE):
    """Fully connected VAE; by default 784-64-(64 mu, 64 logvar) | 64-64-784.

    Parameters
    ----------
    in_features : int
    hidden : sequence of int
        Encoder widths before the latent head (default the Keras MNIST example's 64).
    latent : int
        Size of z (default 64, the Keras MNIST example's code size).
    decoder_hidden : sequence of int
    beta : float
        KL weight (beta-VAE).
    kl_warmup : int
        Epochs over which the KL weight rises linearly to beta (0: none).
    free_bits : float
        Floor, in nats, of each latent unit's batch-mean KL.
    likelihood : {'bernoulli', 'gaussian'}
    sigma : {'fixed', 'scalar', 'pixel'}
        Gaussian likelihood: a fixed sigma = exp(log_sigma), one learned log
        sigma, or one per pixel.
    log_sigma : float
        Initial (or fixed) log sigma.
    input_shape : sequence of int, optional
        Per-sample shape (e.g. (1, 28, 28)); default (in_features,).
    seed : int
    dtype : str
    """

    def __init__(self, in_features=784, hidden=(64,), latent=64, decoder_hidden=(64,),
                 beta=1.0, kl_warmup=0, free_bits=0.0, likelihood="bernoulli",
                 sigma="fixed", log_sigma=0.0, input_shape=None, seed=0, dtype="float32"):
        where = "DenseVAE"
        check_positive_int(in_features, where=where, name="in_features")
        hidden = [check_positive_int(h, where=where, name="hidden sizes") for h in hidden]
        decoder_hidden = [check_positive_int(h, where=where, name="decoder_hidden sizes")
                          for h in decoder_hidden]
        shape = [int(s) for s in input_shape] if input_shape is not None else [in_features]
        if int(numpy.prod(shape)) != in_features:
            raise ValueError(f"{where}: input_shape {tuple(shape)} has "
                             f"{int(numpy.prod(shape))} values, expected "
                             f"in_features={in_features}.")
        vae_kw = _vae_kwargs(where, latent, beta, kl_warmup, free_bits, likelihood, sigma,
                             log_sigma)
        self._config = dict(in_features=in_features, hidden=hidden,
                            decoder_hidden=decoder_hidden, input_shape=input_shape and shape,
                            seed=seed, dtype=str(numpy.dtype(dtype)), **vae_kw)
        self._setup(where, image_shape=shape, dtype=dtype, **vae_kw)
        kw = dict(rng=numpy.random.default_rng(seed), dtype=dtype)
        enc, sizes = [nn.Flatten()], [in_features] + hidden
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b, **kw), nn.ReLU()]
        enc.append(nn.Linear(sizes[-1], 2 * latent, **kw))     # h = [μ, log σ²]
        dec, sizes = [], [latent] + decoder_hidden
        for a, b in zip(sizes[:-1], sizes[1:]):
            dec += [nn.Linear(a, b, **kw), nn.ReLU()]
        dec.append(nn.Linear(sizes[-1], in_features, **kw))
        if input_shape is not None:
            dec.append(nn.Reshape(*shape))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)


class ConvVAE(VAE):
    """Convolutional VAE: stride-2 convs, a Linear to (mu, logvar), Linear and
    transposed convs back.

    Parameters
    ----------
    in_channels : int
    channels : sequence of int
        Encoder feature maps per stride-2 layer; the decoder mirrors them.
    kernel_size : int
    input_size : int or (int, int)
        The (H, W) the decoder restores.
    latent, beta, kl_warmup, free_bits, likelihood, sigma, log_sigma, seed, dtype :
        as for :class:`DenseVAE` (latent default 16).
    """

    def __init__(self, in_channels=1, channels=(16, 32), kernel_size=3, input_size=28,
                 latent=16, beta=1.0, kl_warmup=0, free_bits=0.0, likelihood="bernoulli",
                 sigma="fixed", log_sigma=0.0, seed=0, dtype="float32"):
        where = "ConvVAE"
        check_positive_int(in_channels, where=where, name="in_channels")
        channels = [check_positive_int(c, where=where, name="channels") for c in channels]
        if not channels:
            raise ValueError(f"{where}: expected at least one channel count, got "
                             f"{channels!r}.")
        k = check_positive_int(kernel_size, where=where, name="kernel_size")
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        vae_kw = _vae_kwargs(where, latent, beta, kl_warmup, free_bits, likelihood, sigma,
                             log_sigma)
        self._config = dict(in_channels=in_channels, channels=channels, kernel_size=k,
                            input_size=list(hw), seed=seed, dtype=str(numpy.dtype(dtype)),
                            **vae_kw)
        self._setup(where, image_shape=(in_channels, *hw), dtype=dtype, **vae_kw)
        kw = dict(rng=numpy.random.default_rng(seed), dtype=dtype)
        sizes, stages, enc = [in_channels] + channels, [hw], []
        for i in range(len(channels)):
            conv = nn.Conv2d(sizes[i], sizes[i + 1], k, stride=2, padding=k // 2, **kw)
            enc += [conv, nn.ReLU()]
            stages.append(conv.output_shape(*stages[-1]))
        h2, w2 = stages[-1]
        flat = channels[-1] * h2 * w2
        enc += [nn.Flatten(), nn.Linear(flat, 2 * latent, **kw)]   # h = [μ, log σ²]
        dec = [nn.Linear(latent, flat, **kw), nn.ReLU(), nn.Reshape(channels[-1], h2, w2)]
        for i in reversed(range(len(channels))):
            (h, w), hs = stages[i], stages[i + 1][0]
            op = (output_padding_for(h, k, 2, k // 2), output_padding_for(w, k, 2, k // 2))
            if (hs - 1) * 2 - 2 * (k // 2) + k + op[0] != h:
                raise ValueError(f"{where}: cannot restore height {h} from {hs} with kernel "
                                 f"{k}; choose an input_size divisible by "
                                 f"{2 ** len(channels)}.")
            dec.append(nn.ConvTranspose2d(sizes[i + 1], sizes[i], k, stride=2,
                                          padding=k // 2, output_padding=op, **kw))
            if i:
                dec.append(nn.ReLU())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)


def prior_baseline(model, x_train, x_val):
    """Negative ELBO (nats/image) of the standard-normal prior with a mean-image decoder.

    The decoder ignores z and gives the training mean image, q(z|x) is the
    prior, so KL = 0 and the bound is -log p(x | mean image): what a VAE must
    beat to have learned anything from its codes. A Gaussian likelihood keeps
    the model's fixed sigma, or takes the scalar sigma that fits best when the
    model learns it.
    """
    mean = numpy.clip(x_train.astype(numpy.float64).mean(axis=0, keepdims=True), 1e-6,
                      1 - 1e-6)
    xv = to_device(x_val.astype(numpy.float64))
    if model.likelihood == "bernoulli":
        logits = to_device(numpy.broadcast_to(numpy.log(mean) - numpy.log1p(-mean),
                                              x_val.shape).copy())
        return float(FV.bernoulli_nll(logits, xv).mean())
    m = numpy.broadcast_to(mean, x_val.shape)
    log_sigma = (float(to_numpy(model._log_sigma)) if model.sigma == "fixed"
                 else 0.5 * numpy.log(((x_val - m) ** 2).mean()))
    return float(FV.gaussian_nll(to_device(m.copy()), xv,
                                 to_device(numpy.asarray(log_sigma))).mean())
