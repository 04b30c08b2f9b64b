"""Models and the trainer: they learn, penalties do what they claim, resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import minicae
from minicae import functional as F
from minicae.backend import use_backend
from minicae.data import make_shapes, write_idx
from minicae.errors import CheckpointError, NumericalError
from minicae.models import ConvAutoencoder, DenseAutoencoder
from minicae._runfiles import LOCK_NAME, RunLockedError
from minicae.train import TrainingInterrupted, corrupt, fit


@pytest.fixture(scope="module")
def shapes16():
    images, masks = make_shapes(96, size=16, texture=False, seed=3)
    return images, masks


@pytest.fixture(scope="module")
def many16():
    return make_shapes(480, size=16, texture=False, seed=4)[0]


def _models():
    return {
        "dense": lambda: DenseAutoencoder(256, hidden=[64, 32], decoder_hidden=[64],
                                          input_shape=[1, 16, 16], seed=0),
        "conv-full": lambda: ConvAutoencoder(1, channels=[8, 8], scheme="full", seed=0,
                                             input_size=16),
        "conv-strided": lambda: ConvAutoencoder(1, channels=[8, 16], scheme="strided",
                                                input_size=16, seed=0),
        "conv-pool": lambda: ConvAutoencoder(1, channels=[8, 16], scheme="strided",
                                             pool=True, input_size=16, seed=0),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_overfits_one_small_batch(name, shapes16):
    images = shapes16[0][:8]
    model = _models()[name]()
    lr = 5e-3 if name == "dense" else 1e-2
    history = fit(model, images, epochs=200, batch_size=8, lr=lr, val_fraction=0,
                  progress=False)
    first, last = history["train_loss"][0], history["train_loss"][-1]
    assert last < 0.05 * first, f"{name}: loss {first:.4g} -> {last:.4g}"
    assert last < 1e-2, f"{name}: final loss {last:.4g}"


@pytest.mark.parametrize("name", ["dense", "conv-strided"])
def test_validation_loss_beats_mean_image(name, many16):
    model = _models()[name]()
    history = fit(model, many16, epochs=16, batch_size=16, lr=3e-3, progress=False,
                  val_fraction=0.2)
    assert history.baseline_mse is not None
    assert history["val_loss"][-1] < 0.6 * history.baseline_mse, history.epochs[-1]


def test_kl_sparsity_reaches_rho(shapes16):
    rho = 0.1
    model = DenseAutoencoder(256, hidden=[32], decoder_hidden=[], code_activation="sigmoid",
                             penalty={"kind": "kl", "rho": rho, "weight": 3.0},
                             input_shape=[1, 16, 16], seed=1)
    fit(model, shapes16[0], epochs=60, batch_size=32, lr=1e-2, val_fraction=0,
        progress=False)
    model.eval()
    model(shapes16[0])
    mean_activation = float(model.code_.mean())
    assert abs(mean_activation - rho) < 0.02, mean_activation
    assert "encoder.2.KLSparsity" in model.penalty_values()


def test_topk_code_has_exactly_k_nonzeros(shapes16):
    k = 5
    model = DenseAutoencoder(256, hidden=[32], decoder_hidden=[], topk=k,
                             input_shape=[1, 16, 16], seed=2)
    history = fit(model, shapes16[0], epochs=3, batch_size=32, progress=False)
    model(shapes16[0])
    nonzeros = (model.code_ != 0).sum(axis=1)
    assert np.all(nonzeros <= k) and np.mean(nonzeros == k) > 0.9, nonzeros
    assert history["l0"][-1] <= k


def _jacobian_norm_sq(model, x):
    """Mean over samples of ||dh/dx||_F^2 of the first encoder layer (sigmoid)."""
    lin = model.encoder[1]
    a = F.linear(x.reshape(len(x), -1), lin.weight.data, lin.bias.data)
    s = F.sigmoid(a)
    return float(((s * (1 - s)) ** 2 @ (lin.weight.data ** 2).sum(axis=1)).mean())


def test_contractive_penalty_lowers_jacobian_norm(shapes16):
    x = shapes16[0]
    kw = dict(hidden=[32], decoder_hidden=[], activation="sigmoid",
              code_activation="sigmoid", input_shape=[1, 16, 16], seed=4)
    plain = DenseAutoencoder(256, **kw)
    contractive = DenseAutoencoder(256, penalty={"kind": "contractive", "weight": 0.05,
                                                 "activation": "sigmoid"}, **kw)
    for model in (plain, contractive):
        fit(model, x, epochs=20, batch_size=16, lr=5e-3, val_fraction=0, progress=False)
    j_plain, j_contr = _jacobian_norm_sq(plain, x), _jacobian_norm_sq(contractive, x)
    assert j_contr < 0.7 * j_plain, (j_plain, j_contr)


def test_denoising_corruptions_are_seeded_and_bounded():
    x = np.full((4, 1, 8, 8), 0.5, dtype=np.float32)
    for kind in ("gaussian", "masking", "salt_pepper"):
        a = corrupt(x, kind, 0.3, np.random.default_rng(0))
        b = corrupt(x, kind, 0.3, np.random.default_rng(0))
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and not np.array_equal(a, x), kind
    masked = corrupt(x, "masking", 0.3, np.random.default_rng(1))
    assert 0.15 < np.mean(masked == 0) < 0.45


def test_denoising_training_reconstructs_clean_target(many16):
    model = _models()["conv-strided"]()
    history = fit(model, many16, epochs=12, batch_size=16, lr=3e-3,
                  corruption="gaussian", corruption_level=0.2, progress=False)
    assert history["val_loss"][-1] < 0.6 * history.baseline_mse


def _state(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


def test_resume_is_exact(tmp_path, shapes16):
    x = shapes16[0][:48]
    kw = dict(batch_size=8, lr=2e-3, seed=5, progress=False)
    full = _models()["conv-strided"]()
    h_full = fit(full, x, epochs=4, **kw)
    part = _models()["conv-strided"]()
    fit(part, x, epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = minicae.load(tmp_path / "checkpoint.npz").model
    h_resumed = fit(resumed, x, epochs=4, checkpoint_dir=tmp_path, resume=True, **kw)
    assert h_resumed["train_loss"] == h_full["train_loss"]
    assert h_resumed["val_loss"] == h_full["val_loss"]
    for k, v in _state(full).items():
        np.testing.assert_array_equal(_state(resumed)[k], v, err_msg=k)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["epochs"]) == 4


def test_same_seed_same_history_and_weights(shapes16):
    runs = []
    for _ in range(2):
        model = _models()["dense"]()
        h = fit(model, shapes16[0], epochs=2, batch_size=16, seed=9, progress=False)
        runs.append((h["train_loss"], _state(model)))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k])


@pytest.mark.skipif(not minicae.backend.available_backends()["numba"][0],
                    reason="numba is not installed")
def test_numpy_and_numba_training_agree(shapes16):
    results = {}
    for name in ("numpy", "numba"):
        with use_backend(name):
            model = _models()["conv-strided"]()
            h = fit(model, shapes16[0][:32], epochs=2, batch_size=8, progress=False)
            results[name] = (h["train_loss"], _state(model))
    np.testing.assert_allclose(results["numpy"][0], results["numba"][0], rtol=1e-4)
    for k in results["numpy"][1]:
        np.testing.assert_allclose(results["numpy"][1][k], results["numba"][1][k],
                                   rtol=1e-3, atol=1e-5, err_msg=k)


def test_checkpoint_round_trip_and_corruption(tmp_path, shapes16):
    model = _models()["conv-full"]()
    fit(model, shapes16[0][:16], epochs=1, batch_size=8, checkpoint_dir=tmp_path,
        progress=False)
    path = tmp_path / "checkpoint.npz"
    back = minicae.load(path)
    for k, v in _state(model).items():
        np.testing.assert_array_equal(np.array(back.model.state_dict()[k]), v)
    assert back.metadata["epoch"] == 1 and back.optimizer_state is not None
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz"):
        minicae.load(tmp_path / "cut.npz")


class _NaNAtCall(minicae.nn.MSELoss):
    """MSE that returns NaN on its n-th call (a loss that blows up mid-run)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def __call__(self, pred, target):
        value = super().__call__(pred, target)
        self.calls += 1
        return float("nan") if self.calls == self.n else value


