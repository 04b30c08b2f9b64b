"""Where a strided-CAE training step spends its time, phase by phase, inside the step.

    MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=33554432 \\
    NUMBA_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 \\
        python benchmarks/bench_step_phases.py --batches 1 32 256

The step of `minicae bench`'s cae_strided row (numba backend), written out layer
by layer so that each phase is timed where it runs: zero_grad, each layer's
forward (the ReLUs fused as nn.Sequential fuses them), sigmoid, the loss and its
gradient, each layer's backward, Adam. Medians over many steps, printed as µs
per 32 samples, so that batches compare directly: what a batch of 32 pays above
a large batch's per-sample rate is its fixed cost (benchmarks/README.md, round
10). Then, per batch, the bench's whole step and zero_grad and the Adam step
timed alone (µs per call). 200 steps of each kind, no more: the same batch
trained for ~750 steps leaves Adam's first moments of dead units denormal, and
the Adam step then takes ~4x as long (80 against 17 us; benchmarks/README.md,
round 10). The malloc variables are those `minicae bench` gives its sides; set
the thread variables before Python starts, as the bench does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

PHASES = ("zero_grad", "conv1", "conv2", "convT3", "convT4", "sigmoid", "loss",
          "sigmoid_b", "convT4_b", "convT3_b", "conv2_b", "conv1_b", "adam")


def phases(batch, steps):
    """{phase: median seconds} over ``steps`` timed steps after 20 warm-up ones."""
    from minicae import backend
    from minicae.bench import cases

    with backend.use_backend("numba"):
        model, work = cases._minicae_train("cae_strided", batch, 28,
                                           np.random.default_rng(0), cases._sync_noop)
        held = {type(c.cell_contents).__name__: c.cell_contents
                for c in work.step.__closure__}
        opt, loss_fn = held["Adam"], held["MSELoss"]
        x = next(c.cell_contents for c in work.step.__closure__
                 if isinstance(c.cell_contents, np.ndarray))
        c1, _, c2, _, t3, _, t4, sig = list(model)
        clock, times = time.perf_counter, {p: [] for p in PHASES}
        for step in range(steps + 20):
            marks = [clock()]
            opt.zero_grad()
            marks.append(clock())
            h = c1.forward(x, relu=True)
            marks.append(clock())
            h = c2.forward(h, relu=True)
            marks.append(clock())
            h = t3.forward(h, relu=True)
            marks.append(clock())
            h = t4.forward(h)
            marks.append(clock())
            y = sig.forward(h)
            marks.append(clock())
            loss_fn(y, x)
            g = loss_fn.backward()
            marks.append(clock())
            g = sig.backward(g)
            marks.append(clock())
            g = t4.backward(g)
            marks.append(clock())
            g = t3.backward(g)
            marks.append(clock())
            g = c2.backward(g)
            marks.append(clock())
            c1.backward(g, need_dx=False)
            marks.append(clock())
            opt.step()
            marks.append(clock())
            if step >= 20:
                for name, a, b in zip(PHASES, marks, marks[1:]):
                    times[name].append(b - a)
        out = {name: statistics.median(v) for name, v in times.items()}
        out["step"] = _median(work.step, steps)          # the bench's own step, whole
        out["zero_grad alone"] = _median(opt.zero_grad, steps)
        out["adam alone"] = _median(opt.step, steps)
    return out


def _median(fn, calls):
    """Median seconds of ``calls`` calls of ``fn``, each timed alone, after 20."""
    from minicae.bench import harness

    return harness.time_work(fn, repeats=calls, warmup=20)["median_s"]


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    args = parser.parse_args()
    print(f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}; "
          "µs per 32 samples")
    print(f"{'batch':>6} " + " ".join(f"{p:>9}" for p in PHASES) + f" {'total':>7}")
    alone = []
    for batch in args.batches:
        got = phases(batch, steps=200)
        per32 = {p: 1e6 * v * 32 / batch for p, v in got.items()}
        print(f"{batch:>6} " + " ".join(f"{per32[p]:>9.0f}" for p in PHASES)
              + f" {sum(per32[p] for p in PHASES):>7.0f}")
        alone.append(f"batch {batch}: whole step {1e6 * got['step']:.0f} us, zero_grad "
                     f"alone {1e6 * got['zero_grad alone']:.1f} us, Adam step alone "
                     f"{1e6 * got['adam alone']:.1f} us")
    print("\n".join(alone))


if __name__ == "__main__":
    main()
