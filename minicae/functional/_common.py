"""Helpers shared by the functional ops: the active backend and input checks."""

from __future__ import annotations

from .._validation import check_array
from ..backend import get_backend

__all__ = ["active", "check_input", "check_same_dtype"]


def active():
    """Return the active backend (``.xp`` array module, ``.kernels``)."""
    return get_backend()


def check_input(x, *, where, name="input", ndim=None, channels=None, shape_text=None):
    """check_array against the active backend's array type."""
    return check_array(x, where=where, name=name, ndim=ndim, channels=channels,
                       shape_text=shape_text, xp=get_backend().xp)


def check_same_dtype(a, b, *, where, names=("input", "weight")):
    if a.dtype != b.dtype:
        raise TypeError(f"{where}: expected {names[0]} and {names[1]} to share a dtype, "
                        f"got {a.dtype} and {b.dtype}. Convert one with "
                        f".astype({b.dtype}).")
