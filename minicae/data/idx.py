"""IDX files (the MNIST / Fashion-MNIST format): read, write, and the MNIST pair.

Layout: a 4-byte magic number ``00 00 TT DD`` (two zero bytes, a type byte
``TT``, the rank ``DD``), then ``DD`` big-endian uint32 sizes, then the values
in C order, big-endian. MNIST images are ``0x00000803`` (unsigned bytes, 3
dimensions (N, 28, 28)); labels are ``0x00000801`` (unsigned bytes, (N,)).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from ._io import atomic_write, check_size, open_stream, read_upto

__all__ = ["load_idx", "write_idx", "load_mnist"]

# type byte -> big-endian dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TYPE_BYTES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
MNIST_IMAGES_MAGIC = 0x00000803
MNIST_LABELS_MAGIC = 0x00000801


def _describe_magic(magic):
    code, rank = (magic >> 8) & 0xFF, magic & 0xFF
    kind = np.dtype(_IDX_TYPES[code]).name if code in _IDX_TYPES else "unknown type"
    return f"0x{magic:08x} ({kind}, {rank} dimensions)"


def _read_idx(path, where):
    """Parse an IDX file; return (native-endian array, magic number).

    Reads the header, then exactly the bytes it promises plus one: a file
    (or a gzip stream) longer than its header says is refused unread.
    """
    with open_stream(path, where=where, what="an IDX file") as (stream, size):
        raw = stream.read(4)
        if len(raw) < 4:
            raise DataError(f"{where}: expected at least the 4-byte IDX magic number, got "
                            f"a {len(raw)}-byte file. The file is truncated or not an IDX "
                            f"file.")
        magic = int.from_bytes(raw, "big")
        code, rank = raw[2], raw[3]
        if raw[0] != 0 or raw[1] != 0 or code not in _IDX_TYPES or rank == 0:
            types = ", ".join(f"0x{c:02x}" for c in _IDX_TYPES)
            raise DataError(
                f"{where}: expected an IDX magic number 0x0000TTDD (two zero bytes, a type "
                f"byte TT in {types}, a rank DD >= 1), got 0x{magic:08x}. This is not an "
                f"IDX (MNIST-format) file.")
        header = 4 + 4 * rank
        dims = stream.read(4 * rank)
        if len(dims) < 4 * rank:
            raise DataError(f"{where}: expected a {header}-byte header for rank {rank}, "
                            f"got {4 + len(dims)} bytes. The file is truncated.")
        shape = tuple(int.from_bytes(dims[4 * k: 4 + 4 * k], "big") for k in range(rank))
        dtype = np.dtype(_IDX_TYPES[code])
        expected = math.prod(shape) * dtype.itemsize
        actual = None if size is None else size - header
        if actual is None or actual == expected:
            check_size(expected, where=where, what=f"an IDX array of shape {shape}")
            body = read_upto(stream, expected)
            actual = len(body) + len(stream.read(1))     # one byte more: too long
        if actual != expected:
            what = "truncated" if actual < expected else "longer than its header says"
            got = f"{actual}" if size is not None or actual < expected else f"at least {actual}"
            raise DataError(
                f"{where}: expected {expected} data bytes after the {header}-byte header "
                f"(shape {shape} of {dtype.name}), got {got}. The file is {what}; fetch "
                f"it again.")
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("=")), magic


def load_idx(path):
    """Read an IDX file (plain or gzip) into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file; gzip compression is detected from its first bytes.

    Returns
    -------
    ndarray
        Native byte order, with the shape and dtype stored in the header.

    Raises
    ------
    DataError
        Missing file (also a ``FileNotFoundError``), a wrong magic number, a
        truncated or over-long file (with the expected and actual byte
        counts), or corrupt gzip data.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.idx.gz")
    >>> write_idx(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> load_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    return _read_idx(path, f"load_idx({str(path)!r})")[0]


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in .gz.

    Parameters
    ----------
    path : str or path-like
    array : array_like
        dtype uint8, int8, int16, int32, float32 or float64; 1 to 255
        dimensions, each below 2**32. The write is atomic.
    """
    where = f"write_idx({str(path)!r})"
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _TYPE_BYTES:
        names = ", ".join(np.dtype(v).name for v in _IDX_TYPES.values())
        raise TypeError(f"{where}: expected an array of dtype {names}, got {array.dtype}. "
                        f"Convert it with array.astype(numpy.uint8), for example.")
    if not 1 <= array.ndim <= 255 or max(array.shape) >= 2**32:
        raise ValueError(f"{where}: expected 1 to 255 dimensions, each < 2**32, got "
                         f"shape {array.shape}.")
    header = bytes([0, 0, _TYPE_BYTES[dtype], array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    body = np.ascontiguousarray(array, dtype=np.dtype(_IDX_TYPES[_TYPE_BYTES[dtype]]))
    atomic_write(path, header + body.tobytes(), compress=str(path).endswith(".gz"))


def _read_mnist_part(path, magic_wanted, what):
    where = f"load_mnist({str(path)!r})"
    array, magic = _read_idx(path, where)
    if magic != magic_wanted:
        raise DataError(f"{where}: expected an MNIST {what} file, magic "
                        f"{_describe_magic(magic_wanted)}, got {_describe_magic(magic)}. "
                        f"Check that images and labels are not swapped.")
    return array


def load_mnist(images_path, labels_path=None, *, dtype=np.float32):
    """Read MNIST-format images (and labels) from IDX files.

    Works for MNIST, Fashion-MNIST, KMNIST and EMNIST files, plain or gzip.

    Parameters
    ----------
    images_path : str or path-like
        IDX file with magic 0x00000803 (uint8, shape (N, H, W)).
    labels_path : str or path-like, optional
        IDX file with magic 0x00000801 (uint8, shape (N,)).
    dtype : floating dtype, default numpy.float32

    Returns
    -------
    images : ndarray of shape (N, 1, H, W)
        Pixel values divided by 255, in [0, 1].
    labels : ndarray of shape (N,), int64, or None
        None when ``labels_path`` is not given.

    Raises
    ------
    DataError
        As :func:`load_idx`, plus a wrong magic number for the part and an
        image count that differs from the label count.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"load_mnist: expected a floating dtype, got {dtype}.")
    raw = _read_mnist_part(images_path, MNIST_IMAGES_MAGIC, "images")
    images = (raw[:, None, :, :] / dtype.type(255)).astype(dtype, copy=False)  # x = byte / 255
    if labels_path is None:
        return images, None
    labels = _read_mnist_part(labels_path, MNIST_LABELS_MAGIC, "labels").astype(np.int64)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"load_mnist: expected as many labels as images, got {images.shape[0]} images "
            f"in {str(images_path)!r} and {labels.shape[0]} labels in "
            f"{str(labels_path)!r}. Pair the files of the same split (train or t10k).")
    return images, labels
