"""Timing harness shared by ``minicae bench`` and ``benchmarks/``.

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
  records what it removed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

from . import _bench_cases as cases
from . import backend as backend_mod

__all__ = ["add_bench_arguments", "run_bench", "time_work", "environment", "run_cases",
           "format_table", "DEFAULT_CASES"]

DEFAULT_CASES = (list(cases.CONV_CASES) + list(cases.TRAIN_CASES) + ["sgemm", "rss_cae"])
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REEXEC = "MINICAE_BENCH_UNSET"
SCALING_BATCHES = (16, 32, 64, 128, 256, 512)
SCALING_SIZES = (28, 32, 48, 64, 96, 128)


def _sync_for(side):
    if side == "cupy":
        import cupy

        return cupy.cuda.Device().synchronize
    return cases._sync_noop


def time_work(fn, *, repeats, warmup=2, min_time=0.0, warmup_time=0.0):
    """Median and quartiles (seconds) of ``repeats`` calls of ``fn`` after warm-up.

    ``fn`` must synchronise its device before returning. The warm-up is at
    least ``warmup`` calls and ``warmup_time`` seconds: besides compilation it
    must outlast the spinning worker threads that another runtime's OpenMP
    pool (torch's, Numba's) keeps busy for a while after its last call, which
    otherwise steal the cores from the first timed calls. When one call is
    shorter than ``min_time``, each repeat times enough back-to-back calls to
    last ``min_time`` and reports the time per call.
    """
    t_end = time.perf_counter() + warmup_time
    done = 0
    while done < warmup or time.perf_counter() < t_end:
        fn()
        done += 1
    inner = 1
    if min_time > 0:
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        inner = max(1, int(min_time / max(once, 1e-9)))
    samples, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
        cpu.append((time.process_time() - c0) / inner)
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return {"median_s": statistics.median(samples), "q1_s": q[0], "q3_s": q[2],
            "min_s": min(samples), "cpu_median_s": statistics.median(cpu),
            "repeats": repeats, "inner": inner}


def _traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _threads_report():
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "threadpoolctl not installed (pip install 'minicae[bench]')"}]
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture",
            "threading_layer", "prefix")
    return [{k: pool.get(k) for k in keys} for pool in threadpoolctl.threadpool_info()]


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def environment(threads, sides):
    """The facts a reader needs to interpret the timings."""
    import numpy

    unset = json.loads(os.environ.get(_REEXEC, "{}"))
    env_vars = {}
    for var in BLAS_VARS:
        if var in unset:
            env_vars[var] = f"unset for this run (was {unset[var]!r})"
        else:
            env_vars[var] = os.environ.get(var, "unset")
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        env_vars[var] = os.environ.get(var, "unset")
    out = {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": threads,
           "python": platform.python_version(), "platform": platform.platform(),
           "numpy": numpy.__version__, "numba": _version("numba"),
           "blas": _threads_report(), "env": env_vars,
           "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if "torch" in sides:
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        out["torch_config"] = torch.__config__.parallel_info().splitlines()[:6]
    if "cupy" in sides:
        import cupy

        out["cupy"] = cupy.__version__
        props = cupy.cuda.runtime.getDeviceProperties(0)
        out["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) \
            else props["name"]
    return out


def _set_threads(threads, sides):
    """Pin BLAS, Numba and torch to ``threads``; return the threadpool limiter."""
    limiter = None
    try:
        import threadpoolctl

        limiter = threadpoolctl.threadpool_limits(limits=threads)
    except ImportError:
        pass
    if "numba" in sides:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sides:
        import torch

        torch.set_num_threads(threads)
    return limiter


def _measure(case, side, *, repeats, quick, **size):
    sync = _sync_for(side)
    work = cases.build(case, side, quick=quick, sync=sync, **size)
    timing = dict(min_time=0.0, warmup_time=0.0) if quick else dict(min_time=0.02,
                                                                    warmup_time=0.25)
    t = time_work(work.step, repeats=repeats, **timing)
    row = {"case": case, "side": side, "ms": 1e3 * t["median_s"],
           "ms_q1": 1e3 * t["q1_s"], "ms_q3": 1e3 * t["q3_s"], "repeats": repeats,
           "cpu_ms": 1e3 * t["cpu_median_s"],
           "gflops": 2 * work.macs / t["median_s"] / 1e9,
           "samples_per_s": work.samples / t["median_s"] if work.samples else None,
           "peak_traced_mib": None}
    if work.forward is not None:
        tf = time_work(work.forward, repeats=repeats, **timing)
        row["fwd_ms"] = 1e3 * tf["median_s"]
        row["fwd_gflops"] = 2 * work.forward_macs / tf["median_s"] / 1e9
    if side == "cupy":                 # device memory: what CuPy's pool holds
        import cupy

        row["gpu_pool_mib"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    elif side != "torch":
        row["peak_traced_mib"] = _traced_peak(work.step) / 2**20
    return row


def _side_context(side):
    if side == "torch":
        import contextlib

        return contextlib.nullcontext()
    return backend_mod.use_backend(side)


_RSS_CHILD = """
import json, resource, sys
from minicae import _bench_cases as c

