"""The fit loop: batches, penalties, metrics, checkpoints, resume, interruption.

Randomness is derived, never carried: the shuffle of epoch ``e`` comes from
``default_rng([seed, e])`` and the corruption noise of batch ``b`` from
``default_rng([seed, e, b, 1])``. A run can therefore resume at any batch
boundary and reproduce an uninterrupted run exactly (same backend): the
checkpoint stores the seed, the epoch and the number of batches done, which
*is* the RNG state.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy

from . import checkpoint as ckpt
from . import nn
from ._runfiles import RunLock, atomic_write
from ._validation import (check_choice, check_in_open_interval, check_nonnegative_float,
                          check_positive_float, check_positive_int)
from .backend import to_device
from .data import iterate_minibatches, train_val_split
from .errors import CheckpointError, NumericalError

__all__ = ["fit", "History", "TrainingInterrupted", "corrupt", "evaluate",
           "CORRUPTIONS"]

CORRUPTIONS = ("gaussian", "masking", "salt_pepper")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`fit` after SIGINT or SIGTERM, once the checkpoint is written."""

    def __init__(self, checkpoint_path, epoch, batch, signum=signal.SIGINT):
        super().__init__(f"interrupted at epoch {epoch}, batch {batch}")
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch
        self.batch = batch
        self.signal = signal.Signals(signum)


@dataclass
class History:
    """Per-epoch records: losses, penalties, mean ‖z‖₀, time, throughput."""

    epochs: list = field(default_factory=list)
    baseline_mse: float | None = None

    def __getitem__(self, key):
        return [e.get(key) for e in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def to_dict(self):
        return {"epochs": self.epochs, "baseline_mse": self.baseline_mse}

    @classmethod
    def from_dict(cls, data):
        return cls(list(data.get("epochs", [])), data.get("baseline_mse"))

    def save(self, path):
        """Write ``history.json`` atomically."""
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def corrupt(x, kind, level, rng):
    """Corrupt a host batch for denoising: 'gaussian', 'masking' or 'salt_pepper'.

    gaussian: x + level·ε, ε ~ N(0, 1); masking: each pixel set to 0 with
    probability ``level``; salt_pepper: each pixel set to 0 or 1 (evenly)
    with probability ``level``.
    """
    check_choice(kind, CORRUPTIONS, where="corrupt", name="kind")
    if kind == "gaussian":
        return (x + level * rng.standard_normal(x.shape)).astype(x.dtype)
    hit = rng.random(x.shape) < level
    if kind == "masking":
        return numpy.where(hit, 0, x).astype(x.dtype)
    salt = rng.random(x.shape) < 0.5
    return numpy.where(hit, salt.astype(x.dtype), x).astype(x.dtype)


def _make_loss(loss):
    if isinstance(loss, str):
        check_choice(loss, ("mse", "bce"), where="fit", name="loss")
        return nn.MSELoss() if loss == "mse" else nn.BCELoss()
    if not (callable(loss) and hasattr(loss, "backward")):
        raise TypeError(f"fit: expected loss to be 'mse', 'bce' or a loss object with "
                        f"__call__ and backward, got {type(loss).__name__}.")
    return loss


def _make_optimizer(optimizer, model, lr):
    from . import optim

    if optimizer is None or isinstance(optimizer, str):
        name = optimizer or "adam"
        check_choice(name, ("adam", "adamw", "sgd"), where="fit", name="optimizer")
        cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}[name]
        kwargs = {"momentum": 0.9} if name == "sgd" else {}
        return cls(model, lr=lr, **kwargs)
    if not hasattr(optimizer, "step"):
        raise TypeError(f"fit: expected optimizer to be 'adam', 'adamw', 'sgd' or an "
                        f"optimizer object, got {type(optimizer).__name__}.")
    return optimizer


def _check_data(x, where):
    if not isinstance(x, numpy.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray of images, got "
                        f"{type(x).__name__}.")
    if x.dtype.kind != "f":
        raise TypeError(f"{where}: expected floating-point images, got dtype {x.dtype}. "
                        f"Scale integer images with x.astype(numpy.float32) / 255.")
    if x.ndim not in (2, 4) or x.shape[0] < 1:
        raise ValueError(f"{where}: expected images of shape (N, C, H, W) or (N, D) with "
                         f"N >= 1, got {tuple(x.shape)}.")
    if not numpy.isfinite(x.sum()) and not numpy.isfinite(x).all():
        raise ValueError(f"{where}: the images contain NaN or infinite values.")
    return x


