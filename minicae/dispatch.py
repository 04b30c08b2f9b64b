"""Which registered kernel runs a call, and why: the one dispatch point.

For an op and a call signature (backend, shapes, dtypes, hyperparameters,
thread limit) the candidates are the reference maths (functional/) and the
backend's registered kernels that declare they take the call
(:mod:`minicae.kernels`). The policy, from ``MINICAE_KERNELS``:

* ``measured`` (default): the first call of a signature runs every candidate
  that applies once to warm it up, then times it, and keeps the fastest (as
  cuDNN's benchmark mode does). The choice is remembered in memory and in a
  small JSON file per machine (CPU model, ISA flags and library versions) in
  the user's cache directory (``MINICAE_KERNEL_CACHE`` overrides it), so the next
  process skips the timing;
* ``fixed``: the first candidate that applies, in registration order;
* ``reference``: the reference maths only.

A call looks its signature up here (:func:`lookup`) and, the first time,
:func:`choose` picks; after that, the op calls the chosen function directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, NamedTuple

from ._atomic import atomic_write
from .backend import get_backend, kernel_cache_dir, kernel_policy
from .kernels import COLUMN_LIMIT, column_bytes

__all__ = ["Choice", "lookup", "choose", "trace", "use_policy", "thread_limit",
           "cache_file", "machine"]

_REPEATS = 5                 # timed rounds over the candidates (each one's fastest counts)
_THREADS_FRESH_S = 0.05      # how long a read of the thread limit is trusted
_MAX_SIGNATURES = 512        # per backend in memory; then forgotten all at once


class Choice(NamedTuple):
    """The kernel that runs one call signature: its ``name``, why (``reason``)
    and the function itself (``run``)."""

    op: str
    signature: str
    name: str
    reason: str
    run: Callable


_TABLES = {}                 # backend (equal ones share) -> {key: Choice}
_LAST = [None, None]         # the backend of the last lookup, its table
_STATE = {"policy": None, "blas": None, "disk": {}, "tracing": [], "threads": (0.0, 0)}


def thread_limit():
    """The thread limit in force: BLAS's (how minicae and its users set threads,
    through threadpoolctl), else the cores. Read again after ``_THREADS_FRESH_S``:
    asking BLAS costs more than a small layer's dispatch."""
    read_at, threads = _STATE["threads"]
    now = time.monotonic()
    if now - read_at < _THREADS_FRESH_S:
        return threads
    threads = _read_thread_limit()
    _STATE["threads"] = (now, threads)
    return threads


def _read_thread_limit():
    blas = _STATE["blas"]
    if blas is None:
        try:
            import threadpoolctl
        except ImportError:
            blas = ()
        else:
            blas = tuple(c for c in threadpoolctl.ThreadpoolController().lib_controllers
                         if c.user_api == "blas")
        _STATE["blas"] = blas
    if not blas:
        return os.cpu_count() or 1
    return max([c.num_threads for c in blas])


def lookup(key):
    """The function chosen for ``key`` (an op's signature) in force now, or None."""
    be, table = _LAST
    if be is not get_backend():
        be = get_backend()
        table = _TABLES.setdefault(be, {})
        _LAST[:] = be, table
    choice = table.get((key, thread_limit()))
    if choice is None:
        return None
    if _STATE["tracing"]:
        _STATE["tracing"][-1].append(choice)
    return choice.run


def choose(key, op, call, reference, args):
    """Pick the function for signature ``key`` of ``op``, remember it and return it.

    ``call``: the :class:`minicae.kernels.ConvCall` the candidates judge;
    ``reference``: the reference's function for this signature; ``args``: the
    call's arguments, run by the ``measured`` policy to time the candidates.
    """
    be, policy, threads = get_backend(), _policy(), thread_limit()
    call = call._replace(threads=threads)
    signature = _signature(op, be.name, call)
    found = [c for c in be.kernels.candidates if c.op == op and c.applies(call)]
    if policy == "reference" or not found:
        choice = Choice(op, signature, "reference", f"policy {policy}: the maths itself"
                        if found else "no registered kernel takes this call", reference)
    elif policy == "fixed":
        choice = Choice(op, signature, found[0].name, "policy fixed: first registered "
                        "that takes the call", found[0].make(call))
    else:
        runs = {c.name: c.make(call) for c in found}
        if column_bytes(op, call) <= COLUMN_LIMIT:      # else its columns are not timed
            runs["reference"] = reference
        choice = _measured(op, signature, runs, args)
    table = _TABLES.setdefault(be, {})
    if len(table) >= _MAX_SIGNATURES:
        table.clear()
    table[(key, threads)] = choice
    if _STATE["tracing"]:
        _STATE["tracing"][-1].append(choice)
    return choice.run


