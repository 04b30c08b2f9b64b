"""The CLI's checks before any work: every flag's value, and a train run's memory.

A command that fails here has read, trained and written nothing. The limits
are the parser's own types plus the ranges below; the memory limit is the
machine's physical memory (:func:`minicae.data._io.memory_limit`).
"""

from __future__ import annotations

import math
import os

from .data._io import check_size, gib

__all__ = ["check_args", "check_train_memory"]

_INT1 = ("an integer >= 1", lambda v: v >= 1)
_INT0 = ("an integer >= 0", lambda v: v >= 0)
_POS = ("a finite number > 0", lambda v: math.isfinite(v) and v > 0)
_NONNEG = ("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
_OPEN01 = ("in (0, 1)", lambda v: 0 < v < 1)
_ODD = ("an odd integer >= 1", lambda v: v >= 1 and v % 2 == 1)
_SHAPES_SIZE = ("an integer >= 16", lambda v: v >= 16)
_RULES = {
    "train": dict(n_images=_INT1, image_size=_SHAPES_SIZE, channels=_INT1, hidden=_INT1,
                  channels_in=("1 or 3", lambda v: v in (1, 3)), kernel_size=_INT1,
                  penalty_weight=_NONNEG, rho=_OPEN01, k=_INT1, lr=_POS, epochs=_INT1,
                  batch_size=_INT1, val_fraction=("in [0, 1)", lambda v: 0 <= v < 1),
                  patience=_INT1, seed=_INT0, latent=_INT1, beta=_NONNEG, kl_warmup=_INT0,
                  free_bits=_NONNEG, iwae_k=_INT1),
    "demo": dict(epochs=_INT1),
    "bench": dict(repeats=_INT1, threads=_INT1),
    "segment": dict(n_images=_INT1, image_size=_SHAPES_SIZE, test_fraction=_OPEN01,
                    labels=_INT1, channels=_INT1, kernel_size=_INT1, epochs=_INT1, lr=_POS,
                    batch_size=_INT1, window=_ODD, smooth=_INT0, n_init=_INT1,
                    head_hidden=_INT1, head_epochs=_INT1, head_lr=_POS, dice_weight=_NONNEG,
                    error_window=_ODD, percentile=("in (0, 100]", lambda v: 0 < v <= 100),
                    overlays=_INT0, seed=_INT0),
}


def _flag(dest):
    return "--" + dest.replace("_", "-")


def _check_noise(where, kind, level, flag):
    """gaussian: a standard deviation > 0; masking, salt_pepper: a probability in [0, 1]."""
    if kind in (None, "none"):
        return
    want = ("a finite number > 0", 0 < level < math.inf) if kind == "gaussian" else \
        ("a probability in [0, 1]", 0 <= level <= 1)
    if not want[1]:
        raise ValueError(f"{where}: expected {flag} to be {want[0]} for {kind} noise, got "
                         f"{level!r}.")


def _check_output(where, flag, path, kind):
    """A path we will write: a directory (kind 'dir') or a file we may create there."""
    if not path:
        return
    if os.path.exists(path):
        want, got = ("directory", "file") if kind == "dir" else ("file", "directory")
        if (kind == "dir") != os.path.isdir(path):
            raise ValueError(f"{where}: expected {flag} to name a {want}, got {path!r}, "
                             f"which is a {got}.")
        if not os.access(path, os.W_OK):
            raise ValueError(f"{where}: expected {flag} to be writable, got {path!r}.")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while kind == "dir" and not os.path.exists(parent):    # run folders get their parents
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: cannot create {flag} {path!r}: {parent!r} is not an "
                         f"existing, writable directory.")


def _check_input(where, flag, path):
    if path and not os.path.exists(path):
        raise ValueError(f"{where}: expected {flag} to name an existing file or folder, "
                         f"got {path!r}, which does not exist.")


def check_args(args):
    """Raise ValueError naming the first invalid flag; nothing has been read or written."""
    where = f"minicae {args.command}"
    # tune and info --kernels build the model train would: the same rules
    rules = _RULES["train"] if args.command in ("tune", "info") else _RULES.get(args.command, {})
    for dest, (want, ok) in rules.items():
        value = getattr(args, dest)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not ok(v):
                raise ValueError(f"{where}: expected {_flag(dest)} to be {want}, got {v!r}.")
    if args.command == "train":
        _check_noise(where, args.denoise, args.noise_level, "--noise-level")
        _check_output(where, "--out", args.out, "dir")
        if args.data != "shapes":
            _check_input(where, "--data", args.data)
    elif args.command == "segment":
        _check_noise(where, args.corruption, args.corruption_level, "--corruption-level")
        _check_output(where, "--out", args.out, "dir")
        _check_output(where, "--json", args.json, "file")
        for dest in ("data", "masks", "checkpoint"):
            if dest != "data" or args.data not in ("shapes", "shapes-anomaly", "textures"):
                _check_input(where, _flag(dest), getattr(args, dest))
    elif args.command == "bench":
        _check_output(where, "--json", args.json, "file")
        _check_output(where, "--plot", args.plot, "file")
    elif args.command == "demo":
        _check_output(where, "--out", args.out, "dir")


def check_train_memory(args, shape, masks=False):
    """Refuse a run whose data, weights and one batch's activations exceed the memory."""
    pixels = math.prod(shape[1:])
    data = shape[0] * (4 * pixels + (8 * pixels // shape[1] if masks else 0))
    k = args.kernel_size
    if args.model == "dense" or len(shape) != 4:
        widths = [pixels] + (args.hidden or [64, 64])
        per_sample = 3 * sum(widths)
        weights = sum(a * b for a, b in zip(widths, widths[1:]))
    else:
        (h, w), chans, per_sample, weights = shape[2:], [shape[1]] + args.channels, 0, 0
        for c_in, c_out in zip(chans, chans[1:]):
            # 'full' maps grow by k - 1 per layer, strided ones halve
            h, w = (h + k - 1, w + k - 1) if args.model == "conv-full" else \
                (-(-h // 2), -(-w // 2))
            per_sample += (c_in * k * k + 3 * c_out) * h * w    # columns + maps
            weights += c_in * c_out * k * k
    # encoder and decoder; 4 bytes a value; weights, gradients and two Adam moments
    batch = 2 * 4 * min(args.batch_size, shape[0]) * per_sample
    total = data + batch + 2 * 4 * 4 * weights
    check_size(total, where="minicae train", what=(
        f"this run (data {gib(data)}, one batch of activations {gib(batch)}, weights "
        f"and optimizer state {gib(32 * weights)})"),
        fix="Lower --n-images, --image-size, --kernel-size, --channels, --hidden or "
            "--batch-size.")
