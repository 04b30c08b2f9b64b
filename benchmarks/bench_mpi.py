"""Data-parallel throughput over MPI: samples/s for 1, 2, ... ranks, and the Allreduce cost.

    python benchmarks/bench_mpi.py                     # ranks 1 and 2, numpy backend
    python benchmarks/bench_mpi.py --ranks 1 2 4 --backend numba --batch-size 32

The script launches itself once per rank count under ``mpirun -n R
--oversubscribe`` (plus ``--allow-run-as-root`` as root). Every rank runs the
same training step as ``fit(..., distributed=ctx)``: forward and backward of
the default CLI model (conv 'full', channels 8 16, kernel 3) on its slice of a
global batch of ``R x batch`` shapes images (32x32), one gradient Allreduce
(:meth:`minicae.distributed.MPIContext.allreduce_grads`) and the Adam step.
Each rank uses ``--threads`` BLAS/Numba threads (default 1, so that R ranks
use R cores); a last row repeats R=1 with 2 threads, the fair single-process
baseline on a 2-core machine.

Reported per rank count (rank 0's clock, after warm-up steps that include
Numba compilation):

- samples/s: global samples per second of wall time over the timed steps;
- step ms: median wall time of one step;
- allreduce ms: median time inside the step's Allreduce call, which includes
  waiting for the slowest rank (load imbalance) as well as communication;
- bare allreduce ms: median of the same Allreduce on an idle buffer of the same
  size after a barrier: the communication cost alone.

Timings on a shared machine are noisy; the medians are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _worker(args):
    sys.path.insert(0, ROOT)
    import numpy

    from minicae import nn, optim
    from minicae.backend import set_backend, to_device
    from minicae.data import make_shapes
    from minicae.distributed import init
    from minicae.models import ConvAutoencoder

    ctx = init()
    set_backend(args.backend)
    x, _ = make_shapes(args.n_images, size=args.image_size, channels=1, seed=0)
    model = ConvAutoencoder(1, channels=(8, 16), kernel_size=3, scheme="full",
                            input_size=[args.image_size, args.image_size], seed=0)
    ctx.broadcast_parameters(model)
    loss_fn, opt = nn.MSELoss(), optim.Adam(model, lr=1e-3)
    global_batch = args.batch_size * ctx.size
    order = numpy.random.default_rng(0).permutation(len(x))

    def step(s):
        start = (s * global_batch) % (len(x) - global_batch + 1)
        idx = order[start:start + global_batch][ctx.rank::ctx.size]
        xb = to_device(x[idx])
        model.zero_grad()
        value = loss_fn(model(xb), xb)
        model.backward(loss_fn.backward())
        t = time.perf_counter()
        ctx.allreduce_grads(model, [len(idx), value * len(idx)])
        reduce_s = time.perf_counter() - t
        opt.step()
        return reduce_s

    for s in range(args.warmup):
        step(s)
    ctx.barrier()
    steps, reduces = [], []
    t_all = time.perf_counter()
    for s in range(args.steps):
        t = time.perf_counter()
        reduces.append(step(args.warmup + s))
        steps.append(time.perf_counter() - t)
    ctx.barrier()
    wall = time.perf_counter() - t_all

    n_params = sum(int(p.data.size) for p in model.parameters())
    buf = numpy.zeros(n_params + 2, dtype=numpy.float32)
    from mpi4py import MPI

    bare = []
    for _ in range(args.bare_repeats):
        ctx.barrier()
        t = time.perf_counter()
        ctx.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        bare.append(time.perf_counter() - t)
    if ctx.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": ctx.size, "threads": args.threads, "batch_per_rank": args.batch_size,
            "samples_per_s": args.steps * global_batch / wall,
            "step_ms": 1e3 * statistics.median(steps),
            "allreduce_ms": 1e3 * statistics.median(reduces),
            "bare_allreduce_ms": 1e3 * statistics.median(bare),
            "params": n_params, "buffer_bytes": int(buf.nbytes)}), flush=True)
    return 0


def _launch(args, ranks, threads):
    cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads)]
    cmd += ["--backend", args.backend, "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--n-images", str(args.n_images), "--image-size", str(args.image_size)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"bench_mpi: {' '.join(cmd)} exited {proc.returncode}:\n"
                       f"{proc.stdout}\n{proc.stderr}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backend", choices=("numpy", "numba"), default="numpy")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--n-images", type=int, default=512)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads per rank")
    p.add_argument("--bare-repeats", type=int, default=200)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    if shutil.which("mpirun") is None:
        print("bench_mpi: mpirun not found; install openmpi-bin and "
              "pip install 'minicae[mpi]'.", file=sys.stderr)
        return 2
    rows = [_launch(args, r, args.threads) for r in args.ranks]
    if args.threads == 1 and (os.cpu_count() or 1) >= 2:
        rows.append(_launch(args, 1, 2))
    base = rows[0]["samples_per_s"]
    print(f"backend {args.backend}, batch {args.batch_size} per rank, {args.steps} timed "
          f"steps, {os.cpu_count()} cores, {rows[0]['params']} parameters "
          f"({rows[0]['buffer_bytes']} bytes per Allreduce)\n")
    print("| ranks | threads/rank | samples/s | vs 1 rank | step ms | allreduce ms "
          "| bare allreduce ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['ranks']} | {r['threads']} | {r['samples_per_s']:.0f} | "
              f"{r['samples_per_s'] / base:.2f}x | {r['step_ms']:.1f} | "
              f"{r['allreduce_ms']:.3f} | {r['bare_allreduce_ms']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
