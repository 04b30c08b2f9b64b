"""linear and the activations: definitions, derivatives, gradients, parity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from strategies import seeds

from minicae import backend as backend_mod
from minicae import functional as F
from minicae import to_device, to_numpy
from minicae.errors import ShapeError
from minicae.gradcheck import numerical_gradient


def _dev(a):
    return None if a is None else to_device(a)


# linear -------------------------------------------------------------------------

def linear_ref(x, weight, bias):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i], by loops."""
    y = np.zeros((x.shape[0], weight.shape[0]))
    for n in range(x.shape[0]):
        for o in range(weight.shape[0]):
            y[n, o] = (0.0 if bias is None else bias[o]) + sum(
                x[n, i] * weight[o, i] for i in range(x.shape[1]))
    return y


linear_cases = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5),
                         st.booleans(), seeds)


def _linear_arrays(case, dtype=np.float64):
    n, d_in, d_out, has_bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in)).astype(dtype)
    weight = rng.standard_normal((d_out, d_in)).astype(dtype)
    bias = rng.standard_normal(d_out).astype(dtype) if has_bias else None
    return x, weight, bias


@given(case=linear_cases)
def test_linear_matches_reference(backend, case):
    x, weight, bias = _linear_arrays(case)
    y = to_numpy(F.linear(_dev(x), _dev(weight), _dev(bias)))
    assert_allclose(y, linear_ref(x, weight, bias), rtol=1e-12, atol=1e-12,
                    err_msg=f"{backend.name} {case}")


@given(case=linear_cases)
def test_linear_grad(backend, case):
    x, weight, bias = _linear_arrays(case)
    r = np.random.default_rng(case[-1] + 1).standard_normal((x.shape[0], weight.shape[0]))
    dx, dweight, dbias = (to_numpy(g) for g in F.linear_backward(_dev(r), _dev(x),
                                                                  _dev(weight)))
    b0 = np.zeros(weight.shape[0]) if bias is None else bias

    def loss(xv=x, wv=weight, bv=b0):
        return float(np.sum(to_numpy(F.linear(_dev(xv), _dev(wv), _dev(bv))) * r))

    msg = f"{backend.name} {case}"
    assert_allclose(dx, numerical_gradient(lambda v: loss(xv=v), x.copy()),
                    rtol=1e-6, atol=1e-8, err_msg="dx " + msg)
    assert_allclose(dweight, numerical_gradient(lambda v: loss(wv=v), weight.copy()),
                    rtol=1e-6, atol=1e-8, err_msg="dweight " + msg)
    assert_allclose(dbias, numerical_gradient(lambda v: loss(bv=v), b0.copy()),
                    rtol=1e-6, atol=1e-8, err_msg="dbias " + msg)
    assert F.linear_backward(_dev(r), _dev(x), _dev(weight), need_dx=False)[0] is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=linear_cases)
