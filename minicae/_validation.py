"""Argument checks shared by every public entry point.

This module owns the wording of validation messages, so that all of them
follow one template: ``<where>: expected <what>, got <actual>. <fix>``.
It imports nothing from minicae except :mod:`minicae.errors` (a leaf).
"""

from __future__ import annotations

import numbers

from .errors import ShapeError

__all__ = [
    "check_array",
    "check_positive_int",
    "check_nonnegative_int",
    "check_positive_float",
    "check_nonnegative_float",
    "check_in_open_interval",
    "check_choice",
    "as_pair",
]


def _shape_text(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_array(x, *, where, name="input", ndim=None, channels=None, shape_text=None,
                float_only=True, xp=None):
    """Check that ``x`` is a floating array of the expected rank and channels.

    Raises ``TypeError`` for a non-array or a non-float dtype and
    :class:`~minicae.errors.ShapeError` (a ``ValueError``) for rank and
    channel mismatches. Returns ``x`` unchanged.
    """
    if xp is not None and not isinstance(x, xp.ndarray):
        raise TypeError(
            f"{where}: expected {name} to be a {xp.__name__}.ndarray, got "
            f"{type(x).__module__}.{type(x).__name__}. Convert it with "
            f"minicae.backend.to_device(x) (or numpy.asarray for the CPU backends).")
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{where}: expected {name} to be an array, got "
                        f"{type(x).__name__}.")
    if float_only and x.dtype.kind != "f":
        raise TypeError(
            f"{where}: expected a floating-point {name}, got dtype {x.dtype}. "
            f"Convert with x.astype(numpy.float32).")
    if ndim is not None and x.ndim != ndim:
        want = shape_text or f"a {ndim}-D array"
        raise ShapeError(f"{where}: expected {name} of shape {want}, got "
                         f"{_shape_text(x.shape)}.")
    if channels is not None and x.shape[1] != channels:
        want = shape_text or f"(N, {channels}, H, W)"
        raise ShapeError(f"{where}: expected {name} of shape {want}, got "
                         f"{_shape_text(x.shape)}.")
    return x


def _is_int(value):
    # plain ints first: the ABC check costs ~1 us, and every layer call checks its
    # kernel, stride, padding and dilation (a batch-32 CAE step: 0.3 ms of them)
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, bool))


def check_positive_int(value, *, where, name):
    """Return ``value`` if it is an integer >= 1, else raise."""
    if not _is_int(value):
        raise TypeError(f"{where}: expected {name} to be an integer >= 1, got "
                        f"{value!r}.")
    if value < 1:
        raise ValueError(f"{where}: expected {name} to be an integer >= 1, got "
                         f"{value!r}.")
    return int(value)


def check_nonnegative_int(value, *, where, name):
    """Return ``value`` if it is an integer >= 0, else raise."""
    if not _is_int(value):
        raise TypeError(f"{where}: expected {name} to be an integer >= 0, got "
                        f"{value!r}.")
    if value < 0:
        raise ValueError(f"{where}: expected {name} to be an integer >= 0, got "
                         f"{value!r}.")
    return int(value)


def _check_real(value, where, name, what):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{where}: expected {name} to be {what}, got {value!r}.")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{where}: expected {name} to be {what}, got {value!r}.")
    return float(value)


def check_positive_float(value, *, where, name):
    """Return ``value`` as float if it is a finite number > 0, else raise."""
    v = _check_real(value, where, name, "a finite number > 0")
    if v <= 0:
        raise ValueError(f"{where}: expected {name} to be a finite number > 0, "
                         f"got {value!r}.")
    return v


def check_nonnegative_float(value, *, where, name):
    """Return ``value`` as float if it is a finite number >= 0, else raise."""
    v = _check_real(value, where, name, "a finite number >= 0")
    if v < 0:
        raise ValueError(f"{where}: expected {name} to be a finite number >= 0, "
                         f"got {value!r}.")
    return v


def check_in_open_interval(value, low, high, *, where, name):
    """Return ``value`` as float if ``low < value < high``, else raise."""
    v = _check_real(value, where, name, f"in ({low}, {high})")
    if not low < v < high:
        raise ValueError(f"{where}: {name} must be in ({low}, {high}), got {value!r}.")
    return v


def check_choice(value, choices, *, where, name):
    """Return ``value`` if it is one of ``choices``, else raise ValueError."""
    if value not in choices:
        raise ValueError(f"{where}: expected {name} to be one of "
                         f"{', '.join(repr(c) for c in choices)}; got {value!r}.")
    return value


def as_pair(value, *, where, name, minimum=1):
    """Turn an int or a pair of ints into a tuple ``(a, b)``, each >= minimum."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(_is_int(v) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{where}: expected {name} to be an int or a pair of ints, "
                        f"got {value!r}.")
    if min(pair) < minimum:
        raise ValueError(f"{where}: expected {name} >= {minimum}, got {value!r}.")
    return pair


def shape_error(where, expected, got):
    """Build a ShapeError with the house template (for callers' own checks)."""
    return ShapeError(f"{where}: expected {expected}, got {_shape_text(got)}.")
