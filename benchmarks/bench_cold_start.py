"""Cold start: the first `minicae demo` epoch with an empty Numba cache, and which
kernels it compiled, for how long (Numba's compile events, each charged
exclusive of the compilations nested in it).

    python benchmarks/bench_cold_start.py            # empty cache, then warm cache
    python benchmarks/bench_cold_start.py --list 15  # the 15 slowest compilations
    python benchmarks/bench_cold_start.py --as-idle  # threads as on an idle machine

Each run is a fresh process with NUMBA_CACHE_DIR pointed at a new temporary
folder (so nothing already cached by the package is reused); the wall time is
that of one epoch of `minicae train` (the demo's model and data, one epoch),
printed with the process's CPU time over it and the CPU time of each
compilation (which other processes on a shared machine barely inflate).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import sys, time
from collections import defaultdict
from numba.core import event
totals = defaultdict(float)
class Timer(event.Listener):
    # exclusive time: a nested compilation (callee, overload) is charged to itself
    def __init__(self):
        self.stack = []
    def on_start(self, ev):
        self.stack.append([ev.data['dispatcher'], time.process_time(), 0.0])
    def on_end(self, ev):
        d, t0, inner = self.stack.pop()
        spent = time.process_time() - t0
        if self.stack:
            self.stack[-1][2] += spent
        totals[f"{d.py_func.__module__}.{d.py_func.__qualname__}"] += spent - inner
event.register("numba:compile", Timer())
from minicae import cli
if sys.argv[3] == "idle":       # thread counts as on an idle machine, whatever the load
    from minicae.functional import _parallel
    if hasattr(_parallel, "free_cores"):
        _parallel.free_cores = lambda cores: cores
t0, c0 = time.perf_counter(), time.process_time()
rc = cli.main(["train", "--out", sys.argv[1], "--epochs", "1", "--no-progress"])
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
top = sorted(totals.items(), key=lambda kv: -kv[1])
print(f"EPOCH_S {wall:.2f} EPOCH_CPU_S {cpu:.2f} COMPILES {len(top)} "
      f"COMPILE_CPU_S {sum(totals.values()):.2f}")
for name, s in top[:int(sys.argv[2])]:
    print(f"  {s:6.2f} s  {name}")
"""


def run(cache, out, top, idle):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, out, str(top),
                           "idle" if idle else "load"], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    notices = [line for line in proc.stderr.splitlines() if "compiling kernels" in line]
    summary = [line for line in proc.stdout.splitlines()
               if line.startswith(("EPOCH_S", "  "))]
    return wall, summary, notices, proc.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", type=int, default=10, help="slowest compilations to list")
    ap.add_argument("--as-idle", action="store_true",
                    help="thread counts as on an idle machine (compile what two threads "
                         "need even when other processes hold the cores)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="minicae-cold-") as tmp:
        cache = os.path.join(tmp, "numba-cache")
        for label in ("cold (empty cache)", "warm (cached)"):
            wall, summary, notices, rc = run(cache, os.path.join(tmp, label[:4]), args.list,
                                             args.as_idle)
            print(f"{label}: process {wall:.1f} s, exit {rc}; notice lines: {len(notices)}")
            for line in notices:
                print(f"  stderr: {line}")
            for line in summary:
                print(f"  {line}")


if __name__ == "__main__":
    main()
