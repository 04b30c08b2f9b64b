"""minicae: convolutional autoencoders written by hand on NumPy, Numba or CuPy."""

from __future__ import annotations

__version__ = "0.1.0"

from .backend import get_backend, set_backend, to_device, to_numpy, use_backend  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from .errors import (BackendUnavailableError, CheckpointError, DataError,  # noqa: E402
                     MinicaeError, NumericalError, ShapeError)

__all__ = ["__version__", "save", "load", "get_backend", "set_backend", "use_backend", "to_device",
           "to_numpy", "MinicaeError", "BackendUnavailableError", "CheckpointError",
           "DataError", "NumericalError", "ShapeError"]
