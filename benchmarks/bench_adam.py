"""Training steps with the backend's one-pass Adam against Adam's array operations.

    python benchmarks/bench_adam.py [--backend cupy] [--rounds 3]

Builds the strided CAE (batch 128) and dense AE (batch 256) training steps of
``minicae bench`` on one backend and times each with the backend's fused
``adam_update`` kernel and with it switched off (NumPy's ten array operations
per parameter, on the backend's own device), alternating round by round in one
process; prints the median ms of each round and the median over rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from minicae import backend as backend_mod
    from minicae.bench import cases, harness

    fused_be = backend_mod.set_backend(args.backend)
    passes_be = dataclasses.replace(
        fused_be, kernels=fused_be.kernels._replace(adam_update=None))
    sync = harness._sync_for(args.backend)
    works = {case: cases.build(case, args.backend, sync=sync)
             for case in ("cae_strided", "dense_ae")}
    times = {}
    for _ in range(args.rounds):
        for label, be in (("fused", fused_be), ("passes", passes_be)):
            backend_mod._active = be
            for case, work in works.items():
                t = harness.time_work(work.step, repeats=15, min_time=0.02,
                                      warmup_time=0.25)
                times.setdefault((case, label), []).append(1e3 * t["median_s"])
    backend_mod._active = fused_be
    for (case, label), ms in sorted(times.items()):
        print(f"{args.backend:6s} {case:12s} Adam {label:6s} "
              f"{statistics.median(ms):7.3f} ms  (rounds: "
              f"{', '.join(f'{m:.3f}' for m in ms)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