def test_nonfinite_loss_stops_with_epoch_batch_and_checkpoint(tmp_path, shapes16):
    x = shapes16[0][:32].copy()
    kw = dict(epochs=3, batch_size=8, val_fraction=0, progress=False)
    with pytest.raises(NumericalError, match=r"epoch 2, batch 3.*checkpoint.npz"):
        fit(_models()["dense"](), x, loss=_NaNAtCall(7), checkpoint_dir=tmp_path, **kw)
    assert minicae.load(tmp_path / "checkpoint.npz").metadata["epoch"] == 1
    model = _models()["dense"]()
    h = fit(model, x, loss=_NaNAtCall(7), on_nonfinite="skip", **kw)
    assert h["skipped"] == [0, 1, 0]
    assert all(np.isfinite(np.array(p.data)).all() for p in model.parameters())


def test_diverging_run_raises_not_warns(shapes16):
    with pytest.raises(NumericalError, match="NaN/inf at epoch 1"):
        fit(_models()["dense"](), shapes16[0][:32], epochs=2, batch_size=8, lr=1e30,
            optimizer="sgd", progress=False, val_fraction=0)


def test_dense_mnist_example_runs_from_idx(tmp_path):
    rng = np.random.default_rng(0)
    digits = (rng.random((64, 28, 28)) < 0.2).astype(np.uint8) * 255
    write_idx(tmp_path / "imgs-idx3-ubyte.gz", digits)
    images, _ = minicae.data.load_mnist(tmp_path / "imgs-idx3-ubyte.gz")
    assert images.shape == (64, 1, 28, 28) and images.max() == 1.0
    model = DenseAutoencoder(input_shape=[1, 28, 28])   # the documents' 784-64-64|64-784
    history = fit(model, images, epochs=2, batch_size=32, progress=False)
    assert history["train_loss"][1] < history["train_loss"][0]
    assert [p.shape for p in model.parameters()][::2] == [(64, 784), (64, 64), (64, 64),
                                                          (784, 64)]


