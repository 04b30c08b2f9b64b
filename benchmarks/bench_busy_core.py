"""Numba rows on a shared machine: idle at one thread, idle at two, and at two
threads with one core kept busy by another process, per Numba threading layer.

    python benchmarks/bench_busy_core.py                     # the library's layer
    python benchmarks/bench_busy_core.py --layers default,workqueue,omp,omp-passive

The busy core is ``python -c 'while 1: pass'`` started beside the bench (one
process: on a two-core machine it holds one core). Each measurement is
``minicae bench --backends numba --threads T --json ...`` in fresh processes,
so the layer is chosen by the environment of the run (NUMBA_THREADING_LAYER,
and OMP_WAIT_POLICY=passive for ``omp-passive``). The target: every row at two
threads with a busy core within 2x of its idle one-thread time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CASES = "conv_1_16_28_s2,conv_16_32_14_s2,conv_16_16_28_s1,conv_64_64_32_s1," \
        "convT_32_16_7_s2,cae_strided,cae_full"
LAYERS = {"default": {}, "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
          "omp": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "active"},
          "omp-passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
          "tbb": {"NUMBA_THREADING_LAYER": "tbb"}}


def bench(cases, threads, repeats, env):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.json")
        subprocess.run([sys.executable, "-m", "minicae", "bench", "--backends", "numba",
                        "--cases", cases, "--threads", str(threads), "--repeats",
                        str(repeats), "--json", path], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        with open(path, encoding="utf-8") as fh:
            return {row["case"]: row["ms"] for row in json.load(fh)["rows"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=CASES)
    ap.add_argument("--layers", default="default", help=f"some of {sorted(LAYERS)}")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for layer in args.layers.split(","):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
        env.update(LAYERS[layer])
        idle1 = bench(args.cases, 1, args.repeats, env)
        idle2 = bench(args.cases, 2, args.repeats, env)
        spinner = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
        try:
            busy2 = bench(args.cases, 2, args.repeats, env)
        finally:
            spinner.kill()
            spinner.wait()
        print(f"\nlayer {layer}: ms (fwd+bwd or step), busy = one core held by a spinner")
        print(f"{'case':18s} {'idle 1t':>9s} {'idle 2t':>9s} {'busy 2t':>9s} "
              f"{'busy2/idle1':>11s}")
        for case in idle1:
            ratio = busy2[case] / idle1[case]
            flag = "  > 2x" if ratio > 2 else ""
            print(f"{case:18s} {idle1[case]:9.3f} {idle2[case]:9.3f} {busy2[case]:9.3f} "
                  f"{ratio:11.2f}{flag}")


if __name__ == "__main__":
    main()
