"""Page faults and time of the strided CAE training step, with and without
``minicae.backend.keep_freed_memory()`` (docs/backends.md, "Memory allocator").

    .venv/bin/python benchmarks/bench_allocator.py [--steps 50] [--threads 2]

Each variant runs in a fresh process (glibc's thresholds are process-wide and
depend on what ran before); MINICAE_MALLOC=system turns the call off. Prints
the median ms per step, minor page faults per step and peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = """
import json, resource, sys, time
import numpy as np
import threadpoolctl
from minicae import backend
from minicae.bench import cases
applied = backend.keep_freed_memory()
threadpoolctl.threadpool_limits(int(sys.argv[2]))
work = cases.cae_strided("numba", 128, 28)
for _ in range(10):
    work.step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter(); work.step(); times.append(time.perf_counter() - t0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "ms": 1e3 * float(np.median(times)),
                  "faults_per_step": faults / len(times),
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    for label, extra in (("glibc defaults", {"MINICAE_MALLOC": "system"}),
                         ("keep_freed_memory()", {})):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        done = subprocess.run([sys.executable, "-c", _CHILD, str(args.steps),
                               str(args.threads)], env={**env, **extra},
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:20s} applied={r['applied']!s:5s} {r['ms']:7.2f} ms/step  "
              f"{r['faults_per_step']:7.0f} page faults/step  peak RSS {r['maxrss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
