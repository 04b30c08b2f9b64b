"""File checks and writes shared by the readers: existence, gzip, atomic replace."""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from pathlib import Path

from .._runfiles import atomic_write as _atomic_write
from ..errors import DataError

__all__ = ["DataFileNotFoundError", "existing_file", "existing_dir",
           "atomic_write", "memory_limit", "check_size", "gib", "open_stream", "read_upto"]

_GZIP_MAGIC = b"\x1f\x8b"


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or directory does not exist (a DataError and a FileNotFoundError)."""


def memory_limit():
    """Bytes one reader or run may allocate: the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):    # no sysconf: refuse only absurd sizes
        return 2**40


def gib(nbytes):
    """``nbytes`` as text in GiB (MiB below 1 GiB)."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_size(nbytes, *, where, what, fix=""):
    """Raise DataError before allocating ``nbytes`` that the machine does not have."""
    limit = memory_limit()
    if nbytes > limit:
        raise DataError(f"{where}: {what} needs {gib(nbytes)}, more than this machine's "
                        f"{gib(limit)} of memory.{' ' + fix if fix else ''}")


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


@contextlib.contextmanager
def open_stream(path, *, where, what="a file"):
    """Yield ``(stream, size)``: the file, gunzipped on the fly when it starts with 1f 8b.

    ``size`` is the byte count of a plain file and None for gzip, whose
    decompressed length is known only by reading it: readers take what the
    header promises plus one byte, never the whole stream.
    """
    path = existing_file(path, where=where, what=what)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        try:
            if not compressed:
                yield raw, path.stat().st_size
                return
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream, None
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(
                f"{where}: expected a complete gzip stream in {str(path)!r}, got "
                f"{path.stat().st_size} compressed bytes that do not decompress "
                f"({type(exc).__name__}: {exc}). The file is truncated or corrupt; "
                f"fetch it again.") from exc


def read_upto(stream, nbytes):
    """At most ``nbytes`` bytes of ``stream`` (fewer where it ends), in one buffer."""
    buffer = bytearray(nbytes)
    view, got = memoryview(buffer), 0
    while got < nbytes:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    view.release()
    del buffer[got:]
    return buffer


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
