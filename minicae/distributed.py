r"""Data-parallel training over MPI (mpi4py): one gradient Allreduce per step.

Every rank holds the same model. Each step, rank ``r`` of ``R`` takes the
rank-strided slice ``batch[r::R]`` of the same global batch (the shuffle is
derived from the seed and the epoch, so every rank computes it alike), runs
forward and backward on its ``m_r`` samples, and one ``Allreduce`` sums, in a
single flat buffer, every gradient weighted by its sample count together with
a few per-batch scalars (sample count, loss, flags). Every rank then divides
by the global count and applies the same optimizer step, so the weights stay
identical without ever being sent again.

Notes
-----
For a loss that is a mean over the batch,
:math:`L = \frac{1}{M}\sum_{n=1}^{M} \ell_n` with :math:`M = \sum_r m_r`,

.. math:: \nabla L = \frac{1}{M}\sum_r m_r\,\nabla L_r ,

where :math:`L_r` is the mean loss of rank ``r``'s slice. With equal slices
this is the plain mean :math:`\frac{1}{R}\sum_r \nabla L_r`, so ``R`` ranks
with batch ``b`` each take the same step as one process with batch ``R·b``.
Penalties that are means over samples (L1 activity, contractive) average
exactly too; KL sparsity's :math:`\hat\rho_j` is a batch statistic and is
estimated per rank (like batch normalisation without synchronisation).

Every collective waits at most ``timeout`` seconds (default 300, or the
environment variable ``MINICAE_MPI_TIMEOUT``): a rank that was stopped,
killed or hangs would otherwise hold the others in the Allreduce forever.
On timeout the waiting rank prints one line naming itself and the step,
and aborts the whole MPI job (``MPI_Abort``).

MPI library: mpi4py (``pip install "minicae[mpi]"``) over a system MPI, e.g.
Debian's ``apt-get install openmpi-bin libopenmpi-dev``. On the CuPy backend
the flat buffer is packed on the GPU and copied to the host for MPI, unless a
CUDA-aware MPI is detected (:func:`cuda_aware_mpi`) or asked for.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
import time

import numpy

from .backend import get_backend, to_numpy
from .errors import BackendUnavailableError

__all__ = ["MPIContext", "GradientAllreduce", "init", "mpi_available", "cuda_aware_mpi",
           "allreduce_grads", "broadcast_parameters", "collective_timeout", "wait",
           "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 300.0       # seconds a collective may wait for the other ranks
_INSTALL_HINT = ('Install the MPI library (Debian/Ubuntu: apt-get install openmpi-bin '
                 'libopenmpi-dev) and then mpi4py with: pip install "minicae[mpi]".')


def _import_mpi(where):
    """Import ``mpi4py.MPI`` on first use; a missing one names the fix."""
    try:
        return importlib.import_module("mpi4py.MPI")
    except (ImportError, RuntimeError, OSError) as exc:   # RuntimeError: no libmpi
        raise BackendUnavailableError(
            f"{where}: expected mpi4py and an MPI library, got "
            f"{type(exc).__name__}: {exc}. {_INSTALL_HINT}") from exc


def collective_timeout(timeout=None):
    """``timeout`` if given, else ``MINICAE_MPI_TIMEOUT``, else 300 seconds."""
    if timeout is None:
        raw = os.environ.get("MINICAE_MPI_TIMEOUT", "")
        try:
            timeout = float(raw) if raw else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(f"MINICAE_MPI_TIMEOUT: expected a number of seconds, got "
                             f"{raw!r}.") from None
    if not timeout > 0:
        raise ValueError(f"MPI timeout: expected a number of seconds > 0, got {timeout!r}.")
    return float(timeout)


def wait(request, comm, timeout, what):
    """Wait for a nonblocking collective; after ``timeout`` s, abort the MPI job.

    Polls ``request.Test()`` (which also drives MPI's progress): busily for the
    first millisecond, then sleeping up to 10 ms between polls, so a long wait
    does not spin a core.
    """
    start = time.monotonic()
    pause = 0.0
    while not request.Test():
        waited = time.monotonic() - start
        if waited > timeout:
            sys.stderr.write(f"minicae: rank {comm.Get_rank()} of {comm.Get_size()} waited "
                             f"{waited:.0f} s for the other ranks at {what}; one of them "
                             f"stopped or hangs. Aborting the MPI job (MINICAE_MPI_TIMEOUT "
                             f"sets the wait).\n")
            sys.stderr.flush()
            comm.Abort(1)
        if waited > 1e-3:
            time.sleep(pause)
            pause = min(max(2 * pause, 1e-5), 0.01)


def mpi_available():
    """Return ``(True, '')`` if mpi4py imports, else ``(False, reason)``."""
    try:
        _import_mpi("mpi_available")
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, ""


def cuda_aware_mpi(MPI=None):
    """Whether the MPI library accepts GPU buffers directly.

    Asks, in order: mpi4py's ``MPI.Query_cuda_support()`` (mpi4py >= 4 over
    an MPI that has it, e.g. MPICH >= 4.1 or Open MPI >= 5), then Open MPI's
    extension ``MPIX_Query_cuda_support()`` looked up in the MPI library
    already loaded by mpi4py. Anything else answers False (stage through the
    host), which is always correct, only slower. Untested on a GPU here.
    """
    MPI = MPI or _import_mpi("cuda_aware_mpi")
    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        try:
            return bool(query())
        except Exception:              # noqa: BLE001 - an MPI without it: fall through
            pass
    try:
        symbol = ctypes.CDLL(None).MPIX_Query_cuda_support   # Open MPI's mpi-ext.h
    except (OSError, AttributeError):
        return False
    symbol.restype = ctypes.c_int
    return bool(symbol())


class GradientAllreduce:
    r"""Average gradients across ranks with one ``Allreduce`` per call.

    The gradients are packed into one contiguous buffer (kept and reused
    while the parameter layout stays the same), followed by the caller's
    per-batch scalars; one in-place ``Allreduce(SUM)`` runs on it; the
    gradients are unpacked divided by the total weight.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    cuda_aware : bool, optional
        On the CuPy backend, hand the GPU buffer to MPI directly. Default:
        :func:`cuda_aware_mpi`. Ignored on the CPU backends.
    timeout : float, optional
        Seconds to wait for the other ranks (see :func:`collective_timeout`).

    Notes
    -----
    With ``scalars[0] = m_r`` (this rank's sample count) the gradients become

    .. math:: g \leftarrow \frac{\sum_r m_r\, g_r}{\sum_r m_r},

    and without scalars the plain mean :math:`\frac{1}{R}\sum_r g_r`.
    """

    def __init__(self, comm, *, cuda_aware=None, timeout=None):
        self.comm = comm
        self.timeout = collective_timeout(timeout)
        self._MPI = _import_mpi("GradientAllreduce")
        self._cuda_aware = cuda_aware
        self._layout = None
        self._device_buf = self._host_buf = None
        self.calls = 0

    def _buffers(self, grads, n_scalars, xp):
        layout = (tuple((g.shape, g.dtype.str) for g in grads), n_scalars, xp.__name__)
        if layout != self._layout:
            size = sum(int(g.size) for g in grads) + n_scalars
            dtype = numpy.result_type(*[g.dtype for g in grads]) if grads else numpy.float64
            self._device_buf = xp.empty(size, dtype=dtype)
            on_gpu = get_backend().name == "cupy"
            if on_gpu and self._cuda_aware is None:
                self._cuda_aware = cuda_aware_mpi(self._MPI)
            staged = on_gpu and not self._cuda_aware
            self._host_buf = numpy.empty(size, dtype=dtype) if staged else None
            self._layout = layout
        return self._device_buf, self._host_buf

    def __call__(self, model, scalars=None, *, label=None):
        """Average ``model``'s gradients in place; return the summed ``scalars``.

        ``scalars`` (a sequence of floats) rides in the same buffer; when
        given, ``scalars[0]`` is the weight ``m_r`` of this rank's gradients.
        Returns a NumPy array of the scalars summed over ranks (empty if none).
        ``label`` names the step in a timeout message (default: the call count).
        """
        what = f"step {self.calls + 1}" + (f" ({label})" if label else "") + \
            " in the gradient Allreduce"
        xp = get_backend().xp
        grads = [p.grad for p in model.parameters()]
        scalars = numpy.asarray([] if scalars is None else scalars, dtype=numpy.float64)
        buf, host = self._buffers(grads, scalars.size, xp)
        weight = float(scalars[0]) if scalars.size else 1.0
        start = 0
        for g in grads:
            stop = start + g.size
            if weight == 1.0:
                buf[start:stop] = g.ravel()
            else:
                buf[start:stop] = g.ravel() * weight          # m_r · g_r
            start = stop
        buf[start:] = xp.asarray(scalars, dtype=buf.dtype)
        if host is not None:                                 # stage through the host
            host[...] = to_numpy(buf)
            wait(self.comm.Iallreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM),
                 self.comm, self.timeout, what)
            buf[...] = xp.asarray(host)
        else:
            if xp.__name__ == "cupy":                        # MPI reads the buffer now
                xp.cuda.get_current_stream().synchronize()
            wait(self.comm.Iallreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM),
                 self.comm, self.timeout, what)
        self.calls += 1
        total = float(to_numpy(buf[start])) if scalars.size else float(self.comm.Get_size())
        start = 0
        for g in grads:
            stop = start + g.size
            g[...] = (buf[start:stop] / total).reshape(g.shape)   # g = Σ_r m_r g_r / Σ_r m_r
            start = stop
        return to_numpy(buf[start:]).astype(numpy.float64)


_REDUCERS = {}


def allreduce_grads(model, comm, scalars=None):
    """Average ``model``'s gradients over ``comm`` with one Allreduce.

    A :class:`GradientAllreduce` (and its buffer) is kept per communicator and
    reused across steps. See :class:`GradientAllreduce` for ``scalars``.
    """
    key = comm.py2f()
    if key not in _REDUCERS:
        _REDUCERS[key] = GradientAllreduce(comm)
    return _REDUCERS[key](model, scalars)


def broadcast_parameters(model, comm, *, root=0, timeout=None):
    """Copy every parameter of ``model`` from rank ``root`` to all ranks.

    One ``Bcast`` of a flat host buffer holding all parameters, so every rank
    starts (or resumes) from bit-identical weights; ``timeout`` as for
    :class:`GradientAllreduce`.
    """
    _import_mpi("broadcast_parameters")
    params = model.parameters()
    if not params:
        return model
    host = [to_numpy(p.data) for p in params]
    flat = numpy.concatenate([h.ravel() for h in host]).astype(
        numpy.result_type(*[h.dtype for h in host]))
    wait(comm.Ibcast(flat, root=root), comm, collective_timeout(timeout),
         "the start (broadcast of rank 0's weights)")
    xp = get_backend().xp
    start = 0
    for p, h in zip(params, host):
        stop = start + h.size
        p.data[...] = xp.asarray(flat[start:stop].reshape(h.shape), dtype=p.data.dtype)
        start = stop
    return model


class MPIContext:
    """This process's place in an MPI job: ``comm``, ``rank``, ``size``.

    Built by :func:`init`. It is what :func:`minicae.train.fit` takes as
    ``distributed=``: rank-strided batch slices, one gradient Allreduce per
    step, and rank 0 as the only writer.
    """

    def __init__(self, comm, *, cuda_aware=None, timeout=None):
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self._reducer = GradientAllreduce(comm, cuda_aware=cuda_aware, timeout=timeout)
        self.timeout = self._reducer.timeout

    @property
    def is_writer(self):
        """Rank 0 alone writes checkpoints, histories and pictures."""
        return self.rank == 0

    def rank_seed(self, seed):
        """A seed sequence for rank-local randomness, derived from (seed, rank).

        fit itself needs none (its shuffle and noise are global); use this for
        anything you draw on one rank only, e.g. ``default_rng(ctx.rank_seed(s))``.
        """
        return numpy.random.SeedSequence([int(seed), self.rank])

    def allreduce_grads(self, model, scalars=None, *, label=None):
        """Average gradients (and sum ``scalars``) with one Allreduce, buffer reused."""
        return self._reducer(model, scalars, label=label)

    def broadcast_parameters(self, model, *, root=0):
        """Make every rank's weights equal rank ``root``'s."""
        return broadcast_parameters(model, self.comm, root=root, timeout=self.timeout)

    def barrier(self):
        wait(self.comm.Ibarrier(), self.comm, self.timeout, "a barrier")

    def __repr__(self):
        return f"MPIContext(rank={self.rank}, size={self.size})"


def init(comm=None, *, cuda_aware=None, timeout=None):
    """Join the MPI job started by ``mpirun`` and return an :class:`MPIContext`.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    cuda_aware : bool, optional
        Force (True) or forbid (False) handing GPU buffers to MPI; default:
        detect with :func:`cuda_aware_mpi`.
    timeout : float, optional
        Seconds any collective waits for the other ranks before the job is
        aborted; default ``MINICAE_MPI_TIMEOUT`` or 300.

    Raises
    ------
    BackendUnavailableError
        mpi4py or the MPI library is missing; the message says how to install
        them.
    """
    MPI = _import_mpi("minicae.distributed.init")
    return MPIContext(comm if comm is not None else MPI.COMM_WORLD, cuda_aware=cuda_aware,
                      timeout=timeout)