def peak_kib():
    # VmHWM is this process image's own peak; ru_maxrss survives exec() and
    # would report the parent's peak when that one was larger.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

side, n, hw, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if side != "torch":
    from minicae import backend
    backend.set_backend(side)
else:
    import torch
    torch.set_num_threads(int(sys.argv[5]))
work = c.cae_strided(side, n, hw)
work.step()
before = peak_kib()
for _ in range(steps):
    work.step()
after = peak_kib()
print(json.dumps({"maxrss_kib": after, "maxrss_after_first_step_kib": before}))
"""


def _rss_row(side, *, quick, threads, steps=20):
    """Peak RSS of a fresh process running ``steps`` strided-CAE training steps."""
    n, hw = (4, 8) if quick else (128, 28)
    cmd = [sys.executable, "-c", _RSS_CHILD, side, str(n), str(hw), str(steps),
           str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench rss_cae: the {side} subprocess failed:\n"
                           f"{done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return {"case": "rss_cae", "side": side, "steps": steps, "batch": n,
            "rss_mib": data["maxrss_kib"] / 1024,
            "rss_after_first_step_mib": data["maxrss_after_first_step_kib"] / 1024}


def run_cases(case_names, sides, *, repeats, quick, threads, progress=None):
    """Measure every case on every side; return the rows (ratios added)."""
    rows = []
    for case in case_names:
        for side in sides:
            if case == "sgemm" and side not in ("numpy", "torch"):
                continue                  # a NumPy (BLAS) fact, not a backend's
            if progress:
                progress(f"{case} on {side}")
            if case == "rss_cae":
                rows.append(_rss_row(side, quick=quick, threads=threads))
                continue
            with _side_context(side):
                rows.append(_measure(case, side, repeats=repeats, quick=quick))
    _add_ratios(rows)
    return rows


def _add_ratios(rows):
    peer = {r["case"]: r for r in rows if r["side"] == "torch"}
    for r in rows:
        ref = peer.get(r["case"])
        if ref is None or r["side"] == "torch":
            continue
        key = "rss_mib" if r["case"] == "rss_cae" else "ms"
        r["ratio_to_torch"] = r[key] / ref[key]
        if "cpu_ms" in r:
            r["cpu_ratio_to_torch"] = r["cpu_ms"] / ref["cpu_ms"]


def run_scaling(sides, *, repeats, quick):
    """Time per sample of the strided CAE step vs batch and vs image size."""
    batches = (2, 4, 8) if quick else SCALING_BATCHES
    sizes = (8, 12, 16) if quick else SCALING_SIZES
    out = {"batch": {}, "image": {}, "image_batch": 4 if quick else 32}
    for side in sides:
        with _side_context(side):
            out["batch"][side] = [
                _measure("cae_strided", side, repeats=repeats, quick=quick, batch=b,
                         hw=8 if quick else 28)["ms"] / b for b in batches]
            out["image"][side] = [
                _measure("cae_strided", side, repeats=repeats, quick=quick,
                         batch=out["image_batch"], hw=s)["ms"] / out["image_batch"]
                for s in sizes]
        per = dict(zip(batches, out["batch"][side]))
        flat = [v for b, v in per.items() if b >= (4 if quick else 32)]
        out.setdefault("batch_variation", {})[side] = max(flat) / min(flat) - 1
    out["batches"], out["sizes"] = list(batches), list(sizes)
    return out


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def format_table(result):
    """A readable text table of ``result`` (the dict that ``--json`` writes)."""
    env = result["environment"]
    lines = [f"minicae bench — {env['cpu']}, {env['cores']} cores, {env['threads']} "
             f"threads, NumPy {env['numpy']}, Numba {env['numba']}, torch "
             f"{env.get('torch', 'absent')}; load {env.get('load_average')}"]
    for pool in env["blas"]:
        lines.append("  BLAS: " + ", ".join(f"{k}={v}" for k, v in pool.items()
                                            if v is not None))
    lines.append("  env: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    head = (f"{'case':<18} {'side':<6} {'ms':>9} {'IQR ms':>13} {'CPU ms':>9} "
            f"{'GFLOP/s':>8} {'samples/s':>10} {'fwd ms':>8} {'fwd GF/s':>8} "
            f"{'peak MiB':>8} {'/torch':>6} {'CPU/t':>6}")
    lines += ["", head, "-" * len(head)]
    for r in result["rows"]:
        ratio = _fmt(r.get("ratio_to_torch"), ".2f")
        if r["case"] == "rss_cae":
            lines.append(f"{'rss_cae':<18} {r['side']:<6} peak RSS {r['rss_mib']:.0f} MiB "
                         f"over {r['steps']} steps at batch {r['batch']} (after the "
                         f"first step {r['rss_after_first_step_mib']:.0f} MiB)"
                         f"{'' if ratio == 'n/a' else '  /torch ' + ratio}")
            continue
        iqr = f"{r['ms_q1']:.2f}–{r['ms_q3']:.2f}"
        lines.append(f"{r['case']:<18} {r['side']:<6} {r['ms']:>9.3f} {iqr:>13} "
                     f"{r['cpu_ms']:>9.3f} "
                     f"{r['gflops']:>8.1f} {_fmt(r['samples_per_s'], '>10.0f'):>10} "
                     f"{_fmt(r.get('fwd_ms'), '>8.3f'):>8} "
                     f"{_fmt(r.get('fwd_gflops'), '>8.1f'):>8} "
                     f"{_fmt(r['peak_traced_mib'], '>8.1f'):>8} {ratio:>6} "
                     f"{_fmt(r.get('cpu_ratio_to_torch'), '.2f'):>6}")
    scaling = result.get("scaling")
    if scaling:
        lines += ["", "strided CAE step, µs per sample vs batch "
                  f"{scaling['batches']} (variation from batch 32 up):"]
        for side, vals in scaling["batch"].items():
            lines.append(f"  {side:<6} " + " ".join(f"{1e3 * v:7.1f}" for v in vals)
                         + f"   variation {100 * scaling['batch_variation'][side]:.0f}%")
        lines.append(f"µs per sample vs image size {scaling['sizes']} at batch "
                     f"{scaling['image_batch']}:")
        for side, vals in scaling["image"].items():
            lines.append(f"  {side:<6} " + " ".join(f"{1e3 * v:7.1f}" for v in vals))
    return "\n".join(lines)


def plot_scaling(scaling, path):
    """Write the two scaling curves (time per sample vs batch, vs image size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for side, vals in scaling["batch"].items():
        axes[0].plot(scaling["batches"], [1e3 * v for v in vals], marker="o", label=side)
    for side, vals in scaling["image"].items():
        axes[1].plot([s * s for s in scaling["sizes"]], [1e3 * v for v in vals],
                     marker="o", label=side)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="µs per sample",
                title="strided CAE step vs batch")
    axes[1].set(xscale="log", yscale="log", xlabel="pixels per image",
                ylabel="µs per sample",
                title=f"strided CAE step vs image size (batch {scaling['image_batch']})")
    for ax in axes:
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def add_bench_arguments(parser):
    """Register the flags of ``minicae bench`` on an argparse parser."""
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends (default: every installed one)")
    parser.add_argument("--peers", default="", help="comma-separated peers: torch")
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
        if p != "torch":
            raise ValueError(f"minicae bench: expected peers from ('torch',), got {p!r}.")
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"minicae bench: peer 'torch' is not installed ({exc}). "
                             "Install it with: pip install \"minicae[peers]\".") from exc
    return names + peers


def _measure_side(side, names, *, threads, repeats, quick, scaling, progress):
    """Rows (and scaling curves) of one side, measured in this process."""
    limiter = _set_threads(threads, [side])
    try:
        rows = run_cases(names, [side], repeats=repeats, quick=quick, threads=threads,
                         progress=progress)
        curves = run_scaling([side], repeats=max(3, repeats // 3), quick=quick) \
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
        done = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
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
    result = {"command": "minicae bench " + " ".join(_argv(args)),
              "isolation": "in-process" if args.in_process else "one process per side",
              "environment": environment(threads, sides), "sides": sides, "rows": rows}
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
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
