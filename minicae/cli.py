"""Command-line interface: argument parsing, printing and exit codes only.

Errors raised on purpose (``ValueError``, ``TypeError``, missing files) end
the command with one line on stderr and status 2; Ctrl-C (SIGTERM) during
training writes a checkpoint, says how to resume and exits with status 130 (143).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import warnings

from . import _cli_vae
from ._cli_checks import check_args, check_train_memory
from .errors import MinicaeError

__all__ = ["main", "build_parser"]

MODEL_CHOICES = ("conv-full", "conv-strided", "dense", "vae", "conv-vae")
PENALTY_CHOICES = ("none", "l1", "kl", "contractive", "topk")
DEFAULT_EPOCHS = 8
# l1's sum runs over every code unit (20,736 in the default conv-full model): 1e-3 zeroes the code
PENALTY_WEIGHTS = {"l1": 2e-6, "kl": 1e-3, "contractive": 1e-3}


def _cmd_info(args):
    from .backend import info

    if args.kernels:
        return _cmd_tune(args, measure=False)
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"minicae backends (default: {data['default']})")
    extras = {"numba": "numba", "cupy": "gpu"}
    for name, entry in data["backends"].items():
        mark = "yes" if entry["available"] else "no "
        fix = "" if entry["available"] or name not in extras else \
            f" (install it with: pip install 'minicae[{extras[name]}]')"
        print(f"  {name:<6} {mark}  {entry['detail']}{fix}")
    print(f"NumPy {data['numpy']}; BLAS:")
    for pool in data["blas"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in pool.items() if v is not None))
    for key, value in data["env"].items():
        print(f"  env {key}={value}")
    return 0


def _read_json(path):
    """A JSON file's contents; a malformed one is a ValueError that names the file."""
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: expected JSON, got a file that does not parse "
                             f"({exc}). Restore it or start a new run.") from exc


def _cmd_tune(args, measure=True):
    """Run one training step of the model the train options describe and print each
    convolution layer's kernels (``measure``: time them now, keep them on disk)."""
    from . import dispatch
    from .backend import set_backend
    from .tune import format_report, kernel_report

    if args.backend:
        set_backend(args.backend)
    args.n_images = args.batch_size
    images, _ = _load_images(args)
    model = _build_model(args, images)
    rows = kernel_report(model, images[:args.batch_size], measure=measure)
    print("\n".join(format_report(rows, dispatch.cache_file())))
    return 0


def _load_images(args):
    from . import data

    if args.data == "shapes":
        check_train_memory(args, (args.n_images, args.channels_in, args.image_size,
                                   args.image_size), masks=True)
        images, masks = data.make_shapes(args.n_images, size=args.image_size,
                                         channels=args.channels_in, texture=not args.flat,
                                         seed=args.seed)
        return images, masks
    loaded = data.load_dataset(args.data)
    check_train_memory(args, loaded.images.shape)
    return loaded.images, loaded.masks


def _penalty_spec(args):
    if args.penalty in ("none", "topk"):
        return None
    weight = args.penalty_weight
    spec = {"kind": args.penalty,
            "weight": PENALTY_WEIGHTS[args.penalty] if weight is None else weight}
    if args.penalty == "kl":
        spec["rho"] = args.rho
    if args.penalty == "contractive":    # it sits on the first encoder layer: name its activation
        layers = args.hidden or [64, 64] if args.model == "dense" else args.channels
        spec["activation"] = args.activation if len(layers) > 1 else \
            args.code_activation or args.activation
    return spec


