"""The dispatch point: policies, the measured choice and its cache, the fast path's depth."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from minicae import backend as backend_mod
from minicae import dispatch, nn
from minicae import functional as F

HAS_NUMBA = backend_mod.available_backends()["numba"][0]


def _conv_step(relu=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = F.conv2d(x, w, b, stride=2, padding=1, relu=relu)
    grads = F.conv2d_backward(np.ones_like(y), x, w, stride=2, padding=1,
                              relu_out=y if relu else None)
    return (y, *grads)


def test_bad_policy_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("MINICAE_KERNELS", "fastest")
    with dispatch.use_policy("fixed"):
        pass                                   # the override is gone again after this
    with pytest.raises(ValueError, match=r"MINICAE_KERNELS: expected one of 'reference', "
                                         r"'fixed', 'measured', got 'fastest'"):
        _conv_step()
    with pytest.raises(ValueError, match=r"use_policy: expected"):
        with dispatch.use_policy("fast"):
            pass


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_policies_agree(name):
    if name == "numba" and not HAS_NUMBA:
        pytest.skip("numba backend: Numba is not installed")
    results = {}
    with backend_mod.use_backend(name):
        for policy in ("reference", "fixed", "measured"):
            with dispatch.use_policy(policy), dispatch.trace() as calls:
                results[policy] = _conv_step()
            if policy == "reference":
                assert {c.name for c in calls} == {"reference"}
            if policy == "measured" and name == "numba":
                assert all(c.reason.startswith("measured") for c in calls), calls
    for policy in ("fixed", "measured"):
        for got, want in zip(results[policy], results["reference"]):
            assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=policy)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba backend: Numba is not installed")
def test_measured_choice_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICAE_KERNEL_CACHE", str(tmp_path))
    with backend_mod.use_backend("numba"):
        with dispatch.use_policy("measured"), dispatch.trace() as first:
            _conv_step()
        path = dispatch.cache_file()
        assert path.parent == tmp_path
        data = json.loads(path.read_text())
        assert set(data["machine"]) == {"cpu", "isa", "machine", "versions"}
        assert sorted(data["choices"].values()) == sorted(c.name for c in first)
        assert all("threads=" in key for key in data["choices"])
        dispatch._STATE["disk"].clear()        # a new process: only the file is left
        with dispatch.use_policy("measured"), dispatch.trace() as second:
            _conv_step()
        assert [c.name for c in second] == [c.name for c in first]
        assert all(c.reason.startswith("measured earlier") for c in second)
        path.write_text("{not json")           # a damaged file counts as empty
        dispatch._STATE["disk"].clear()
        with dispatch.use_policy("measured"), dispatch.trace() as third:
            _conv_step()
        assert all(not c.reason.startswith("measured earlier") for c in third)
        assert json.loads(path.read_text())["choices"]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba backend: Numba is not installed")
def test_fast_path_is_at_most_five_frames_deep():
    """nn.Conv2d.__call__ -> Conv2d.forward -> F.conv2d -> the chosen run -> the
    kernel (docs/backends.md): counted at the kernel's entry with sys.setprofile."""
    from minicae.kernels import _numba_cv

    depths = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is _numba_cv.conv_cv.__code__:
            depth, f = 1, frame
            while f is not None and f.f_code is not nn.Module.__call__.__code__:
                depth, f = depth + 1, f.f_back
            depths.append(depth if f is not None else None)

    with backend_mod.use_backend("numba"), dispatch.use_policy("fixed"):
        layer = nn.Conv2d(16, 32, 3, stride=2, padding=1, rng=0)
        x = np.random.default_rng(0).standard_normal((8, 16, 14, 14)).astype(np.float32)
        layer(x)                                      # the first call chooses
        sys.setprofile(profile)
        try:
            layer(x)
        finally:
            sys.setprofile(None)
    assert depths == [5], depths


@pytest.mark.skipif(not HAS_NUMBA, reason="numba backend: Numba is not installed")
def test_tune_then_info_kernels(tmp_path, monkeypatch, capsys):
    """`minicae tune` measures a model's convolutions and keeps the choices; `minicae
    info --kernels` then reports each layer's kernels as measured earlier."""
    from minicae import cli

    monkeypatch.setenv("MINICAE_KERNEL_CACHE", str(tmp_path))
    args = ["--backend", "numba", "--model", "conv-strided", "--batch-size", "4",
            "--image-size", "16"]
    with dispatch.use_policy("fixed"):                  # tune measures whatever the policy
        assert cli.main(["tune", *args]) == 0
    tuned = capsys.readouterr().out
    assert "encoder.0: Conv2d(1, 8" in tuned and "decoder.2: ConvTranspose2d(8, 1" in tuned
    assert tuned.count("measured: ") == 8, tuned          # 4 layers, forward and backward
    assert len(json.loads(dispatch.cache_file().read_text())["choices"]) == 8
    monkeypatch.setenv("MINICAE_KERNELS", "measured")
    with dispatch.use_policy("measured"):
        assert cli.main(["info", "--kernels", *args]) == 0
    report = capsys.readouterr().out
    assert report.count("measured earlier") == 8, report
    monkeypatch.setenv("MINICAE_KERNELS", "bogus")
    assert cli.main(["info", "--kernels", *args]) == 2
    assert "MINICAE_KERNELS: expected one of" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_NUMBA, reason="numba backend: Numba is not installed")
def test_columns_over_the_limit_are_neither_built_nor_timed(monkeypatch):
    """Past COLUMN_LIMIT the column candidates do not take a call, and the reference is
    not timed where a kernel without columns takes it (it still runs alone)."""
    from minicae.kernels import _columns

    monkeypatch.setattr(_columns, "COLUMN_LIMIT", 0)
    monkeypatch.setattr(dispatch, "COLUMN_LIMIT", 0)
    with backend_mod.use_backend("numba"):
        with dispatch.use_policy("measured"), dispatch.trace() as calls:
            _conv_step()
        assert [c.name for c in calls] == ["numba.cv", "numba.cv"]
        assert all("gemm" not in c.reason and "reference" not in c.reason for c in calls)
        x, w = np.ones((2, 4, 6, 6), np.float32), np.ones((6, 2, 3, 3), np.float32)
        with dispatch.use_policy("measured"), dispatch.trace() as calls:
            F.conv2d(x, w, groups=2)                      # grouped: nothing else takes it
        assert [c.name for c in calls] == ["reference"]