def test_linear_parity_with_numpy(other_backend, dtype, case):
    x, weight, bias = _linear_arrays(case, dtype)
    out = {}
    for name in ("numpy", other_backend):
        with backend_mod.use_backend(name):
            y = F.linear(_dev(x), _dev(weight), _dev(bias))
            out[name] = [to_numpy(a) for a in (y, *F.linear_backward(y, _dev(x),
                                                                     _dev(weight)))]
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for label, a, b in zip(("y", "dx", "dweight", "dbias"), out[other_backend],
                           out["numpy"]):
        assert a.dtype == dtype
        assert_allclose(a, b, rtol=rtol, atol=rtol * (1 + np.abs(b).max()),
                        err_msg=f"{label} {other_backend} {case}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_dtype_batch_of_one_and_views(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)).astype(dtype).T              # (3, 5), a view
    weight = rng.standard_normal((5, 4)).astype(dtype).T         # (4, 5), a view
    bias = rng.standard_normal(4).astype(dtype)
    assert not x.flags.c_contiguous
    y = F.linear(_dev(x), _dev(weight), _dev(bias))
    grads = F.linear_backward(y, _dev(x), _dev(weight))
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert_allclose(to_numpy(y), linear_ref(x.astype(np.float64), weight, bias),
                    rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    one = F.linear(_dev(x[1:2]), _dev(weight), _dev(bias))
    assert_allclose(to_numpy(one), to_numpy(y)[1:2], rtol=1e-6)


BAD_LINEAR = [
    ("rank", (np.ones((2, 3, 4)), np.ones((5, 3)), None), ShapeError,
     r"linear: expected input of shape \(N, 3\), got \(2, 3, 4\)"),
    ("features", (np.ones((2, 4)), np.ones((5, 3)), None), ShapeError,
     r"linear: expected input of shape \(N, 3\), got \(2, 4\)"),
    ("int input", (np.ones((2, 3), dtype=np.int64), np.ones((5, 3)), None), TypeError,
     r"linear: expected a floating-point input, got dtype int64"),
    ("dtype mismatch", (np.ones((2, 3), dtype=np.float32), np.ones((5, 3)), None),
     TypeError, r"linear: expected input and weight to share a dtype, got float32 and "
     r"float64"),
    ("bias shape", (np.ones((2, 3)), np.ones((5, 3)), np.ones(4)), ShapeError,
     r"linear: expected bias of shape \(5,\), got \(4,\)"),
    ("bias dtype", (np.ones((2, 3)), np.ones((5, 3)), np.ones(5, dtype=np.float32)),
     TypeError, r"linear: expected input and bias to share a dtype, got float64 and "
     r"float32"),
]


@pytest.mark.parametrize("case,args,error,match", BAD_LINEAR, ids=[c[0] for c in BAD_LINEAR])
def test_linear_rejects_bad_input(numpy_backend, case, args, error, match):
    with pytest.raises(error, match=match):
        F.linear(*args)


def test_linear_backward_rejects_wrong_dy(numpy_backend):
    with pytest.raises(ShapeError, match=r"linear_backward: expected dy of shape "
                                         r"\(2, 5\), got \(2, 4\)"):
        F.linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((5, 3)))


# activations ----------------------------------------------------------------------

SLOPE = 0.07
DEFINITIONS = {
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, SLOPE * x),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1),
}


def _act(name):
    """(s, s′, s″) with the leaky slope bound, from the public ACTIVATIONS table."""
    f, g, g2 = F.ACTIVATIONS[name]
    if name == "leaky_relu":
        return (lambda a: f(a, SLOPE), lambda a: g(a, SLOPE), lambda a: g2(a, SLOPE))
    return f, g, g2


