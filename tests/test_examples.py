"""Every example script runs at its --tiny size and writes its pictures.

Each script runs in a subprocess (as a user would run it, with the repository
on PYTHONPATH and the NumPy backend, so no JIT compilation is timed), and
the PNGs it announces must exist and be non-empty.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
# extra arguments an example needs at --tiny size (dense_mnist has no MNIST here)
EXTRA = {"dense_mnist.py": ["--synthetic"]}
EXPECTED = {
    "dense_mnist.py": {"reconstructions.png", "filters.png", "loss.png"},
    "conv_full_padding.py": {"reconstructions.png", "filters.png", "loss.png"},
    "denoising.py": {"denoised.png", "loss.png"},
    "sparse.py": {"sigmoid_code.png", "KL_sparsity.png", "top-4.png", "code_activity.png"},
    "contractive.py": {"plain.png", "contractive.png"},
    "segmentation.py": {"overlay_kmeans_features.png", "overlay_head.png",
                        "overlay_anomaly.png"},
}


def _run(script, *args, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINICAE_BACKEND="numpy",
               MPLBACKEND="Agg", PYTHONWARNINGS="error")
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_example_is_listed():
    assert set(SCRIPTS) == set(EXPECTED), "add the new example to EXPECTED"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_tiny_and_saves_pngs(script, tmp_path):
    out = tmp_path / "out"
    result = _run(script, "--tiny", *EXTRA.get(script, []), out=out)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    written = {p.name for p in out.glob("*.png")}
    missing = EXPECTED[script] - written
    assert not missing, f"{script}: missing {sorted(missing)}; wrote {sorted(written)}"
    for path in out.glob("*.png"):
        assert path.stat().st_size > 1000, f"{script}: {path.name} is almost empty"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{script}: {path.name}"
    announced = set(re.findall(r"(\S+\.png)", result.stdout))
    assert {Path(p).name for p in announced} >= EXPECTED[script], result.stdout


def test_dense_mnist_without_data_explains_and_exits(tmp_path):
    result = _run("dense_mnist.py", "--tiny", out=tmp_path / "out")
    assert result.returncode == 2
    assert "Nothing is downloaded" in result.stderr and "--images" in result.stderr
    assert "--synthetic" in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


@pytest.mark.slow
def test_dense_mnist_reads_idx_files(tmp_path):
    import numpy as np

    from minicae.data import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", (rng.random((96, 28, 28)) < 0.2)
              .astype(np.uint8) * 255)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", (rng.random((16, 28, 28)) < 0.2)
              .astype(np.uint8) * 255)
    result = _run("dense_mnist.py", "--tiny", "--images",
                  str(tmp_path / "train-images-idx3-ubyte"), "--test-images",
                  str(tmp_path / "t10k-images-idx3-ubyte"), out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "test MSE" in result.stdout and "96 training images" in result.stdout
    assert (tmp_path / "out" / "reconstructions.png").exists()
