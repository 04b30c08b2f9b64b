"""Convolutions on two threads (Numba threads in the registered kernels): the same
results as on one, BLAS's own limit untouched."""

from __future__ import annotations

import numpy as np
import pytest

from minicae import functional as F

threadpoolctl = pytest.importorskip("threadpoolctl")


def _all_ops(rng, *, groups):
    x = rng.standard_normal((9, 4, 11, 10))
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    kw = dict(stride=2, padding=1, groups=groups)
    y = F.conv2d(x, w, rng.standard_normal(6), **kw)
    grads = F.conv2d_backward(rng.standard_normal(y.shape), x, w, **kw)
    wt = rng.standard_normal((4, 6 // groups, 3, 3))
    kt = dict(stride=2, padding=1, output_padding=1, groups=groups)
    yt = F.conv_transpose2d(x, wt, rng.standard_normal(6), **kt)
    gt = F.conv_transpose2d_backward(rng.standard_normal(yt.shape), x, wt, **kt)
    # one output channel at stride 1: the numba set's direct kernels, on Numba threads
    w1 = rng.standard_normal((1, 4, 3, 3))
    y1 = F.conv2d(x, w1, rng.standard_normal(1), padding=1)
    g1 = F.conv2d_backward(rng.standard_normal(y1.shape), x, w1, padding=1)
    # one input channel (conv) / one output channel (convT), 3x3 s2: the numba set's
    # phase-plane kernels, on Numba threads
    xc = x[:, :1].copy()
    wc = rng.standard_normal((6, 1, 3, 3))
    kc = dict(stride=2, padding=1)
    yc = F.conv2d(xc, wc, rng.standard_normal(6), **kc)
    gc = F.conv2d_backward(rng.standard_normal(yc.shape), xc, wc, **kc)
    ytc = F.conv_transpose2d(yc, wc, rng.standard_normal(1), output_padding=1, **kc)
    gtc = F.conv_transpose2d_backward(rng.standard_normal(ytc.shape), yc, wc,
                                      output_padding=1, **kc)
    # stride 1 with several channels: the numba set's SIMD kernels, on Numba threads
    ks = dict(padding=1, groups=groups)
    ys = F.conv2d(x, w, rng.standard_normal(6), **ks)
    gs = F.conv2d_backward(rng.standard_normal(ys.shape), x, w, **ks)
    yts = F.conv_transpose2d(x, wt, rng.standard_normal(6), **ks)
    gts = F.conv_transpose2d_backward(rng.standard_normal(yts.shape), x, wt, **ks)
    return [y, *grads, yt, *gt, y1, *g1, yc, *gc, ytc, *gtc, ys, *gs, yts, *gts]


@pytest.fixture
def two_blas_threads():
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("groups", [1, 2])
def test_threaded_kernels_match_serial(two_blas_threads, monkeypatch, groups):
    """Every numba kernel that splits its images over Numba's threads gives the serial
    results (up to the order of the weight gradient's partial sums)."""
    from minicae import backend as backend_mod
    from minicae import dispatch

    if not backend_mod.available_backends()["numba"][0]:
        pytest.skip("numba backend: Numba is not installed")
    from minicae.kernels import _numba_conv

    held = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
            if p["user_api"] == "blas"}
    monkeypatch.setattr(_numba_conv, "free_cores", lambda cores: cores)   # as if idle
    threads_of, counts = _numba_conv.kernel_threads, []
    monkeypatch.setattr(_numba_conv, "kernel_threads",
                        lambda *a: counts.append(threads_of(*a)) or counts[-1])
    with backend_mod.use_backend("numba"):
        monkeypatch.setattr(_numba_conv, "KERNEL_PER_THREAD_BYTES", 2**62)   # serial
        with dispatch.use_policy("fixed"):
            serial = _all_ops(np.random.default_rng(3), groups=groups)
        assert set(counts) == {1}
        monkeypatch.setattr(_numba_conv, "KERNEL_PER_THREAD_BYTES", 1)       # threaded
        with dispatch.use_policy("fixed"):
            threaded = _all_ops(np.random.default_rng(3), groups=groups)
    assert max(counts) == 2, f"no kernel on two threads: {counts}"
    for i, (a, b) in enumerate(zip(threaded, serial)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                   err_msg=f"output {i}, groups={groups}")
    after = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
             if p["filepath"] in held}
    assert after == held, f"BLAS threads changed: {after}, expected {held}"


def test_thread_count_follows_the_work(monkeypatch):
    """A kernel takes one thread per KERNEL_PER_THREAD_BYTES of the columns it does
    without, at most the images, the cores and the thread limit."""
    _numba_conv = pytest.importorskip("minicae.kernels._numba_conv")
    monkeypatch.setattr(_numba_conv, "_CORES", 16)
    monkeypatch.setattr(_numba_conv, "free_cores", lambda cores: cores)   # as if idle
    per = _numba_conv.KERNEL_PER_THREAD_BYTES
    assert _numba_conv.kernel_threads(128, per - 1, 16) == 1
    assert _numba_conv.kernel_threads(128, 6 * per + per // 2, 16) == 6
    assert _numba_conv.kernel_threads(128, 100 * per, 16) == 16       # the cores
    assert _numba_conv.kernel_threads(3, 100 * per, 16) == 3          # the images
    assert _numba_conv.kernel_threads(128, 100 * per, 4) == 4         # the limit


def test_free_cores_leaves_out_what_other_processes_use(monkeypatch):
    """Cores free = cores - (machine busy - this process) per interval of EVERY_S:
    all until two readings exist, one fewer with another process on a core, all
    again when the busy time is this process's own; read at most every EVERY_S."""
    from minicae.kernels import _load

    clock, machine, own = [100.0], [(0, 0)], [0.0]
    monkeypatch.setattr(_load.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(_load, "_machine_ticks", lambda: machine[0])
    monkeypatch.setattr(_load, "_own_ticks", lambda: own[0])
    monkeypatch.setattr(_load.os, "cpu_count", lambda: 2)
    monkeypatch.setitem(_load._STATE, "at", None)
    assert _load.free_cores(2) == 2                      # one reading: all free

    def after(busy, total, ours):                        # ticks over the next interval
        clock[0] += _load.EVERY_S
        machine[0] = (machine[0][0] + busy, machine[0][1] + total)
        own[0] += ours
        return _load.free_cores(2)

    assert after(busy=100, total=200, ours=0) == 1       # another process on one core
    assert after(busy=200, total=200, ours=100) == 1     # it, and this process on the other
    assert after(busy=200, total=200, ours=200) == 2     # this process alone
    assert after(busy=20, total=200, ours=0) == 2        # a little background
    machine[0] = (10**9, 10**9)
    clock[0] += _load.EVERY_S / 2                        # too soon: the last answer
    assert _load.free_cores(2) == 2
    monkeypatch.setattr(_load, "_machine_ticks", lambda: None)   # no /proc/stat
    clock[0] += _load.EVERY_S
    assert _load.free_cores(2) == 2
    clock[0] += _load.EVERY_S
    assert _load.free_cores(3) == 3
    monkeypatch.setitem(_load._STATE, "free", None)
