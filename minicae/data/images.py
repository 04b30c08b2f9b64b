"""A folder of PNG/JPEG images (and a folder of masks), read with Pillow."""

from __future__ import annotations

import warnings

import numpy as np

from .._validation import as_pair
from ..errors import DataError
from ._io import check_size, existing_dir
from .arrays import as_images, as_masks
from .dataset import ArrayDataset

__all__ = ["load_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            f"load_image_folder: Pillow is not installed ({type(exc).__name__}: {exc}). "
            f'Install it with: pip install "minicae[images]".') from exc
    return Image


def _listing(folder):
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _open(image_lib, path, where):
    """Pillow's lazy open (the header only); a decompression bomb is a DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_lib.DecompressionBombWarning)
            return image_lib.open(path)
    except (image_lib.DecompressionBombError, image_lib.DecompressionBombWarning) as exc:
        raise DataError(f"{where}: expected images of at most {image_lib.MAX_IMAGE_PIXELS} "
                        f"pixels (Pillow's decompression-bomb limit), got {str(path)!r} "
                        f"({exc}). Downscale it first.") from exc


def _check_folder_size(image_lib, paths, *, channels, size, where):
    """Sum the decoded size from the headers alone, before any image is decoded."""
    pixels = 0
    for path in paths:
        if size is not None:
            pixels += size[0] * size[1]
            continue
        try:
            with _open(image_lib, path, where) as im:
                pixels += im.size[0] * im.size[1]
        except (OSError, ValueError, SyntaxError) as exc:
            if isinstance(exc, DataError):
                raise
            continue                         # unreadable: _read names it below
    # uint8 pixels, their stack, then float32 images
    check_size(6 * channels * pixels, where=where, what=f"{len(paths)} images")


def _read(image_lib, path, *, mode, size, resample, where):
    """One image as a (H, W) or (H, W, C) uint8/int array, resized if asked."""
    try:
        with _open(image_lib, path, where) as im:
            if mode == "mask":
                if im.mode in ("RGB", "RGBA", "LA"):
                    bands = np.asarray(im.convert("RGB"))
                    if not (bands == bands[..., :1]).all():
                        raise DataError(f"{where}: expected a single-channel mask (modes L, P, "
                                        f"1, I), got a coloured {im.mode} image in "
                                        f"{str(path)!r}. Save class indices as a gray PNG.")
                    im = im.convert("L")
                elif im.mode == "1":
                    im = im.convert("L")
            else:
                im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), resample=resample)
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: expected a readable PNG or JPEG image, got "
                        f"{str(path)!r}, which Pillow cannot read ({type(exc).__name__}: "
                        f"{exc}).") from exc


def _stack(arrays, paths, where):
    first = arrays[0].shape[:2]
    for array, path in zip(arrays, paths):
        if array.shape[:2] != first:
            raise DataError(
                f"{where}: expected every image to be {first[0]}x{first[1]} like "
                f"{paths[0].name!r}, got {array.shape[0]}x{array.shape[1]} in "
                f"{str(path)!r}. Pass size=(H, W) to resize them.")
    return np.stack(arrays)


def _mask_paths(mask_folder, image_paths, where):
    by_stem = {}
    for path in _listing(mask_folder):
        if path.stem in by_stem:
            raise DataError(f"{where}: expected one mask per stem in {str(mask_folder)!r}, "
                            f"got both {by_stem[path.stem].name!r} and {path.name!r}.")
        by_stem[path.stem] = path
    missing = [p.name for p in image_paths if p.stem not in by_stem]
    if missing:
        raise DataError(f"{where}: expected a mask with the same stem for every image in "
                        f"{str(mask_folder)!r}, got none for {len(missing)} image(s), e.g. "
                        f"{missing[:3]}. Name masks like the images (cat.jpg -> cat.png).")
    return [by_stem[p.stem] for p in image_paths]


def load_image_folder(path, *, mask_dir=None, size=None, grayscale=True, dtype=np.float32):
    """Read every PNG/JPEG image of a folder, sorted by name, with optional masks.

    Parameters
    ----------
    path : str or path-like
        Folder of ``.png``, ``.jpg`` or ``.jpeg`` files (other files and
        hidden files are ignored; no recursion).
    mask_dir : str or path-like, optional
        Folder holding one single-channel mask per image, matched by file
        stem (``img_01.jpg`` <-> ``img_01.png``); pixel values are class
        indices.
    size : int or (int, int), optional
        Resize everything to (H, W): bilinear for images, nearest for masks.
        Without it all images must already share one size.
    grayscale : bool, default True
        Convert to one channel (Pillow mode L); otherwise to RGB.
    dtype : floating dtype, default numpy.float32

    Returns
    -------
    ArrayDataset
        Images (N, C, H, W) in [0, 1] (8-bit value / 255), masks (N, H, W)
        int64 or None.

    Raises
    ------
    DataError
        Missing folder (also a ``FileNotFoundError``), no images, an
        unreadable file, differing sizes without ``size``, a missing or
        coloured mask.
    ImportError
        Pillow is not installed (``pip install "minicae[images]"``).

    Notes
    -----
    A mask folder whose values are only {0, 255} is read as {0, 1}: that is
    how binary masks are usually saved as 8-bit PNGs.
    """
    where = f"load_image_folder({str(path)!r})"
    folder = existing_dir(path, where=where, what="a folder of images")
    if size is not None:
        size = as_pair(size, where=where, name="size")
    paths = _listing(folder)
    if not paths:
        raise DataError(f"{where}: expected at least one {'/'.join(IMAGE_SUFFIXES)} file, "
                        f"got none among {sum(1 for _ in folder.iterdir())} entries.")
    image_lib = _pillow()
    resampling = getattr(image_lib, "Resampling", image_lib)  # Pillow >= 9.1 has the enum
    mode = "L" if grayscale else "RGB"
    _check_folder_size(image_lib, paths, channels=1 if grayscale else 3, size=size,
                       where=where)
    pixels = [_read(image_lib, p, mode=mode, size=size, resample=resampling.BILINEAR,
                    where=where) for p in paths]
    raw = _stack(pixels, paths, where)
    images = as_images(raw if grayscale else raw.transpose(0, 3, 1, 2), where=where,
                       dtype=dtype)
    masks = None
    if mask_dir is not None:
        mask_folder = existing_dir(mask_dir, where=where, what="a folder of masks")
        mask_paths = _mask_paths(mask_folder, paths, where)
        labels = [_read(image_lib, p, mode="mask", size=size, resample=resampling.NEAREST,
                        where=where) for p in mask_paths]
        for label, image, mask_path in zip(labels, pixels, mask_paths):
            if label.shape[:2] != image.shape[:2]:
                raise DataError(f"{where}: expected mask {str(mask_path)!r} to be "
                                f"{image.shape[0]}x{image.shape[1]} like its image, got "
                                f"{label.shape[0]}x{label.shape[1]}.")
        stacked = np.stack(labels)
        if stacked.max() == 255 and np.isin(stacked, (0, 255)).all():
            stacked = (stacked == 255).astype(np.int64)  # binary {0, 255} -> {0, 1}
        masks = as_masks(stacked, where=where, images=images)
    return ArrayDataset(images, masks, source=str(folder))
