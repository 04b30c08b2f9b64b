"""The library's exceptions.

Each error also inherits the builtin a caller would expect (scikit-learn's
trick), so ``except ValueError`` keeps working while ``except MinicaeError``
catches everything raised on purpose by minicae.
"""

from __future__ import annotations

__all__ = [
    "MinicaeError",
    "BackendUnavailableError",
    "ShapeError",
    "CheckpointError",
    "DataError",
    "NumericalError",
]


class MinicaeError(Exception):
    """Base class of every error minicae raises on purpose."""


class BackendUnavailableError(MinicaeError, RuntimeError):
    """A backend was asked for but its package or device is missing."""


class ShapeError(MinicaeError, ValueError):
    """An array has the wrong rank, shape or channel count."""


class CheckpointError(MinicaeError, ValueError):
    """A checkpoint file is missing, truncated, corrupt, tampered or foreign."""


class DataError(MinicaeError, ValueError):
    """A data file is missing, malformed or inconsistent."""


class NumericalError(MinicaeError, FloatingPointError):
    """A loss or gradient became NaN or infinite during training."""
