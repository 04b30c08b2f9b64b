"""Which array backend is active: NumPy, Numba or CuPy.

A backend is a small frozen record: its ``name``, its array module ``xp``
(``numpy`` or ``cupy``) and its ``kernels`` (the im2col/col2im set of
:mod:`minicae.kernels`). It is chosen here, once, by :func:`set_backend`, the
:func:`use_backend` context manager or the ``MINICAE_BACKEND`` environment
variable; code below this floor receives it from :func:`get_backend` and never
guesses it from array types. Optional packages are probed without importing
them and imported on first use; a missing one is reported with the extra that
installs it, never replaced silently by another backend.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from ._validation import check_positive_int
from .errors import BackendUnavailableError

__all__ = [
    "Backend",
    "BACKENDS",
    "available_backends",
    "default_backend_name",
    "get_backend",
    "set_backend",
    "use_backend",
    "to_device",
    "to_numpy",
    "info",
    "keep_freed_memory",
    "kernel_policy",
    "kernel_cache_dir",
]

BACKENDS = ("numpy", "numba", "cupy")
_EXTRA = {"numba": "numba", "cupy": "gpu"}


@dataclass(frozen=True)
class Backend:
    """An active backend: its name, array module and kernel set."""

    name: str
    xp: Any
    kernels: Any

    @property
    def device(self) -> str:
        return "gpu" if self.name == "cupy" else "cpu"

    def synchronize(self) -> None:
        """Wait for the work queued on the device (a no-op on the CPU): timing needs it."""
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, xp={self.xp.__name__})"


def _package_present(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cupy_status():
    """Return (usable, reason) for CuPy without raising."""
    if not _package_present("cupy"):
        return False, "CuPy is not installed"
    try:
        cupy = importlib.import_module("cupy")
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # any CUDA driver/runtime failure means 'no device'
        return False, f"CuPy cannot reach a GPU ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy found no CUDA device"
    return True, f"{count} CUDA device(s)"


def available_backends() -> dict:
    """Map each backend name to ``(available, reason)``."""
    out = {"numpy": (True, f"NumPy {numpy.__version__}")}
    if _package_present("numba"):
        out["numba"] = (True, "Numba installed")
    else:
        out["numba"] = (False, "Numba is not installed")
    out["cupy"] = _cupy_status()
    return out


def default_backend_name() -> str:
    """``MINICAE_BACKEND`` if set, else numba when importable, else numpy."""
    env = os.environ.get("MINICAE_BACKEND", "").strip().lower()
    if env:
        return env
    return "numba" if _package_present("numba") else "numpy"


def _make(name: str) -> Backend:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"set_backend({name!r}): expected one of "
                         f"{', '.join(repr(b) for b in BACKENDS)}, got {name!r}.")
    name = name.lower()
    from . import kernels

    if name == "numpy":
        return Backend("numpy", numpy, kernels.load_kernels("numpy"))
    if name == "numba":
        try:
            ks = kernels.load_kernels("numba")
        except ImportError as exc:
            raise BackendUnavailableError(
                f"set_backend('numba'): Numba is not installed ({type(exc).__name__}: "
                f"{exc}). Install it with: pip install \"minicae[numba]\".") from exc
        return Backend("numba", numpy, ks)
    usable, reason = _cupy_status()
    if not usable:
        raise BackendUnavailableError(
            f"set_backend('cupy'): {reason}. Install CuPy for CUDA 12 with: "
            f"pip install \"minicae[gpu]\" on a machine with an NVIDIA GPU.")
    cupy = importlib.import_module("cupy")
    return Backend("cupy", cupy, kernels.load_kernels("cupy"))


_active: Backend | None = None


def get_backend() -> Backend:
    """Return the active backend, creating the default one on first use."""
    global _active
    if _active is None:
        _active = _make(default_backend_name())
    return _active


def set_backend(name: str) -> Backend:
    """Make ``name`` ('numpy', 'numba' or 'cupy') the active backend."""
    global _active
    _active = _make(name)
    return _active


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the block with backend ``name``, then restore."""
    global _active
    previous = _active
    backend = _make(name)
    _active = backend
    try:
        yield backend
    finally:
        _active = previous


