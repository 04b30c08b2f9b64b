"""Backend selection: set/get/use, the environment variable, missing packages."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import minicae
from minicae import backend as backend_mod
from minicae.errors import BackendUnavailableError, MinicaeError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch):
    """No active backend and no MINICAE_BACKEND; restored after the test."""
    monkeypatch.setattr(backend_mod, "_active", None)
    monkeypatch.delenv("MINICAE_BACKEND", raising=False)
    return monkeypatch


def test_set_and_get_backend(fresh):
    be = minicae.set_backend("numpy")
    assert minicae.get_backend() is be
    assert (be.name, be.xp, be.device) == ("numpy", np, "cpu")
    assert be.kernels.name == "numpy" and be.kernels.candidates == ()
    assert minicae.set_backend("NumPy").name == "numpy"           # case-insensitive


@pytest.mark.parametrize("name", [n for n in ("numba",)
                                  if backend_mod.available_backends()[n][0]])
def test_use_backend_restores_the_previous_one(fresh, name):
    outer = minicae.set_backend("numpy")
    with minicae.use_backend(name) as inner:
        assert minicae.get_backend() is inner and inner.name == name
        with minicae.use_backend("numpy"):
            assert minicae.get_backend().name == "numpy"
        assert minicae.get_backend() is inner
    assert minicae.get_backend() is outer


def test_use_backend_restores_after_an_exception(fresh):
    outer = minicae.set_backend("numpy")
    with pytest.raises(KeyError):
        with minicae.use_backend("numpy"):
            raise KeyError("inside")
    assert minicae.get_backend() is outer


def test_environment_variable_picks_the_default(fresh):
    fresh.setenv("MINICAE_BACKEND", " NumPy ")
    assert backend_mod.default_backend_name() == "numpy"
    assert minicae.get_backend().name == "numpy"


def test_default_without_environment_variable(fresh):
    expected = "numba" if importlib.util.find_spec("numba") else "numpy"
    assert backend_mod.default_backend_name() == expected
    assert minicae.get_backend().name == expected


def test_bad_environment_variable_is_reported(fresh):
    fresh.setenv("MINICAE_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"set_backend\('tpu'\): expected one of "
                                         r"'numpy', 'numba', 'cupy', got 'tpu'"):
        minicae.get_backend()


@pytest.mark.parametrize("name", ["jax", "", 3, None])
def test_unknown_backend_names_the_choices(fresh, name):
    with pytest.raises(ValueError, match=r"expected one of 'numpy', 'numba', 'cupy'"):
        minicae.set_backend(name)
    assert backend_mod._active is None                         # nothing half-set


def test_missing_cupy_names_the_gpu_extra(fresh):
    real = backend_mod._package_present
    fresh.setattr(backend_mod, "_package_present",
                  lambda module: False if module == "cupy" else real(module))
    with pytest.raises(BackendUnavailableError, match=r"set_backend\('cupy'\): CuPy is not "
                                                      r"installed.*minicae\[gpu\]") as err:
        minicae.set_backend("cupy")
    assert isinstance(err.value, MinicaeError) and isinstance(err.value, RuntimeError)
    assert backend_mod.available_backends()["cupy"] == (False, "CuPy is not installed")


def test_cupy_without_a_device_is_reported(fresh):
    """A CuPy whose runtime cannot count devices must not be used silently."""
    class FakeRuntime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError("no CUDA driver")

    class FakeCupy:
        class cuda:
            runtime = FakeRuntime

    real_import = importlib.import_module
    fresh.setattr(backend_mod, "_package_present", lambda module: True)
    fresh.setattr(backend_mod.importlib, "import_module",
                  lambda name, *a: FakeCupy if name == "cupy" else real_import(name, *a))
    with pytest.raises(BackendUnavailableError,
                       match=r"CuPy cannot reach a GPU \(RuntimeError: no CUDA driver\)"
                             r".*minicae\[gpu\]"):
        minicae.set_backend("cupy")


def test_missing_numba_names_the_numba_extra(fresh):
    # a fresh import of the kernel module now fails exactly as without Numba
    fresh.setitem(sys.modules, "numba", None)
    for name in [m for m in sys.modules if m.startswith(("minicae.kernels._numba",
                                                         "minicae.kernels._simd"))]:
        fresh.delitem(sys.modules, name)
    with pytest.raises(BackendUnavailableError, match=r"set_backend\('numba'\): Numba is "
                                                      r"not installed.*minicae\[numba\]"):
        minicae.set_backend("numba")
    assert backend_mod._active is None


def test_numba_absent_falls_back_to_numpy_as_default_only(fresh):
    real = importlib.util.find_spec
    fresh.setattr(importlib.util, "find_spec",
                  lambda name, *a: None if name == "numba" else real(name, *a))
    assert backend_mod.available_backends()["numba"] == (False, "Numba is not installed")
    assert backend_mod.default_backend_name() == "numpy"


def test_to_device_and_to_numpy_round_trip(backend):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = minicae.to_device(host)
    assert isinstance(dev, backend.xp.ndarray) and dev.dtype == np.float32
    back = minicae.to_numpy(dev)
    assert isinstance(back, np.ndarray)
    assert_array_equal(back, host)
    assert minicae.to_device([1, 2], dtype=np.float64).dtype == np.float64
    assert minicae.to_numpy([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_info_lists_every_backend():
    data = backend_mod.info()
    assert set(data["backends"]) == {"numpy", "numba", "cupy"}
    assert data["backends"]["numpy"]["available"] is True
    assert data["numpy"] == np.__version__


def test_python_m_minicae_info_prints_the_backends():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MINICAE_BACKEND", None)
    done = subprocess.run([sys.executable, "-m", "minicae", "info"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "minicae backends (default:" in done.stdout
    for name in ("numpy", "numba", "cupy"):
        assert f"  {name}" in done.stdout, done.stdout


_FAULTS_CHILD = """
import resource, sys
import numpy as np
from minicae.backend import keep_freed_memory
applied = keep_freed_memory()
def step():
    arrays = [np.empty(2**18, np.float32) for _ in range(8)]   # 1 MiB each, touched
    for a in arrays:
        a.fill(1.0)
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_keep_freed_memory_stops_the_page_faults_of_repeated_steps():
    """Arrays freed and re-allocated every step fault their pages in again under glibc's
    defaults; after keep_freed_memory() they are reused (MINICAE_MALLOC=system opts out)."""
    def run(**env):
        done = subprocess.run([sys.executable, "-c", _FAULTS_CHILD], capture_output=True,
                              text=True, check=True, env={**os.environ, **env})
        applied, faults = done.stdout.split()
        return applied, int(faults)

    applied, kept = run()
    assert applied == "True"
    default_applied, default = run(MINICAE_MALLOC="system")
    assert default_applied == "False"
    assert default >= 20 * 8 * 100, f"expected the default to fault, got {default}"
    assert kept < default / 20, f"kept {kept} vs default {default} page faults"


def test_keep_freed_memory_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="mmap_threshold"):
        backend_mod.keep_freed_memory(mmap_threshold=0)
    with pytest.raises(TypeError, match="trim_threshold"):
        backend_mod.keep_freed_memory(trim_threshold="big")
