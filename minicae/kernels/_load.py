"""How many cores other processes leave free, measured while the program runs.

Threads that split a kernel's work evenly finish when the slowest does: with
one core of two held by another process, the thread that shares it gets half a
core and every parallel region waits for it (and for the scheduler to give it
a slice), so two threads run slower than one (benchmarks/README.md, decisions).
This module reads the machine's CPU time from ``/proc/stat`` at most every
``EVERY_S`` seconds, subtracts this process's own CPU time over the same
interval, and reports the cores left: ``kernel_threads`` (_numba_conv.py) caps
its thread counts by it. Where ``/proc/stat`` is missing (not
Linux), every core counts as free.
"""

from __future__ import annotations

import os
import time

__all__ = ["free_cores"]

EVERY_S = 0.5          # seconds between two readings (one reading costs ~30 us)
_STATE = {"at": None, "free": None}


def _machine_ticks():
    """(busy, total) clock ticks of all CPUs since boot, or None without /proc/stat."""
    try:
        with open("/proc/stat", "rb") as fh:
            ticks = [int(f) for f in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]                  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def _own_ticks():
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK")


def free_cores(cores):
    """Cores of ``cores`` not held by other processes over the last ``EVERY_S``
    seconds or more (at least 1; ``cores`` until two readings exist)."""
    now = time.monotonic()
    last = _STATE["at"]
    if last is not None and now - last[0] < EVERY_S:
        return _STATE["free"]
    machine = _machine_ticks() if _STATE["free"] != "unknown" else None
    if machine is None:
        _STATE["free"] = "unknown"             # no /proc/stat: never asked again
        return cores
    sample = (now, machine[0], machine[1], _own_ticks())
    free = cores
    if last is not None and sample[2] > last[2]:
        # others' busy time, in cores: (machine busy - ours) / (total ticks per core)
        others = ((sample[1] - last[1]) - (sample[3] - last[3])) \
            / ((sample[2] - last[2]) / max(1, os.cpu_count() or 1))
        free = max(1, min(cores, round(cores - max(0.0, others))))
    _STATE["at"], _STATE["free"] = sample, free
    return free
