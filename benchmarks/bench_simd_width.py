"""The SIMD kernels' speed at the vector width Numba compiles for, against sgemm.

    python benchmarks/bench_simd_width.py                       # this CPU
    NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES= python benchmarks/bench_simd_width.py  # AVX2
    NUMBA_CPU_NAME=skylake-avx512 NUMBA_CPU_FEATURES= python ...  # needs AVX-512

One thread (Numba's and BLAS's), float32, median of ``--repeats`` calls after a
warm-up, in the process's CPU time (so that other processes on the machine
inflate it little; with ``--threads 2``, wall time): the stride-1 forward and
backward of N32 64->64 32x32 and N64 16->16 28x28, the strided forward and
backward of N128 16->32 14x14 s2, and an sgemm of each stride-1 row's im2col
shape (C_out x C_in·9 by C_in·9 x N·H·W), so that "forward GFLOP/s / sgemm
GFLOP/s" compares like with like in one process. A code-generation target set
with NUMBA_CPU_NAME must be one this CPU can run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _median_ms(fn, repeats, clock):
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1e3 * float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="Numba and BLAS threads")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))   # no idle pool
    import llvmlite.binding as llvm
    import threadpoolctl
    from numba.core import config

    from minicae.kernels import _numba, _simd
    cpu = config.CPU_NAME or llvm.get_host_cpu_name()
    print(f"host {llvm.get_host_cpu_name()}, codegen {cpu}: {_simd.VECTOR_BYTES}-byte "
          f"vectors, {getattr(_simd, 'VECTOR_REGISTERS', '?')} registers; {args.threads} thread(s)")
    rng = np.random.default_rng(0)
    with threadpoolctl.threadpool_limits(args.threads, user_api="blas"):
        for n, ci, co, hw in ((32, 64, 64, 32), (64, 16, 16, 28)):
            _s1_row(_numba, rng, n, ci, co, hw, args)
        _cv_row(_numba, rng, 128, 16, 32, 14, args)


def _operands(rng, n, ci, co, hw, ohw):
    x = rng.standard_normal((n, ci, hw, hw), dtype=np.float32)
    w = rng.standard_normal((co, ci, 3, 3), dtype=np.float32)
    b = rng.standard_normal(co, dtype=np.float32)
    return x, w, b, np.empty((n, co, ohw, ohw), np.float32), np.empty_like(x)


def _s1_row(_numba, rng, n, ci, co, hw, args):
    t, clock = args.threads, (time.process_time if args.threads == 1 else time.perf_counter)
    x, w, b, y, dx = _operands(rng, n, ci, co, hw, hw)
    flop = 2 * n * co * ci * 9 * hw * hw
    fwd = _median_ms(lambda: _numba.conv_s1(x, w, b, 1, 1, 1, 1, y, threads=t),
                     args.repeats, clock)
    bwd = _median_ms(lambda: _numba.conv_s1_backward(y, x, w, 1, 1, 1, 1, dx=dx, threads=t),
                     args.repeats, clock)
    a = rng.standard_normal((co, ci * 9), dtype=np.float32)
    cols = rng.standard_normal((ci * 9, n * hw * hw), dtype=np.float32)
    gemm = _median_ms(lambda: a @ cols, args.repeats, clock)
    print(f"s1 N{n} {ci}->{co} {hw}²: fwd {fwd:7.2f} ms {flop / fwd / 1e6:6.1f} GFLOP/s, "
          f"bwd {bwd:7.2f} ms {2 * flop / bwd / 1e6:6.1f} GFLOP/s; sgemm {gemm:7.2f} ms "
          f"{flop / gemm / 1e6:6.1f} GFLOP/s; fwd/sgemm {gemm / fwd:.0%}")


def _cv_row(_numba, rng, n, ci, co, hw, args):
    t, clock = args.threads, (time.process_time if args.threads == 1 else time.perf_counter)
    x, w, b, y, dx = _operands(rng, n, ci, co, hw, hw // 2)
    flop = 2 * n * co * ci * 9 * (hw // 2) ** 2
    fwd = _median_ms(lambda: _numba.conv_cv(x, w, b, 2, 2, 1, 1, 1, 1, y, threads=t),
                     args.repeats, clock)
    bwd = _median_ms(lambda: _numba.conv_cv_backward(y, x, w, 2, 2, 1, 1, 1, 1, dx=dx,
                                                     threads=t), args.repeats, clock)
    print(f"cv N{n} {ci}->{co} {hw}² s2: fwd {fwd:7.3f} ms {flop / fwd / 1e6:6.1f} "
          f"GFLOP/s, bwd {bwd:7.3f} ms {2 * flop / bwd / 1e6:6.1f} GFLOP/s")

if __name__ == "__main__":
    main()
