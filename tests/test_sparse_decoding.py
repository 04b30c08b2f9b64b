"""Top-k sparse codes: the decoder's first layer from the k active units only."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from strategies import seeds

from minicae import functional as F
from minicae import to_device, to_numpy
from minicae.functional import sparse_linear as SL
from minicae.gradcheck import numerical_gradient
from minicae.models import DenseAutoencoder

cases = st.tuples(st.integers(1, 4), st.integers(2, 12), st.integers(1, 6), st.booleans(),
                  seeds)


def _sparse_case(case, dtype=np.float64):
    n, d, out, has_bias, seed = case
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, d + 1))
    x = np.zeros((n, d), dtype)
    for i in range(n):      # k non-zeros per row, the last row may have fewer
        units = rng.choice(d, k if i < n - 1 else max(1, k // 2), replace=False)
        x[i, units] = rng.standard_normal(len(units))
    weight = np.asfortranarray(rng.standard_normal((out, d))).astype(dtype, order="F")
    bias = rng.standard_normal(out).astype(dtype) if has_bias else None
    return x, k, weight, bias


@given(case=cases)
def test_gathered_linear_equals_dense(backend, case):
    """Same values as linear, to rounding (k terms summed instead of d): rtol 1e-12 in float64."""
    x, k, weight, bias = _sparse_case(case)
    vals, idx = SL.sparse_rows(to_device(x), k)
    w, b = to_device(weight), None if bias is None else to_device(bias)
    y = to_numpy(SL.gathered_linear(vals, idx, w, b))
    assert_allclose(y, to_numpy(F.linear(to_device(x), w, b)), rtol=1e-12, atol=1e-12,
                    err_msg=f"{backend.name} {case}")
    dy = np.random.default_rng(case[-1] + 1).standard_normal(y.shape)
    dvals, dweight, dbias = (to_numpy(g) for g in SL.gathered_linear_backward(
        to_device(dy), vals, idx, w))
    dx, dweight_dense, dbias_dense = (to_numpy(g) for g in F.linear_backward(
        to_device(dy), to_device(x), w))
    assert_allclose(dweight, dweight_dense, rtol=1e-12, atol=1e-12)
    assert_allclose(dbias, dbias_dense, rtol=1e-12, atol=1e-12)
    assert_allclose(dvals, np.take_along_axis(dx, to_numpy(idx), 1), rtol=1e-12, atol=1e-12)


@given(case=cases)
def test_gathered_linear_grad(backend, case):
    x, k, weight, bias = _sparse_case(case)
    vals, idx = (to_numpy(a) for a in SL.sparse_rows(to_device(x), k))
    b0 = np.zeros(weight.shape[0]) if bias is None else bias
    r = np.random.default_rng(case[-1] + 2).standard_normal((len(x), weight.shape[0]))

    def loss(v=vals, w=weight, b=b0):
        w = to_device(np.asfortranarray(w))
        return float((to_numpy(SL.gathered_linear(to_device(v), to_device(idx), w,
                                                  to_device(b))) * r).sum())

    dvals, dweight, dbias = (to_numpy(g) for g in SL.gathered_linear_backward(
        to_device(r), to_device(vals), to_device(idx), to_device(weight)))
    msg = f"{backend.name} {case}"
    tol = dict(rtol=1e-6, atol=1e-8)
    assert_allclose(dvals, numerical_gradient(lambda v: loss(v=v), vals.copy()), **tol,
                    err_msg="dvals " + msg)
    assert_allclose(dweight, numerical_gradient(lambda v: loss(w=v), weight.copy()), **tol,
                    err_msg="dweight " + msg)
    assert_allclose(dbias, numerical_gradient(lambda v: loss(b=v), b0.copy()), **tol,
                    err_msg="dbias " + msg)


def test_topk_autoencoder_decodes_from_active_units(backend):
    """A top-k DenseAutoencoder equals the same weights in a plain Linear decoder."""
    kw = dict(in_features=48, hidden=(64,), decoder_hidden=(32,), topk=8, dtype="float64")
    sparse = DenseAutoencoder(**kw)
    x = to_device(np.random.default_rng(0).random((5, 48)))
    first = sparse.decoder[0]
    y = to_numpy(sparse(x))
    dx = to_numpy(sparse.backward(to_device(np.ones(y.shape))))
    grads = [to_numpy(p.grad).copy() for p in sparse.parameters()]
    if backend.name == "numba":         # the numba backend must ship the gathered kernel
        assert SL.has_gather_kernel(), "numba's kernel set lacks gather_linear"
    expected = "gathered" if SL.has_gather_kernel() else "dense"
    assert first.last_path == expected, backend.name
    first.max_density = 0.0             # force the dense path on the same weights
    sparse.zero_grad()
    assert_allclose(to_numpy(sparse(x)), y, rtol=1e-12, atol=1e-14)
    assert first.last_path == "dense"
    assert_allclose(to_numpy(sparse.backward(to_device(np.ones(y.shape)))), dx, rtol=1e-12,
                    atol=1e-14)
    for a, b in zip(grads, sparse.parameters()):
        assert_allclose(a, to_numpy(b.grad), rtol=1e-12, atol=1e-14)


def test_dense_code_takes_the_dense_path(backend):
    model = DenseAutoencoder(in_features=48, hidden=(64,), topk=40, dtype="float64")
    model(to_device(np.random.default_rng(0).random((3, 48))))
    assert model.decoder[0].last_path == "dense"       # 40/64 > 1/4