KERNEL_POLICIES = ("reference", "fixed", "measured")


def kernel_policy() -> str:
    """``MINICAE_KERNELS``: how minicae.dispatch picks kernels (default 'measured')."""
    policy = os.environ.get("MINICAE_KERNELS", "").strip().lower() or "measured"
    if policy not in KERNEL_POLICIES:
        raise ValueError(f"MINICAE_KERNELS: expected one of "
                         f"{', '.join(repr(p) for p in KERNEL_POLICIES)}, got "
                         f"{os.environ['MINICAE_KERNELS']!r}.")
    return policy


def kernel_cache_dir() -> Path:
    """Where measured kernel choices are kept: ``MINICAE_KERNEL_CACHE``, else the
    user's cache directory (``XDG_CACHE_HOME`` or ~/.cache, then minicae/)."""
    if os.environ.get("MINICAE_KERNEL_CACHE"):
        return Path(os.environ["MINICAE_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minicae"


def to_device(array, dtype=None, backend: Backend | None = None):
    """Copy ``array`` to the active backend's device (a no-op on the CPU)."""
    be = backend or get_backend()
    if be.name == "cupy":
        return be.xp.asarray(array, dtype=dtype)
    return numpy.asarray(to_numpy(array), dtype=dtype)


def to_numpy(array):
    """Return ``array`` as a NumPy array on the host (copies from a GPU)."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return numpy.asarray(array)


def info() -> dict:
    """Describe the installed backends and NumPy's BLAS (for ``minicae info``)."""
    out = {"numpy": numpy.__version__, "default": default_backend_name(),
           "backends": {k: {"available": v[0], "detail": v[1]}
                        for k, v in available_backends().items()}}
    blas = []
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
        for pool in threadpoolctl.threadpool_info():
            blas.append({k: pool.get(k) for k in
                         ("user_api", "internal_api", "version", "num_threads",
                          "architecture")})
    except ImportError:
        blas.append({"note": "install threadpoolctl to see BLAS threads"})
    out["blas"] = blas
    out["env"] = {k: os.environ[k] for k in
                  ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                   "NUMBA_NUM_THREADS", "MINICAE_BACKEND", "MINICAE_KERNELS",
                   "MINICAE_KERNEL_CACHE") if k in os.environ}
    return out


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# the thresholds of keep_freed_memory, also those minicae bench gives every side
MMAP_THRESHOLD, TRIM_THRESHOLD = 16 * 2**20, 32 * 2**20


def keep_freed_memory(mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD) -> bool:
    """Ask glibc's malloc to keep freed blocks for the next step instead of unmapping them.

    A training step allocates and frees the same arrays (0.4-4 MiB in the
    strided CAE) every step. By default glibc serves large blocks with fresh
    mmaps and trims the top of its heap, so the pages go back to the system
    and the next step faults them in again, zeroed by the kernel (hundreds of
    page faults per strided-CAE step; ``benchmarks/bench_allocator.py`` measures
    it, benchmarks/README.md has the numbers). With it,
    blocks under ``mmap_threshold`` come from the heap and up to
    ``trim_threshold`` bytes of freed memory stay with the process; peak memory
    is unchanged.

    Process-wide, and glibc only. ``minicae train``, ``demo`` and ``segment``
    call it; a script of your own may call it once. Returns True when applied,
    False on other C libraries or when ``MINICAE_MALLOC=system`` is set.
    """
    mmap_threshold = check_positive_int(mmap_threshold, where="keep_freed_memory",
                                        name="mmap_threshold")
    trim_threshold = check_positive_int(trim_threshold, where="keep_freed_memory",
                                        name="trim_threshold")
    if os.environ.get("MINICAE_MALLOC") == "system":
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):                # not glibc (macOS, Windows)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt returns 1 on success; it refuses an mmap threshold above 32 MiB
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))
