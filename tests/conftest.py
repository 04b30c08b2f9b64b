"""Shared fixtures: hypothesis profiles and the backend parametrisation."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minicae import backend as backend_mod

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

AVAILABLE = backend_mod.available_backends()
CPU_BACKENDS = [b for b in ("numpy", "numba") if AVAILABLE[b][0]]


def _backend_params():
    params = []
    for name in ("numpy", "numba", "cupy"):
        ok, reason = AVAILABLE[name]
        marks = [] if ok else [pytest.mark.skip(reason=f"{name} backend: {reason}")]
        if name == "cupy":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    """Run the test once per installed backend (CuPy skips without a GPU)."""
    with backend_mod.use_backend(request.param) as be:
        yield be


@pytest.fixture
def numpy_backend():
    with backend_mod.use_backend("numpy") as be:
        yield be


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