def _build_model(args, images):
    from .models import ConvAutoencoder, DenseAutoencoder

    if args.model in ("vae", "conv-vae"):
        return _cli_vae.build_vae(args, images)
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
    import numpy as np

    from . import checkpoint, plots
    from ._runfiles import atomic_write
    from .backend import keep_freed_memory, set_backend
    from .train import TrainingInterrupted, corrupt, fit

    keep_freed_memory()          # no page faults for the arrays each step re-allocates

    out = args.out
    ckpt_path = os.path.join(out, "checkpoint.npz")
    run_path = os.path.join(out, "run.json")
    if args.resume:
        if not os.path.exists(ckpt_path) or not os.path.exists(run_path):
            raise FileNotFoundError(f"no checkpoint to resume at {ckpt_path}; run without "
                                    f"--resume first.")
        saved = _read_json(run_path)
        # the data, model and seed of the original run; only these may change:
        keep = {k: getattr(args, k) for k in ("resume", "no_progress", "backend", "out",
                                              "distributed", "plots")}
        if args.epochs is not None:
            keep["epochs"] = args.epochs
        ignored = _ignored_on_resume(args, saved, keep)
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
        if ignored:
            say(ignored, file=sys.stderr)
        state = checkpoint.load(ckpt_path)
        model, done = state.model, state.metadata.get("epoch", 0)
        if done >= args.epochs and not state.metadata.get("batches_done"):
            say(f"minicae train: the run in {out} has finished {done} epoch(s); nothing "
                f"to train. Resume with --epochs N (N > {done}) to continue.",
                file=sys.stderr)
            return 0
    else:
        model = _build_model(args, images)
    run_json = json.dumps({k: v for k, v in vars(args).items() if k not in ("func", "argv")},
                          indent=1).encode("utf-8")
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
                      callback=_print_epoch if writer else None, distributed=ctx,
                      on_start=lambda: atomic_write(run_path, lambda fh: fh.write(run_json)))
    except TrainingInterrupted as exc:
        say(f"minicae train: {exc.signal.name} at epoch {exc.epoch}, batch {exc.batch}; "
            f"checkpoint written to {exc.checkpoint_path}. Resume with: "
            f"{'mpirun ... ' if ctx else ''}minicae train --out {out} --resume"
            f"{' --distributed' if ctx else ''}", file=sys.stderr)
        return 128 + exc.signal.value
    if not writer:
        return 0
    pictures = {}
    try:
        val = images[-8:]
        noisy = None if not args.denoise else corrupt(   # what the model sees: noisy input
            val, args.denoise, args.noise_level, np.random.default_rng(args.seed))
        pictures["reconstructions"] = plots.save_reconstructions(
            model, val, os.path.join(out, "reconstructions.png"), x_input=noisy)
        pictures["filters"] = plots.save_filters(model, os.path.join(out, "filters.png"))
        pictures["loss"] = plots.save_loss_curves(history, os.path.join(out, "loss.png"))
    except RuntimeError as exc:      # matplotlib missing: training results still stand
        print(f"pictures skipped: {exc}", file=sys.stderr)
    if args.model in ("vae", "conv-vae"):
        try:
            pictures.update(_cli_vae.summary(model, history, images, args, out))
        except RuntimeError as exc:
            print(f"pictures skipped: {exc}", file=sys.stderr)
    last = history.epochs[-1]
    base, val_loss = history.baseline_mse, last.get("val_loss")
    if base and val_loss is not None and val_loss >= 0.9 * base:
        fix = " or a lower --penalty-weight" if _penalty_spec(args) else ""
        print(f"warning: val loss {val_loss:.5f} is not clearly below the mean-image "
              f"baseline {base:.5f} (predicting the average image): the model learned "
              f"little. Try more epochs, another --lr{fix}.", file=sys.stderr)
    print(f"final: train loss {last['train_loss']:.5f}, val loss "
          f"{last.get('val_loss', float('nan')):.5f}, mean-image baseline "
          f"{history.baseline_mse if history.baseline_mse is not None else float('nan'):.5f}"
          f", mean ||z||_0 {last['l0']:.1f}")
    print(f"checkpoint: {ckpt_path}\nhistory: {os.path.join(out, 'history.json')}")
    for name, path in pictures.items():
        print(f"{name}: {path}")
    return 0


