"""The command line's VAE steps: build the model from flags, and its final summary."""

from __future__ import annotations

import os

__all__ = ["build_vae", "summary"]


def build_vae(args, images):
    """The DenseVAE or ConvVAE that ``minicae train --model vae|conv-vae`` asks for."""
    from .vae import ConvVAE, DenseVAE

    kw = dict(latent=args.latent, beta=args.beta, kl_warmup=args.kl_warmup,
              free_bits=args.free_bits, likelihood=args.likelihood, seed=args.seed)
    if args.model == "vae":
        shape = [int(s) for s in images.shape[1:]]
        return DenseVAE(int(images[0].size), hidden=args.hidden or [64], input_shape=shape,
                        **kw)
    if images.ndim != 4:
        raise ValueError(f"minicae train: expected images of shape (N, C, H, W) for "
                         f"conv-vae, got {tuple(images.shape)}.")
    return ConvVAE(images.shape[1], channels=args.channels, kernel_size=args.kernel_size,
                   input_size=list(images.shape[2:]), **kw)


def summary(model, history, images, args, out):
    """Add IWAE and the prior baseline to the last record, print them, write the pictures."""
    import numpy

    from .data import train_val_split
    from .vae import iwae_log_likelihood, prior_baseline

    last = history.epochs[-1]
    if args.val_fraction:
        train_idx, val_idx = train_val_split(len(images), args.val_fraction, seed=args.seed)
    else:                   # no held-out images: the numbers are on the training set
        train_idx = val_idx = numpy.arange(len(images))
        last.update(model.validation_metrics(images))
    last["iwae"] = iwae_log_likelihood(model, images[val_idx], k=args.iwae_k)
    last["iwae_k"] = args.iwae_k
    last["baseline_nelbo"] = prior_baseline(model, images[train_idx], images[val_idx])
    history.save(os.path.join(out, "history.json"))
    print(f"final: val -ELBO {last['val_loss']:.2f} nats/image ({last['val_bpd']:.4f} "
          f"bits/dim), IWAE (K={args.iwae_k}) log p(x) >= {last['iwae']:.2f}, KL "
          f"{last['val_kl']:.2f}, active units {last['active_units']}/{model.latent}; "
          f"prior + mean-image baseline -ELBO {last['baseline_nelbo']:.2f}")
    if not args.plots:
        return {}
    from . import vae_plots
    from .data import make_shapes

    x, masks = images[val_idx], None
    if args.data == "shapes":      # each image's label: the class covering most pixels
        _, masks = make_shapes(args.n_images, size=args.image_size,
                               channels=args.channels_in, texture=not args.flat,
                               seed=args.seed)
        counts = [(masks[val_idx] == c).sum(axis=(1, 2)) for c in (1, 2, 3)]
        masks = numpy.argmax(numpy.stack(counts, 1), axis=1)
    names = ("ellipse", "rectangle", "triangle")
    return vae_plots.save_vae_pictures(model, x, out, labels=masks, names=names)
