"""minicae.gradcheck: the numerical gradients every other test relies on."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from minicae import nn, to_device, to_numpy
from minicae.gradcheck import (GradcheckReport, check_layer, directional_derivative,
                               numerical_gradient, relative_error)


def test_numerical_gradient_of_a_known_function():
    x = np.random.default_rng(0).standard_normal((3, 4))
    before = x.copy()
    grad = numerical_gradient(lambda v: np.sum(v ** 3), x)     # ∇ Σ x³ = 3x²
    assert_allclose(grad, 3 * x ** 2, rtol=1e-8, atol=1e-9)
    assert_array_equal(x, before)                               # restored in place
    assert grad.dtype == np.float64 and grad.shape == x.shape


def test_numerical_gradient_on_a_non_contiguous_view():
    base = np.random.default_rng(1).standard_normal((4, 6))
    x = base.T[::2]                      # no flat view exists: reshape(-1) would copy
    assert not x.flags.c_contiguous and not x.flags.f_contiguous
    grad = numerical_gradient(lambda v: np.sum(np.sin(v)), x)
    assert_allclose(grad, np.cos(x), rtol=1e-8, atol=1e-9)


def test_numerical_gradient_refuses_float32():
    with pytest.raises(TypeError, match=r"numerical_gradient: expected a float64 array, "
                                        r"got float32"):
        numerical_gradient(np.sum, np.ones(3, dtype=np.float32))


def test_directional_derivative_is_the_projected_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(10)
    v = rng.standard_normal(10)
    v /= np.linalg.norm(v)
    # d/dt Σ exp(x + t v) at t = 0 = ⟨exp(x), v⟩
    assert_allclose(directional_derivative(lambda a: np.sum(np.exp(a)), x, v),
                    np.dot(np.exp(x), v), rtol=1e-8)


def test_relative_error_reports_the_worst_entry():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    n = a.copy()
    assert relative_error(a, n) == (0.0, (0, 0))
    n[1, 0] = 3.3
    err, idx = relative_error(a, n)
    assert tuple(int(i) for i in idx) == (1, 0)
    assert_allclose(err, 0.3 / 6.3)
    # below the floor, differences are measured against the floor, not against 0
    assert relative_error(np.array([0.0]), np.array([1e-12]))[0] == pytest.approx(1e-4)


class _Broken(nn.Linear):
    """A linear layer whose bias gradient is off by a factor 2."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.bias.grad += dy.sum(axis=0)
        return dx


def test_check_layer_passes_a_correct_layer():
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    before = {k: to_numpy(v).copy() for k, v in layer.state_dict().items()}
    report = check_layer(layer, to_device(np.random.default_rng(1).standard_normal((2, 4))),
                         rng=0)
    assert isinstance(report, GradcheckReport)
    assert set(report.errors) == {"input", "weight", "bias"}
    assert report.worst < 1e-7, str(report)
    assert "weight: max relative error" in str(report)
    for k, v in layer.state_dict().items():                     # parameters restored
        assert_array_equal(to_numpy(v), before[k], err_msg=k)


def test_check_layer_finds_a_wrong_gradient():
    layer = _Broken(4, 3, rng=0, dtype=np.float64)
    report = check_layer(layer, np.random.default_rng(1).standard_normal((2, 4)), rng=0)
    assert report.errors["bias"][0] == pytest.approx(1 / 3, rel=1e-4)   # |2g − g| / 3|g|
    assert report.errors["weight"][0] < 1e-7
    assert report.worst > 0.3


def test_check_layer_refuses_float32_parameters():
    with pytest.raises(TypeError, match=r"check_layer: expected float64 parameters, got "
                                        r"float32. Call layer.astype\(numpy.float64\)"):
        check_layer(nn.Linear(2, 2, rng=0), np.ones((1, 2)))
