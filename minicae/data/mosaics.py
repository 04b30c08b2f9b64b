r"""Texture mosaics cut from real photographs that installed packages ship.

The photographs come with the scikit-image and scikit-learn wheels (no
download: only files bundled in the wheel are read). Each texture is one
region of one photograph, converted to gray in [0, 1]:

========  ==========================================  =======================
name      source                                      region (rows, cols)
========  ==========================================  =======================
brick     ``skimage.data.brick()``                    all, 512 x 512
grass     ``skimage.data.grass()``                    all, 512 x 512
gravel    ``skimage.data.gravel()``                   all, 512 x 512
trees     ``sklearn.datasets.load_sample_image``      china.jpg [300:427, :]
          ("china.jpg"), mean of RGB
text      ``skimage.data.text()``                     all, 172 x 448
========  ==========================================  =======================

The silhouette shapes are ``skimage.data.horse()``, scaled and flipped.

**Split by source region.** Each texture region is cut along its longer
axis into three bands: the first 60 % feeds the ``'train'`` split, the next
20 % ``'val'`` and the last 20 % ``'test'``; a split's patches come only from
its band, so no test pixel of a photograph is ever seen in training.

**Roles.** With two textures per image the background is brick, grass or
gravel and the foreground trees or text, so "foreground" names textures a
few-label head can learn; with three to five, the textures are drawn from
all five and every region is a different one.

**Intensity matching.** The pixels each texture shows in an image are
scaled to mean 0.5 and standard deviation 0.15 (then clipped to [0, 1]),
so brightness and contrast alone cannot tell two regions apart.

Image ``i`` of a split is drawn from the stream ``[seed, split, i]``; the
first ``m`` images of a set are the set of ``m`` images.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, check_positive_int

__all__ = ["make_texture_mosaics", "texture_sources", "TEXTURE_NAMES", "SPLITS"]

TEXTURE_NAMES = ("brick", "grass", "gravel", "trees", "text")
SPLITS = ("train", "val", "test")
_BANDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}
_MEAN, _STD = 0.5, 0.15
_BACKGROUNDS, _FOREGROUNDS = (0, 1, 2), (3, 4)      # brick, grass, gravel | trees, text
_SHAPES = ("ellipse", "polygon", "blob", "silhouette")
_CACHE = {}


def _photographs():
    try:
        from skimage import data as skdata
        from sklearn.datasets import load_sample_image
    except ImportError as exc:      # RuntimeError, as plots does: the CLI prints one line
        raise RuntimeError(f"make_texture_mosaics: the real-photograph textures need "
                          f"scikit-image and scikit-learn ({exc}). Install them with: "
                          f'pip install "minicae[realdata]".') from exc
    china = load_sample_image("china.jpg").astype(np.float64).mean(axis=2) / 255.0
    regions = {"brick": skdata.brick() / 255.0, "grass": skdata.grass() / 255.0,
               "gravel": skdata.gravel() / 255.0, "trees": china[300:427, :],
               "text": skdata.text() / 255.0}
    return regions, skdata.horse()


def texture_sources():
    """``({name: gray region in [0, 1]}, horse silhouette)``, read once per process."""
    if not _CACHE:
        regions, horse = _photographs()
        _CACHE["regions"] = {k: np.asarray(v, np.float64) for k, v in regions.items()}
        _CACHE["horse"] = ~np.asarray(horse, bool)        # the horse is the False pixels
    return _CACHE["regions"], _CACHE["horse"]


def _band(region, split):
    lo, hi = _BANDS[split]
    if region.shape[0] >= region.shape[1]:
        n = region.shape[0]
        return region[int(lo * n):int(hi * n)]
    n = region.shape[1]
    return region[:, int(lo * n):int(hi * n)]


def _patch(rng, band, size):
    h, w = band.shape
    if h < size or w < size:
        raise ValueError(f"make_texture_mosaics: expected texture bands of at least "
                         f"{size}x{size} pixels, got {h}x{w}. Use a smaller size.")
    r, c = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    p = band[r:r + size, c:c + size]
    return p[:, ::-1] if rng.random() < 0.5 else p


def _polygon(rng, yy, xx, cy, cx, r):
    """A star-shaped polygon: inside = the angle's radius exceeds the pixel's."""
    k = int(rng.integers(3, 9))
    theta = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = r * rng.uniform(0.6, 1.3, k)
    ang = np.arctan2(yy - cy, xx - cx) % (2 * np.pi)
    # radius of the boundary at each pixel's angle: linear between vertices
    t = np.concatenate([theta - 2 * np.pi, theta, theta + 2 * np.pi])
    bound = np.interp(ang, t, np.tile(rad, 3))
    return np.hypot(yy - cy, xx - cx) <= bound


def _blob(rng, size, frac):
    """Smoothed noise above its (1 − frac) quantile: one or a few soft blobs."""
    coarse = rng.standard_normal((5, 5))
    axis = np.linspace(0, 4, size)
    i0 = np.minimum(axis.astype(int), 3)
    f = axis - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    field = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    return field > np.quantile(field, 1 - frac)


def _silhouette(rng, horse, size):
    scale = rng.uniform(0.55, 0.95) * size / max(horse.shape)
    h, w = int(horse.shape[0] * scale), int(horse.shape[1] * scale)
    rows = (np.arange(h) / scale).astype(int)
    cols = (np.arange(w) / scale).astype(int)
    small = horse[rows][:, cols]                          # nearest-neighbour resize
    if rng.random() < 0.5:
        small = small[:, ::-1]
    out = np.zeros((size, size), bool)
    r, c = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
    out[r:r + h, c:c + w] = small
    return out


def _region(rng, kind, grids, size, horse):
    yy, xx = grids
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    r = rng.uniform(0.18, 0.32) * size
    if kind == "ellipse":
        a, b, angle = r, r * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0         # (u/a)² + (v/b)² ≤ 1
    if kind == "polygon":
        return _polygon(rng, yy, xx, cy, cx, r)
    if kind == "blob":
        return _blob(rng, size, rng.uniform(0.2, 0.45))
    return _silhouette(rng, horse, size)


def _mosaic(rng, k, size, split, regions, horse, grids):
    if k == 2:      # fixed roles, so that a few-label head can learn what foreground is
        names = [rng.choice(_BACKGROUNDS), rng.choice(_FOREGROUNDS)]
    else:
        names = rng.choice(len(TEXTURE_NAMES), size=k, replace=False)
    min_area = 0.04 * size * size
    for _ in range(50):
        mask = np.zeros((size, size), np.int64)
        for cls in range(1, k):
            mask[_region(rng, _SHAPES[int(rng.integers(len(_SHAPES)))], grids, size,
                         horse)] = cls
        if np.bincount(mask.ravel(), minlength=k).min() >= min_area:
            break
    image = np.zeros((size, size))
    for cls, t in enumerate(names):
        inside = mask == cls
        v = _patch(rng, _band(regions[TEXTURE_NAMES[int(t)]], split), size)[inside]
        # intensity matching on the pixels shown: mean 0.5, standard deviation 0.15
        image[inside] = (v - v.mean()) / max(v.std(), 1e-6) * _STD + _MEAN
    return np.clip(image, 0.0, 1.0), mask, names


def make_texture_mosaics(n, *, size=64, n_textures=2, split="train", seed=0,
                         dtype=np.float32, return_textures=False):
    """Mosaics of real-photograph textures with their region masks.

    Parameters
    ----------
    n : int
        Number of images.
    size : int, default 64
        Images are (size x size); at most 64 (the narrowest test band).
    n_textures : int or (int, int), default 2
        Textures per image (2 to 5), or an inclusive range drawn per image.
        Region 0 is the background; regions 1.. are ellipses, star-shaped
        polygons, blobs or horse silhouettes pasted in turn (each keeps at
        least 4 % of the image).
    split : {'train', 'val', 'test'}
        Which band of every photograph the patches come from.
    seed : int
    return_textures : bool
        Also return the (N, k_max) texture indices of each region (−1: none).

    Returns
    -------
    images : ndarray of shape (N, 1, size, size)
    masks : int64 ndarray of shape (N, size, size)
        Region index per pixel: 0 background, 1 .. k−1 the pasted regions.
    """
    where = "make_texture_mosaics"
    check_positive_int(n, where=where, name="n")
    check_positive_int(size, where=where, name="size")
    check_choice(split, SPLITS, where=where, name="split")
    lo, hi = (n_textures, n_textures) if np.ndim(n_textures) == 0 else tuple(n_textures)
    if not 2 <= int(lo) <= int(hi) <= len(TEXTURE_NAMES):
        raise ValueError(f"{where}: expected n_textures between 2 and "
                         f"{len(TEXTURE_NAMES)} (an int or a (low, high) pair), got "
                         f"{n_textures!r}.")
    regions, horse = texture_sources()
    grids = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.empty((n, 1, size, size), dtype)
    masks = np.empty((n, size, size), np.int64)
    textures = np.full((n, int(hi)), -1, np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        k = int(rng.integers(int(lo), int(hi) + 1))
        images[i, 0], masks[i], textures[i, :k] = _mosaic(rng, k, size, split, regions,
                                                          horse, grids)
    return (images, masks, textures) if return_textures else (images, masks)
