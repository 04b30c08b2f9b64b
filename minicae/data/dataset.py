"""ArrayDataset: images with optional masks and labels, indexed together."""

from __future__ import annotations

import numpy as np

from .._validation import check_array, shape_error
from .batching import iterate_minibatches

__all__ = ["ArrayDataset"]


def _shape_text(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


class ArrayDataset:
    """Images (N, C, H, W) with optional masks (N, H, W) and labels (N,).

    Parameters
    ----------
    images : ndarray of shape (N, C, H, W), floating
    masks : ndarray of shape (N, H, W), integer, optional
        Class index per pixel (kept as given; readers return int64).
    labels : ndarray of shape (N,), integer, optional
    source : str, optional
        Where the data came from (a path or a generator name), for messages
        and checkpoint metadata.

    Notes
    -----
    Arrays are stored without copying. ``dataset[idx]`` with a slice or an
    index array returns the subset as a new ``ArrayDataset`` (views or copies
    as NumPy indexing gives them); a bare integer is refused so that a batch
    always keeps its leading axis.

    Examples
    --------
    >>> ds = ArrayDataset(np.zeros((5, 1, 8, 8), np.float32))
    >>> len(ds), ds[np.array([0, 2])].images.shape
    (5, (2, 1, 8, 8))
    """

    def __init__(self, images, masks=None, labels=None, *, source=None):
        where = "ArrayDataset"
        check_array(images, where=where, name="images", ndim=4, shape_text="(N, C, H, W)")
        n, _, h, w = images.shape
        if masks is not None:
            check_array(masks, where=where, name="masks", float_only=False)
            if masks.dtype.kind not in "biu":
                raise TypeError(f"{where}: expected integer masks, got dtype {masks.dtype}. "
                                f"Convert with masks.astype(numpy.int64).")
            if masks.shape != (n, h, w):
                raise shape_error(where, f"masks of shape {_shape_text((n, h, w))}",
                                  masks.shape)
        if labels is not None:
            check_array(labels, where=where, name="labels", float_only=False)
            if labels.dtype.kind not in "biu":
                raise TypeError(f"{where}: expected integer labels, got dtype "
                                f"{labels.dtype}. Convert with labels.astype(numpy.int64).")
            if labels.shape != (n,):
                raise shape_error(where, f"labels of shape ({n},)", labels.shape)
        self.images = images
        self.masks = masks
        self.labels = labels
        self.source = source

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        if isinstance(index, tuple):
            raise TypeError(f"ArrayDataset: expected a slice or an index array, got the "
                            f"tuple {index!r}. Index samples only: dataset[idx].")
        if isinstance(index, (int, np.integer)):
            raise TypeError(f"ArrayDataset: expected a slice or an index array, got the "
                            f"integer {index!r}. Use dataset[[{index}]] for one sample.")
        subset = object.__new__(ArrayDataset)
        subset.images = self.images[index]
        subset.masks = None if self.masks is None else self.masks[index]
        subset.labels = None if self.labels is None else self.labels[index]
        subset.source = self.source
        return subset

    def batches(self, batch_size, *, rng, shuffle=True, drop_last=False):
        """Yield subsets of ``batch_size`` samples; see :func:`iterate_minibatches`."""
        indices = iterate_minibatches(len(self), batch_size, rng=rng, shuffle=shuffle,
                                      drop_last=drop_last)
        return (self[index] for index in indices)

    def __repr__(self):
        parts = [f"images={_shape_text(self.images.shape)} {self.images.dtype}"]
        if self.masks is not None:
            parts.append(f"masks={_shape_text(self.masks.shape)}")
        if self.labels is not None:
            parts.append(f"labels={_shape_text(self.labels.shape)}")
        if self.source is not None:
            parts.append(f"source={self.source!r}")
        return f"ArrayDataset({', '.join(parts)})"
