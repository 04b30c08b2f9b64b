"""Shared fixtures: hypothesis profiles and the backend parametrisation."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Kernel choices: the fixed order (no timing in tests; tests/test_dispatch.py
# measures), remembered in a directory of the test session's own.
os.environ.setdefault("MINICAE_KERNELS", "fixed")
os.environ.setdefault("MINICAE_KERNEL_CACHE", tempfile.mkdtemp(prefix="minicae-kernels-"))

from minicae import backend as backend_mod  # noqa: E402

# The `backend` fixture only selects a backend, so sharing it across
# generated examples is safe.
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large,
               HealthCheck.function_scoped_fixture]
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=_SUPPRESSED)
settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=_SUPPRESSED)
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


@pytest.fixture(params=[p for p in _backend_params() if p.values[0] != "numpy"])
def other_backend(request):
    """Name of each non-reference backend, for parity tests against NumPy."""
    with backend_mod.use_backend(request.param):
        pass                        # fail early (and clearly) if it cannot be made
    return request.param
