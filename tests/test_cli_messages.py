"""Failures and silent fallbacks a user met: each now says what happened, in one line.

In-process through :func:`minicae.cli.main` on tiny runs (the NumPy backend),
so that stdout, stderr and the pictures' inputs can be looked at directly.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import minicae
from minicae import checkpoint, cli, plots, train
from minicae.models import ConvAutoencoder

TINY = ["--n-images", "48", "--image-size", "16", "--channels", "4", "--batch-size", "16",
        "--epochs", "1", "--no-progress", "--backend", "numpy"]


def _train(tmp_path, *extra, name="run"):
    return cli.main(["train", "--out", str(tmp_path / name), *TINY, *extra])


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_exploding_sgd_is_one_line(tmp_path, capsys):
    # two layers: the second's huge pre-activations overflow to inf, then NaN
    assert _train(tmp_path, "--optimizer", "sgd", "--lr", "1e30", "--channels", "4", "8") == 2
    assert "NaN" in _one_error_line(capsys)


def test_resume_from_nan_weights_is_one_line(tmp_path, capsys):
    assert _train(tmp_path) == 0
    path = tmp_path / "run" / "checkpoint.npz"
    saved = checkpoint.load(path)
    for _, p in saved.model.named_parameters():
        p.data[...] = np.nan
    checkpoint.save(path, saved.model, **saved.metadata)
    capsys.readouterr()
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2",
                     "--no-progress"]) == 2
    assert "NaN" in _one_error_line(capsys)


def test_resume_from_a_weights_only_checkpoint_names_what_is_missing(tmp_path, capsys):
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    (run / "checkpoint.npz").write_bytes((run / "best.npz").read_bytes())
    capsys.readouterr()
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2",
                     "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "checkpoint.npz" in line and "history" in line and "best.npz" in line, line


def test_malformed_run_json_names_the_file(tmp_path, capsys):
    assert _train(tmp_path) == 0
    (tmp_path / "run" / "run.json").write_text("{not json")
    capsys.readouterr()
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2",
                     "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "run.json" in line and "JSON" in line, line


def test_disk_full_names_the_path(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full)
    assert _train(tmp_path) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(tmp_path / "run") in line, line
    assert "[Errno" not in line


def test_out_that_is_a_file_names_it(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert cli.main(["train", "--out", str(tmp_path / "taken"), *TINY]) == 2
    assert str(tmp_path / "taken") in _one_error_line(capsys)


def test_contractive_penalty_with_a_sigmoid_code_trains(tmp_path, capsys):
    # the penalty sits on the first layer (relu); the code's sigmoid is not its business
    assert _train(tmp_path, "--penalty", "contractive", "--code-activation", "sigmoid") == 0
    assert _train(tmp_path, "--penalty", "contractive", "--channels", "4",
                  "--code-activation", "sigmoid", name="one_layer") == 0


def test_denoise_pictures_show_the_noisy_input(tmp_path, monkeypatch):
    seen = {}

    def record(model, x, path, *, n=8, x_input=None):
        seen["x"], seen["x_input"] = x, x_input
        return path

    monkeypatch.setattr(plots, "save_reconstructions", record)
    assert _train(tmp_path, "--denoise", "masking", "--noise-level", "0.5") == 0
    assert seen["x_input"] is not None
    assert seen["x_input"].shape == seen["x"].shape
    assert (seen["x_input"] == 0).mean() > (seen["x"] == 0).mean() + 0.2


def test_training_that_ends_at_the_baseline_warns(tmp_path, capsys):
    assert _train(tmp_path, "--lr", "1e-9") == 0
    err = capsys.readouterr().err
    assert "not clearly below the mean-image baseline" in err, err


def test_info_names_the_extra_when_numba_is_missing(monkeypatch, capsys):
    import minicae.backend as backend

    real = backend.info()
    real["backends"]["numba"] = {"available": False, "detail": "Numba is not installed"}
    monkeypatch.setattr(backend, "info", lambda: real)
    assert cli.main(["info"]) == 0
    assert "pip install 'minicae[numba]'" in capsys.readouterr().out


def _tiny_fit(**kw):
    x = np.random.default_rng(0).random((24, 1, 16, 16)).astype(np.float32)
    model = ConvAutoencoder(1, channels=[2], seed=0)
    with minicae.use_backend("numpy"):
        return train.fit(model, x, epochs=2, batch_size=8, **kw)


def test_fit_prints_epoch_lines_by_default(capsys):
    _tiny_fit()
    out = capsys.readouterr().out
    assert "epoch 1: train loss" in out and "epoch 2: train loss" in out, out


def test_missing_tqdm_is_said_once(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(train._progress, "noticed", False)
    _tiny_fit()
    err = capsys.readouterr().err
    assert err.count("progress bar skipped: tqdm is not installed") == 1, err
    assert "minicae[progress]" in err


def test_filters_picture_has_a_colour_scale(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    labels = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (
        labels.extend(ax.get_ylabel() for ax in self.axes), real(self, *a, **k)))
    plots.save_filters(ConvAutoencoder(1, channels=[4], seed=0), tmp_path / "f.png")
    assert "weight" in labels


@pytest.mark.slow
def test_default_l1_weight_learns_more_than_the_mean_image(tmp_path, capsys):
    """With 1e-3 the code went to zero and val equalled the baseline; the default works."""
    assert cli.main(["train", "--penalty", "l1", "--epochs", "3", "--no-progress",
                     "--out", str(tmp_path / "l1")]) == 0
    history = json.loads((tmp_path / "l1" / "history.json").read_text())
    last = history["epochs"][-1]
    assert last["val_loss"] < 0.5 * history["baseline_mse"], (last, history["baseline_mse"])
    assert "baseline" not in capsys.readouterr().err