def _grad_norm_sq(model):
    return sum(float((p.grad * p.grad).sum()) for p in model.parameters())


def evaluate(model, x, loss="mse", *, batch_size=256):
    """Mean reconstruction loss and mean ‖z‖₀ of ``model`` on host images ``x``."""
    loss = _make_loss(loss)
    was_training = model.training
    model.eval()
    total, l0, n = 0.0, 0.0, len(x)
    for start in range(0, n, batch_size):
        xb = to_device(x[start:start + batch_size])
        x_hat = model(xb)
        total += loss(x_hat, xb) * len(xb)
        z = getattr(model, "code_", None)       # a hand-built Sequential keeps no code
        l0 = None if z is None else l0 + float((z != 0).reshape(len(xb), -1).sum())
    model.train(was_training)
    return total / n, None if l0 is None else l0 / n


class _StopFlag:
    """SIGINT or SIGTERM sets a flag checked between batches; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.hit = 0                # the signal number, 0 until one arrives
        self._previous = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:      # not the main thread: leave the signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


def _fingerprint(x):
    """Shape, dtype and SHA-256 of an image array: what resume checks the data against."""
    digest = hashlib.sha256()
    rows = max(1, (1 << 24) // max(1, x[:1].nbytes))        # hash ~16 MB at a time
    for start in range(0, len(x), rows):
        digest.update(numpy.ascontiguousarray(x[start:start + rows]).data)
    return {"shape": list(x.shape), "dtype": x.dtype.str, "sha256": digest.hexdigest()}


def _check_same_data(saved, fingerprints, where):
    """Refuse to resume on data other than the checkpoint's (shape, dtype, SHA-256)."""
    for key, now in fingerprints.items():
        was = saved.get(key)
        if was is None:
            continue
        for item in ("shape", "dtype", "sha256"):
            if now[item] != was[item]:
                fmt = tuple if item == "shape" else str
                raise ValueError(f"{where}: the checkpoint was trained on {key} with "
                                 f"{item} {fmt(was[item])}, got {fmt(now[item])}. Resume "
                                 f"with the same data, or start a new run.")


