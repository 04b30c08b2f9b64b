"""How many threads a convolution should take on a many-core machine.

    python benchmarks/bench_threads.py [--threads 2,4,8,16] [--per-thread 256,1024,4096]

For each thread count (one fresh process each, Numba's pool and BLAS sized to
it) and each value of ``minicae.kernels._numba_conv.KERNEL_PER_THREAD_BYTES``
(KiB; a kernel takes at most one thread per that many bytes of columns; the
kernels are chosen by the fixed policy, afresh for each value), the median
time of the strided CAE training step (batch 128 and 32) and of two conv rows
of ``minicae bench`` on the numba backend. The values are interleaved round by
round, so drift of the machine falls on all of them alike. Prints one line per
(threads, value, case) and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = """
import json, sys
import threadpoolctl
from minicae import backend
from minicae.bench import cases, harness
from minicae import dispatch
from minicae.kernels import _numba_conv
threads, values = int(sys.argv[1]), [int(v) * 1024 for v in sys.argv[2].split(",")]
backend.set_backend("numba")
threadpoolctl.threadpool_limits(threads)
works = {"cae_strided_b128": cases.build("cae_strided", "numba", batch=128, hw=28),
         "cae_strided_b32": cases.build("cae_strided", "numba", batch=32, hw=28),
         "conv_16_32_14_s2": cases.build("conv_16_32_14_s2", "numba"),
         "conv_64_64_32_s1": cases.build("conv_64_64_32_s1", "numba")}
out = {}
for round_ in range(3):
    for v in values:
        _numba_conv.KERNEL_PER_THREAD_BYTES = v
        with dispatch.use_policy("fixed"):
            for name, work in works.items():
                t = harness.time_work(work.step, repeats=7, min_time=0.02,
                                      warmup_time=0.1)
                out.setdefault(f"{v // 1024}", {}).setdefault(name, []).append(
                    1e3 * t["median_s"])
print(json.dumps(out))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2,4,8,16")
    parser.add_argument("--per-thread", default="16,64,256",
                        help="values of KERNEL_PER_THREAD_BYTES, KiB")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from minicae.bench.harness import thread_env

    result = {}
    for t in (int(x) for x in args.threads.split(",")):
        env = thread_env(t)
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
             env.get("PYTHONPATH", "")])
        done = subprocess.run([sys.executable, "-c", _CHILD, str(t), args.per_thread],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"bench_threads: threads={t} failed:\n{done.stderr[-3000:]}")
        runs = json.loads(done.stdout.strip().splitlines()[-1])
        result[t] = {}
        for value, by_case in runs.items():
            for case, ms in by_case.items():
                med = sorted(ms)[len(ms) // 2]
                result[t].setdefault(value, {})[case] = med
                print(f"threads {t:2d}  per-thread {value:>5} KiB  {case:18s} "
                      f"{med:8.3f} ms  (rounds: {', '.join(f'{m:.2f}' for m in ms)})",
                      flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
