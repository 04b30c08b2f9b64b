"""How much of a strided-CAE step is the Python around its convolutions: the bench's
step against the same step with every layer call replaced by its kernel call.

    MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=33554432 \\
    NUMBA_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 \\
        python benchmarks/bench_step_bound.py --batches 1 32 256

The "bound" step calls the Numba drivers of the four convolutions directly, with
their arguments worked out once (no layer, no checks, no plan lookup, no chunks,
no thread query; the sigmoid, the loss and Adam as in the bench), so its time is
a floor for what trimming the Python of nn -> functional -> kernels could reach.
It is written for the numba backend's kernels of this one model (1-16-32 conv,
32-16-1 transposed, 3x3 stride 2, 28²) and checks its gradients against the
real step's before timing. A measurement tool, not an API (benchmarks/README.md,
round 11).
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

import numpy as np


def steps(batch):
    """(the bench's step, the bound step, a function giving the model's gradients)."""
    from minicae.bench import cases
    from minicae.kernels import _numba_c1 as c1
    from minicae.kernels import _numba_cv as cv

    work = cases.build("cae_strided", "numba", batch=batch, hw=28)
    held = {type(c.cell_contents).__name__: c.cell_contents for c in work.step.__closure__}
    model = next(c.cell_contents for c in work.step.__closure__
                 if hasattr(c.cell_contents, "zero_grad"))
    x = next(c.cell_contents for c in work.step.__closure__
             if isinstance(c.cell_contents, np.ndarray))
    opt, loss_fn = held["Adam"], held["MSELoss"]
    conv1, _, conv2, _, convt3, _, convt4, sig = list(model)
    n, t, f32 = batch, min(2, batch), np.float32
    geo = (2, 2, 1, 1, 1, 1)                 # sh, sw, pt, pl, dil_h, dil_w (cv drivers)
    c1_geo = (1, 1, 2, 2, 1, 1)              # pt, pl, sh, sw, dil_h, dil_w (c1 drivers)
    params = model.parameters()

    def bound():
        opt.zero_grad()
        w1, b1, w2, b2, w3, b3, w4, b4 = (p.data for p in params)
        h1 = np.empty((n, 16, 14, 14), f32)
        c1._forward_3x3_s2_threads(x, w1, b1, h1, 1, 1, True, True, 2, 2, 1, 1, t)
        h2 = cv._forward_threads(h1, w2, b2, *geo, True, np.empty((n, 32, 7, 7), f32), 32, t)
        h3 = cv._adjoint_threads(h2, w3, b3, *geo, True, np.empty((n, 16, 14, 14), f32), 16,
                                 t)
        h4 = np.empty((n, 1, 28, 28), f32)
        c1._adjoint_3x3_s2_threads(h3, w4, b4, h4, 1, 1, True, False, 2, 2, 1, 1, t)
        y = sig.forward(h4)
        loss_fn(y, x)
        g = sig.backward(loss_fn.backward())
        d3, dw, db = np.empty_like(h3), np.empty((16, 3, 3), f32), np.empty(1, f32)
        c1._t_backward_3x3_s2_threads(g, np.empty((0, 1, 28, 28), f32), h3, w4, d3, dw, db,
                                      *c1_geo, t)
        grads = [(convt4, dw.reshape(16, 1, 3, 3), db)]
        d2 = np.empty_like(h2)
        grads.append((convt3, *cv._t_backward_threads(d3, h3, h2, w3, *geo, d2, 16, t)))
        d1 = np.empty_like(h1)
        grads.append((conv2, *cv._backward_threads(d2, h2, h1, w2, *geo, d1, 16, t)))
        dw1, db1 = np.empty((16, 3, 3), f32), np.empty(16, f32)
        c1._wgrad_3x3_s2_threads(d1, h1, x, dw1, db1, *c1_geo, t)
        grads.append((conv1, dw1.reshape(16, 1, 3, 3), db1))
        for layer, dw, db in grads:
            layer.weight.grad += dw
            layer.bias.grad += db
        opt.step()

    def gradients():
        return [p.grad.copy() for p in params]
    return work.step, bound, gradients, opt


def check(batch):
    """The bound step's gradients equal the bench step's (same parameters, Adam off)."""
    real, bound, gradients, opt = steps(batch)
    lr, opt.lr = opt.lr, 0.0
    real()
    want = gradients()
    bound()
    got = gradients()
    opt.lr = lr
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from minicae import backend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    args = parser.parse_args()
    with backend.use_backend("numba"):
        for batch in args.batches:
            check(batch)
            real, bound, _, _ = steps(batch)
            calls = max(10, 3000 // batch)
            row = []
            for step in (real, bound):
                for _ in range(30):
                    step()
                times = sorted(timeit.timeit(step, number=calls) / calls for _ in range(9))
                row.append(1e6 * times[4])
            print(f"batch {batch}: step {row[0]:.0f} us ({row[0] / batch:.2f} per sample), "
                  f"bound {row[1]:.0f} us ({row[1] / batch:.2f} per sample)")


if __name__ == "__main__":
    main()
