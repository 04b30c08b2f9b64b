"""Real-photograph texture mosaics, the Gabor baseline and the mean-field refinement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from minicae.segment import kmeans_segment, match_labels, mean_iou
from minicae.segment.cluster import mean_field_segment
from minicae.segment.texture import TextureEnergy, gabor_bank, gaussian_smooth

pytest.importorskip("skimage")
pytest.importorskip("sklearn")


def test_mosaics_are_intensity_matched_and_split_by_region():
    from minicae.data.mosaics import _band, make_texture_mosaics, texture_sources

    x, m, tex = make_texture_mosaics(8, size=48, seed=3, return_textures=True)
    assert x.shape == (8, 1, 48, 48) and m.shape == (8, 48, 48) and x.dtype == np.float32
    assert set(np.unique(m)) == {0, 1}
    # every region keeps >= 4 % of the image; two textures: brick/grass/gravel vs trees/text
    assert min(np.bincount(mi.ravel()).min() for mi in m) >= 0.04 * 48 * 48
    assert set(tex[:, 0]) <= {0, 1, 2} and set(tex[:, 1]) <= {3, 4}
    # patches are matched in mean and std (clipping moves them only a little)
    for xi, mi in zip(x[:, 0], m):
        for c in (0, 1):
            assert abs(xi[mi == c].mean() - 0.5) < 0.02
            assert abs(xi[mi == c].std() - 0.15) < 0.02
    again, _ = make_texture_mosaics(8, size=48, seed=3)
    assert_allclose(again, x)
    first, _ = make_texture_mosaics(3, size=48, seed=3)
    assert_allclose(first, x[:3])
    other, _ = make_texture_mosaics(8, size=48, seed=3, split="test")
    assert not np.allclose(other, x)
    # the three bands of each photograph are disjoint and cover it
    regions, _ = texture_sources()
    for name, region in regions.items():
        bands = [_band(region, s) for s in ("train", "val", "test")]
        assert sum(b.size for b in bands) == region.size, name


def test_mosaics_with_several_textures_and_bad_counts():
    from minicae.data.mosaics import make_texture_mosaics

    _, m, tex = make_texture_mosaics(6, size=40, n_textures=(3, 5), split="val",
                                     return_textures=True)
    counts = (tex >= 0).sum(axis=1)
    assert counts.min() >= 3 and counts.max() <= 5
    for mi, k in zip(m, counts):
        assert len(np.unique(mi)) == k
    with pytest.raises(ValueError, match="n_textures between 2 and 5"):
        make_texture_mosaics(2, n_textures=6)
    with pytest.raises(ValueError, match="split"):
        make_texture_mosaics(2, split="holdout")
    with pytest.raises(ValueError, match="at least 200x200"):
        make_texture_mosaics(1, size=200)


def test_gabor_bank_is_zero_mean_unit_norm_and_oriented():
    banks = gabor_bank(frequencies=(0.25, 0.125), orientations=4, dtype=np.float64)
    assert [b.shape[0] for b in banks] == [4, 4]
    assert banks[1].shape[-1] > banks[0].shape[-1]        # lower frequency, wider kernel
    for b in banks:
        assert_allclose(b.sum(axis=(1, 2, 3)), 0, atol=1e-12)
        assert_allclose((b ** 2).sum(axis=(1, 2, 3)), 1, rtol=1e-12)
    # a vertical grating of the bank's frequency excites orientation 0 most
    yy, xx = np.mgrid[0:48, 0:48]
    x = np.cos(2 * np.pi * 0.25 * xx)[None, None].astype(np.float64)
    from minicae.functional import conv2d

    r = conv2d(x, banks[0], padding="same")[0, :, 16:32, 16:32]
    energy = (r ** 2).mean(axis=(1, 2))
    assert energy.argmax() == 0 and energy[0] > 10 * energy[2]
    with pytest.raises(ValueError, match="frequencies in"):
        gabor_bank(frequencies=(0.7,))


def test_gaussian_smooth_keeps_constants_and_sums():
    x = np.full((2, 3, 20, 24), 0.7)
    assert_allclose(gaussian_smooth(x, 2.0), x, rtol=1e-12)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 40, 40))
    y = gaussian_smooth(x, 1.5)
    assert y.std() < x.std() / 2                          # it low-passes
    assert_allclose(y[0, 0, 15:25, 15:25].mean(), x[0, 0, 11:29, 11:29].mean(), atol=0.2)


def _two_texture_image(rng, n=4, size=40):
    """Fine noise on the left half, a coarse grating on the right: same mean and std."""
    xx = np.arange(size)[None, :].repeat(size, 0)
    mask = (xx >= size // 2).astype(np.int64)
    out = np.empty((n, 1, size, size))
    for i in range(n):
        noise = rng.standard_normal((size, size))
        grating = np.sign(np.sin(2 * np.pi * (np.arange(size)[:, None] + i) / 12.0)) \
            + 0.2 * rng.standard_normal((size, size))
        img = np.where(mask == 1, grating, noise)
        for c in (0, 1):
            v = img[mask == c]
            img[mask == c] = (v - v.mean()) / v.std()
        out[i, 0] = 0.5 + 0.15 * img
    return out.astype(np.float32), np.repeat(mask[None], n, axis=0)


def test_gabor_energy_separates_two_textures_that_intensity_cannot():
    x, m = _two_texture_image(np.random.default_rng(1))
    te = TextureEnergy().fit(x)
    f = te.transform(x)
    assert f.shape == (4, 16, 40, 40) and te.n_features_ == 16
    labels = kmeans_segment(f, 2, seed=0)
    assert mean_iou(m, match_labels(labels, m, n_classes=2), n_classes=2) > 0.8
    with pytest.raises(RuntimeError, match="call fit first"):
        TextureEnergy().transform(x)
    with pytest.raises(ValueError, match="nonlinearity"):
        TextureEnergy(nonlinearity="relu").fit(x)


def test_mean_field_removes_speckle_and_keeps_regions():
    rng = np.random.default_rng(0)
    truth = np.zeros((2, 32, 32), np.int64)
    truth[:, :, 16:] = 1
    f = truth[:, None].astype(np.float64) * 2.0 + 0.8 * rng.standard_normal((2, 1, 32, 32))
    noisy = kmeans_segment(f, 2, seed=0)
    refined = mean_field_segment(f, noisy, 2, beta=8.0, window=5)
    before = mean_iou(truth, match_labels(noisy, truth, n_classes=2), n_classes=2)
    after = mean_iou(truth, match_labels(refined, truth, n_classes=2), n_classes=2)
    assert after > before + 0.05 and after > 0.95
    # beta 0, one step from the k-means labels: at most a few pixels change
    same = mean_field_segment(f, noisy, 2, beta=0.0, iterations=1)
    assert (same != noisy).mean() < 0.05
    with pytest.raises(ValueError, match="same N, H, W"):
        mean_field_segment(f, noisy[:, :16], 2)


def test_segment_cli_on_texture_mosaics(tmp_path, capsys):
    from minicae.cli import main

    out = tmp_path / "run"
    json_path = tmp_path / "metrics.json"
    code = main(["segment", "--data", "textures", "--n-images", "24", "--image-size", "40",
                 "--epochs", "1", "--labels", "4", "--head-epochs", "5",
                 "--test-fraction", "0.5", "--eval-split", "val", "--overlays", "2",
                 "--out", str(out), "--json", str(json_path), "--backend", "numpy"])
    assert code == 0
    rows = json.loads(json_path.read_text())
    for name in ("kmeans_gabor", "mrf_gabor", "kmeans_features", "mrf_features",
                 "head_gabor", "head_pretrained"):
        assert name in rows and 0 <= rows[name]["miou"] <= 1
    assert "anomaly_otsu" not in rows
    assert (out / "methods.png").exists() and (out / "miou.png").exists()
    capsys.readouterr()


def test_segment_textures_several_segments_reports_cluster_ari():
    from minicae.segment import run_segment

    results, _ = run_segment(dict(data="textures", textures=[3, 4], task="classes",
                                  segments=5, n_images=16, image_size=40, epochs=1,
                                  labels=0, test_fraction=0.5, eval_split="val",
                                  overlays=0, backend="numpy"))
    assert "head_pretrained" not in results
    for name in ("kmeans_gabor", "mrf_features"):
        assert -0.5 <= results[name]["ari"] <= 1
    with pytest.raises(ValueError, match="--textures K"):
        run_segment(dict(data="textures", textures=[2, 3, 4], n_images=8, overlays=0))


def test_dihedral_augmentation_keeps_image_and_mask_aligned():
    from minicae.segment.pipeline import _dihedral

    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 6, 6)).astype(np.float32)
    m = (x[:, 0] > 0.5).astype(np.int64)
    xa, ma = _dihedral(x, m)
    assert xa.shape == (16, 1, 6, 6) and ma.shape == (16, 6, 6)
    assert len({xi.tobytes() for xi in xa}) == 16        # eight distinct views per image
    for xi, mi in zip(xa, ma):
        assert ((xi[0] > 0.5) == (mi == 1)).all()       # the mask moved with its image
    assert_allclose(xa[:2], x)


@pytest.mark.parametrize("argv, words", [
    (["--textures", "7"], "n_textures between 2 and 5"),
    (["--mrf-window", "4"], "odd --mrf-window"),
    (["--segments", "1"], "--segments >= 2"),
    (["--mrf-beta", "-1"], "--mrf-beta >= 0"),
])
def test_segment_cli_rejects_bad_texture_options(tmp_path, capsys, argv, words):
    from minicae.cli import main

    out = tmp_path / "run"
    code = main(["segment", "--data", "textures", "--out", str(out)] + argv)
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert not out.exists()


def test_texture_energy_with_learned_filters_uses_the_first_convolution():
    from minicae.models import ConvAutoencoder

    x, _ = _two_texture_image(np.random.default_rng(2), n=2, size=24)
    model = ConvAutoencoder(1, channels=[4, 6], kernel_size=3, scheme="full", seed=0,
                            input_size=[24, 24])
    te = TextureEnergy(model=model, coords=True).fit(x)
    f = te.transform(x)
    assert f.shape == (2, 4 + 2, 24, 24)                  # 4 learned filters + row, column
    assert te.periods_ == [3.0]
    assert_allclose(te.banks_[0].sum(axis=(1, 2, 3)), 0, atol=1e-6)
    assert_allclose(f[:, :4].mean(axis=(0, 2, 3)), 0, atol=1e-4)
    with pytest.raises(ValueError, match="cannot be fine-tuned"):
        te.transform(x, keep=True)


def test_missing_realdata_extra_is_one_clear_line(monkeypatch, tmp_path, capsys):
    import sys

    from minicae.cli import main
    from minicae.data import mosaics

    monkeypatch.setattr(mosaics, "_CACHE", {})
    monkeypatch.setitem(sys.modules, "skimage", None)      # import skimage -> ImportError
    out = tmp_path / "run"
    code = main(["segment", "--data", "textures", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "minicae[realdata]" in err and "Traceback" not in err
    assert not out.exists()