def _ignored_on_resume(args, saved, keep):
    """A warning naming each flag given with --resume that the saved run overrides."""
    given = {tok[2:].split("=")[0].replace("-", "_") for tok in getattr(args, "argv", ())
             if tok.startswith("--")}
    ignored = [f"--{k.replace('_', '-')} {getattr(args, k)!r} (the run has {saved[k]!r})"
               for k in sorted(given) if k in saved and k not in keep
               and getattr(args, k) != saved[k]]
    return ignored and (f"minicae train: --resume continues the saved run, so these flags "
                        f"are ignored: {', '.join(ignored)}. Start a new run (another "
                        f"--out) to change them.")


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
    acts = ("relu", "leaky_relu", "sigmoid", "tanh")
    p.add_argument("--model", choices=MODEL_CHOICES, default="conv-full",
                   help="autoencoder: 'full'-padding conv (maps grow by k-1 per layer), "
                        "strided conv with transposed-conv decoder, or dense")
    p.add_argument("--data", default="shapes",
                   help="'shapes' (generated) or a path: .npz/.npy, an IDX file, or a "
                        "folder of images")
    p.add_argument("--n-images", type=int, default=1000, help="shapes: how many images")
    p.add_argument("--image-size", type=int, default=32, help="shapes: height and width")
    p.add_argument("--channels-in", type=int, default=1, help="shapes: 1 or 3 channels")
    p.add_argument("--flat", action="store_true", help="shapes: flat, untextured fills")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16],
                   help="conv models: feature maps per encoder layer")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="dense model: encoder widths (default 64 64)")
    p.add_argument("--kernel-size", type=int, default=3, help="conv models: k of every kxk "
                                                              "kernel")
    p.add_argument("--pool", action="store_true", help="conv-strided: max-pool to downsample")
    p.add_argument("--activation", default="relu", choices=acts,
                   help="activation after every hidden layer")
    p.add_argument("--code-activation", default=None, choices=acts,
                   help="activation of the code (default: --activation)")
    p.add_argument("--penalty", choices=PENALTY_CHOICES, default="none",
                   help="regulariser on the code (contractive: on the first layer)")
    p.add_argument("--penalty-weight", type=float, default=None,
                   help=f"its weight (default {PENALTY_WEIGHTS['l1']:g} for l1, whose sum "
                        f"runs over every code unit; {PENALTY_WEIGHTS['kl']:g} otherwise)")
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
    p.add_argument("--loss", choices=("mse", "bce"), default="mse",
                   help="reconstruction loss")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                   help="optimizer")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the data (default {DEFAULT_EPOCHS}; with --resume, "
                        f"the total to reach)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the images held out for validation")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping: epochs without a better val loss (default: off)")
    p.add_argument("--denoise", choices=("gaussian", "masking", "salt_pepper"),
                   default=None, help="train a denoising autoencoder with this noise")
    p.add_argument("--noise-level", type=float, default=0.2,
                   help="gaussian: standard deviation; masking, salt_pepper: probability")
    p.add_argument("--on-nonfinite", choices=("raise", "skip"), default="raise",
                   help="a NaN/inf loss: stop with an error, or skip the batch")
    p.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None,
                   help="compute backend (default: MINICAE_BACKEND, else the fastest "
                        "installed)")
    p.add_argument("--seed", type=int, default=0, help="seeds data, weights and shuffles")
    p.add_argument("--out", default="runs/train", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: mpirun -n 2 minicae train --distributed "
                        "...; --batch-size is per rank (docs/distributed.md)")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show '(default: X)' wherever there is a default worth showing."""

    def _get_help_string(self, action):
        if action.default in (None, False, "") or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    parser = _Parser(prog="minicae", description="Convolutional autoencoders by hand.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=_Help)
    parser.commands = sub.choices
    p = sub.add_parser("info", help="list backends, BLAS and threads")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--kernels", action="store_true",
                   help="show the kernel each convolution layer of the model (train's "
                        "options) runs, and why")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("tune", help="measure and cache the fastest kernels for a model")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_tune)
    p = sub.add_parser("train", help="train an autoencoder, write a run directory")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("demo", help="train the default model on shapes (make demo)",
                       description="Train the default 'full'-padding conv autoencoder on "
                                   "1000 generated 32x32 shapes and write a run directory "
                                   "with pictures: minicae train --out OUT --epochs N.")
    p.add_argument("--out", default="runs/demo", help="run directory")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="passes over the data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)
    from .bench import add_bench_arguments

    p = sub.add_parser("bench", help="time the backends (and torch) on the benchmark cases")
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


def _error_text(exc, args):
    """One line for a failure: OSErrors name their path, bare KeyErrors say what is missing."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, MinicaeError):
        path = exc.filename or getattr(args, "out", None) or getattr(args, "json", None)
        return f"{exc.strerror} ({path!r})" if path else exc.strerror
    if isinstance(exc, MemoryError):
        return (f"out of memory ({exc or 'MemoryError'}). Use fewer or smaller images, a "
                f"smaller --batch-size or a smaller model.")
    return str(exc)


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                               # name the subcommand whose flags they are not
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)   # which flags were given
    try:
        check_args(args)
        # the trainer reports a NaN/inf loss itself, in one line: no NumPy warnings first
        # (a filter, not np.errstate: the conv worker threads do not see errstate)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) "
                                    r"encountered", RuntimeWarning)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"minicae {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MinicaeError, ValueError, TypeError, RuntimeError, OSError, KeyError,
            MemoryError) as exc:
        message = " ".join(_error_text(exc, args).split())    # one line, always
        message = message.removeprefix(f"minicae {args.command}: ")
        print(f"minicae {args.command}: error: {message}", file=sys.stderr)
        return 2
