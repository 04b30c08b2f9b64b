"""Run the image chunks of one convolution on several threads, one BLAS thread each.

(The direct convolutions of the numba set, which build no columns, no longer come
here: their kernels split the images over Numba's own threads, a prange whose
fork-join costs ~2 us where a hand-off below costs ~75; :func:`kernel_threads`
says how many. What follows is the column path: grouped convolutions, 1x1 at
stride 1, and the NumPy backend.)

With a threaded BLAS only the GEMMs of a convolution use the second core;
im2col, col2im and the layout copies stay on one. Here the chunks are split
into contiguous groups, one per thread, and each thread runs im2col -> GEMM
-> col2im on its own group with its own work buffers (conv.py keeps them per
thread) while BLAS is held at one thread, so the threads do not fight
OpenBLAS's own workers for the cores. The Numba kernels are ``nogil`` and
NumPy's GEMM, copies and ufuncs release the GIL, so the groups run at once,
except for the Python steps between those calls, which take the GIL in turn
(hence chunks twice as large on threads, see conv.py; a hand-off to a worker
costs ~60 us on the benchmark machine, benchmarks/README.md, round 6).

Taken only when every condition holds: a CPU kernel set (CuPy keeps whole
batches), threadpoolctl importable (it is how BLAS is held at one thread;
without it the serial path runs, as before), BLAS allowed more than one
thread (so ``--threads 1`` and a pinned BLAS stay serial), and at least
``MIN_BYTES`` of columns in the call (smaller layers lose to the hand-off).
A smaller layer runs serially but also with BLAS held at one thread: waking
OpenBLAS's workers for it leaves them spinning on the core that the next
layer's threads need (strided CAE step at 2 threads: 12.3 vs 10.1 ms).
One parallel section at a time: a second caller runs serially. The weight
gradients are summed per thread, then over threads in chunk order, so they
differ from the serial sum only in the order of the additions.
"""

from __future__ import annotations

import os
import threading

from ._load import free_cores

__all__ = ["thread_groups", "run_groups", "kernel_threads"]

# Columns (bytes) of one call from which two threads pay. Conv 16->32 14² s2
# fwd+bwd (numba, 2 threads, serial vs threaded): 441 KiB 433 vs 557 us, 882 KiB
# 825 vs 720 (round 6, lean workers; round 3 had put the break-even at ~0.9
# MiB). 512 KiB takes in the strided CAE's 1-channel layers (882 KiB): step at
# 2 threads, four A/B runs, 7.78 -> 7.31 ms median (benchmarks/README.md).
MIN_BYTES = 512 * 2**10
# Columns (bytes) per thread beyond the second: a call takes min(cores, BLAS
# threads, nbytes // PER_THREAD_BYTES) threads, never fewer than two once
# MIN_BYTES is reached (so two cores behave as above). Without it a 16-core
# machine cut every layer into 16 groups of a few images, and the hand-offs and
# GIL turns cost more than the threads saved. Strided CAE step, numba, batch
# 128, 16-core Xeon (Emerald Rapids) at 16 threads, median of three interleaved
# rounds (benchmarks/bench_threads.py): no limit 30.2 ms, 512 KiB 8.9, 1 MiB 8.4,
# 2 MiB 10.3; conv 16->32 14² s2: 6.3, 1.7, 2.1, 2.7 ms. At 4 and 8 threads 512
# KiB is as fast as no limit or faster (benchmarks/README.md, round 9).
PER_THREAD_BYTES = MIN_BYTES
# Columns' worth of bytes per thread from which a direct kernel splits its images
# over Numba's threads (a prange: one fork-join of ~2 us, where a hand-off to one
# of the workers below costs ~75; benchmarks/bench_handoff.py).
KERNEL_PER_THREAD_BYTES = 64 * 2**10

_STATE = {"blas": None, "workers": []}
_LOCK = threading.Lock()


def _blas_controllers():
    """threadpoolctl's BLAS controllers (looked up once), or () without threadpoolctl."""
    if _STATE["blas"] is None:
        try:
            import threadpoolctl
        except ImportError:
            _STATE["blas"] = ()
        else:
            ctl = threadpoolctl.ThreadpoolController()
            _STATE["blas"] = tuple(c for c in ctl.lib_controllers
                                   if c.user_api == "blas")
    return _STATE["blas"]


