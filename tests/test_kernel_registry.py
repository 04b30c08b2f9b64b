"""Every registered kernel candidate against the reference maths, on drawn calls.

The test is driven by the registry (``Backend.kernels.candidates``): a kernel
registered for an op is checked here, forward or backward, with no code of its
own. Each example draws call signatures until one that the candidate declares
it takes (its ``applies``), runs the candidate and the reference
(functional/conv.py) on the same arrays and compares them within the
candidate's stated tolerance (float32; float64 to its square).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from minicae import backend as backend_mod
from minicae import to_device, to_numpy
from minicae.errors import ShapeError
from minicae.functional import conv as C
from minicae.functional._conv_checks import checked_conv2d, checked_conv_transpose2d
from minicae.kernels import ConvCall

_REFERENCE = {
    "conv2d": lambda g, oh, ow, relu: C._conv2d_reference(g, oh, ow, relu),
    "conv_transpose2d": lambda g, oh, ow, relu: C._conv_transpose2d_reference(g, oh, ow, relu),
    "conv2d_backward": lambda g, oh, ow, relu: C._conv2d_backward_reference(g, oh, ow),
    "conv_transpose2d_backward":
        lambda g, oh, ow, relu: C._conv_transpose2d_backward_reference(g, oh, ow),
}


def _registered():
    """(backend, candidate) for every installed backend's registered candidates."""
    params = []
    for name in ("numba", "cupy"):
        ok, reason = backend_mod.available_backends()[name]
        if not ok:
            params.append(pytest.param(name, None, id=f"{name}-none", marks=pytest.mark.skip(
                reason=f"{name} backend: {reason}")))
            continue
        with backend_mod.use_backend(name) as be:
            params += [pytest.param(name, c, id=f"{c.name}-{c.op}")
                       for c in be.kernels.candidates]
    return params


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _draw_call(rng, op):
    """A valid call of ``op`` (its arrays' shapes, hyperparameters, checked geometry),
    or None. Biased towards the shapes the kernels specialise on (one channel, 3x3,
    stride 1 and 2, more channels than a SIMD vector has lanes)."""
    groups = _pick(rng, [1, 1, 1, 2])
    c_in = groups * _pick(rng, [1, 1, 2, 3, 8, 17])
    c_out = groups * _pick(rng, [1, 1, 2, 5, 16, 17])
    kh, kw = _pick(rng, [(3, 3), (3, 3), (1, 1), (2, 2), (5, 5), (2, 3)])
    stride = _pick(rng, [(1, 1), (1, 1), (2, 2), (2, 2), (3, 3), (1, 2)])
    dilation = _pick(rng, [(1, 1), (1, 1), (1, 1), (2, 2)])
    padding = (int(rng.integers(0, kh // 2 + 2)), int(rng.integers(0, kw // 2 + 2)))
    x = np.empty((int(rng.integers(1, 4)), c_in, *rng.integers(3, 13, size=2)),
                 np.dtype(_pick(rng, ["float32", "float64"])))
    try:
        if op.startswith("conv_transpose2d"):
            weight = np.empty((c_in, c_out // groups, kh, kw), x.dtype)
            out_pad = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
            g, oh, ow, _ = checked_conv_transpose2d(
                x, weight, None, stride, padding, out_pad, dilation, groups, "draw")
        else:
            weight = np.empty((c_out, c_in // groups, kh, kw), x.dtype)
            g, oh, ow, _ = checked_conv2d(x, weight, None, stride, padding, dilation,
                                          groups, "draw")
    except (ShapeError, ValueError):
        return None
    return ConvCall(x.shape, weight.shape, x.dtype, g, (oh, ow), bool(rng.integers(2)), 2)


def _call_for(candidate, seed):
    """A drawn call that ``candidate`` declares it takes (rejection sampling from
    ``seed``), and whether its backward is asked for dx."""
    rng = np.random.default_rng(seed)
    for _ in range(5000):
        call = _draw_call(rng, candidate.op)
        if call is not None and candidate.applies(call):
            return call, bool(rng.integers(2))
    pytest.fail(f"{candidate.name} ({candidate.op}): no drawn call in 5000 applies; "
                "widen _draw_call so that the registry test can check it.")


def _arrays(call, op, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(call.x_shape).astype(call.dtype)
    weight = rng.standard_normal(call.w_shape).astype(call.dtype)
    c_out = (call.w_shape[1] * call.g.groups if op.startswith("conv_transpose2d")
             else call.w_shape[0])
    bias = rng.standard_normal(c_out).astype(call.dtype)
    dy = rng.standard_normal((call.x_shape[0], c_out, *call.out_hw)).astype(call.dtype)
    return x, weight, bias, dy


@pytest.mark.parametrize("backend_name,candidate", _registered())
@given(seed=st.integers(0, 2**31 - 1))
def test_candidate_matches_the_reference(backend_name, candidate, seed):
    op = candidate.op.removesuffix("_backward")
    with backend_mod.use_backend(backend_name):
        call, need_dx = _call_for(candidate, seed)
        x, weight, bias, dy = _arrays(call, op, seed)
        run = candidate.make(call)
        dev = [to_device(a) for a in (x, weight, bias, dy)]
        with backend_mod.use_backend("numpy"):
            reference = _REFERENCE[candidate.op](call.g, *call.out_hw, call.relu)
            y_ref = _REFERENCE[op](call.g, *call.out_hw, call.relu)(x, weight, bias)
            if candidate.op == op:
                want = (y_ref,)
            else:
                want = reference(dy, x, weight, y_ref if call.relu else None, need_dx)
        if candidate.op == op:
            got = (run(*dev[:3]),)
        else:
            relu_out = to_device(y_ref) if call.relu else None
            got = run(dev[3], dev[0], dev[1], relu_out, need_dx)
    squared = 2 if call.dtype == np.float64 else 1
    for name, g, r in zip(("y" if candidate.op == op else "dx", "dweight", "dbias"),
                          got, want):
        if r is None:
            assert g is None, f"{candidate.name}: {name} should be None without need_dx"
            continue
        scale = max(1.0, float(np.abs(r).max(initial=0)))
        assert_allclose(to_numpy(g), r, rtol=candidate.rtol ** squared,
                        atol=candidate.atol ** squared * scale,
                        err_msg=f"{candidate.name} {candidate.op} {name}: {call}")
