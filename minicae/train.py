"""The fit loop: batches, penalties, metrics, checkpoints, resume, interruption.

Randomness is derived, never carried: the shuffle of epoch ``e`` comes from
``default_rng([seed, e])`` and the corruption noise of batch ``b`` from
``default_rng([seed, e, b, 1])``. A run can therefore resume at any batch
boundary and reproduce an uninterrupted run exactly (same backend): the
checkpoint stores the seed, the epoch and the number of batches done, which
*is* the RNG state.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field

import numpy

from . import checkpoint as ckpt
from . import nn
from ._validation import (check_choice, check_in_open_interval, check_nonnegative_float,
                          check_positive_float, check_positive_int)
from .backend import to_device
from .data import iterate_minibatches, train_val_split
from .errors import NumericalError

__all__ = ["fit", "History", "TrainingInterrupted", "corrupt", "evaluate",
           "CORRUPTIONS"]

CORRUPTIONS = ("gaussian", "masking", "salt_pepper")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`fit` after SIGINT, once the checkpoint is written."""

    def __init__(self, checkpoint_path, epoch, batch):
        super().__init__(f"interrupted at epoch {epoch}, batch {batch}")
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch
        self.batch = batch


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
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.to_dict(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


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
        z = model.code_
        l0 += float((z != 0).reshape(len(xb), -1).sum())
    model.train(was_training)
    return total / n, l0 / n


class _SigintFlag:
    """First Ctrl-C sets a flag checked between batches; the second one aborts."""

    def __init__(self):
        self.hit = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:          # not the main thread: leave SIGINT alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def fit(model, x, *, loss="mse", optimizer=None, lr=1e-3, epochs=10, batch_size=64,
        x_val=None, val_fraction=0.1, seed=0, corruption=None, corruption_level=0.2,
        early_stopping=None, checkpoint_dir=None, resume=False, progress=True,
        on_nonfinite="raise", scheduler=None, callback=None, reduce_grads=None,
        is_writer=True, distributed=None):
    """Train ``model`` to reconstruct ``x`` and return a :class:`History`.

    Parameters
    ----------
    model : minicae.models.Autoencoder (or any Module with forward/backward/code_)
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
        ``history.json`` there.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.npz`` (exactly).
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
    """
    where = "fit"
    _check_data(x, where)
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
    if checkpoint_dir is not None:
        if is_writer:
            os.makedirs(checkpoint_dir, exist_ok=True)
        path = os.path.join(checkpoint_dir, "checkpoint.npz")
        best_path = os.path.join(checkpoint_dir, "best.npz")
    start_epoch, start_batch, partial = 0, 0, None
    best, stale = math.inf, 0
    if resume:
        if path is None or not os.path.exists(path):
            raise FileNotFoundError(f"{where}: resume=True but no checkpoint at "
                                    f"{path!r}. Start without --resume.")
        state = ckpt.load(path)
        model.load_state_dict(state.model.state_dict())
        if state.optimizer_state is not None:
            opt.load_state_dict(state.optimizer_state)
        meta = state.metadata
        if meta.get("seed") != seed:
            raise ValueError(f"{where}: the checkpoint was trained with seed "
                             f"{meta.get('seed')}, got seed={seed}. Resume with the "
                             f"same seed to continue exactly.")
        history = History.from_dict(meta["history"])
        start_epoch, start_batch = meta["epoch"], meta["batches_done"]
        saved_ranks = meta.get("train", {}).get("ranks", 1)
        if start_batch and saved_ranks != n_ranks:
            raise ValueError(f"{where}: the checkpoint stopped mid-epoch with {saved_ranks} "
                             f"rank(s), got {n_ranks}. Resume with {saved_ranks} rank(s).")
        partial = meta.get("partial")
        best, stale = meta.get("best", math.inf), meta.get("stale", 0)
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
                "partial": partial_state, "history": history.to_dict(),
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
    with _SigintFlag() as sigint:
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
                m, stop = len(idx), sigint.hit
                code = getattr(model, "code_", None)
                l0 = float((code != 0).reshape(m, -1).sum()) if code is not None else 0.0
                if distributed is not None:
                    # one Allreduce: g ← Σ_r m_r g_r / Σ_r m_r, and the batch's sums
                    sent = [m, value * m, l0, float(not math.isfinite(total)), float(stop)]
                    sent += [v * m for v in pens.values()]
                    got = distributed.allreduce_grads(model, sent).tolist()
                    m, value, l0, stop = int(round(got[0])), got[1] / got[0], got[2], got[4] > 0
                    pens = {k: v / got[0] for k, v in zip(pens, got[5:])}
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
                    raise TrainingInterrupted(path, epoch + 1, b + 1)
            if bar is not None:
                bar.close()
            seconds = sums["seconds"] + time.perf_counter() - t0
            n = max(sums["n"], 1)
            record = {"epoch": epoch + 1, "train_loss": sums["loss"] / n,
                      "penalties": {k: v / n for k, v in sums["penalties"].items()},
                      "l0": sums["l0"] / n, "seconds": seconds,
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
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
