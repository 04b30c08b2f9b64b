"""load_dataset: one entry point from a name or a path to an ArrayDataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._io import DataFileNotFoundError
from .arrays import load_arrays
from .dataset import ArrayDataset
from .idx import load_mnist
from .images import IMAGE_SUFFIXES, load_image_folder
from .shapes import make_shapes, make_shapes_anomaly

__all__ = ["load_dataset", "BUILTIN_DATASETS", "DEFAULT_SHAPES_N"]

BUILTIN_DATASETS = ("shapes", "shapes-anomaly")
DEFAULT_SHAPES_N = 1000
_MNIST_SPLITS = ("train", "t10k")


def _find_idx(folder, prefix, marker):
    hits = sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.startswith(prefix) and marker in p.name)
    return hits[0] if hits else None


def _from_dir(folder, kw):
    split = kw.get("split", "train")
    images = _find_idx(folder, f"{split}-images", "idx3-ubyte")
    if images is None:
        if "split" in kw:
            raise DataError(f"load_dataset({str(folder)!r}): expected MNIST files named "
                            f"'{split}-images-idx3-ubyte[.gz]' for split={split!r}, got none.")
        return load_image_folder(folder, **kw)
    kw = dict(kw)
    kw.pop("split", None)
    if split not in _MNIST_SPLITS:
        raise ValueError(f"load_dataset: expected split in {_MNIST_SPLITS}, got {split!r}.")
    labels = _find_idx(folder, f"{split}-labels", "idx1-ubyte")
    x, y = load_mnist(images, labels, **kw)
    return ArrayDataset(x, labels=y, source=str(images))


def load_dataset(name_or_path, **kw):
    """Load a data set by built-in name or by path; what ``minicae train --data`` calls.

    Parameters
    ----------
    name_or_path : str or path-like
        - ``'shapes'``: :func:`make_shapes` (``n`` defaults to
          ``DEFAULT_SHAPES_N`` = 1000), with its masks;
        - ``'shapes-anomaly'``: :func:`make_shapes_anomaly`, the anomaly mask
          as int64 0/1 masks;
        - a ``.npz`` / ``.npy`` file: :func:`load_arrays`;
        - a folder holding ``<split>-images-idx3-ubyte[.gz]`` (and
          ``<split>-labels-idx1-ubyte[.gz]``): :func:`load_mnist`, with
          ``split='train'`` (default) or ``'t10k'``;
        - any other folder: :func:`load_image_folder`;
        - any other file: an MNIST-format IDX image file, :func:`load_mnist`
          (``labels_path=`` names its labels).
    **kw
        Passed on to the function chosen.

    Returns
    -------
    ArrayDataset

    Raises
    ------
    DataError
        A name that is neither built in nor an existing path (also a
        ``FileNotFoundError``), and whatever the chosen reader raises.

    Examples
    --------
    >>> load_dataset("shapes", n=3, size=32)
    ArrayDataset(images=(3, 1, 32, 32) float32, masks=(3, 32, 32), source='shapes')
    """
    if name_or_path in BUILTIN_DATASETS:
        n = kw.pop("n", DEFAULT_SHAPES_N)
        if name_or_path == "shapes":
            images, masks = make_shapes(n, **kw)
        else:
            images, anomaly = make_shapes_anomaly(n, **kw)
            masks = anomaly.astype(np.int64)
        return ArrayDataset(images, masks, source=name_or_path)
    path = Path(os.fspath(name_or_path))
    if not path.exists():
        raise DataFileNotFoundError(
            f"load_dataset: expected one of {BUILTIN_DATASETS}, a .npz/.npy file, an IDX "
            f"file or a folder, got {str(name_or_path)!r}, which does not exist. Nothing "
            f"is downloaded: pass the path of files you have (e.g. the MNIST IDX folder).")
    if path.is_dir():
        return _from_dir(path, kw)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        return load_arrays(path, **kw)
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"load_dataset: expected a folder of images, got the single image "
                        f"{str(path)!r}. Pass its folder, {str(path.parent)!r}.")
    images, labels = load_mnist(path, kw.pop("labels_path", None), **kw)
    return ArrayDataset(images, labels=labels, source=str(path))