@pytest.mark.parametrize("bad, match", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"), (dict(lr=-1.0), "lr"),
    (dict(corruption="blur"), "corruption"), (dict(loss="l7"), "loss"),
])
def test_fit_rejects_bad_hyperparameters(bad, match, shapes16):
    with pytest.raises(ValueError, match=match):
        fit(_models()["dense"](), shapes16[0], progress=False, **bad)


def test_penalty_attaches_to_any_encoder_layer(shapes16):
    model = ConvAutoencoder(1, channels=[4, 8], activation="sigmoid", input_size=16,
                            penalty={"kind": "contractive", "weight": 1e-2,
                                     "activation": "sigmoid", "layer": 2})
    h = fit(model, shapes16[0][:32], epochs=1, batch_size=16, progress=False)
    assert list(h["penalties"][0]) == ["encoder.2.Contractive"]
    assert h["penalties"][0]["encoder.2.Contractive"] > 0
    dense = DenseAutoencoder(256, hidden=[16, 8], decoder_hidden=[],
                             penalty={"kind": "l1", "weight": 1e-3, "layer": 2},
                             input_shape=[1, 16, 16])
    assert [n for n, _ in dense.named_penalties()] == ["encoder.2.L1Activity"]
    with pytest.raises(ValueError, match="encoder layer 1 is ReLU"):
        ConvAutoencoder(penalty={"kind": "contractive", "layer": 1})
    with pytest.raises(ValueError, match="index one of the 4 encoder layers"):
        ConvAutoencoder(penalty={"kind": "l1", "layer": 9})


# --- run safety: interruption, resume checks, the run-directory lock ----------------

def _tiny_conv(activation="relu", seed=0):
    return ConvAutoencoder(1, channels=[2], input_size=16, activation=activation, seed=seed)


