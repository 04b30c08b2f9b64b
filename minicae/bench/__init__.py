"""``minicae bench``: the timing harness shared by the CLI and ``benchmarks/``.

Method (what a benchmark table needs to be honest):

* the same work on every side (:mod:`minicae._bench_cases`), in one process
  run, so ratios minicae/torch are taken within one run on one machine state;
* warm-up calls first (they absorb Numba compilation, CuPy's first launch and
  allocator warm-up), device synchronisation before every clock stop, then the
  median of ``repeats`` timed calls (the interquartile range is reported too);
* GFLOP/s = 2·MACs / time, samples/s = batch / time; the CPU time of the
  process per call (all its threads, spin-waiting included) is reported
  beside the wall time: with ``--threads 1`` it is what the call costs
  without contention, a measure that survives a loaded machine;
* peak memory two ways: ``tracemalloc`` over one step (NumPy's allocations;
  PyTorch's allocator is invisible to it, so torch shows n/a), and the peak
  resident set (``getrusage`` maxrss) of a fresh subprocess per side that runs
  20 strided-CAE training steps — the honest whole-process number;
* the environment: CPU, cores, threads, BLAS library and kernel
  (threadpoolctl), versions, and the BLAS variables OPENBLAS_CORETYPE /
  OPENBLAS_L2_SIZE (the bench re-executes itself without them, once, and
  records what it removed);
* one allocator regime for every side: each side's process starts with
  glibc's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` fixed
  (``harness.ALLOCATOR_VARS``), so that no row depends on which cases ran
  before it in the same process (recorded with the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from .. import backend as backend_mod
from .._runfiles import atomic_write
from .harness import (_REEXEC, BLAS_VARS, DEFAULT_CASES, _add_ratios, _set_threads,
                      environment, run_cases, run_scaling, thread_env, time_work)
from .cases import TORCH_SIDES
from .report import format_table, plot_scaling

__all__ = ["add_bench_arguments", "run_bench", "time_work", "environment", "run_cases",
           "run_scaling", "format_table", "plot_scaling", "DEFAULT_CASES"]


def add_bench_arguments(parser):
    """Register the flags of ``minicae bench`` on an argparse parser."""
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends (default: every installed one)")
    parser.add_argument("--peers", default="",
                        help="comma-separated peers: torch (CPU), torch-cuda (GPU, the "
                             "peer of the cupy backend)")
    parser.add_argument("--cases", default=None,
                        help=f"comma-separated cases (default: {','.join(DEFAULT_CASES)})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per row, after warm-up (default 15; 3 quick)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repeats: a smoke run, not a measurement")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="measure and plot scaling curves (matplotlib)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for BLAS, Numba and torch (default: all cores)")
    parser.add_argument("--keep-env", action="store_true",
                        help="do not re-execute without OPENBLAS_CORETYPE/_L2_SIZE")
    parser.add_argument("--in-process", action="store_true",
                        help="measure every side in this process instead of one fresh "
                             "process per side (their thread pools then interfere)")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)


def _argv(args):
    out = []
    for flag in ("backends", "peers", "cases", "repeats", "json", "plot", "threads"):
        value = getattr(args, flag)
        if value not in (None, ""):
            out += [f"--{flag}", str(value)]
    return out + (["--quick"] if args.quick else []) + \
        (["--in-process"] if args.in_process else [])


def _reexec_without_blas_vars(args):
    """Run the bench again in a child without the BLAS variables; its exit code."""
    removed = {v: os.environ[v] for v in BLAS_VARS if v in os.environ}
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    env[_REEXEC] = json.dumps(removed)
    cmd = [sys.executable, "-m", "minicae", "bench", *_argv(args)]
    return subprocess.run(cmd, env=env, check=False).returncode


def _sides(args):
    available = backend_mod.available_backends()
    if args.backends:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        for b in names:
            ok, reason = available.get(b, (False, f"unknown backend {b!r}"))
            if not ok:
                raise ValueError(f"minicae bench: expected installed backends from "
                                 f"{backend_mod.BACKENDS}, got {b!r}: {reason}.")
    else:
        names = [b for b in backend_mod.BACKENDS if available[b][0]]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in TORCH_SIDES:
            raise ValueError(f"minicae bench: expected peers from {tuple(TORCH_SIDES)}, "
                             f"got {p!r}.")
        try:
            import torch
        except ImportError as exc:
            raise ValueError(f"minicae bench: peer {p!r}: torch is not installed ({exc}). "
                             "Install it with: pip install \"minicae[peers]\".") from exc
        if TORCH_SIDES[p] == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"minicae bench: peer {p!r} needs a CUDA build of torch and "
                             f"a GPU; torch {torch.__version__} sees none.")
    return names + peers


def _measure_side(side, names, *, threads, repeats, quick, scaling, progress):
    """Rows (and scaling curves) of one side, measured in this process."""
    limiter = _set_threads(threads, [side])
    try:
        rows = run_cases(names, [side], repeats=repeats, quick=quick, threads=threads,
                         progress=progress)
        curves = run_scaling([side], repeats=repeats, quick=quick) \
            if scaling else None
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    return {"rows": rows, "scaling": curves}


def _measure_side_in_child(side, args, names, threads, repeats):
    """Run one side in a fresh interpreter: no other runtime's threads spin there."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "side.json")
        cmd = [sys.executable, "-m", "minicae", "bench", "--side", side, "--keep-env",
               "--cases", ",".join(names), "--threads", str(threads), "--repeats",
               str(repeats), "--json", path] + (["--quick"] if args.quick else []) \
            + (["--plot", "yes"] if args.plot else [])
        done = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL,
                              env=thread_env(threads))
        if done.returncode != 0:
            raise RuntimeError(f"minicae bench: measuring {side!r} failed (exit "
                               f"{done.returncode}); see the error above.")
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)


