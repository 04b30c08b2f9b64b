"""A kernel's images split over Numba's threads: the ``_threads`` drivers of the
direct convolutions run a prange over ``threads`` contiguous image ranges, and
those with a weight gradient add one partial sum per range, in range order (so a
given thread count always gives the same sums).

Numba's disk cache tracks each kernel's own file, not this one: after editing a
helper here, clear minicae/kernels/__pycache__.
"""

from __future__ import annotations

import numba

__all__ = ["image_range", "add_in_order"]


@numba.njit(inline="always")
def image_range(t, n, threads):
    """[start, stop) of range ``t`` of ``threads`` over ``n`` images (sizes differ by
    at most one)."""
    return t * n // threads, (t + 1) * n // threads


@numba.njit(inline="always")
def add_in_order(parts, out):
    """out = parts[0] + parts[1] + ... (left to right); returns ``out``."""
    out[...] = parts[0]
    for t in range(1, parts.shape[0]):
        out += parts[t]
    return out
