"""A kernel's images split over Numba's threads: the ``_threads`` drivers of the
direct convolutions run a prange over ``threads`` contiguous image ranges, and
those with a weight gradient add one partial sum per range, in range order (so a
given thread count always gives the same sums). The backward drivers also mask
dY and sum the bias gradient of their range here, on the range's own thread.

Numba's disk cache tracks each kernel's own file, not this one: after editing a
helper here, clear minicae/kernels/__pycache__.
"""

from __future__ import annotations

import numba
import numpy as np

from ._simd import lanes, vadd, vload, vsplat, vsum

__all__ = ["image_range", "add_in_order", "copy_into", "masked_range", "channel_sums_into",
           "OFF", "team"]

# False for a kernel's flag (no bias, no ReLU) passed from inside a driver: a literal
# False there makes Numba compile that kernel again for the literal's type (and a None
# bias likewise; the drivers pass zeros), which cost the cold first step ~5 s.
OFF = np.bool_(False)


def team(threads):
    """Make Numba's next parallel regions on this thread use ``threads`` threads (at
    most its pool's), and return ``threads``, the number of image ranges. A region
    waits for every thread of its team, busy or not: with one range and a team of
    two, a descheduled idle worker still held each call back (benchmarks/README.md,
    decisions: busy core)."""
    size = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))   # 0 for no images
    if numba.get_num_threads() != size:
        numba.set_num_threads(size)
    return threads


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


@numba.njit(inline="always")
def copy_into(src, out):
    """out[...] = src (same size, out C-contiguous) as a flat loop: an array assigned
    to a slice compiles NumPy's shape-mismatch message (string formatting, ~1 s of
    a cold start per shape rank); returns ``out``."""
    s, o = src.ravel(), out.reshape(out.size)
    for i in range(o.size):
        o[i] = s[i]
    return out


@numba.njit(inline="always")
def masked_range(dy, relu_out, a, b):
    """dy[a:b] · [relu_out[a:b] > 0] (a fresh array): the gradient through a ReLU
    fused into the forward, whose output relu_out is; dy[a:b] itself when relu_out
    has no images (no ReLU). Multiplied, not selected, as NumPy's mask is: a NaN in
    dy stays NaN."""
    d = dy[a:b]
    if relu_out.shape[0] == 0:
        return d
    out = np.empty_like(d)
    df, rf, of = d.reshape(-1), relu_out[a:b].reshape(-1), out.reshape(-1)
    one, zero = d.dtype.type(1), d.dtype.type(0)
    for i in range(of.size):
        of[i] = df[i] * (one if rf[i] > 0 else zero)
    return out


@numba.njit(cache=True, nogil=True)
def channel_sums_into(df, n, c, p, out):
    """out[ch] = Σ over n images and p pixels of channel ch (df: flat (n, c, p), C order):
    a bias gradient, one vector sum per (image, channel) plane; returns ``out``."""
    v = lanes(df)
    for ch in range(c):
        total = df.dtype.type(0)
        for i in range(n):
            at, acc = (i * c + ch) * p, vsplat(df, 0.0)
            for k in range(0, p, v):
                acc = vadd(acc, vload(df, at + k, 0, p - k))
            total += vsum(acc)
        out[ch] = total
    return out
