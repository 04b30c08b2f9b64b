"""Data-parallel training over MPI: 2 ranks x batch b == 1 process x batch 2b.

The runs are real ``mpirun -n 2`` launches of tests/mpi_tiny_run.py (a
3-channel conv autoencoder on 19 images of 8x8, 3 epochs: global batches of
8, 8 and 3 samples, so the last one splits 2/1 and exercises the weighted
average). They skip, with the reason, where mpirun or mpi4py is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest
from numpy.testing import assert_allclose, assert_array_equal

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "mpi_tiny_run.py")
B = 4                     # per-rank batch; the single process uses 2B


def _mpi_missing():
    if shutil.which("mpirun") is None:
        return ("mpirun not found: install an MPI (Debian/Ubuntu: apt-get install "
                "openmpi-bin libopenmpi-dev)")
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py not installed: pip install "minicae[mpi]"'
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
pytestmark = pytest.mark.mpi


def _mpirun(n):
    cmd = ["mpirun", "-n", str(n), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def _run(cmd, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT, MINICAE_BACKEND="numpy",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _tiny(results, *args, ranks=None):
    os.makedirs(results, exist_ok=True)
    if ranks is None:
        _run([sys.executable, SCRIPT, str(results), "--batch-size", str(2 * B), *args])
        return [dict(numpy.load(os.path.join(results, "rank0.npz")))]
    _run(_mpirun(ranks) + [sys.executable, SCRIPT, str(results), "--batch-size", str(B),
                           "--distributed", *args])
    return [dict(numpy.load(os.path.join(results, f"rank{r}.npz"))) for r in range(ranks)]


def _weights(run):
    return {k: v for k, v in run.items() if k.startswith("w:")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mpi")
    return {"base": base, "single": _tiny(base / "single")[0],
            "mpi": _tiny(base / "mpi", ranks=2)}


@needs_mpi
def test_weights_identical_on_both_ranks(runs):
    rank0, rank1 = runs["mpi"]
    for name, value in _weights(rank0).items():
        assert_array_equal(rank1[name], value, err_msg=f"{name}: ranks 0 and 1 differ")


@needs_mpi
def test_two_ranks_match_single_process_with_double_batch(runs):
    single, (rank0, rank1) = runs["single"], runs["mpi"]
    for name, value in _weights(single).items():
        assert_allclose(rank0[name], value, rtol=1e-5, atol=1e-6,
                        err_msg=f"{name}: 2 ranks x batch {B} vs 1 process x {2 * B}")
    # the per-step loss curve: Σ_r m_r L_r / Σ_r m_r against the single run's L
    s0, s1 = rank0["steps"], rank1["steps"]
    assert_array_equal(s0[:, 1] + s1[:, 1], single["steps"][:, 1],
                       err_msg="global batch sizes per step")
    assert_array_equal(s0[:, 1], [4, 4, 2] * 3, err_msg="rank 0 slice sizes")
    merged = (s0[:, 0] * s0[:, 1] + s1[:, 0] * s1[:, 1]) / (s0[:, 1] + s1[:, 1])
    assert_allclose(merged, single["steps"][:, 0], rtol=1e-5, atol=1e-7,
                    err_msg="per-step loss curve")
    # the reported history is the global one, on every rank
    for run in (rank0, rank1):
        assert_allclose(run["train_loss"], single["train_loss"], rtol=1e-5,
                        err_msg="history train_loss")
        assert_allclose(run["val_loss"], single["val_loss"], rtol=1e-5,
                        err_msg="history val_loss")


@needs_mpi
def test_only_rank0_writes(runs):
    mpi_dir = runs["base"] / "mpi"
    written = sorted(os.listdir(mpi_dir / "ckpt_rank0"))
    assert "checkpoint.npz" in written and "history.json" in written, written
    assert not (mpi_dir / "ckpt_rank1").exists(), sorted(os.listdir(mpi_dir))


@needs_mpi
def test_resume_in_distributed_mode_continues_exactly(runs, tmp_path):
    _tiny(tmp_path, "--ckpt", "shared", "--epochs", "2", ranks=2)
    resumed = _tiny(tmp_path, "--ckpt", "shared", "--epochs", "3", "--resume", ranks=2)
    for name, value in _weights(runs["single"]).items():
        for r, run in enumerate(resumed):
            assert_allclose(run[name], value, rtol=1e-5, atol=1e-6,
                            err_msg=f"{name} on rank {r}: resumed 2+1 epochs vs 3")
    assert_allclose(resumed[0]["train_loss"], runs["single"]["train_loss"], rtol=1e-5,
                    err_msg="resumed history")


@needs_mpi
def test_denoising_noise_is_the_same_for_any_rank_count(tmp_path):
    single = _tiny(tmp_path / "single", "--corruption", "gaussian")[0]
    rank0, rank1 = _tiny(tmp_path / "mpi", "--corruption", "gaussian", ranks=2)
    for name, value in _weights(single).items():
        assert_array_equal(rank1[name], rank0[name], err_msg=f"{name}: ranks differ")
        assert_allclose(rank0[name], value, rtol=1e-5, atol=1e-6,
                        err_msg=f"{name}: denoising, 2 ranks vs 1 process")


@needs_mpi
def test_cli_train_distributed_rank0_alone_prints_and_writes(tmp_path):
    out = tmp_path / "run"
    proc = _run(_mpirun(2) + [sys.executable, "-m", "minicae", "train", "--distributed",
                              "--out", str(out), "--n-images", "24", "--image-size", "16",
                              "--channels", "2", "--epochs", "1", "--batch-size", "4",
                              "--no-progress"])
    assert proc.stdout.count("final: train loss") == 1, proc.stdout
    assert "2 MPI ranks x batch 4" in proc.stdout, proc.stdout
    assert (out / "checkpoint.npz").exists() and (out / "run.json").exists()


DRIVER = os.path.join(HERE, "run_with_signal.py")
SMALL = ["--n-images", "60", "--image-size", "16", "--channels", "2", "--batch-size", "4",
         "--epochs", "3", "--no-progress"]


def _launch(cmd, **env):
    env = dict(os.environ, PYTHONPATH=ROOT, MINICAE_BACKEND="numpy", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", **env)
    return subprocess.run(_mpirun(2) + [sys.executable, *cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_sigterm_on_one_rank_stops_every_rank_and_resumes_exactly(tmp_path, rank):
    from minicae.checkpoint import load_state

    base, run = str(tmp_path / "base"), str(tmp_path / "run")
    assert _launch(["-m", "minicae", "train", "--distributed", "--out", base,
                    *SMALL]).returncode == 0
    proc = _launch([DRIVER, "SIGTERM", "batch", "3", "--rank", str(rank), "--", "train",
                    "--distributed", "--out", run, *SMALL])
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("minicae")]
    assert said == [f"minicae train: SIGTERM at epoch 1, batch 3; checkpoint written to "
                    f"{run}/checkpoint.npz. Resume with: mpirun ... minicae train --out "
                    f"{run} --resume --distributed"], proc.stderr
    assert load_state(os.path.join(run, "checkpoint.npz")).manifest["metadata"][
        "batches_done"] == 3
    resumed = _launch(["-m", "minicae", "train", "--distributed", "--out", run, "--resume",
                       "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    want, got = (load_state(os.path.join(d, "checkpoint.npz")).arrays for d in (base, run))
    for key, value in want.items():
        assert_array_equal(got[key], value, err_msg=key)


@needs_mpi
@pytest.mark.slow
def test_a_stopped_rank_makes_the_others_abort_after_the_timeout(tmp_path):
    start = time.monotonic()
    proc = _launch([DRIVER, "SIGSTOP", "batch", "3", "--rank", "1", "--", "train",
                    "--distributed", "--out", str(tmp_path / "run"), *SMALL],
                   MINICAE_MPI_TIMEOUT="2")
    assert proc.returncode != 0
    said = [line for line in proc.stderr.splitlines() if line.startswith("minicae")]
    assert len(said) == 1 and said[0].startswith(
        "minicae: rank 0 of 2 waited 2 s for the other ranks at step 3 (epoch 1, batch 3) "
        "in the gradient Allreduce"), proc.stderr
    assert time.monotonic() - start < 60


def test_collective_timeout_setting(monkeypatch):
    from minicae.distributed import DEFAULT_TIMEOUT, collective_timeout

    monkeypatch.delenv("MINICAE_MPI_TIMEOUT", raising=False)
    assert collective_timeout() == DEFAULT_TIMEOUT == 300.0
    assert collective_timeout(7) == 7.0
    monkeypatch.setenv("MINICAE_MPI_TIMEOUT", "12.5")
    assert collective_timeout() == 12.5
    monkeypatch.setenv("MINICAE_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MINICAE_MPI_TIMEOUT: expected a number"):
        collective_timeout()
    with pytest.raises(ValueError, match="> 0, got 0"):
        collective_timeout(0)


def test_missing_mpi4py_names_the_fix(monkeypatch):
    from minicae import distributed
    from minicae.errors import BackendUnavailableError

    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(distributed.importlib, "import_module", fail)
    with pytest.raises(BackendUnavailableError,
                       match=r"minicae\[mpi\]") as info:
        distributed.init()
    assert "openmpi-bin" in str(info.value) and "minicae[mpi]" in str(info.value)
    assert distributed.mpi_available()[0] is False


def test_fit_rejects_more_ranks_than_images():
    from minicae.models import DenseAutoencoder
    from minicae.train import fit

    class FakeContext:                  # fit's protocol: rank, size, and the two calls
        rank, size = 0, 4

        def broadcast_parameters(self, model):
            return model

        def allreduce_grads(self, model, scalars=None, *, label=None):
            raise AssertionError("not reached")

    x = numpy.zeros((3, 4), dtype=numpy.float32)
    with pytest.raises(ValueError, match=r"at least one training image per rank \(4\)"):
        fit(DenseAutoencoder(4, hidden=[2], decoder_hidden=[], seed=0), x, x_val=x,
            epochs=1, progress=False, distributed=FakeContext())
