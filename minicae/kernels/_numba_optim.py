"""Adam's update as one pass over each parameter (Numba, explicit SIMD vectors).

NumPy's Adam (optim.py) makes about ten passes over a parameter and its two
moment buffers; this makes one, with the same operations in the same order
and each rounded once (no fused multiply-add), so that its results are the
NumPy backend's bit for bit (tests/test_optim.py):

    m ← m·β₁ + (1−β₁)·g
    v ← v·β₂ + (1−β₂)·(g·g)
    θ ← θ − (η/(1−β₁ᵗ)) · (m / (√v / √(1−β₂ᵗ) + ε))

The scalars arrive as the caller computed them (Python floats, rounded to the
parameter's dtype here, as NumPy does with a Python scalar and an array).
"""

from __future__ import annotations

import numba

from ._simd import lanes, vadd, vdiv, vload, vmul, vsplat, vsqrt, vstore, vsub

__all__ = ["adam_update", "adam_update_many"]


@numba.njit(nogil=True, cache=True)
def _adam(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_bias2, eps,
          step):
    n = p.size
    # flat views, made here: four reshapes in Python cost ~2.5 us a parameter
    p, g, m, v = p.reshape(n), g.reshape(n), m.reshape(n), v.reshape(n)
    w = lanes(p)
    b1, c1 = vsplat(p, beta1), vsplat(p, one_minus_beta1)
    b2, c2 = vsplat(p, beta2), vsplat(p, one_minus_beta2)
    s2, e, k = vsplat(p, sqrt_bias2), vsplat(p, eps), vsplat(p, step)
    for i in range(0, n, w):
        hi = n - i
        gi = vload(g, i, 0, hi)
        mi = vadd(vmul(vload(m, i, 0, hi), b1), vmul(c1, gi))
        vi = vadd(vmul(vload(v, i, 0, hi), b2), vmul(c2, vmul(gi, gi)))
        denom = vadd(vdiv(vsqrt(vi), s2), e)
        vstore(m, i, mi, 0, hi)
        vstore(v, i, vi, 0, hi)
        vstore(p, i, vsub(vload(p, i, 0, hi), vmul(k, vdiv(mi, denom))), 0, hi)


def adam_update(param, grad, exp_avg, exp_avg_sq, beta1, beta2, sqrt_bias2, eps, step):
    """One Adam step in place on contiguous arrays of one float dtype: ``step`` is
    η/(1−β₁ᵗ), ``sqrt_bias2`` is √(1−β₂ᵗ)."""
    _adam(param, grad, exp_avg, exp_avg_sq, beta1, 1 - beta1, beta2, 1 - beta2, sqrt_bias2,
          eps, step)


@numba.njit(nogil=True, cache=True)
def _adam_many(ps, gs, ms, vs, beta1, beta2, sqrt_bias2, eps, step):
    for j in range(len(ps)):
        _adam(ps[j], gs[j], ms[j], vs[j], beta1, 1 - beta1, beta2, 1 - beta2, sqrt_bias2,
              eps, step)


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, beta1, beta2, sqrt_bias2, eps,
                     step):
    """:func:`adam_update` over tuples of parameters and their arrays, in one call: each
    a flat (1-D) contiguous array, one float dtype in all: one call, not one of Python
    and dispatch per parameter (benchmarks/README.md, decisions). One compilation per
    number of parameters, then cached on disk."""
    _adam_many(params, grads, exp_avgs, exp_avg_sqs, beta1, beta2, sqrt_bias2, eps, step)