def _signal_at_batch(monkeypatch, n, signum):
    """Send ``signum`` to this process as training batch ``n`` (1-based) starts."""
    from minicae.nn.module import Module

    zero_grad, count = Module.zero_grad, [0]

    def counted(self):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signum)
        return zero_grad(self)

    monkeypatch.setattr(Module, "zero_grad", counted)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_in_the_first_epoch_resumes_exactly(tmp_path, shapes16, monkeypatch, signum):
    x = shapes16[0][:40]
    kw = dict(epochs=2, batch_size=8, lr=1e-2, seed=1, progress=False)
    full = _tiny_conv()
    h_full = fit(full, x, **kw)
    with monkeypatch.context() as mp:
        _signal_at_batch(mp, 2, signum)
        with pytest.raises(TrainingInterrupted) as info:
            fit(_tiny_conv(), x, checkpoint_dir=tmp_path, **kw)
    assert (info.value.signal, info.value.epoch, info.value.batch) == (signum, 1, 2)
    meta = minicae.checkpoint.load_state(tmp_path / "checkpoint.npz").manifest["metadata"]
    assert meta["best"] is None and meta["batches_done"] == 2   # no best yet: JSON null
    resumed = _tiny_conv()
    h_resumed = fit(resumed, x, checkpoint_dir=tmp_path, resume=True, **kw)
    assert h_resumed["train_loss"] == h_full["train_loss"]
    for k, v in _state(full).items():
        np.testing.assert_array_equal(_state(resumed)[k], v, err_msg=k)
    assert not (tmp_path / LOCK_NAME).exists()


def test_resume_refuses_other_data_model_or_seed(tmp_path, shapes16):
    x = shapes16[0][:40]
    kw = dict(epochs=2, batch_size=8, progress=False, checkpoint_dir=tmp_path)
    fit(_tiny_conv(), x, **{**kw, "epochs": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    shuffled = x[::-1].copy()
    with pytest.raises(ValueError, match=r"trained on x with sha256 .*got .*same data"):
        fit(_tiny_conv(), shuffled, resume=True, **kw)
    with pytest.raises(ValueError, match=r"x with shape \(40, 1, 16, 16\), got \(32, 1"):
        fit(_tiny_conv(), x[:32], resume=True, **kw)
    with pytest.raises(CheckpointError, match=r"activation='tanh' \(saved 'relu'\)"):
        fit(_tiny_conv("tanh"), x, resume=True, **kw)
    with pytest.raises(ValueError, match="seed 0, got seed=3"):
        fit(_tiny_conv(), x, resume=True, seed=3, **kw)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_directory_lock_refuses_a_live_trainer_and_takes_over_a_dead_one(
        tmp_path, shapes16):
    x = shapes16[0][:24]
    kw = dict(epochs=1, batch_size=8, progress=False, checkpoint_dir=tmp_path)
    (tmp_path / LOCK_NAME).write_text(f"{os.getppid()}\n")         # alive: our parent
    with pytest.raises(RunLockedError, match=rf"in use by another trainer \(pid "
                                             rf"{os.getppid()}"):
        fit(_tiny_conv(), x, **kw)
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME]             # nothing written
    dead = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(f"{dead} another-host\n")   # cannot tell: refuse
    with pytest.raises(RunLockedError, match=rf"pid {dead} on another-host"):
        fit(_tiny_conv(), x, **kw)
    (tmp_path / LOCK_NAME).write_text(f"{dead}\n")
    stale = [f".checkpoint.npz.{dead}.x1y2z3w4.tmp", f"history.json.{dead}.tmp"]
    live = f".best.npz.{os.getpid()}.abcdefgh.tmp"
    for name in stale + [live]:
        (tmp_path / name).write_bytes(b"half")
    fit(_tiny_conv(), x, **kw)
    left = sorted(os.listdir(tmp_path))
    assert LOCK_NAME not in left and live in left, left
    assert not set(stale) & set(left), left
    assert "checkpoint.npz" in left


def test_fit_trains_and_resumes_a_hand_built_sequential(tmp_path, shapes16):
    from minicae import nn

    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(256, 16, rng=0), nn.ReLU(),
                             nn.Linear(16, 256, rng=1), nn.Sigmoid(), nn.Reshape(1, 16, 16))

    x = shapes16[0][:48]
    kw = dict(batch_size=8, lr=3e-3, progress=False)
    full = build()
    h_full = fit(full, x, epochs=3, **kw)
    assert h_full["l0"] == [None] * 3 and h_full["val_l0"] == [None] * 3
    assert h_full["val_loss"][-1] < h_full["val_loss"][0]
    fit(build(), x, epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = build()
    h = fit(resumed, x, epochs=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert h["train_loss"] == h_full["train_loss"]
    for k, v in _state(full).items():
        np.testing.assert_array_equal(_state(resumed)[k], v, err_msg=k)


def test_history_on_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from minicae.train import History

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"history\.json.*No space left"):
        History([{"epoch": 1}]).save(tmp_path / "history.json")
    assert os.listdir(tmp_path) == []
