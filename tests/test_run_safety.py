"""`minicae train` as a user drives it: signals, resume, a second trainer, kills mid-save.

Real subprocesses. tests/run_with_signal.py sends the signal from inside the
run at an exact batch or inside an exact checkpoint write, so the tests do not
depend on the machine's speed. Runs use the NumPy backend and one thread:
"bit-identical" is promised on the same backend and thread count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minicae.checkpoint import load_state

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DRIVER = os.path.join(HERE, "run_with_signal.py")
ENV = dict(os.environ, PYTHONPATH=ROOT, MINICAE_BACKEND="numpy", OMP_NUM_THREADS="1",
           OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
# 60 images -> 54 training images -> 7 batches of 8 per epoch, 3 epochs
SMALL = ["--n-images", "60", "--image-size", "16", "--channels", "2", "--batch-size", "8",
         "--epochs", "3", "--no-progress"]

pytestmark = pytest.mark.slow


def minicae(*args, backend="numpy"):
    return subprocess.run([sys.executable, "-m", "minicae", *args], cwd=ROOT,
                          env=dict(ENV, MINICAE_BACKEND=backend), capture_output=True,
                          text=True, timeout=300)


def signalled(name, when, n, *args, backend="numpy"):
    return subprocess.run([sys.executable, DRIVER, name, when, str(n), "--", *args],
                          cwd=ROOT, env=dict(ENV, MINICAE_BACKEND=backend),
                          capture_output=True, text=True, timeout=300)


def _arrays(run):
    return load_state(os.path.join(run, "checkpoint.npz")).arrays


def _losses(run):
    with open(os.path.join(run, "history.json")) as fh:
        return [e["train_loss"] for e in json.load(fh)["epochs"]]


_BASE = {}


def _uninterrupted(backend, tmp_path_factory):
    if backend not in _BASE:
        run = str(tmp_path_factory.mktemp(f"base_{backend}") / "run")
        proc = minicae("train", "--out", run, *SMALL, backend=backend)
        assert proc.returncode == 0, proc.stderr
        _BASE[backend] = run
    return _BASE[backend]


def _numba_missing():
    from minicae.backend import available_backends

    return not available_backends()["numba"][0]


@pytest.mark.parametrize("backend, name, when, n", [
    ("numpy", "SIGINT", "batch", 1),       # the first batch
    ("numpy", "SIGTERM", "batch", 1),
    ("numpy", "SIGINT", "batch", 11),      # mid-epoch 2
    ("numpy", "SIGTERM", "batch", 4),      # mid-epoch 1 (no best yet)
    ("numpy", "SIGINT", "save", 1),        # inside the first checkpoint write
    ("numpy", "SIGTERM", "save", 4),       # 4th write: epoch 2's best.npz or epoch 3's
    pytest.param("numba", "SIGTERM", "batch", 11,
                 marks=pytest.mark.skipif(_numba_missing(), reason="Numba not installed")),
    pytest.param("numba", "SIGINT", "save", 2,
                 marks=pytest.mark.skipif(_numba_missing(), reason="Numba not installed")),
])
def test_stop_anywhere_then_resume_is_bit_identical(tmp_path_factory, tmp_path, backend,
                                                    name, when, n):
    uninterrupted = _uninterrupted(backend, tmp_path_factory)
    run = str(tmp_path / "run")
    proc = signalled(name, when, n, "train", "--out", run, *SMALL, backend=backend)
    signum = getattr(signal, name)
    assert proc.returncode == 128 + signum, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minicae train: {name} at epoch"), lines
    assert "Resume with: minicae train --out" in lines[0]
    resumed = minicae("train", "--out", run, "--resume", "--no-progress", backend=backend)
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(run) == _losses(uninterrupted)
    base, got = _arrays(uninterrupted), _arrays(run)
    assert sorted(got) == sorted(base)
    for key, value in base.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {when} {n}: {key}")
    assert not [f for f in os.listdir(run) if f.endswith((".tmp", ".lock"))]


def test_sigkill_during_a_save_leaves_a_temporary_that_the_next_run_sweeps(tmp_path):
    run = str(tmp_path / "run")
    proc = signalled("SIGKILL", "save", 3, "train", "--out", run, *SMALL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = os.listdir(run)
    assert [f for f in left if f.startswith(".checkpoint.npz.") and f.endswith(".tmp")] or \
        [f for f in left if f.startswith(".best.npz.") and f.endswith(".tmp")], left
    assert "train.lock" in left                 # the killed trainer's, pid now dead
    resumed = minicae("train", "--out", run, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert not [f for f in os.listdir(run) if f.endswith((".tmp", ".lock"))], os.listdir(run)


def test_a_refused_command_writes_nothing(tmp_path):
    run = tmp_path / "run"
    assert minicae("train", "--out", str(run), *SMALL[:-3], "--epochs", "1",
                   "--no-progress").returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((10, 1, 16, 16), dtype=np.float32))
    for args in (["--data", str(other), "--epochs", "0"],
                 ["--data", str(other), "--val-fraction", "1.5"]):
        proc = minicae("train", "--out", str(run), *args, "--no-progress")
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before, args
    resumed = minicae("train", "--out", str(run), "--resume", "--epochs", "2",
                      "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["data"] == "shapes"


def test_resume_on_changed_data_is_refused(tmp_path):
    data, run = tmp_path / "data.npz", str(tmp_path / "run")
    rng = np.random.default_rng(0)
    np.savez(data, images=rng.random((40, 1, 16, 16)).astype(np.float32))
    assert minicae("train", "--out", run, "--data", str(data), "--channels", "2",
                   "--epochs", "1", "--no-progress").returncode == 0
    np.savez(data, images=rng.random((40, 1, 16, 16)).astype(np.float32))
    proc = minicae("train", "--out", run, "--resume", "--epochs", "2", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "trained on x with sha256" in proc.stderr and "Traceback" not in proc.stderr


def test_a_second_trainer_is_refused_and_sigterm_stops_the_first(tmp_path):
    run = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "minicae", "train", "--out", run,
                              *SMALL[:-3], "--epochs", "500", "--no-progress"],
                             env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:             # wait until it trains
            if line.startswith("epoch 1:"):
                break
        second = minicae("train", "--out", run, *SMALL)
        assert second.returncode == 2, second.stderr
        assert f"in use by another trainer (pid {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM at epoch" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(run, "train.lock"))


def test_resume_names_the_flags_it_ignores_and_continues_a_finished_run(tmp_path):
    run = str(tmp_path / "run")
    assert minicae("train", "--out", run, *SMALL[:-3], "--epochs", "1",
                   "--no-progress").returncode == 0
    proc = minicae("train", "--out", run, "--resume", "--epochs", "2", "--lr", "0.5",
                   "--model", "dense", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "ignored: --lr 0.5 (the run has 0.001), --model 'dense' (the run has " \
           "'conv-full')" in proc.stderr
    assert "epoch 2:" in proc.stdout and len(_losses(run)) == 2
    with open(os.path.join(run, "run.json")) as fh:
        assert json.load(fh)["epochs"] == 2
    again = minicae("train", "--out", run, "--resume", "--no-progress")
    assert again.returncode == 0
    assert "has finished 2 epoch(s); nothing to train" in again.stderr
    assert "--epochs N (N > 2)" in again.stderr and len(_losses(run)) == 2


def test_segment_json_failure_leaves_no_temporary(tmp_path):
    from minicae.segment.pipeline import _write_json

    target = tmp_path / "taken"
    target.mkdir()                         # os.replace onto a directory fails
    with pytest.raises(OSError, match="taken"):
        _write_json(str(target), {"kmeans": {"iou": 0.5}})
    assert os.listdir(tmp_path) == ["taken"]
