"""Convolutions on two threads (Python threads for the columns, Numba threads in the
direct kernels): same results as the serial path, BLAS restored."""

from __future__ import annotations

import numpy as np
import pytest

from minicae import functional as F
from minicae.functional import _parallel

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


@pytest.fixture(params=["numpy", "numba"])
def cpu_backend(request):
    """The CPU backends only: threaded chunks are a CPU path (CuPy keeps whole batches)."""
    from minicae import backend as backend_mod

    ok, reason = backend_mod.available_backends()[request.param]
    if not ok:
        pytest.skip(f"{request.param} backend: {reason}")
    with backend_mod.use_backend(request.param) as be:
        yield be


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("limit", [2**30, 4096])
def test_threaded_chunks_match_serial(cpu_backend, two_blas_threads, monkeypatch, groups,
                                      limit):
    # the BLAS libraries loaded now (another may load later, e.g. through SciPy)
    held = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
            if p["user_api"] == "blas"}
    previous = F.set_workspace_limit(limit)
    monkeypatch.setattr(_parallel, "free_cores", lambda cores: cores)   # as if idle
    try:
        # serial: neither Python threads (columns) nor Numba threads (direct kernels)
        monkeypatch.setattr(_parallel, "MIN_BYTES", 2**62)
        monkeypatch.setattr(_parallel, "KERNEL_PER_THREAD_BYTES", 2**62)
        serial = _all_ops(np.random.default_rng(3), groups=groups)
        monkeypatch.setattr(_parallel, "MIN_BYTES", 0)                      # threaded
        monkeypatch.setattr(_parallel, "KERNEL_PER_THREAD_BYTES", 1)
        calls, kernel_calls = [], []
        run, threads_of = _parallel.run_groups, _parallel.kernel_threads
        monkeypatch.setattr("minicae.functional.conv.run_groups",
                            lambda body, groups, hold=True: calls.append(len(groups))
                            or run(body, groups, hold))
        monkeypatch.setattr("minicae.functional.conv.kernel_threads",
                            lambda n, nbytes: kernel_calls.append(threads_of(n, nbytes))
                            or kernel_calls[-1])
        threaded = _all_ops(np.random.default_rng(3), groups=groups)
    finally:
        F.set_workspace_limit(previous)
    # the column path on Python threads; on numba, ungrouped convolutions are direct
    # kernels that split their images over Numba's threads
    assert max(calls, default=0) >= 2 or cpu_backend.name == "numba" and groups == 1, \
        f"no call ran on two Python threads (groups per call: {calls})"
    if cpu_backend.name == "numba":
        assert max(kernel_calls) == 2, f"no direct kernel on two threads: {kernel_calls}"
    for i, (a, b) in enumerate(zip(threaded, serial)):
        # only the order of the weight gradient's sums over chunks differs
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                   err_msg=f"output {i}, groups={groups}, limit={limit}")
    after = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
             if p["filepath"] in held}
    assert after == held and set(held.values()) == {2}, \
        f"BLAS threads not restored: {after}, expected {held}"


def test_serial_without_blas_control(monkeypatch):
    monkeypatch.setitem(_parallel._STATE, "blas", ())      # as without threadpoolctl
    assert _parallel.thread_groups(64, 2**30) == (1, False)
    assert _parallel.run_groups(lambda g: sum(g), [[1, 2], [3]], False) == [3, 3]


def test_run_groups_orders_results_and_raises_a_group_error(two_blas_threads):
    """Results come back in group order; an error in any group (the caller's or a
    worker's) is raised after all groups finished, BLAS is restored, and the next
    call runs normally."""
    assert _parallel.run_groups(lambda g: [x * 2 for x in g], [[1], [2, 3], [4]]) == [
        [2], [4, 6], [8]]

    def body(group):
        if group == ["bad"]:
            raise ValueError("group failed")
        return group

    for groups in ([["ok"], ["bad"]], [["bad"], ["ok"]]):
        with pytest.raises(ValueError, match="group failed"):
            _parallel.run_groups(body, groups)
        blas = [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]
        assert all(k == 2 for k in blas), f"BLAS threads not restored: {blas}"
    assert _parallel.run_groups(body, [["a"], ["b"]]) == [["a"], ["b"]]


def test_thread_count_follows_the_work(monkeypatch):
    """On many cores a call takes one thread per PER_THREAD_BYTES of columns (at least
    two once MIN_BYTES is reached), not one per core whatever its size."""
    import types

    blas = (types.SimpleNamespace(num_threads=16),)
    monkeypatch.setitem(_parallel._STATE, "blas", blas)
    monkeypatch.setattr(_parallel, "_cores", lambda: 16)
    per = _parallel.PER_THREAD_BYTES
    assert _parallel.thread_groups(128, _parallel.MIN_BYTES - 1) == (1, True)
    assert _parallel.thread_groups(128, _parallel.MIN_BYTES) == (2, True)
    assert _parallel.thread_groups(128, 6 * per + per // 2) == (6, True)
    assert _parallel.thread_groups(128, 100 * per) == (16, True)      # the cores
    assert _parallel.thread_groups(3, 100 * per) == (3, True)         # the chunks
    blas[0].num_threads = 4                                            # BLAS's limit
    assert _parallel.thread_groups(128, 100 * per) == (4, True)
    monkeypatch.setattr(_parallel, "_cores", lambda: 1)    # the others held by processes
    assert _parallel.thread_groups(128, 100 * per) == (1, True)       # BLAS held too


def test_free_cores_leaves_out_what_other_processes_use(monkeypatch):
    """Cores free = cores - (machine busy - this process) per interval of EVERY_S:
    all until two readings exist, one fewer with another process on a core, all
    again when the busy time is this process's own; read at most every EVERY_S."""
    from minicae.functional import _load

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
