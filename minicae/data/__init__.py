"""Data: the generated shapes set, readers for user files, and batching.

Host (NumPy) arrays only; move batches to the device with
``minicae.to_device``. Pillow is imported only by :func:`load_image_folder`.

- ``make_shapes``, ``make_shapes_anomaly`` (shapes.py): the built-in set;
- ``load_idx``, ``write_idx``, ``load_mnist`` (idx.py): MNIST-format files;
- ``load_arrays`` (arrays.py): ``.npz`` / ``.npy``, never with pickle;
- ``load_image_folder`` (images.py): PNG/JPEG folders with masks;
- ``make_texture_mosaics`` (mosaics.py): real-photograph texture mosaics
  (needs the ``realdata`` extra);
- ``ArrayDataset`` (dataset.py), ``train_val_split``,
  ``iterate_minibatches`` (batching.py);
- ``load_dataset`` (sources.py): name or path -> ``ArrayDataset``.
"""

from __future__ import annotations

from ._io import DataFileNotFoundError
from .arrays import load_arrays
from .batching import iterate_minibatches, train_val_split
from .dataset import ArrayDataset
from .idx import load_idx, load_mnist, write_idx
from .images import load_image_folder
from .mosaics import TEXTURE_NAMES, make_texture_mosaics
from .shapes import CLASS_NAMES, make_shapes, make_shapes_anomaly
from .sources import BUILTIN_DATASETS, DEFAULT_SHAPES_N, load_dataset

__all__ = ["make_shapes", "make_shapes_anomaly", "CLASS_NAMES", "load_idx", "write_idx",
           "load_mnist", "load_arrays", "load_image_folder", "ArrayDataset",
           "train_val_split", "iterate_minibatches", "load_dataset", "BUILTIN_DATASETS",
           "DEFAULT_SHAPES_N", "DataFileNotFoundError", "make_texture_mosaics",
           "TEXTURE_NAMES"]