def fit(model, x, *, loss="mse", optimizer=None, lr=1e-3, epochs=10, batch_size=64,
        x_val=None, val_fraction=0.1, seed=0, corruption=None, corruption_level=0.2,
        early_stopping=None, checkpoint_dir=None, resume=False, progress=True,
        on_nonfinite="raise", scheduler=None, callback=None, reduce_grads=None,
        is_writer=True, distributed=None, on_start=None):
    """Train ``model`` to reconstruct ``x`` and return a :class:`History`.

    Parameters
    ----------
    model : minicae.models.Autoencoder or any Module with forward and backward
        (e.g. a hand-built ``nn.Sequential``; ‖z‖₀ is reported when it keeps
        its code in ``code_``)
        A model with ``fit_step(x, target, *, epoch, rng) -> (loss, penalties)``
        (a VAE) does its own forward and backward and ``loss`` is not used;
        its ``validation_metrics(x_val)`` entries join each epoch's record.
    x : ndarray of shape (N, C, H, W) or (N, D), float, on the host
    loss : 'mse', 'bce' or a loss object
    optimizer : 'adam' (default), 'adamw', 'sgd' or an optimizer object
    lr : float
        Learning rate when the optimizer is built here.
    epochs, batch_size : int
    x_val : ndarray, optional
        Validation images; if None, ``val_fraction`` of ``x`` is held out.
    seed : int
        Seeds the split, the shuffles and the corruption noise.
    corruption : {'gaussian', 'masking', 'salt_pepper'}, optional
        Denoising: the input is corrupted, the target stays clean.
    early_stopping : int, optional
        Stop after this many epochs without a better validation loss.
    checkpoint_dir : path, optional
        Writes ``checkpoint.npz`` (every epoch, atomically), ``best.npz`` and
        ``history.json`` there, holding ``train.lock`` (our pid) meanwhile: a
        second trainer on the same directory is refused; a lock left by a
        dead process is taken over, with its temporary files.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.npz`` (exactly). Refused
        when the model's class or config, the seed, or the data (shape, dtype
        and SHA-256 of ``x`` and ``x_val``) differ from the checkpoint's.
    progress : bool
        A tqdm bar per epoch (when tqdm is installed) and, unless ``callback``
        is given, one printed line per epoch.
    callback : callable, optional
        Called with each epoch's record (a dict) instead of the printed line.
    on_nonfinite : {'raise', 'skip'}
        A NaN/inf loss or gradient raises :class:`~minicae.errors.NumericalError`
        naming the epoch, batch and last good checkpoint, or skips the batch.
    reduce_grads : callable, optional
        Called after backward with the model (data-parallel gradient averaging).
    is_writer : bool
        Whether this process writes files (False on non-zero MPI ranks).
    distributed : minicae.distributed.MPIContext, optional
        Data-parallel training: ``batch_size`` is per rank, each rank takes the
        rank-strided slice ``batch[rank::size]`` of the same global batch of
        ``size * batch_size`` samples, one Allreduce per step averages the
        gradients (weighted by slice size) and sums the batch's loss and flags,
        and only rank 0 writes files or shows progress. A last global batch with
        fewer than ``size`` samples is dropped. See docs/distributed.md.
    on_start : callable, optional
        Called with no argument once every check has passed and the run
        directory is locked, before the first batch (the CLI writes
        ``run.json`` there, so a refused command writes nothing).

    SIGINT or SIGTERM finishes the current batch, writes the checkpoint and
    raises :class:`TrainingInterrupted`; a second signal aborts at once.
    """
    where = "fit"
    _check_data(x, where)
    data = {"x": x, "x_val": x_val}          # as given, before any split
    epochs = check_positive_int(epochs, where=where, name="epochs")
    batch_size = check_positive_int(batch_size, where=where, name="batch_size")
    check_positive_float(lr, where=where, name="lr")
    check_choice(on_nonfinite, ("raise", "skip"), where=where, name="on_nonfinite")
    if corruption is not None:
        check_choice(corruption, CORRUPTIONS, where=where, name="corruption")
        check_nonnegative_float(corruption_level, where=where, name="corruption_level")
    if early_stopping is not None:
        check_positive_int(early_stopping, where=where, name="early_stopping")
    loss_fn = _make_loss(loss)
    opt = _make_optimizer(optimizer, model, lr)
    rank, n_ranks = (0, 1) if distributed is None else (distributed.rank, distributed.size)
    is_writer = is_writer and rank == 0
    progress = progress and rank == 0
    if callback is None and progress:
        callback = _print_epoch             # a Python user sees the epochs go by

    if x_val is None:
        if val_fraction:
            check_in_open_interval(val_fraction, 0, 1, where=where, name="val_fraction")
            train_idx, val_idx = train_val_split(len(x), val_fraction, seed=seed)
            x, x_val = x[train_idx], x[val_idx]
    else:
        _check_data(x_val, where)
    history = History()
    if x_val is not None and len(x_val):
        mean_image = x.mean(axis=0, keepdims=True)
        history.baseline_mse = float(((x_val - mean_image) ** 2).mean())

    path = best_path = None
    fingerprints = {}
    if checkpoint_dir is not None:
        path = os.path.join(checkpoint_dir, "checkpoint.npz")
        best_path = os.path.join(checkpoint_dir, "best.npz")
        fingerprints = {k: _fingerprint(v) for k, v in data.items() if v is not None}
    start_epoch, start_batch, partial = 0, 0, None
    best, stale = math.inf, 0
    if resume:
        if path is None or not os.path.exists(path):
            raise FileNotFoundError(f"{where}: resume=True but no checkpoint at "
                                    f"{path!r}. Start without --resume.")
        state = ckpt.load(path, model=model)     # refuses another class or config
        meta = state.metadata
        if meta.get("seed") != seed:
            raise ValueError(f"{where}: the checkpoint was trained with seed "
                             f"{meta.get('seed')}, got seed={seed}. Resume with the "
                             f"same seed to continue exactly.")
        missing = [k for k in ("history", "epoch", "batches_done") if k not in meta]
        if missing:             # e.g. best.npz copied over checkpoint.npz: weights only
            raise CheckpointError(f"{where}: {path!r} has weights but no training state "
                                  f"(missing {', '.join(missing)}), as best.npz does. "
                                  f"Resume from the checkpoint.npz the run wrote, or start "
                                  f"a new run.")
        _check_same_data(meta.get("data", {}), fingerprints, where)
        if state.optimizer_state is not None:
            opt.load_state_dict(state.optimizer_state)
        history = History.from_dict(meta["history"])
        start_epoch, start_batch = meta["epoch"], meta["batches_done"]
        saved_ranks = meta.get("train", {}).get("ranks", 1)
        if start_batch and saved_ranks != n_ranks:
            raise ValueError(f"{where}: the checkpoint stopped mid-epoch with {saved_ranks} "
                             f"rank(s), got {n_ranks}. Resume with {saved_ranks} rank(s).")
        partial = meta.get("partial")
        # no best yet (stopped in the first epoch) is saved as null: JSON has no inf
        best = math.inf if meta.get("best") is None else float(meta["best"])
        stale = meta.get("stale", 0)
        if scheduler is not None and meta.get("scheduler"):
            scheduler.load_state_dict(meta["scheduler"])
    if distributed is not None:
        if len(x) < n_ranks:
            raise ValueError(f"{where}: expected at least one training image per rank "
                             f"({n_ranks}), got {len(x)}. Use fewer ranks.")
        distributed.broadcast_parameters(model)     # identical start, fresh or resumed

    def save(epoch, batches_done, partial_state):
        if path is None or not is_writer:
            return
        meta = {"seed": seed, "epoch": epoch, "batches_done": batches_done,
                "partial": partial_state, "history": history.to_dict(), "data": fingerprints,
                "best": best if math.isfinite(best) else None, "stale": stale,
                "rng": {"scheme": "default_rng([seed, epoch(, batch, 1)])",
                        "seed": seed, "epoch": epoch, "batch": batches_done},
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                          "ranks": n_ranks,
                          "corruption": corruption, "corruption_level": corruption_level}}
        ckpt.save(path, model, opt, **meta)
        history.save(os.path.join(os.path.dirname(path), "history.json"))

    # the data needs no gradient: let the first layer skip its input gradient
    backward_kw = ({"need_input_grad": False} if "need_input_grad" in
                   inspect.signature(model.backward).parameters else {})
    fit_step = getattr(model, "fit_step", None)
    bar = None
    model.train()
    lock = contextlib.nullcontext()
    if checkpoint_dir is not None and is_writer:
        os.makedirs(checkpoint_dir, exist_ok=True)
        lock = RunLock(checkpoint_dir, where=where)
    with lock, _StopFlag() as stop_flag:
        if on_start is not None and is_writer:
            on_start()
        for epoch in range(start_epoch, epochs):
            rng = numpy.random.default_rng([seed, epoch])
            batches = list(iterate_minibatches(len(x), batch_size * n_ranks, rng=rng))
            if n_ranks > 1 and len(batches[-1]) < n_ranks:
                batches.pop()           # a rank would get no sample
            if progress:
                bar = _progress(len(batches), f"epoch {epoch + 1}/{epochs}")
            sums = dict(partial) if (partial and epoch == start_epoch) else {
                "loss": 0.0, "l0": 0.0, "n": 0, "skipped": 0, "seconds": 0.0,
                "penalties": {}}
            first = start_batch if epoch == start_epoch else 0
            if bar is not None and first:
                bar.update(first)
            t0 = time.perf_counter()
            for b in range(first, len(batches)):
                idx = batches[b][rank::n_ranks]
                target_host = x[idx]
                inp_host = target_host
                if corruption is not None:
                    # noise of the global batch, then this rank's slice: any rank count
                    # gives every sample the same noise
                    noise_rng = numpy.random.default_rng([seed, epoch, b, 1])
                    inp_host = corrupt(x[batches[b]], corruption, corruption_level,
                                       noise_rng)[rank::n_ranks]
                inp, target = to_device(inp_host), to_device(target_host)
                model.zero_grad()
                # a diverging step is detected below by value, not by NumPy warnings
                with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    if fit_step is not None:    # the model owns its objective (a VAE)
                        value, pens = fit_step(inp, target, epoch=epoch, rng=numpy.random.
                                               default_rng([seed, epoch, b, 2, rank]))
                    else:
                        x_hat = model(inp)
                        value = loss_fn(x_hat, target)
                        pens = (model.penalty_values() if hasattr(model, "penalty_values")
                                else {})
                        model.backward(loss_fn.backward(), **backward_kw)
                    total = value + sum(pens.values())
                if reduce_grads is not None:
                    reduce_grads(model)
                m, stop = len(idx), stop_flag.hit
                code = getattr(model, "code_", None)
                l0 = float((code != 0).reshape(m, -1).sum()) if code is not None else 0.0
                if distributed is not None:
                    # one Allreduce: g ← Σ_r m_r g_r / Σ_r m_r, and the batch's sums
                    sent = [m, value * m, l0, float(not math.isfinite(total)),
                            float(stop == signal.SIGINT), float(stop == signal.SIGTERM)]
                    sent += [v * m for v in pens.values()]
                    got = distributed.allreduce_grads(
                        model, sent, label=f"epoch {epoch + 1}, batch {b + 1}").tolist()
                    m, value, l0 = int(round(got[0])), got[1] / got[0], got[2]
                    # any rank's signal stops every rank at this batch; SIGTERM wins
                    stop = signal.SIGTERM if got[5] else signal.SIGINT if got[4] else 0
                    pens = {k: v / got[0] for k, v in zip(pens, got[6:])}
                    total = value + sum(pens.values()) if got[3] == 0 else math.nan
                finite = math.isfinite(total) and math.isfinite(_grad_norm_sq(model))
                if not finite:
                    if on_nonfinite == "raise":
                        raise NumericalError(
                            f"fit: the loss or a gradient became NaN/inf at epoch "
                            f"{epoch + 1}, batch {b + 1} (loss {total!r}). Last good "
                            f"checkpoint: {path if path and os.path.exists(path) else 'none'}."
                            f" Lower the learning rate, or pass on_nonfinite='skip'.")
                    sums["skipped"] += 1
                    model.zero_grad()
                else:
                    opt.step()
                    sums["loss"] += value * m
                    sums["n"] += m
                    sums["l0"] += l0
                    for k, v in pens.items():
                        sums["penalties"][k] = sums["penalties"].get(k, 0.0) + v * m
                if bar is not None:
                    bar.set_postfix(loss=f"{value:.4g}")
                    bar.update(1)
                if stop:
                    sums["seconds"] += time.perf_counter() - t0
                    save(epoch, b + 1, sums)
                    if bar is not None:
                        bar.close()
                    raise TrainingInterrupted(path, epoch + 1, b + 1, stop)
            if bar is not None:
                bar.close()
            seconds = sums["seconds"] + time.perf_counter() - t0
            n = max(sums["n"], 1)
            record = {"epoch": epoch + 1, "train_loss": sums["loss"] / n,
                      "penalties": {k: v / n for k, v in sums["penalties"].items()},
                      "l0": sums["l0"] / n if hasattr(model, "code_") else None,
                      "seconds": seconds,
                      "samples_per_s": sums["n"] / seconds if seconds > 0 else None,
                      "lr": float(getattr(opt, "lr", lr)), "skipped": sums["skipped"]}
            if x_val is not None and len(x_val):
                record["val_loss"], record["val_l0"] = evaluate(model, x_val, loss_fn)
                if hasattr(model, "validation_metrics"):     # e.g. a VAE's held-out ELBO
                    record.update(model.validation_metrics(x_val))
            history.epochs.append(record)
            if callback is not None:
                callback(record)
            if scheduler is not None:
                scheduler.step()
            score = record.get("val_loss", record["train_loss"])
            improved = score < best
            if improved:
                best, stale = score, 0
            else:
                stale += 1
            save(epoch + 1, 0, None)
            if improved and best_path is not None and is_writer:
                ckpt.save(best_path, model, opt, epoch=epoch + 1, score=score, seed=seed)
            if early_stopping is not None and stale >= early_stopping:
                break
    return history


def _progress(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        if not _progress.noticed:            # say it once per process, not once per epoch
            _progress.noticed = True
            print(f"progress bar skipped: tqdm is not installed ({exc}). Install it with: "
                  f"pip install 'minicae[progress]'", file=sys.stderr)
        return None
    return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)


_progress.noticed = False


def _print_epoch(record):
    val = record.get("val_loss")
    print(f"epoch {record['epoch']}: train loss {record['train_loss']:.5f}"
          + (f", val loss {val:.5f}" if val is not None else "")
          + f", {record['seconds']:.1f}s", flush=True)
