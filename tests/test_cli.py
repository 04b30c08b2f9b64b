"""The command line as a user runs it: real subprocesses, exit codes, files, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import minicae

ENV = dict(os.environ, MINICAE_BACKEND="numpy", PYTHONUNBUFFERED="1")
SMALL = ["--n-images", "96", "--image-size", "16", "--channels", "4", "8",
         "--batch-size", "16", "--no-progress", "--backend", "numpy"]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "minicae", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.mark.slow
def test_train_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = run("train", "--out", str(out), "--epochs", "2", *SMALL)
    assert proc.returncode == 0, proc.stderr
    for name in ("checkpoint.npz", "best.npz", "history.json", "run.json",
                 "reconstructions.png", "filters.png", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert "final: train loss" in proc.stdout and str(out / "loss.png") in proc.stdout
    assert minicae.load(out / "checkpoint.npz").metadata["epoch"] == 2


@pytest.mark.slow
def test_resume_continues_to_more_epochs(tmp_path):
    out = tmp_path / "run"
    assert run("train", "--out", str(out), "--epochs", "1", *SMALL).returncode == 0
    proc = run("train", "--out", str(out), "--epochs", "2", "--resume", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]


def _wait_for(proc, text, limit=240):
    """Read proc's stdout until a line contains ``text``; return all lines read."""
    lines, start = [], time.monotonic()
    while time.monotonic() - start < limit:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"never saw {text!r}; got {lines!r}")


def _spawn(out, epochs):
    args = ["train", "--out", str(out), "--epochs", str(epochs), *SMALL]
    args[args.index("96")] = "400"
    return subprocess.Popen([sys.executable, "-m", "minicae", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigint_checkpoints_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = _spawn(out, 200)
    _wait_for(proc, "epoch 1:")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Resume with: minicae train --out" in stderr
    assert "Traceback" not in stderr
    meta = minicae.load(out / "checkpoint.npz").metadata
    assert meta["epoch"] >= 1
    resumed = run("train", "--out", str(out), "--resume", "--epochs",
                  str(meta["epoch"] + 1), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((out / "history.json").read_text())
    assert history["epochs"][-1]["epoch"] == meta["epoch"] + 1


@pytest.mark.slow
def test_sigkill_loses_at_most_one_epoch(tmp_path):
    out = tmp_path / "run"
    proc = _spawn(out, 200)
    lines = _wait_for(proc, "epoch 2:")
    time.sleep(0.3)                      # somewhere inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    printed = max(int(line.split(":")[0].split()[1]) for line in lines
                  if line.startswith("epoch "))
    saved = minicae.load(out / "checkpoint.npz").metadata["epoch"]
    assert saved >= printed - 1, (saved, printed)
    resumed = run("train", "--out", str(out), "--resume", "--epochs", str(saved + 1),
                  "--no-progress")
    assert resumed.returncode == 0, resumed.stderr


def test_info_lists_backends():
    proc = run("info")
    assert proc.returncode == 0
    for name in ("numpy", "numba", "cupy", "BLAS"):
        assert name in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["train", "--epochs", "0"], "epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "-1"], "lr"),
    (["train", "--data", "/no/such/file.npz"], "/no/such/file.npz"),
    (["train", "--model", "gan"], "invalid choice"),
    (["train", "--backend", "tpu"], "invalid choice"),
    (["train", "--resume", "--out", "/nonexistent/run"], "no checkpoint"),
    (["train", "--penalty", "kl"], "sigmoid"),
    (["train", "--penalty", "topk", "--k", "0"], "k"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_cli_input_is_one_line_and_status_2(args, words, tmp_path):
    if "--out" not in args:
        args = args + ["--out", str(tmp_path / "r")]
    proc = run(*args, "--no-progress") if args[0] == "train" else run(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
