"""Segmentation: features, k-means, head, anomaly maps and the end-to-end CLI run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from minicae import nn
from minicae.backend import use_backend
from minicae.models import ConvAutoencoder
from minicae.segment import (KMeans, PixelFeatures, SegmentationHead, box_mean,
                             kmeans_segment, match_labels, mean_iou, reconstruction_error_map,
                             resample_matrix)
from minicae.segment.features import _box_mean_backward


def test_resample_matrix_crops_the_centre_and_interpolates():
    a = resample_matrix(4, 6)
    np.testing.assert_array_equal(a.argmax(axis=1), [1, 2, 3, 4])   # offset (6 − 4) // 2
    up = resample_matrix(8, 4, "bilinear")
    assert_allclose(up.sum(axis=1), 1.0, err_msg="bilinear rows must sum to 1")
    assert_allclose(up @ np.arange(4.0), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    near = resample_matrix(8, 4, "nearest")
    np.testing.assert_array_equal(near @ np.arange(4.0), np.repeat(np.arange(4.0), 2))


def test_full_scheme_crop_is_exact():
    # a 'full' conv whose kernel is a centred delta: the cropped map equals the input
    with use_backend("numpy"):
        model = ConvAutoencoder(1, channels=[1], kernel_size=3, dtype="float64")
        conv = model.encoder.layers[0]
        conv.weight.data[...] = 0
        conv.weight.data[0, 0, 1, 1] = 1.0
        conv.bias.data[...] = 0
        x = np.random.default_rng(0).random((2, 1, 9, 9))
        f = PixelFeatures(model, layers=[0], standardize=False).fit_transform(x)
        assert_allclose(f, x, rtol=0, atol=1e-12)


def test_box_mean_is_a_mean_and_its_backward_is_the_adjoint():
    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 7, 6))
    assert_allclose(box_mean(np.ones_like(x), 5), 1.0)
    assert_allclose(box_mean(x, 3)[0, 0, 3, 3], x[0, 0, 2:5, 2:5].mean())
    assert_allclose(box_mean(x, 3)[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    y = rng.random(x.shape)
    # <M x, y> = <x, Mᵀ y>
    assert_allclose((box_mean(x, 5) * y).sum(), (x * _box_mean_backward(y, 5)).sum(),
                    rtol=1e-12)


@pytest.mark.parametrize("pool", [None, "mean", "energy"])
def test_feature_backward_matches_central_differences(pool):
    with use_backend("numpy"):
        model = ConvAutoencoder(1, channels=[2, 3], kernel_size=3, scheme="strided",
                                input_size=8, dtype="float64", seed=3)
        rng = np.random.default_rng(2)
        x = rng.random((2, 1, 8, 8))
        ex = PixelFeatures(model, pool=pool, smooth=3 if pool else 0).fit(x)
        r = rng.standard_normal(ex.transform(x).shape)
        model.zero_grad()
        f = ex.transform(x, keep=True)
        ex.backward(r)                      # d/dθ of L = <features, r>
        weight = model.encoder.layers[0].weight
        direction = rng.standard_normal(weight.data.shape)
        analytic = (weight.grad * direction).sum()
        eps = 1e-6
        base = weight.data.copy()
        weight.data[...] = base + eps * direction
        plus = (ex.transform(x) * r).sum()
        weight.data[...] = base - eps * direction
        minus = (ex.transform(x) * r).sum()
        weight.data[...] = base
        assert f.shape == (2, 5, 8, 8)
        assert_allclose(analytic, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-8,
                        err_msg=f"pool={pool}")


def test_kmeans_finds_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.3, (50, 2)), rng.normal(5, 0.3, (50, 2))])
    labels = KMeans(2, seed=1).fit_predict(x)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1
    assert labels[0] != labels[-1]
    again = KMeans(2, seed=1).fit(x)
    assert_allclose(again.inertia_, KMeans(2, seed=1).fit(x).inertia_)
    with pytest.raises(ValueError, match="at least n_clusters"):
        KMeans(5).fit(x[:3])


def test_kmeans_segment_two_region_image():
    feats = np.zeros((2, 1, 6, 6))
    feats[:, :, :, 3:] = 1.0
    feats += np.random.default_rng(0).normal(0, 0.05, feats.shape)
    truth = np.zeros((2, 6, 6), dtype=int)
    truth[:, :, 3:] = 1
    for per_image in (True, False):
        labels = kmeans_segment(feats, 2, per_image=per_image, smooth=1)
        mapped = match_labels(labels, truth, n_classes=2, per_image=per_image)
        assert mean_iou(truth, mapped) == 1.0


def test_segmentation_head_learns_a_separable_rule():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((6, 2, 8, 8)).astype(np.float32)
    masks = (feats[:, 0] > 0).astype(np.int64)
    head = SegmentationHead(2, hidden=(), epochs=60, lr=0.1, dice_weight=0.5)
    assert head.fit(feats, masks) is head
    assert (head.predict(feats) == masks).mean() > 0.95
    assert head.loss_curve_[-1] < head.loss_curve_[0]
    proba = head.predict_proba(feats)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="mask values"):
        SegmentationHead(2).fit(feats, masks + 2)
    with pytest.raises(ValueError, match="finetune"):
        SegmentationHead(2, finetune=True).fit(feats, masks)


def test_finetune_changes_the_encoder():
    model = ConvAutoencoder(1, channels=[2], kernel_size=3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 16, 16)).astype(np.float32)
    masks = (x[:, 0] > 0.5).astype(np.int64)
    before = model.encoder.layers[0].weight.data.copy()
    ex = PixelFeatures(model).fit(x)
    head = SegmentationHead(2, epochs=3, extractor=ex, finetune=True).fit(x, masks)
    assert not np.allclose(model.encoder.layers[0].weight.data, before)
    assert head.predict(x).shape == (4, 16, 16)


def test_reconstruction_error_map_is_the_squared_error():
    layer_model = ConvAutoencoder(1, channels=[2], kernel_size=3, seed=0)
    x = np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32)
    err = reconstruction_error_map(layer_model, x)
    x_hat = layer_model(x)
    assert_allclose(err, ((x - x_hat) ** 2)[:, 0], rtol=1e-5)
    assert isinstance(layer_model.encoder.layers[0], nn.Conv2d)


@pytest.mark.slow
def test_segment_cli_end_to_end(tmp_path, capsys):
    from minicae.cli import main

    out = tmp_path / "run"
    json_path = tmp_path / "metrics.json"
    code = main(["segment", "--n-images", "60", "--image-size", "24", "--epochs", "3",
                 "--labels", "6", "--head-epochs", "40", "--test-fraction", "0.25",
                 "--overlays", "2", "--out", str(out), "--json", str(json_path),
                 "--backend", "numpy"])
    assert code == 0
    printed = capsys.readouterr().out
    rows = json.loads(json_path.read_text())
    for name in ("kmeans_features", "kmeans_pixels", "otsu", "head_pretrained",
                 "head_random", "head_pixels", "anomaly_otsu"):
        assert name in printed and name in rows
        assert set(rows[name]) >= {"miou", "pixel_accuracy", "dice", "ari"}
    # textured data: intensity alone is at chance, autoencoder features are not
    assert rows["kmeans_features"]["miou"] > rows["kmeans_pixels"]["miou"] + 0.05
    assert rows["head_pretrained"]["miou"] > 0.6
    assert rows["head_pretrained"]["ari"] > rows["kmeans_pixels"]["ari"] + 0.2
    assert rows["anomaly_otsu"]["auroc"] > 0.7
    assert (out / "overlay_head_pretrained.png").exists()


def test_run_segment_plain_autoencoder_on_the_training_split_only():
    from minicae.segment import run_segment

    results, pictures = run_segment(
        dict(n_images=40, image_size=24, epochs=2, labels=4, head_epochs=30,
             test_fraction=0.25, corruption="none", pretrain_on="train", overlays=0,
             backend="numpy"))
    assert pictures == {}
    assert results["head_pretrained"]["miou"] > results["kmeans_pixels"]["miou"]
    assert results["anomaly_otsu"]["auroc"] > 0.6
    with pytest.raises(ValueError, match="unknown options"):
        run_segment(dict(pretrain="all"))
