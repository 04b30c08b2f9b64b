"""File checks and writes shared by the readers: existence, gzip, atomic replace."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from .._runfiles import atomic_write as _atomic_write
from ..errors import DataError

__all__ = ["DataFileNotFoundError", "existing_file", "existing_dir", "read_bytes",
           "atomic_write"]

_GZIP_MAGIC = b"\x1f\x8b"


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or directory does not exist (a DataError and a FileNotFoundError)."""


def _existing(path, where, what):
    """``Path(path)``, or DataFileNotFoundError naming it when it does not exist."""
    path = Path(os.fspath(path))
    if not path.exists():
        raise DataFileNotFoundError(
            f"{where}: expected {what}, got {str(path)!r}, which does not exist. "
            f"Check the path (relative paths start at {os.getcwd()!r}).")
    return path


def existing_file(path, *, where, what="a file"):
    """Return ``Path(path)`` if it is an existing file, else raise naming it."""
    path = _existing(path, where, what)
    if not path.is_file():
        raise DataError(f"{where}: expected {what}, got {str(path)!r}, which is a "
                        f"directory or a special file.")
    return path


def existing_dir(path, *, where, what="a directory"):
    """Return ``Path(path)`` if it is an existing directory, else raise naming it."""
    path = _existing(path, where, what)
    if not path.is_dir():
        raise DataError(f"{where}: expected {what}, got {str(path)!r}, which is a file.")
    return path


def read_bytes(path, *, where, what="a file"):
    """All bytes of a file, gunzipped when it starts with the gzip magic 1f 8b."""
    path = existing_file(path, where=where, what=what)
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{where}: expected a complete gzip stream in {str(path)!r}, got "
            f"{len(raw)} compressed bytes that do not decompress "
            f"({type(exc).__name__}: {exc}). The file is truncated or corrupt; "
            f"fetch it again.") from exc


def atomic_write(path, payload, *, compress=False):
    """Write ``payload`` (bytes) to ``path`` atomically (minicae's one atomic writer)."""

    def write(handle):
        if compress:
            # mtime=0 makes the archive bytes depend on the payload only
            with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as gz:
                gz.write(payload)
        else:
            handle.write(payload)

    _atomic_write(path, write)
