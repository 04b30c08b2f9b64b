"""Files a run writes safely: atomic writes, stale temporary files, a directory lock.

Every file minicae writes (checkpoints, ``history.json``, ``run.json``,
pictures, ``segment --json``, ``bench --json``, IDX files) goes through
:func:`atomic_write`: a temporary file ``.<name>.<pid>.<random>.tmp`` in the
target's directory, ``fsync``, ``os.replace``, ``fsync`` of the directory.
The temporary file is removed on any failure; if the process is killed
mid-write (SIGKILL, power cut), the pid in its name lets
:func:`sweep_stale_temporaries` remove it the next time the directory is
opened. :class:`RunLock` keeps a second
trainer out of a run directory. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import time

from ._atomic import atomic_write
from .errors import MinicaeError

__all__ = ["atomic_write", "sweep_stale_temporaries", "pid_alive", "RunLock",
           "RunLockedError", "LOCK_NAME"]

LOCK_NAME = "train.lock"
# .<name>.<pid>.<8 random>.tmp (atomic_write) and {history,run}.json.<pid>.tmp (older)
_TEMP = re.compile(r"^(?:\..+\.(\d+)\.\w{8}|(?:history|run)\.json\.(\d+))\.tmp$")


class RunLockedError(MinicaeError, RuntimeError):
    """Another live process holds a run directory's lock."""


def pid_alive(pid):
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return True          # os.kill(pid, 0) would terminate it there: never assume dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True          # exists, owned by someone else (or unknowable: keep it)
    return True


def sweep_stale_temporaries(directory):
    """Remove temporary files left in ``directory`` by processes that are gone.

    Returns the names removed. A file whose pid is alive (or unreadable) is
    left alone: its writer may still be at work.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TEMP.match(name)
        if match is None or pid_alive(int(match.group(1) or match.group(2))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def _read_owner(path):
    """``(pid, host)`` from a lock file; pid 0 when it is empty or unreadable."""
    try:
        with open(path) as fh:
            pid, _, host = fh.read().strip().partition(" ")
        return int(pid or 0), host or socket.gethostname()
    except (OSError, ValueError):
        return 0, socket.gethostname()


class RunLock:
    """Hold ``<directory>/train.lock`` (our pid and host) while a trainer runs.

    The lock is created with ``O_CREAT | O_EXCL``; a lock whose pid is dead on
    this host (a killed trainer) is taken over; one from another host (a
    shared file system) is never assumed dead. The lock is removed on release.
    Opening the lock also sweeps stale temporary files from the directory.
    """

    def __init__(self, directory, *, where="fit"):
        self.path = os.path.join(os.fspath(directory), LOCK_NAME)
        self.where = where
        self.held = False

    def acquire(self):
        for attempt in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = pid, host = _read_owner(self.path)
                here = host == socket.gethostname()
                if pid and (not here or pid != os.getpid() and pid_alive(pid)):
                    raise RunLockedError(
                        f"{self.where}: the run directory {os.path.dirname(self.path)!r} "
                        f"is in use by another trainer (pid {pid}"
                        f"{'' if here else ' on ' + host}, lock file {self.path}). Wait "
                        f"for it to finish, or choose another directory.") from None
                if not pid and attempt < 2:
                    time.sleep(0.1)     # a trainer between creating the lock and writing it
                    continue
                if owner == _read_owner(self.path):   # still the dead pid: take it over
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            sweep_stale_temporaries(os.path.dirname(self.path))
            return self
        raise OSError(errno.EAGAIN, f"{self.where}: cannot take the lock {self.path}; "
                                    f"another process keeps replacing it.")

    def release(self):
        if self.held and _read_owner(self.path) == (os.getpid(), socket.gethostname()):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
