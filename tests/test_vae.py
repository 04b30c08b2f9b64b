"""DenseVAE and ConvVAE as a user trains them: fit, history, save/load, resume, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

import minicae
from minicae import to_device, to_numpy
from minicae.data import make_shapes
from minicae.gradcheck import numerical_gradient
from minicae.train import fit
from minicae.vae import ConvVAE, DenseVAE, active_units, iwae_log_likelihood, prior_baseline


@pytest.fixture(scope="module")
def flat16():
    images, _ = make_shapes(96, size=16, texture=False, seed=3)
    return images


@pytest.mark.parametrize("likelihood,sigma", [("bernoulli", "fixed"), ("gaussian", "scalar"),
                                              ("gaussian", "pixel")])
def test_objective_gradient_matches_central_differences(numpy_backend, likelihood, sigma):
    """The whole model's backward (encoder, reparameterisation, KL, decoder, log sigma)."""
    model = ConvVAE(channels=(2, 3), input_size=8, latent=3, beta=0.8, free_bits=0.05,
                    likelihood=likelihood, sigma=sigma, log_sigma=-0.3, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 8, 8))
    eps = rng.standard_normal((3, 3))
    model.zero_grad()
    model.objective(x, eps=eps)
    for name, p in model.named_parameters():
        direction = rng.standard_normal(p.data.shape)
        analytic = float((to_numpy(p.grad) * direction).sum())
        base = p.data.copy()

        def f(t, base=base, p=p, direction=direction):
            p.data = base + t[0] * direction
            return model.objective(x, eps=eps, backward=False)[0]
        numeric = numerical_gradient(f, np.zeros(1))[0]
        p.data = base
        assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_fit_history_and_baseline(flat16):
    model = ConvVAE(channels=(8, 16), input_size=16, latent=4, kl_warmup=2)
    history = fit(model, flat16, epochs=3, batch_size=16, lr=3e-3, progress=False)
    first, last = history.epochs[0], history.epochs[-1]
    for key in ("val_loss", "val_bpd", "val_kl", "active_units"):
        assert key in last, key
    assert last["val_loss"] < first["val_loss"]
    assert_allclose(last["val_bpd"], last["val_loss"] / (256 * np.log(2)))
    assert 0 <= last["active_units"] <= 4
    assert model.beta_at(0) == 0.5 and model.beta_at(1) == 1.0 and model.beta_at(None) == 1.0
    iwae = iwae_log_likelihood(model, flat16[:16], k=8)
    assert np.isfinite(iwae)
    # the held-out ELBO is a lower bound that IWAE tightens, on average
    assert -iwae <= last["val_loss"] + 5.0
    assert prior_baseline(model, flat16[:80], flat16[80:]) > 0
    assert active_units(model, flat16[-10:]) <= 4


def test_save_load_and_resume_are_exact(tmp_path, flat16):
    kw = dict(batch_size=16, lr=2e-3, seed=4, progress=False)

    def make():
        return DenseVAE(256, hidden=[32], latent=4, input_shape=[1, 16, 16], beta=2.0,
                        free_bits=0.1)
    full = make()
    h_full = fit(full, flat16, epochs=3, **kw)
    part = make()
    fit(part, flat16, epochs=2, checkpoint_dir=tmp_path, **kw)
    loaded = minicae.load(tmp_path / "checkpoint.npz").model
    assert isinstance(loaded, DenseVAE) and loaded.get_config() == part.get_config()
    h_resumed = fit(loaded, flat16, epochs=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert h_resumed["train_loss"] == h_full["train_loss"]
    assert h_resumed["val_loss"] == h_full["val_loss"]
    for (name, a), b in zip(full.named_parameters(), loaded.parameters()):
        np.testing.assert_array_equal(to_numpy(a.data), to_numpy(b.data), err_msg=name)


def test_learned_log_sigma_is_a_parameter_and_saved(tmp_path):
    model = DenseVAE(16, hidden=[8], latent=2, likelihood="gaussian", sigma="pixel",
                     input_shape=[1, 4, 4])
    assert dict(model.named_parameters())["log_sigma"].shape == (1, 4, 4)
    minicae.save(tmp_path / "m.npz", model)
    again = minicae.load(tmp_path / "m.npz").model
    assert again.get_config()["sigma"] == "pixel"
    fixed = DenseVAE(16, hidden=[8], latent=2, likelihood="gaussian", input_shape=[1, 4, 4])
    assert "log_sigma" not in dict(fixed.named_parameters())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"DenseVAE: .*latent"):
        DenseVAE(latent=0)
    with pytest.raises(ValueError, match=r"ConvVAE: .*likelihood"):
        ConvVAE(likelihood="poisson")
    with pytest.raises(ValueError, match=r"ConvVAE: expected kl_warmup >= 0"):
        ConvVAE(kl_warmup=-1)
    with pytest.raises(ValueError, match=r"DenseVAE: input_shape \(1, 5, 5\) has 25 values"):
        DenseVAE(16, input_shape=[1, 5, 5])


def test_forward_reconstructs_from_the_mean(numpy_backend):
    model = DenseVAE(16, hidden=[8], latent=2, input_shape=[1, 4, 4], dtype="float64")
    x = np.random.default_rng(0).random((2, 1, 4, 4))
    y = to_numpy(model(to_device(x)))
    assert y.shape == x.shape and ((y > 0) & (y < 1)).all()
    mu, _ = model.encode(x)
    assert_allclose(to_numpy(model.code_), to_numpy(mu))
    with pytest.raises(NotImplementedError, match="objective"):
        model.backward(np.ones_like(y))


ENV = dict(os.environ, MINICAE_BACKEND="numpy", PYTHONUNBUFFERED="1")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "minicae", *args], capture_output=True,
                          text=True, timeout=600, env=ENV)


def test_cli_trains_a_conv_vae_resumes_and_draws(tmp_path):
    out = tmp_path / "vae"
    small = ["--model", "conv-vae", "--n-images", "64", "--image-size", "16", "--flat",
             "--channels", "4", "8", "--latent", "2", "--batch-size", "16", "--iwae-k", "4",
             "--kl-warmup", "2", "--no-progress", "--backend", "numpy", "--out", str(out)]
    proc = _cli("train", "--epochs", "1", *small)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("train", "--epochs", "2", "--resume", "--plots", "--out", str(out),
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "IWAE (K=4)" in proc.stdout and "active units" in proc.stdout
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert np.isfinite(history["epochs"][-1]["iwae"])
    if "pictures skipped" not in proc.stderr:
        for name in ("prior_samples", "traversal", "latent", "manifold"):
            assert (out / f"{name}.png").stat().st_size > 0, name


@pytest.mark.parametrize("flag,value,words", [("--latent", "0", "latent"),
                                              ("--beta", "-1", "beta"),
                                              ("--iwae-k", "0", "--iwae-k")])
def test_cli_rejects_bad_vae_flags(tmp_path, flag, value, words):
    out = tmp_path / "bad"
    proc = _cli("train", "--model", "vae", flag, value, "--no-progress", "--n-images", "16",
                "--image-size", "16", "--out", str(out))
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
