r"""Numerical gradients by central differences in float64, and checkers.

The central difference

.. math:: \frac{\partial f}{\partial x_i} \approx
          \frac{f(x + h e_i) - f(x - h e_i)}{2h}

has truncation error O(h²) and rounding error O(ε/h) with ε ≈ 1.1e-16 in
float64, so h ≈ ε^{1/3} ≈ 1e-5…1e-6 balances the two (error ≈ 1e-10
relative). Larger tensors are checked along a random unit direction ``v``
(Chainer's ``check_backward``): ``(f(x + hv) − f(x − hv)) / 2h ≈ ⟨∇f, v⟩``.
Derivation: docs/maths.md#gradient-checking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from .backend import to_device, to_numpy

__all__ = ["numerical_gradient", "directional_derivative", "relative_error",
           "check_layer", "GradcheckReport"]


def numerical_gradient(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f`` at ``x``.

    ``x`` is perturbed in place, one element at a time, and restored; it must
    be float64 for the result to be meaningful.
    """
    if numpy.dtype(x.dtype) != numpy.float64:
        raise TypeError(f"numerical_gradient: expected a float64 array, got {x.dtype}. "
                        f"Central differences in float32 lose ~8 digits.")
    grad = numpy.zeros(x.shape, dtype=numpy.float64)
    # index x itself: x.reshape(-1) would be a copy for some non-contiguous views
    for i in numpy.ndindex(x.shape):
        old = float(x[i])
        x[i] = old + eps
        f_plus = float(f(x))
        x[i] = old - eps
        f_minus = float(f(x))
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def directional_derivative(f, x, direction, eps=1e-6):
    """(f(x + eps·v) − f(x − eps·v)) / (2·eps) for a direction ``v``."""
    return (float(f(x + eps * direction)) - float(f(x - eps * direction))) / (2 * eps)


def relative_error(analytic, numeric, floor=1e-8):
    """max |a − n| / max(|a| + |n|, floor), elementwise, and the worst index."""
    a = numpy.asarray(to_numpy(analytic), dtype=numpy.float64)
    n = numpy.asarray(to_numpy(numeric), dtype=numpy.float64)
    err = numpy.abs(a - n) / numpy.maximum(numpy.abs(a) + numpy.abs(n), floor)
    idx = numpy.unravel_index(int(numpy.argmax(err)), err.shape) if err.size else ()
    return (float(err.max()) if err.size else 0.0), idx


@dataclass
class GradcheckReport:
    """Worst relative error of each checked array and where it is."""

    errors: dict

    @property
    def worst(self):
        return max((e for e, _ in self.errors.values()), default=0.0)

    def __str__(self):
        lines = [f"{name}: max relative error {err:.2e} at {idx}"
                 for name, (err, idx) in self.errors.items()]
        return "\n".join(lines)


def check_layer(layer, x, *, rng=None, eps=1e-6):
    """Compare a layer's backward with central differences (float64).

    The layer's scalar objective is ``L = Σ r ⊙ layer(x)`` for a fixed random
    ``r``; its analytic gradients are ``layer.backward(r)`` (input) and the
    accumulated ``p.grad`` (parameters). Returns a :class:`GradcheckReport`.
    """
    rng = numpy.random.default_rng(rng)
    x = numpy.array(to_numpy(x), dtype=numpy.float64)
    for p in layer.parameters():
        if numpy.dtype(p.data.dtype) != numpy.float64:
            raise TypeError(f"check_layer: expected float64 parameters, got {p.data.dtype}."
                            f" Call layer.astype(numpy.float64) first.")
    y = to_numpy(layer(to_device(x)))
    r = rng.standard_normal(y.shape)

    def objective(x_host):
        return float(numpy.sum(to_numpy(layer(to_device(x_host))) * r))

    layer.zero_grad()
    layer(to_device(x))
    dx = to_numpy(layer.backward(to_device(r)))
    analytic = {name: to_numpy(p.grad).copy() for name, p in layer.named_parameters()}
    errors = {"input": relative_error(dx, numerical_gradient(objective, x.copy(), eps))}
    for name, p in layer.named_parameters():
        host = numpy.array(to_numpy(p.data))

        def objective_p(value, p=p):
            p.data = to_device(value)
            return objective(x)

        numeric = numerical_gradient(objective_p, host.copy(), eps)
        p.data = to_device(host)
        errors[name] = relative_error(analytic[name], numeric)
    return GradcheckReport(errors)
