"""Measurement: timing, memory and environment of the ``minicae bench`` rows.

See :mod:`minicae.bench` for the method.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc

from .. import backend as backend_mod
from . import cases

__all__ = ["time_work", "environment", "run_cases", "run_scaling", "DEFAULT_CASES",
           "BLAS_VARS", "ALLOCATOR_VARS", "thread_env"]

DEFAULT_CASES = (list(cases.CONV_CASES) + list(cases.TRAIN_CASES) + list(cases.VAE_CASES)
                 + ["sgemm", "rss_cae"])
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REEXEC = "MINICAE_BENCH_UNSET"
# glibc malloc's regime, fixed for every side's process. By default glibc
# raises its mmap threshold each time a large mmapped block is freed, and trims
# the heap back to the system above twice that: how many fresh (faulted-in,
# zeroed) pages a step gets then depends on which cases ran earlier in the same
# process. Measured (2 threads, each case alone vs after the conv rows): torch's
# strided CAE step 9.0-9.5 vs 6.0-6.2 ms, numba's 10.0-10.1 vs 8.3-8.5 (~1000
# page faults a step vs none). With these values both sides get no faults from
# the first step on, whatever the order (benchmarks/README.md, round 6). The
# values are keep_freed_memory's, which minicae train applies to itself.
ALLOCATOR_VARS = {"MALLOC_MMAP_THRESHOLD_": str(backend_mod.MMAP_THRESHOLD),
                  "MALLOC_TRIM_THRESHOLD_": str(backend_mod.TRIM_THRESHOLD)}
SCALING_BATCHES = (16, 32, 64, 128, 256, 512)
SCALING_SIZES = (28, 32, 48, 64, 96, 128)


def _sync_for(side):
    if side == "cupy":               # CuPy comes from the backend, never imported here
        with backend_mod.use_backend("cupy") as be:
            return be.xp.cuda.Device().synchronize
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


def _version(dist):
    try:
        return importlib.metadata.version(dist)      # without importing the package
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(threads, sides, children=False):
    """The facts a reader needs to interpret the timings (``children``: the sides
    were measured in processes started with :func:`thread_env`)."""
    import numpy

    unset = json.loads(os.environ.get(_REEXEC, "{}"))
    env_vars = {}
    for var in BLAS_VARS:
        if var in unset:
            env_vars[var] = f"unset for this run (was {unset[var]!r})"
        else:
            env_vars[var] = os.environ.get(var, "unset")
    # the sides' own processes ran with thread_env's variables, not this one's
    ran = thread_env(threads) if children else os.environ
    for var in (*ALLOCATOR_VARS, "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env_vars[var] = ran.get(var, "unset")
    out = {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": threads,
           "python": platform.python_version(), "platform": platform.platform(),
           "numpy": numpy.__version__, "numba": _version("numba"),
           "blas": _threads_report(), "env": env_vars,
           "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if any(side in cases.TORCH_SIDES for side in sides):
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        out["torch_config"] = torch.__config__.parallel_info().splitlines()[:6]
    if "torch-cuda" in sides:
        out["torch_cuda"] = {"cuda": torch.version.cuda,
                             "cudnn": torch.backends.cudnn.version(),
                             "gpu": torch.cuda.get_device_name(0)}
    if "cupy" in sides:
        with backend_mod.use_backend("cupy") as be:
            cupy = be.xp
        out["cupy"] = cupy.__version__
        props = cupy.cuda.runtime.getDeviceProperties(0)
        out["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) \
            else props["name"]
    return out


def _set_threads(threads, sides):
    """Pin BLAS and torch to ``threads``; return the threadpool limiter."""
    limiter = None
    try:
        import threadpoolctl

        limiter = threadpoolctl.threadpool_limits(limits=threads)
    except ImportError:
        pass
    # Numba's pool is sized by NUMBA_NUM_THREADS, which the bench sets for the
    # process of each side (numba itself is imported by the kernels alone).
    if any(side in cases.TORCH_SIDES for side in sides):
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
        pool = backend_mod.get_backend().xp.get_default_memory_pool()
        row["gpu_pool_mib"] = pool.total_bytes() / 2**20
    elif side == "torch-cuda":         # and what torch's caching allocator holds
        import torch

        row["gpu_pool_mib"] = torch.cuda.memory_reserved() / 2**20
    elif side != "torch":
        row["peak_traced_mib"] = _traced_peak(work.step) / 2**20
    return row


def _side_context(side):
    if side in cases.TORCH_SIDES:
        import contextlib

        return contextlib.nullcontext()
    return backend_mod.use_backend(side)


_RSS_CHILD = """
import json, resource, sys
from minicae.bench import cases as c

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
if side in c.TORCH_SIDES:
    import torch
    torch.set_num_threads(int(sys.argv[5]))
else:
    from minicae import backend
    backend.set_backend(side)
work = c.cae_strided(side, n, hw)
work.step()
before = peak_kib()
for _ in range(steps):
    work.step()
after = peak_kib()
print(json.dumps({"maxrss_kib": after, "maxrss_after_first_step_kib": before}))
"""


def thread_env(threads):
    """The environment of a child process of the bench: Numba's pool sized, and
    glibc's allocator in the fixed regime of ``ALLOCATOR_VARS`` (a value the
    user set is kept; the environment record shows what ran)."""
    env = dict(ALLOCATOR_VARS)
    env.update(os.environ)
    env["NUMBA_NUM_THREADS"] = str(threads)
    return env


def _rss_row(side, *, quick, threads, steps=20):
    """Peak RSS of a fresh process running ``steps`` strided-CAE training steps."""
    n, hw = (4, 8) if quick else (128, 28)
    cmd = [sys.executable, "-c", _RSS_CHILD, side, str(n), str(hw), str(steps),
           str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=thread_env(threads))
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
            if case == "sgemm" and side == "numba":
                continue                  # NumPy's BLAS again, not Numba's own
            if progress:
                progress(f"{case} on {side}")
            if case == "rss_cae":
                rows.append(_rss_row(side, quick=quick, threads=threads))
                continue
            with _side_context(side):
                rows.append(_measure(case, side, repeats=repeats, quick=quick))
    _add_ratios(rows)
    return rows


def _peer_of(side):
    """The PyTorch side a row of ``side`` is compared with: the GPU's for CuPy."""
    return "torch-cuda" if side == "cupy" else "torch"


def _add_ratios(rows):
    """``ratio_to_torch``: each minicae row over its peer's row of the same case
    (``torch`` for the CPU backends, ``torch-cuda`` for CuPy), when measured."""
    peer = {(r["case"], r["side"]): r for r in rows if r["side"] in cases.TORCH_SIDES}
    for r in rows:
        ref = peer.get((r["case"], _peer_of(r["side"])))
        if ref is None or r["side"] in cases.TORCH_SIDES:
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
