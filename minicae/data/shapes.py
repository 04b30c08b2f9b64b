r"""The built-in data set: textured ellipses, rectangles and triangles.

Generated, never downloaded. Image ``i`` of a set made with ``seed`` is drawn
from its own stream ``SeedSequence(seed).spawn(n)[i]``, so the first ``m``
images of ``make_shapes(n, seed=s)`` equal ``make_shapes(m, seed=s)``.
"""

from __future__ import annotations

import numpy as np

from .._validation import (check_choice, check_nonnegative_float, check_nonnegative_int,
                           check_positive_int)
from . import _textures as tx

__all__ = ["make_shapes", "make_shapes_anomaly", "CLASS_NAMES"]

CLASS_NAMES = ("background", "ellipse", "rectangle", "triangle")

# texture=False: background dark, each class a distinct bright level / colour
_FLAT_GRAY = np.array([[0.1], [0.9], [0.7], [0.5]])
_FLAT_RGB = np.array([[0.1, 0.1, 0.1], [0.9, 0.35, 0.3], [0.3, 0.85, 0.35],
                      [0.35, 0.4, 0.95]])

_DEFECT_KINDS = ("mixed", "blob", "rings")
_DEFECT_STREAM = 1  # spawn_key (i, 1): the defect stream of image i, apart from its shapes


