"""minicae.data: the shapes generator, the file readers, batching and dispatch."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from numpy.testing import assert_allclose, assert_array_equal

from minicae.data import (ArrayDataset, DataFileNotFoundError, iterate_minibatches,
                          load_arrays, load_dataset, load_idx, load_image_folder, load_mnist,
                          make_shapes, make_shapes_anomaly, train_val_split, write_idx)
from minicae.errors import DataError, ShapeError

PIL_Image = pytest.importorskip("PIL.Image")


# --- the shapes generator --------------------------------------------------------------

def test_make_shapes_is_deterministic_and_prefix_stable():
    a_images, a_masks = make_shapes(6, size=32, seed=7)
    b_images, b_masks = make_shapes(6, size=32, seed=7)
    assert_array_equal(a_images, b_images)
    assert_array_equal(a_masks, b_masks)
    head_images, head_masks = make_shapes(3, size=32, seed=7)
    assert_array_equal(head_images, a_images[:3], err_msg="image i must not depend on n")
    assert_array_equal(head_masks, a_masks[:3])
    other, _ = make_shapes(6, size=32, seed=8)
    assert not np.array_equal(other, a_images)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("texture", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_make_shapes_layout(channels, texture, dtype):
    images, masks = make_shapes(5, size=24, channels=channels, texture=texture, dtype=dtype)
    assert images.shape == (5, channels, 24, 24) and images.dtype == dtype
    assert masks.shape == (5, 24, 24) and masks.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(masks)) <= {0, 1, 2, 3}


def test_mask_classes_present_and_counted():
    _, masks = make_shapes(40, size=48, seed=2)
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    assert (masks > 0).any(axis=(1, 2)).all(), "every image holds at least one object"
    _, single = make_shapes(30, size=48, seed=3, min_shapes=1, max_shapes=1)
    per_image = [set(np.unique(m)) - {0} for m in single]
    assert all(len(s) == 1 for s in per_image), per_image


@pytest.mark.parametrize("channels", [1, 3])
def test_flat_images_paint_the_mask(channels):
    images, masks = make_shapes(12, size=32, channels=channels, texture=False, noise=0.0,
                                seed=4)
    levels = {k: images.transpose(0, 2, 3, 1)[masks == k] for k in range(4)}
    for k, values in levels.items():
        if values.size:
            assert_allclose(values, values[:1].repeat(len(values), 0), rtol=0, atol=1e-6,
                            err_msg=f"class {k} must be one flat level/colour")
    bg = levels[0][0].mean()
    assert all(levels[k][0].mean() > bg + 0.3 for k in (1, 2, 3) if levels[k].size)


def _fill_ratio(mask):
    """Pixel area over the minimum-area bounding rectangle (1° steps)."""
    yy, xx = np.nonzero(mask)
    angle = np.deg2rad(np.arange(180.0))
    u = np.outer(xx, np.cos(angle)) + np.outer(yy, np.sin(angle))
    v = -np.outer(xx, np.sin(angle)) + np.outer(yy, np.cos(angle))
    box = (np.ptp(u, axis=0) + 1) * (np.ptp(v, axis=0) + 1)
    return len(yy) / box.min()


def test_shape_geometry_matches_class():
    # ellipse fills pi/4 of its box, a rectangle all of it, a triangle half of it
    _, masks = make_shapes(120, size=64, seed=1, min_shapes=1, max_shapes=1, texture=False)
    ratios = {1: [], 2: [], 3: []}
    for m in masks:
        if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
            continue  # clipped by the border
        ratios[int(m.max())].append(_fill_ratio(m))
    assert all(len(r) >= 10 for r in ratios.values()), {k: len(r) for k, r in ratios.items()}
    assert 0.70 < min(ratios[1]) and max(ratios[1]) < 0.86, ratios[1]
    assert min(ratios[2]) > 0.84, ratios[2]
    assert 0.45 < min(ratios[3]) and max(ratios[3]) < 0.58, ratios[3]


def _best_balanced_accuracy(feature, positive):
    """Best balanced accuracy of one threshold on ``feature`` (either direction)."""
    order = np.argsort(feature, kind="stable")
    y = positive[order]
    below_pos = np.cumsum(y) / y.sum()
    below_neg = np.cumsum(~y) / (~y).sum()
    balanced = 0.5 * (below_neg + 1.0 - below_pos)
    return max(balanced.max(), (1.0 - balanced).max())


def _box_mean(x, k):
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="reflect")
    return sliding_window_view(padded, (k, k), axis=(1, 2)).mean(axis=(-2, -1))


def test_texture_hides_intensity_but_not_local_texture():
    images, masks = make_shapes(40, size=64, seed=0)
    x, fg = images[:, 0].astype(np.float64), masks > 0
    assert abs(x[fg].mean() - x[~fg].mean()) < 0.03
    assert abs(x[fg].std() - x[~fg].std()) < 0.03, "similar variance inside and outside"
    # local std and gradient energy |∇x|² averaged over a 5x5 window
    local_std = np.sqrt(np.maximum(_box_mean(x**2, 5) - _box_mean(x, 5) ** 2, 0.0))
    gy = np.diff(x, axis=1, append=x[:, -1:])
    gx = np.diff(x, axis=2, append=x[:, :, -1:])
    energy = _box_mean(gy**2 + gx**2, 5)
    acc = {name: np.mean([_best_balanced_accuracy(f[i].ravel(), fg[i].ravel())
                          for i in range(len(x))])
           for name, f in (("intensity", x), ("local_std", local_std), ("energy", energy))}
    assert acc["intensity"] < 0.62, acc
    assert acc["local_std"] > acc["intensity"] + 0.15, acc
    assert acc["energy"] > 0.85, acc


def test_anomaly_images_are_clean_images_plus_a_defect():
    clean, _ = make_shapes(8, size=48, seed=5)
    images, anomaly = make_shapes_anomaly(8, size=48, seed=5)
    assert anomaly.dtype == bool and anomaly.any(axis=(1, 2)).all()
    outside = np.broadcast_to(~anomaly[:, None], images.shape)
    assert_array_equal(images[outside], clean[outside])
    again, again_mask = make_shapes_anomaly(8, size=48, seed=5)
    assert_array_equal(again, images)
    assert_array_equal(again_mask, anomaly)
    none, none_mask = make_shapes_anomaly(4, size=48, seed=5, fraction=0.0)
    assert not none_mask.any()
    assert_array_equal(none, clean[:4])


def test_anomaly_kinds():
    blob, blob_mask = make_shapes_anomaly(10, size=48, seed=6, kind="blob", noise=0.0)
    means = [abs(blob[i, 0][blob_mask[i]].mean() - 0.5) for i in range(10)]
    assert min(means) > 0.25, "a blob is an intensity anomaly"
    rings, rings_mask = make_shapes_anomaly(10, size=48, seed=6, kind="rings")
    assert abs(rings[:, 0][rings_mask].mean() - 0.5) < 0.05, "rings keep the mean"


@pytest.mark.parametrize("kwargs, error, words", [
    ({"n": 0}, ValueError, "n to be an integer >= 1"),
    ({"n": 2, "size": 8}, ValueError, "size >= 16"),
    ({"n": 2, "channels": 2}, ValueError, "channels"),
    ({"n": 2, "min_shapes": 3, "max_shapes": 2}, ValueError, "max_shapes >= min_shapes"),
    ({"n": 2, "noise": -1.0}, ValueError, "noise"),
    ({"n": 2, "dtype": np.int32}, TypeError, "floating dtype"),
    ({"n": 2, "seed": -1}, ValueError, "seed"),
])
def test_make_shapes_rejects_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        make_shapes(**kwargs)


def test_make_shapes_anomaly_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        make_shapes_anomaly(2, kind="scratch")
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        make_shapes_anomaly(2, fraction=1.5)