def _away_from_zero(seed, shape=(2, 3, 4)):
    """Values in ±[0.01, 3]: no central difference straddles the ReLU kink."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.01, 3.0, size=shape)


def _backward(name, dy, x):
    """Each *_backward takes what it documents: the input (relu) or the output."""
    f, _, _ = _act(name)
    if name == "relu":
        return F.relu_backward(dy, x)
    if name == "leaky_relu":
        return F.leaky_relu_backward(dy, x, SLOPE)
    return {"sigmoid": F.sigmoid_backward, "tanh": F.tanh_backward}[name](dy, f(x))


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@given(seed=seeds)
def test_activation_values_match_definitions(backend, name, seed):
    x = _away_from_zero(seed)
    got = to_numpy(_act(name)[0](to_device(x)))
    assert_allclose(got, DEFINITIONS[name](x), rtol=1e-12, atol=1e-14,
                    err_msg=f"{name} on {backend.name}")


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@given(seed=seeds)
def test_activation_backward_matches_central_differences(backend, name, seed):
    f, _, _ = _act(name)
    x = _away_from_zero(seed)
    r = np.random.default_rng(seed + 1).standard_normal(x.shape)
    dx = to_numpy(_backward(name, to_device(r), to_device(x)))
    numeric = numerical_gradient(lambda v: np.sum(to_numpy(f(to_device(v))) * r), x.copy())
    assert_allclose(dx, numeric, rtol=1e-6, atol=1e-9, err_msg=f"{name} on {backend.name}")


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@given(seed=seeds)
def test_activation_derivatives_match_central_differences(backend, name, seed):
    """s′ = d s/da and s″ = d s′/da, elementwise (Σ s(a) has gradient s′(a))."""
    f, g, g2 = _act(name)
    a = _away_from_zero(seed)
    msg = f"{name} on {backend.name}"
    first = numerical_gradient(lambda v: np.sum(to_numpy(f(to_device(v)))), a.copy())
    assert_allclose(to_numpy(g(to_device(a))), first, rtol=1e-6, atol=1e-9,
                    err_msg="s′ " + msg)
    second = numerical_gradient(lambda v: np.sum(to_numpy(g(to_device(v)))), a.copy())
    assert_allclose(to_numpy(g2(to_device(a))), second, rtol=1e-6, atol=1e-8,
                    err_msg="s″ " + msg)


def test_conventions_at_the_kink(backend):
    zero = to_device(np.zeros(3))
    assert_array_equal(to_numpy(F.relu_grad(zero)), 0.0)                     # ReLU′(0) = 0
    assert_array_equal(to_numpy(F.relu_backward(to_device(np.ones(3)), zero)), 0.0)
    assert_array_equal(to_numpy(F.leaky_relu_grad(zero, 0.2)), 0.2)          # α at 0
    assert_array_equal(to_numpy(F.relu_grad2(zero)), 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_at_large_inputs(backend, dtype):
    x = to_device(np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], dtype=dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            values = [to_numpy(fn(x)) for fn in (F.sigmoid, F.sigmoid_grad,
                                                  F.sigmoid_grad2, F.tanh, F.tanh_grad)]
    for v in values:
        assert v.dtype == dtype and np.all(np.isfinite(v))
    s = values[0]
    assert s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5
    assert np.all(np.diff(s) >= 0)
    assert_array_equal(values[1][[0, -1]], 0.0)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_preserve_dtype_and_accept_views(backend, name, dtype):
    f, g, g2 = _act(name)
    base = _away_from_zero(3, (4, 6)).astype(dtype)
    x = base.T[::2]                                       # non-contiguous view
    assert not x.flags.c_contiguous
    dev = to_device(x)
    outs = [f(dev), g(dev), g2(dev), _backward(name, dev, dev)]
    assert [o.dtype for o in outs] == [dtype] * 4, name
    assert_allclose(to_numpy(outs[0]), to_numpy(f(to_device(x.copy()))), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [F.relu, F.sigmoid, F.tanh, F.leaky_relu])
def test_activations_reject_integer_input(numpy_backend, fn):
    with pytest.raises(TypeError, match=rf"{fn.__name__}: expected a floating-point "
                                        r"input, got dtype int64"):
        fn(np.arange(3))


def test_leaky_relu_rejects_a_negative_slope(numpy_backend):
    with pytest.raises(ValueError, match=r"leaky_relu: expected negative_slope to be a "
                                         r"finite number >= 0, got -0.1"):
        F.leaky_relu(np.ones(3), -0.1)


def test_backward_rejects_a_dy_of_another_dtype(numpy_backend):
    """A float64 dY must not silently turn float32 gradients into float64."""
    x32, w32 = np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32)
    _, argmax = F.max_pool2d(x32, 2, return_indices=True)
    calls = {
        "conv2d_backward": lambda: F.conv2d_backward(np.ones((1, 1, 3, 3)), x32, w32),
        "conv_transpose2d_backward": lambda: F.conv_transpose2d_backward(
            np.ones((1, 1, 7, 7)), x32, w32),
        "linear_backward": lambda: F.linear_backward(
            np.ones((2, 3)), np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(np.ones((1, 1, 2, 2)), x32,
                                                             argmax, 2),
    }
    for where, call in calls.items():
        with pytest.raises(TypeError, match=rf"{where}: expected input and dy to share a "
                                            r"dtype, got float32 and float64"):
            call()