def _cores():
    """The cores this process may run on (asked once: a system call per layer showed
    in the per-step Python time of small batches) that other processes leave free
    (``_load``: a straggler on a shared core slows every parallel region)."""
    if "cores" not in _STATE:
        try:
            _STATE["cores"] = len(os.sched_getaffinity(0))
        except AttributeError:               # not on Linux
            _STATE["cores"] = os.cpu_count() or 1
    return free_cores(_STATE["cores"])


def kernel_threads(n_images, nbytes):
    """Threads for a kernel that splits its images over Numba's threads itself (the
    direct convolutions): one per ``KERNEL_PER_THREAD_BYTES`` of columns, at most
    the images, the cores and BLAS's thread limit (the thread setting the user
    gave, as for :func:`thread_groups`); 1 without threadpoolctl."""
    cap = min(n_images, _cores(), nbytes // KERNEL_PER_THREAD_BYTES)
    blas = _blas_controllers() if cap > 1 else ()  # BLAS asked only when it can matter
    if not blas:
        return 1
    return min(cap, max([c.num_threads for c in blas]))


def thread_groups(n_parts, nbytes):
    """(threads, hold): how many threads the chunks of one call should use, and
    whether BLAS is held at one thread meanwhile (also for a small layer run
    serially, see the module's notes)."""
    blas = _blas_controllers()
    if not blas:
        return 1, False
    cores, most = _cores(), max([c.num_threads for c in blas])
    threads = min(n_parts, cores, most)
    if threads < 2:
        return 1, cores < most      # cores held by others: BLAS on one thread too
    if nbytes < MIN_BYTES:
        return 1, True
    return min(threads, max(2, nbytes // PER_THREAD_BYTES)), True


class _Worker:
    """A persistent thread that runs one job at a time, handed over by two locks.

    Cheaper than a ``concurrent.futures`` pool (no Future, no queue, no
    condition variable): two groups of 6 nogil calls of 10 us, 190 -> 124 us;
    two groups of 300 us, 387 -> 365 us (benchmarks/README.md, round 6).
    """

    def __init__(self, name):
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._job = self._result = self._error = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self):
        while True:
            self._go.acquire()                   # blocks without the GIL
            body, group = self._job
            try:
                self._result, self._error = body(group), None
            except BaseException as exc:         # handed to the caller by join()
                self._result, self._error = None, exc
            self._job = None
            self._done.release()

    def start(self, body, group):
        self._job = (body, group)
        self._go.release()

    def join(self):
        """Wait for the job; its result, or raise what it raised."""
        self._done.acquire()
        error, self._error = self._error, None
        if error is not None:
            raise error
        return self._result


def _workers(count):
    workers = _STATE["workers"]
    while len(workers) < count:
        workers.append(_Worker(f"minicae-conv-{len(workers)}"))
    return workers[:count]


# a forked child has none of the parent's threads: it starts its own
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _STATE.update(workers=[]))


def run_groups(body, groups, hold=True):
    """[body(group) for group in groups], the first on this thread, the rest on workers.

    BLAS is held at one thread meanwhile and restored after; the results come
    back in the order of ``groups``. An exception in any group is raised here,
    after every group has finished.
    """
    if not hold or not _LOCK.acquire(blocking=False):
        return [body(group) for group in groups]
    try:
        blas = _blas_controllers()
        before = [c.num_threads for c in blas]
        for c in blas:
            c.set_num_threads(1)
        try:
            workers = _workers(len(groups) - 1)
            for worker, group in zip(workers, groups[1:]):
                worker.start(body, group)
            results, errors = [], []
            try:
                results.append(body(groups[0]))
            except BaseException as exc:
                errors.append(exc)
            for worker in workers:      # never restore BLAS under a running group
                try:
                    results.append(worker.join())
                except BaseException as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
            return results
        finally:
            for c, k in zip(blas, before):
                c.set_num_threads(k)
    finally:
        _LOCK.release()