def _merge_scaling(parts):
    parts = [p for p in parts if p]
    if not parts:
        return None
    merged = {k: parts[0][k] for k in ("batches", "sizes", "image_batch")}
    for key in ("batch", "image", "batch_variation"):
        merged[key] = {side: v for p in parts for side, v in p[key].items()}
    return merged


def run_bench(args, *, out=None, progress=None):
    """Run ``minicae bench`` from parsed ``args``.

    Each side (backend or peer) is measured in a fresh process of its own,
    one after the other, unless ``--in-process``; the ratios are taken here,
    within the one run. ``out`` receives the table text and ``progress`` one
    line per row (the CLI passes ``print``). Returns the result dict, or the
    exit code of the child when the bench re-executed itself without the BLAS
    variables.
    """
    if any(v in os.environ for v in BLAS_VARS) and not args.keep_env \
            and _REEXEC not in os.environ:
        return _reexec_without_blas_vars(args)
    names = [c.strip() for c in args.cases.split(",")] if args.cases else DEFAULT_CASES
    unknown = [c for c in names if c not in DEFAULT_CASES]
    if unknown:
        raise ValueError(f"minicae bench: unknown cases {unknown}; expected some of "
                         f"{DEFAULT_CASES}.")
    threads = args.threads or os.cpu_count() or 1
    repeats = args.repeats or (3 if args.quick else 15)
    measure = dict(threads=threads, repeats=repeats, quick=args.quick)
    if args.side:                                    # a child of the run below
        result = _measure_side(args.side, names, scaling=bool(args.plot),
                               progress=progress, **measure)
        _write_json(result, args.json)
        return result
    sides = _sides(args)
    if args.in_process:
        parts = [_measure_side(side, names, scaling=bool(args.plot), progress=progress,
                               **measure) for side in sides]
    else:
        parts = [_measure_side_in_child(side, args, names, threads, repeats)
                 for side in sides]
    rows = sorted((r for p in parts for r in p["rows"]),
                  key=lambda r: (names.index(r["case"]), sides.index(r["side"])))
    _add_ratios(rows)
    limiter = _set_threads(threads, sides)         # so the BLAS report shows the limit
    try:
        env = environment(threads, sides, children=not args.in_process)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    result = {"command": "minicae bench " + " ".join(_argv(args)),
              "isolation": "in-process" if args.in_process else "one process per side",
              "environment": env, "sides": sides, "rows": rows}
    scaling = _merge_scaling([p["scaling"] for p in parts])
    if scaling:
        result["scaling"] = scaling
        plot_scaling(scaling, args.plot)
    if out is not None:
        out(format_table(result))
    _write_json(result, args.json)
    return result


def _write_json(result, path):
    if path:
        text = json.dumps(result, indent=2)
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