def _rotate(yy, xx, cy, cx, angle):
    c, s = np.cos(angle), np.sin(angle)
    # (u, v) = R(−angle)·(x − cx, y − cy): the shape's own frame
    return (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c


def _shape_mask(cls, rng, yy, xx, size):
    """Boolean (H, W) mask of one random shape of class ``cls`` (1, 2 or 3)."""
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    r = rng.uniform(0.12, 0.25) * size
    angle = rng.uniform(0.0, 2 * np.pi)
    if cls == 3:
        # vertices at radius ~r, 120° apart with jitter; inside = same side of all edges
        theta = angle + 2 * np.pi * np.arange(3) / 3 + rng.uniform(-0.35, 0.35, size=3)
        rad = r * rng.uniform(0.9, 1.3, size=3)
        vy, vx = cy + rad * np.sin(theta), cx + rad * np.cos(theta)
        cross = [(vx[(k + 1) % 3] - vx[k]) * (yy - vy[k]) - (vy[(k + 1) % 3] - vy[k]) * (xx - vx[k])
                 for k in range(3)]
        return ((cross[0] >= 0) & (cross[1] >= 0) & (cross[2] >= 0)) | (
            (cross[0] <= 0) & (cross[1] <= 0) & (cross[2] <= 0))
    a, b = r, r * rng.uniform(0.5, 1.0)
    u, v = _rotate(yy, xx, cy, cx, angle)
    if cls == 1:
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0  # (u/a)² + (v/b)² ≤ 1
    return (np.abs(u) <= a) & (np.abs(v) <= b)  # |u| ≤ a and |v| ≤ b


def _object_textures(rng, count):
    """Object texture generators, all different while there are enough kinds."""
    kinds = len(tx.OBJECT_TEXTURES)
    order = np.concatenate([rng.permutation(kinds) for _ in range(-(-count // kinds))])
    return [tx.OBJECT_TEXTURES[k] for k in order[:count]]


def _render(rng, grids, channels, texture, n_shapes, noise):
    yy, xx = grids
    size = yy.shape[0]
    count = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    classes = rng.integers(1, 4, size=count)
    mask = np.zeros(yy.shape, dtype=np.int64)
    flat = _FLAT_GRAY if channels == 1 else _FLAT_RGB
    if texture:
        image = tx.grating(rng, yy, xx, channels)
        fills = _object_textures(rng, count)
    else:
        image = np.broadcast_to(flat[0][:, None, None], (channels,) + yy.shape)
    for k, cls in enumerate(classes):
        inside = _shape_mask(int(cls), rng, yy, xx, size)
        mask[inside] = cls  # later objects paint over earlier ones
        fill = fills[k](rng, yy, xx, channels) if texture else flat[cls][:, None, None]
        image = np.where(inside, fill, image)
    image = image + noise * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0), mask


def _check_common(where, n, size, channels, min_shapes, max_shapes, noise, dtype):
    n = check_positive_int(n, where=where, name="n")
    size = check_positive_int(size, where=where, name="size")
    if size < 16:
        raise ValueError(f"{where}: expected size >= 16, got {size}.")
    check_choice(channels, (1, 3), where=where, name="channels")
    check_positive_int(min_shapes, where=where, name="min_shapes")
    check_positive_int(max_shapes, where=where, name="max_shapes")
    if max_shapes < min_shapes:
        raise ValueError(f"{where}: expected max_shapes >= min_shapes, got "
                         f"min_shapes={min_shapes}, max_shapes={max_shapes}.")
    noise = check_nonnegative_float(noise, where=where, name="noise")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{where}: expected a floating dtype, got {dtype}. "
                        f"Use numpy.float32 or numpy.float64.")
    return n, size, noise, dtype


def _grids(size):
    # pixel centres: row i, column j sit at (i + 0.5, j + 0.5)
    coords = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _image_rng(seed, i, stream=None):
    key = (i,) if stream is None else (i, stream)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def make_shapes(n, *, size=64, channels=1, texture=True, seed=0, min_shapes=1,
                max_shapes=3, noise=0.05, dtype=np.float32):
    r"""Generate ``n`` images of ellipses, rectangles and triangles with masks.

    Parameters
    ----------
    n : int
        Number of images, >= 1.
    size : int, default 64
        Height and width in pixels, >= 16.
    channels : {1, 3}, default 1
        Gray or RGB.
    texture : bool, default True
        Fill regions with textures of equal mean (see Notes); if False, a
        dark flat background and a bright flat level (colour) per class.
    seed : int, default 0
        Seed of the deterministic generator.
    min_shapes, max_shapes : int, default 1 and 3
        Each image holds a uniform random number of objects in this range.
    noise : float, default 0.05
        Standard deviation of the additive gaussian noise.
    dtype : floating dtype, default numpy.float32

    Returns
    -------
    images : ndarray of shape (N, C, H, W)
        Values in [0, 1].
    masks : ndarray of shape (N, H, W), int64
        0 background, 1 ellipse, 2 rectangle, 3 triangle (``CLASS_NAMES``).

    Notes
    -----
    Each object has a centre uniform in [0.2, 0.8]·size, a radius
    r ~ U(0.12, 0.25)·size and a rotation. In its own frame (u, v),

    .. math:: \text{ellipse: } (u/a)^2 + (v/b)^2 \le 1, \quad
              \text{rectangle: } |u| \le a,\ |v| \le b,

    with a = r, b ~ U(0.5, 1)·r; a triangle is the set of points on the same
    side of its three edges. Objects are painted in order, so a later one
    covers an earlier one in the image and in the mask.

    With ``texture=True`` the background is an oriented sine grating and each
    object gets one of uniform noise, a dot lattice or a checkerboard (all
    different within an image while there are enough), every texture
    standardised to mean 0.5 and standard deviation 0.16. Then the pixel
    intensity has the same distribution moments inside and outside the
    objects, and only local texture (e.g. local standard deviation) separates
    them. Checked by
    tests/test_data.py::test_texture_hides_intensity_but_not_local_texture.

    Examples
    --------
    >>> images, masks = make_shapes(4, size=32, seed=1)
    >>> images.shape, images.dtype, masks.shape
    ((4, 1, 32, 32), dtype('float32'), (4, 32, 32))
    """
    where = "make_shapes"
    n, size, noise, dtype = _check_common(where, n, size, channels, min_shapes, max_shapes,
                                          noise, dtype)
    seed = check_nonnegative_int(seed, where=where, name="seed")
    grids = _grids(size)
    images = np.empty((n, channels, size, size), dtype=dtype)
    masks = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        images[i], masks[i] = _render(_image_rng(seed, i), grids, channels, bool(texture),
                                      (min_shapes, max_shapes), noise)
    return images, masks


def _paste_defect(image, rng, grids, kind, noise):
    yy, xx = grids
    size = yy.shape[0]
    cy, cx = rng.uniform(0.15, 0.85, size=2) * size
    radius = max(2.0, rng.uniform(0.06, 0.12) * size)
    if kind == "mixed":
        kind = _DEFECT_KINDS[1 + int(rng.integers(2))]
    if kind == "blob":
        inside = np.hypot(yy - cy, xx - cx) <= radius
        fill = 0.5 + rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.45)
    else:
        u, v = _rotate(yy, xx, cy, cx, rng.uniform(0.0, np.pi / 2))
        inside = (np.abs(u) <= radius) & (np.abs(v) <= radius)
        fill = tx.rings(rng, yy, xx, image.shape[0], centre=(cy, cx))
    fill = fill + noise * rng.standard_normal(image.shape)
    return np.where(inside, np.clip(fill, 0.0, 1.0), image), inside


def make_shapes_anomaly(n, *, size=64, channels=1, seed=0, kind="mixed", fraction=1.0,
                        min_shapes=1, max_shapes=3, noise=0.05, dtype=np.float32):
    """Generate textured shapes images with a foreign defect, and where it is.

    The images are ``make_shapes(n, size=size, channels=channels, seed=seed,
    ...)`` with, in a ``fraction`` of them, one defect pasted over: a
    ``'blob'`` (a flat bright or dark disc, an intensity anomaly) or a
    ``'rings'`` square (concentric rings at the same mean intensity, a
    texture absent from the training textures); ``'mixed'`` picks one per
    image. Train on ``make_shapes`` with another seed.

    Parameters
    ----------
    n, size, channels, seed, min_shapes, max_shapes, noise, dtype
        As in :func:`make_shapes`.
    kind : {'mixed', 'blob', 'rings'}, default 'mixed'
    fraction : float in [0, 1], default 1.0
        Probability that an image gets a defect (others have an empty mask).

    Returns
    -------
    images : ndarray of shape (N, C, H, W)
    anomaly_masks : ndarray of shape (N, H, W), bool
        True where the defect covers the image.

    Examples
    --------
    >>> images, anomaly = make_shapes_anomaly(2, size=32, seed=3)
    >>> images.shape, anomaly.dtype, bool(anomaly.any(axis=(1, 2)).all())
    ((2, 1, 32, 32), dtype('bool'), True)
    """
    where = "make_shapes_anomaly"
    check_choice(kind, _DEFECT_KINDS, where=where, name="kind")
    fraction = check_nonnegative_float(fraction, where=where, name="fraction")
    if fraction > 1:
        raise ValueError(f"{where}: expected fraction in [0, 1], got {fraction!r}.")
    images, _ = make_shapes(n, size=size, channels=channels, texture=True, seed=seed,
                            min_shapes=min_shapes, max_shapes=max_shapes, noise=noise,
                            dtype=dtype)
    grids = _grids(size)
    anomaly = np.zeros((images.shape[0], size, size), dtype=bool)
    for i in range(images.shape[0]):
        rng = _image_rng(seed, i, _DEFECT_STREAM)
        if rng.random() < fraction:
            images[i], anomaly[i] = _paste_defect(images[i], rng, grids, kind, float(noise))
    return images, anomaly
