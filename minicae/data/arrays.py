"""NumPy files (.npz / .npy) and the checks every reader applies to what it read."""

from __future__ import annotations

import math
import zipfile

import numpy as np

from ..errors import DataError
from ._io import check_size, existing_file
from .dataset import ArrayDataset

__all__ = ["load_arrays", "as_images", "as_masks", "as_labels"]

_NPZ_KEYS = ("images", "masks", "labels")


def _check_finite(x, where, name):
    # sum first (one pass, no temporary): only a non-finite sum needs the full scan
    if np.isfinite(x.sum(dtype=np.float64)):
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: expected finite {name}, got {int(bad.sum())} NaN or inf "
                        f"values (the first at index {first}). Clean or drop those samples.")


def as_images(x, *, where, dtype=np.float32):
    """Check read images and return them as (N, C, H, W) floats.

    (N, H, W) gains a channel axis; uint8 is divided by 255; floats are cast
    to ``dtype`` and must be finite. Anything else raises DataError.
    """
    if x.dtype.kind not in "uif" or (x.dtype.kind in "ui" and x.dtype != np.uint8):
        raise DataError(f"{where}: expected uint8 or floating-point images, got dtype "
                        f"{x.dtype}. Save them as uint8 (0..255) or float32 (0..1).")
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim != 4:
        raise DataError(f"{where}: expected images of shape (N, H, W) or (N, C, H, W), "
                        f"got {x.shape}.")
    if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        raise DataError(f"{where}: expected images of shape (N, C, H, W), got {x.shape}, "
                        f"which looks channels-last. Save x.transpose(0, 3, 1, 2).")
    if x.shape[0] == 0:
        raise DataError(f"{where}: expected at least one image, got shape {x.shape}.")
    if x.dtype == np.uint8:
        return (x / np.dtype(dtype).type(255)).astype(dtype, copy=False)  # x = byte / 255
    _check_finite(x, where, "images")
    return x.astype(dtype, copy=False)


def as_masks(m, *, where, images):
    """Check read masks against ``images`` and return them as int64 (N, H, W)."""
    n, _, h, w = images.shape
    if m.dtype.kind not in "biu":
        raise DataError(f"{where}: expected integer class masks, got dtype {m.dtype}. "
                        f"Store class indices 0, 1, 2, ... as uint8 or int64.")
    if m.shape != (n, h, w):
        raise DataError(f"{where}: expected masks of shape {(n, h, w)} to match the images "
                        f"{images.shape}, got {m.shape}.")
    if m.dtype.kind == "i" and m.size and m.min() < 0:
        raise DataError(f"{where}: expected class indices >= 0 in masks, got {m.min()}.")
    return m.astype(np.int64)


def as_labels(labels, *, where, n):
    """Check read labels and return them as int64 (N,)."""
    if labels.dtype.kind not in "biu":
        raise DataError(f"{where}: expected integer labels, got dtype {labels.dtype}.")
    if labels.shape != (n,):
        raise DataError(f"{where}: expected labels of shape ({n},) to match the images, "
                        f"got {labels.shape}.")
    return labels.astype(np.int64)


def _load_npz_member(archive, key, where):
    try:
        return archive[key]
    except ValueError as exc:
        # np.load(allow_pickle=False) refuses object arrays: that is the point
        raise DataError(f"{where}: expected a numeric array under key {key!r}, got one that "
                        f"needs pickle to load ({exc}). Save plain numeric arrays, e.g. "
                        f"numpy.savez(path, images=x.astype(numpy.float32)).") from exc


def _check_npy_header(stream, declared, where, name):
    """Read a .npy header; refuse object dtypes, sizes past the memory, size mismatches."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0      # 2.0 and 3.0 share the layout
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{where}: expected a NumPy .npy or .npz file, got {name}, whose "
                        f"header does not load ({type(exc).__name__}: {exc}).") from exc
    if dtype.hasobject:
        raise DataError(f"{where}: expected a numeric array in {name}, got dtype {dtype}, "
                        f"which needs pickle to load. Save plain numeric arrays, e.g. "
                        f"numpy.savez(path, images=x.astype(numpy.float32)).")
    expected = math.prod(shape) * dtype.itemsize
    check_size(expected, where=where, what=f"{name} (shape {shape}, {dtype})")
    if declared - stream.tell() != expected:
        raise DataError(f"{where}: expected {expected} data bytes in {name} (shape "
                        f"{shape}, {dtype}), got {declared - stream.tell()}. The file is "
                        f"truncated, padded or corrupt.")


def _open(path, where):
    """np.load, after every array's header and size were checked unread."""
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as fh:
                _check_npy_header(fh, path.stat().st_size, where, path.name)
        else:
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                check_size(sum(m.file_size for m in members), where=where,
                           what=f"the {len(members)} arrays of the archive")
                for member in members:
                    with archive.open(member) as stream:
                        _check_npy_header(stream, member.file_size, where, member.filename)
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: expected a NumPy .npy or .npz file, got one that does "
                        f"not load ({type(exc).__name__}: {exc}).") from exc


def load_arrays(path, *, dtype=np.float32):
    """Read images (and masks or labels) from a .npz or .npy file.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` holding the images, or a ``.npz`` with the key ``images``
        and optionally ``masks`` (N, H, W) and ``labels`` (N,).
    dtype : floating dtype, default numpy.float32

    Returns
    -------
    ArrayDataset
        Images (N, C, H, W) in ``dtype`` (uint8 divided by 255; (N, H, W)
        gains a channel axis), masks and labels as int64 or None.

    Raises
    ------
    DataError
        Missing file (also a ``FileNotFoundError``), a file that needs pickle,
        missing or unknown keys, a non-numeric, complex or wrong-rank array,
        NaN or inf values, counts that do not match.

    Notes
    -----
    Files are always opened with ``allow_pickle=False``: an object array in
    a data file is refused, never executed.
    """
    where = f"load_arrays({str(path)!r})"
    path = existing_file(path, where=where, what="a .npz or .npy file")
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"load_arrays: expected a floating dtype, got {np.dtype(dtype)}.")
    loaded = _open(path, where)
    if isinstance(loaded, np.ndarray):
        return ArrayDataset(as_images(loaded, where=where, dtype=dtype), source=str(path))
    with loaded as archive:
        keys = list(archive.files)
        unknown = [k for k in keys if k not in _NPZ_KEYS]
        if "images" not in keys or unknown:
            raise DataError(f"{where}: expected keys 'images' and optionally 'masks', "
                            f"'labels', got {keys}. Save with numpy.savez(path, images=x, "
                            f"masks=m).")
        arrays = {k: _load_npz_member(archive, k, where) for k in keys}
    images = as_images(arrays["images"], where=where, dtype=dtype)
    masks = arrays.get("masks")
    labels = arrays.get("labels")
    return ArrayDataset(
        images,
        None if masks is None else as_masks(masks, where=where, images=images),
        None if labels is None else as_labels(labels, where=where, n=images.shape[0]),
        source=str(path))
