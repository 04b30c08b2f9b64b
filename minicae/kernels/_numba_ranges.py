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
    """out = parts[0] + parts[1] + ... (left to right); returns ``out`` (both
    C-contiguous). Flat loops: as array expressions inside a ``parallel=True``
    driver, Numba made each ``out += parts[t]`` a parallel region of its own, and
    the sum of two 4608-float partials took ~12 us instead of ~1 (conv 16->32 s2
    weight gradient, two images on two threads: 25 -> 13 us)."""
    m = out.size
    flat, total = parts.reshape(parts.shape[0], m), out.reshape(m)
    for i in range(m):
        total[i] = flat[0, i]
    for t in range(1, flat.shape[0]):
        for i in range(m):
            total[i] += flat[t, i]
    return out
