"""The one atomic file writer (a leaf: the dispatcher's cache below the workflows
uses it as well as the run files above them; see minicae/_runfiles.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_write"]


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # directories cannot be opened on some platforms (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the replace still happened
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call ``write(binary_file)`` on a temporary file, then move it onto ``path``.

    A reader sees the old file or the new one, never half of one. On any
    failure (including KeyboardInterrupt) the temporary file is removed and
    the error is raised; an ``OSError`` always names ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o644
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                                   suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, mode)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, f"cannot write {path!r}: {exc.strerror}") from exc
        raise
    _fsync_directory(directory)  # make the rename itself durable
