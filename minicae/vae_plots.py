"""Pictures of a trained VAE: prior samples, latent traversals, the 2-D latent space.

Reconstructions come from :func:`minicae.plots.save_reconstructions` (a VAE's
``forward`` decodes the posterior mean). Matplotlib is optional, as there.
"""

from __future__ import annotations

import numpy

from .backend import to_device, to_numpy
from .plots import _as_image, _pyplot, _savefig
from .vae import kl_per_dimension

__all__ = ["save_prior_samples", "save_traversal", "save_latent_scatter", "save_manifold",
           "save_vae_pictures"]


def _decode(model, z):
    was = model.training
    model.eval()
    out = to_numpy(model.mean_image(model.decode(to_device(z, dtype=model.dtype))))
    model.train(was)
    return out.reshape((len(z),) + model.image_shape)


def _grid(plt, images, rows, cols, path, *, row_labels=None, title=None):
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.imshow(_as_image(images[i]), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for r, label in enumerate(row_labels or []):
        axes[r][0].set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def save_prior_samples(model, path, *, rows=6, cols=8, seed=0):
    """A grid of E[x | z] for z drawn from the prior N(0, I)."""
    plt = _pyplot()
    z = numpy.random.default_rng(seed).standard_normal((rows * cols, model.latent))
    return _grid(plt, _decode(model, z), rows, cols, path, title="samples from the prior")


def save_traversal(model, x, path, *, dims=8, steps=9, span=3.0):
    """One row per latent unit (most KL first): vary it over [-span, span] from the
    posterior mean of ``x[0]``, the other units held; the row label gives its KL."""
    plt = _pyplot()
    kl = kl_per_dimension(model, x)
    order = numpy.argsort(-kl)[:dims]
    mu, _ = model.encode(to_device(x[:1], dtype=model.dtype))
    base = to_numpy(mu)[0]
    z = numpy.repeat(base[None], len(order) * steps, axis=0)
    values = numpy.linspace(-span, span, steps)
    for r, j in enumerate(order):
        z[r * steps:(r + 1) * steps, j] = values
    labels = [f"z{j} KL {kl[j]:.2f}" for j in order]
    return _grid(plt, _decode(model, z), len(order), steps, path, row_labels=labels,
                 title=f"latent traversal, z_j from {-span:g} to {span:g}")


def save_latent_scatter(model, x, labels, path, *, names=None):
    """2-D latent: the posterior means of ``x``, coloured by ``labels``."""
    plt = _pyplot()
    mu, _ = model.encode(to_device(x, dtype=model.dtype))
    mu = to_numpy(mu)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for c in numpy.unique(labels):
        pick = labels == c
        name = names[c] if names is not None and c < len(names) else str(c)
        ax.scatter(mu[pick, 0], mu[pick, 1], s=6, label=name)
    ax.set_xlabel("mu_0")
    ax.set_ylabel("mu_1")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title("posterior means, by label", fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def save_manifold(model, path, *, n=12, span=2.5):
    """2-D latent: E[x | z] over an n x n grid of z in [-span, span]^2."""
    plt = _pyplot()
    values = numpy.linspace(-span, span, n)
    z = numpy.array([(a, b) for b in values[::-1] for a in values])
    return _grid(plt, _decode(model, z), n, n, path,
                 title=f"decoded manifold, z in [{-span:g}, {span:g}]^2")


def save_vae_pictures(model, x, out, *, labels=None, names=None):
    """Write every VAE picture that applies under folder ``out``; return {name: path}."""
    import os

    paths = {"prior_samples": save_prior_samples(model, os.path.join(out, "prior_samples.png")),
             "traversal": save_traversal(model, x, os.path.join(out, "traversal.png"))}
    if model.latent == 2:
        if labels is not None:
            paths["latent"] = save_latent_scatter(model, x, labels,
                                                  os.path.join(out, "latent.png"), names=names)
        paths["manifold"] = save_manifold(model, os.path.join(out, "manifold.png"))
    return paths