def _measured(op, signature, runs, args):
    known = _disk().get(signature)
    if known in runs:
        return Choice(op, signature, known, f"measured earlier ({cache_file()})",
                      runs[known])
    times = _time(runs, args)
    best = min(times, key=times.get)
    _remember(signature, best)
    ranking = ", ".join(f"{name} {t * 1e3:.3g} ms" for name, t in
                        sorted(times.items(), key=lambda kv: kv[1]))
    return Choice(op, signature, best, f"measured: {ranking}", runs[best])


def _time(runs, args):
    """{name: fastest of ``_REPEATS`` calls}, the candidates taken in turn each round
    (a busy moment of the machine then falls on all of them alike)."""
    be = get_backend()
    for run in runs.values():
        run(*args)                               # compiles, faults pages in
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(_REPEATS):
        for name, run in runs.items():
            be.synchronize()
            start = time.perf_counter()
            run(*args)
            be.synchronize()                     # a GPU's queued work counts too
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _signature(op, backend, call):
    g = call.g
    return (f"{op} {backend} {call.dtype} x{tuple(call.x_shape)} w{tuple(call.w_shape)} "
            f"k{g.kh}x{g.kw} s{g.sh}x{g.sw} p{g.pt},{g.pb},{g.pl},{g.pr} "
            f"d{g.dil_h}x{g.dil_w} g{g.groups} out{tuple(call.out_hw)} "
            f"relu={call.relu} threads={call.threads}")


def _policy():
    return _STATE["policy"] or kernel_policy()


@contextlib.contextmanager
def use_policy(name):
    """Run the block with kernel policy ``name``, choosing afresh in it and after."""
    if name not in ("reference", "fixed", "measured"):
        raise ValueError(f"use_policy: expected 'reference', 'fixed' or 'measured', "
                         f"got {name!r}.")
    previous, _STATE["policy"] = _STATE["policy"], name
    _forget()
    try:
        yield
    finally:
        _STATE["policy"] = previous
        _forget()


def _forget():
    """Drop the choices in memory (and the last read of the thread limit)."""
    _TABLES.clear()
    _LAST[:] = None, None
    _STATE["threads"] = (0.0, 0)


@contextlib.contextmanager
def trace():
    """Collect the :class:`Choice` of every dispatched call made in the block."""
    calls = []
    _STATE["tracing"].append(calls)
    try:
        yield calls
    finally:
        _STATE["tracing"].remove(calls)


def machine():
    """What a measured choice depends on besides the call: CPU, ISA, versions."""
    if "machine" not in _STATE:
        _STATE["machine"] = _machine()
    return _STATE["machine"]


def _machine():
    model, flags = "", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and not model:
                model = value.strip()
            elif name.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    model = model or platform.processor() or platform.machine()
    versions = {}
    for package in ("minicae", "numpy", "numba", "llvmlite", "cupy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"cpu": model, "machine": platform.machine(),
            "isa": hashlib.sha256(flags.encode()).hexdigest()[:16], "versions": versions}


def cache_file():
    """The JSON file of this machine's measured choices."""
    text = json.dumps(machine(), sort_keys=True)
    return kernel_cache_dir() / f"kernels-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def _disk():
    """This machine's choices on disk ({signature: name}); an unreadable file counts
    as empty and is rewritten."""
    path = cache_file()
    if path not in _STATE["disk"]:
        choices = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("choices"), dict):
                choices = {k: v for k, v in data["choices"].items() if isinstance(v, str)}
        _STATE["disk"][path] = choices
    return _STATE["disk"][path]


def _remember(signature, name):
    """Add one choice to the file, atomically (a temporary file renamed over it)."""
    choices = _disk()
    choices[signature] = name
    path = cache_file()
    with contextlib.suppress(OSError):       # a read-only cache costs a re-measure
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"machine": machine(), "choices": choices}, indent=1, sort_keys=True)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
