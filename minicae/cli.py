"""Command-line interface: argument parsing, printing and exit codes only.

Errors raised on purpose (``ValueError``, ``TypeError``, missing files) end
the command with one line on stderr and status 2; Ctrl-C during training
writes a checkpoint, says how to resume and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]

MODEL_CHOICES = ("conv-full", "conv-strided", "dense", "vae", "conv-vae")
PENALTY_CHOICES = ("none", "l1", "kl", "contractive", "topk")
DEFAULT_EPOCHS = 8


def _cmd_info(args):
    from .backend import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"minicae backends (default: {data['default']})")
    for name, entry in data["backends"].items():
        mark = "yes" if entry["available"] else "no "
        print(f"  {name:<6} {mark}  {entry['detail']}")
    print(f"NumPy {data['numpy']}; BLAS:")
    for pool in data["blas"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in pool.items() if v is not None))
    for key, value in data["env"].items():
        print(f"  env {key}={value}")
    return 0


def _load_images(args):
    from . import data

    if args.data == "shapes":
        images, masks = data.make_shapes(args.n_images, size=args.image_size,
                                         channels=args.channels_in, texture=not args.flat,
                                         seed=args.seed)
        return images, masks
    loaded = data.load_dataset(args.data)
    return loaded.images, loaded.masks


def _penalty_spec(args):
    if args.penalty in ("none", "topk"):
        return None
    spec = {"kind": args.penalty, "weight": args.penalty_weight}
    if args.penalty == "kl":
        spec["rho"] = args.rho
    if args.penalty == "contractive":
        spec["activation"] = args.code_activation or args.activation
    return spec


def _build_vae(args, images):
    from .vae import ConvVAE, DenseVAE

    if args.iwae_k < 1:
        raise ValueError(f"minicae train: expected --iwae-k >= 1, got {args.iwae_k}.")
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


def _vae_summary(model, history, images, args, out):
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


def _build_model(args, images):
    from .models import ConvAutoencoder, DenseAutoencoder

    if args.model in ("vae", "conv-vae"):
        return _build_vae(args, images)
    topk = args.k if args.penalty == "topk" else None
    penalty = _penalty_spec(args)
    if args.model == "dense":
        shape = images.shape[1:]
        in_features = 1
        for s in shape:
            in_features *= int(s)
        hidden = args.hidden or [64, 64]
        return DenseAutoencoder(in_features, hidden=hidden, activation=args.activation,
                                code_activation=args.code_activation or args.activation,
                                topk=topk, penalty=penalty, input_shape=list(shape),
                                seed=args.seed)
    if images.ndim != 4:
        raise ValueError(f"minicae train: expected images of shape (N, C, H, W) for a "
                         f"convolutional model, got {tuple(images.shape)}.")
    scheme = "full" if args.model == "conv-full" else "strided"
    return ConvAutoencoder(images.shape[1], channels=args.channels,
                           kernel_size=args.kernel_size, scheme=scheme,
                           activation=args.activation,
                           code_activation=args.code_activation, pool=args.pool,
                           input_size=list(images.shape[2:]), topk=topk, penalty=penalty,
                           seed=args.seed)


def _cmd_train(args):
    from . import checkpoint, plots
    from .backend import keep_freed_memory, set_backend
    from .train import TrainingInterrupted, fit

    keep_freed_memory()          # no page faults for the arrays each step re-allocates

    out = args.out
    ckpt_path = os.path.join(out, "checkpoint.npz")
    run_path = os.path.join(out, "run.json")
    if args.resume:
        if not os.path.exists(ckpt_path) or not os.path.exists(run_path):
            raise FileNotFoundError(f"no checkpoint to resume at {ckpt_path}; run without "
                                    f"--resume first.")
        with open(run_path) as fh:
            saved = json.load(fh)
        # the data, model and seed of the original run; only these may change:
        keep = {k: getattr(args, k) for k in ("resume", "no_progress", "backend", "out",
                                              "distributed", "plots")}
        if args.epochs is not None:
            keep["epochs"] = args.epochs
        vars(args).update(saved)
        vars(args).update(keep)
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS
    if args.backend:
        set_backend(args.backend)
    ctx = None
    if args.distributed:            # under mpirun: every rank runs this; rank 0 alone writes
        from .distributed import init

        ctx = init()
    writer = ctx is None or ctx.is_writer
    say = print if writer else (lambda *a, **k: None)
    images, _ = _load_images(args)
    if args.resume:
        model = checkpoint.load(ckpt_path).model
    else:
        model = _build_model(args, images)
        if writer:
            os.makedirs(out, exist_ok=True)
            with open(run_path, "w") as fh:
                json.dump({k: v for k, v in vars(args).items() if k != "func"}, fh,
                          indent=1)
    say(f"model: {model.get_config()}")
    say(f"data: {images.shape[0]} images of shape {tuple(images.shape[1:])}; "
        f"out: {out}" + (f"; {ctx.size} MPI ranks x batch {args.batch_size}" if ctx else ""))
    try:
        history = fit(model, images, loss=args.loss, optimizer=args.optimizer, lr=args.lr,
                      epochs=args.epochs, batch_size=args.batch_size,
                      val_fraction=args.val_fraction, seed=args.seed,
                      corruption=args.denoise, corruption_level=args.noise_level,
                      early_stopping=args.patience, checkpoint_dir=out,
                      resume=args.resume, progress=not args.no_progress,
                      on_nonfinite=args.on_nonfinite,
                      callback=_print_epoch if writer else None, distributed=ctx)
    except TrainingInterrupted as exc:
        say(f"\ninterrupted at epoch {exc.epoch}, batch {exc.batch}; checkpoint written "
              f"to {exc.checkpoint_path}.\nResume with: minicae train --out {out} "
              f"--resume (same data and seed)", file=sys.stderr)
        return 130
    if not writer:
        return 0
    pictures = {}
    try:
        val = images[-8:]
        pictures["reconstructions"] = plots.save_reconstructions(
            model, val, os.path.join(out, "reconstructions.png"))
        pictures["filters"] = plots.save_filters(model, os.path.join(out, "filters.png"))
        pictures["loss"] = plots.save_loss_curves(history, os.path.join(out, "loss.png"))
    except RuntimeError as exc:      # matplotlib missing: training results still stand
        print(f"pictures skipped: {exc}", file=sys.stderr)
    if args.model in ("vae", "conv-vae"):
        try:
            pictures.update(_vae_summary(model, history, images, args, out))
        except RuntimeError as exc:
            print(f"pictures skipped: {exc}", file=sys.stderr)
    last = history.epochs[-1]
    print(f"final: train loss {last['train_loss']:.5f}, val loss "
          f"{last.get('val_loss', float('nan')):.5f}, mean-image baseline "
          f"{history.baseline_mse if history.baseline_mse is not None else float('nan'):.5f}"
          f", mean ||z||_0 {last['l0']:.1f}")
    print(f"checkpoint: {ckpt_path}\nhistory: {os.path.join(out, 'history.json')}")
    for name, path in pictures.items():
        print(f"{name}: {path}")
    return 0


def _print_epoch(record):
    pens = "".join(f", {k} {v:.4g}" for k, v in record["penalties"].items())
    val = record.get("val_loss")
    print(f"epoch {record['epoch']}: train {record['train_loss']:.5f}"
          + (f", val {val:.5f}" if val is not None else "") + pens
          + f", ||z||_0 {record['l0']:.1f}, {record['seconds']:.1f}s"
          + f", {record['samples_per_s'] or 0:.0f} samples/s", flush=True)


def _cmd_demo(args):
    """Train the default model on the shapes data: what `make demo` runs."""
    argv = ["train", "--out", args.out, "--epochs", str(args.epochs)]
    return main(argv + (["--no-progress"] if args.no_progress else []))


def _add_train_arguments(p):
    p.add_argument("--model", choices=MODEL_CHOICES, default="conv-full",
                   help="autoencoder: the documents' 'full'-padding conv (default), "
                        "strided conv with transposed-conv decoder, or dense")
    p.add_argument("--data", default="shapes",
                   help="'shapes' (generated, default) or a path: .npz/.npy, an IDX "
                        "file, or a folder of images")
    p.add_argument("--n-images", type=int, default=1000, help="shapes: how many images")
    p.add_argument("--image-size", type=int, default=32, help="shapes: height and width")
    p.add_argument("--channels-in", type=int, default=1, help="shapes: 1 or 3 channels")
    p.add_argument("--flat", action="store_true", help="shapes: flat, untextured fills")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16],
                   help="conv models: feature maps per encoder layer")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="dense model: encoder widths (default 64 64)")
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--pool", action="store_true", help="conv-strided: max-pool to downsample")
    p.add_argument("--activation", default="relu",
                   choices=("relu", "leaky_relu", "sigmoid", "tanh"))
    p.add_argument("--code-activation", default=None,
                   choices=("relu", "leaky_relu", "sigmoid", "tanh"))
    p.add_argument("--penalty", choices=PENALTY_CHOICES, default="none")
    p.add_argument("--penalty-weight", type=float, default=1e-3)
    p.add_argument("--rho", type=float, default=0.05, help="kl: target mean activation")
    p.add_argument("--k", type=int, default=32, help="topk: units kept per sample")
    p.add_argument("--latent", type=int, default=16, help="vae, conv-vae: latent size")
    p.add_argument("--beta", type=float, default=1.0, help="vae, conv-vae: KL weight")
    p.add_argument("--kl-warmup", type=int, default=0,
                   help="vae, conv-vae: epochs over which the KL weight rises to --beta")
    p.add_argument("--free-bits", type=float, default=0.0,
                   help="vae, conv-vae: floor in nats of each latent unit's mean KL")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli",
                   help="vae, conv-vae: p(x|z)")
    p.add_argument("--iwae-k", type=int, default=64,
                   help="vae, conv-vae: samples of the final log p(x) estimate")
    p.add_argument("--plots", action="store_true",
                   help="vae, conv-vae: prior samples, traversal, 2-D latent pictures")
    p.add_argument("--loss", choices=("mse", "bce"), default="mse")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the data (default {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=None, help="early stopping")
    p.add_argument("--denoise", choices=("gaussian", "masking", "salt_pepper"),
                   default=None, help="train a denoising autoencoder")
    p.add_argument("--noise-level", type=float, default=0.2)
    p.add_argument("--on-nonfinite", choices=("raise", "skip"), default="raise")
    p.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: mpirun -n 2 minicae train --distributed "
                        "...; --batch-size is per rank (docs/distributed.md)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    parser = _Parser(prog="minicae", description="Convolutional autoencoders by hand.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("info", help="list backends, BLAS and threads")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("train", help="train an autoencoder, write a run directory")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("demo", help="train the default model on shapes (make demo)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)
    from .bench import add_bench_arguments

    p = sub.add_parser("bench", help="time the backends (and torch) on the issue-5 rows")
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)
    from .segment.pipeline import add_segment_arguments

    p = sub.add_parser("segment", help="segment held-out images with autoencoder features")
    add_segment_arguments(p)
    p.set_defaults(func=_cmd_segment)
    return parser


def _cmd_segment(args):
    from .backend import keep_freed_memory
    from .segment.pipeline import format_table, run_segment

    keep_freed_memory()

    results, pictures = run_segment(args, log=lambda msg: print(f"  {msg}", file=sys.stderr,
                                                                flush=True))
    print(format_table(results))
    for name, path in pictures.items():
        print(f"overlay {name}: {path}")
    if args.json:
        print(f"json: {args.json}")
    return 0


def _cmd_bench(args):
    from .bench import run_bench

    result = run_bench(args, out=print,
                       progress=lambda msg: print(f"  {msg} ...", file=sys.stderr))
    return result if isinstance(result, int) else 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"minicae {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError, KeyError) as exc:
        print(f"minicae {args.command}: error: {exc}", file=sys.stderr)
        return 2
