"""What one parallel section costs: minicae's Python worker hand-off vs a Numba prange.

    NUMBA_NUM_THREADS=2 python benchmarks/bench_handoff.py

Two halves of a nogil Numba loop of ``n`` steps each run (a) on two threads
through ``minicae.functional._parallel.run_groups`` (the hand-off that the
convolutions' image groups use: one persistent Python worker, two locks, BLAS
held at one thread), and (b) as the two iterations of one ``prange`` inside a
``parallel=True`` Numba function (Numba's threading layer, OpenMP here). With
n = 10 the time is the section's overhead alone; the serial time of one half
is printed beside. Medians of many calls.
"""

from __future__ import annotations

import os
import sys
import time

import numba
import numpy as np


@numba.njit(nogil=True)
def _half(a, t, n):
    s = 0.0
    for i in range(n):
        s += a[t, i % a.shape[1]]
    a[t, 0] = s * 1e-30


@numba.njit(parallel=True, nogil=True)
def _both(a, n):
    for t in numba.prange(2):
        _half(a, t, n)


def _median_us(fn, calls):
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from minicae.functional import _parallel

    a = np.ones((2, 1024))
    print(f"Numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads")
    for n in (10, 20_000, 100_000):
        calls = 2000 if n < 50_000 else 300
        prange_us = _median_us(lambda n=n: _both(a, n), calls)
        workers_us = _median_us(
            lambda n=n: _parallel.run_groups(lambda t: _half(a, t, n), [0, 1], True), calls)
        serial_us = _median_us(lambda n=n: _half(a, 0, n), calls)
        print(f"n={n:>7}: one half serially {serial_us:8.1f} us | two halves: "
              f"Python workers {workers_us:8.1f} us, prange "
              f"({numba.threading_layer()}) {prange_us:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
