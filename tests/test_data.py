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


# --- IDX files -------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        array = array + np.uint8(100)
    path = tmp_path / f"x{suffix}"
    write_idx(path, array)
    assert path.read_bytes().startswith(b"\x1f\x8b") == suffix.endswith(".gz")
    back = load_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=")
    assert_array_equal(back, array, err_msg=f"{dtype} {suffix}")


def _write_mnist(tmp_path, n=5, n_labels=None, gz=False, prefix="train"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n if n_labels is None else n_labels, dtype=np.uint8)
    ext = ".gz" if gz else ""
    ipath = tmp_path / f"{prefix}-images-idx3-ubyte{ext}"
    lpath = tmp_path / f"{prefix}-labels-idx1-ubyte{ext}"
    write_idx(ipath, images)
    write_idx(lpath, labels)
    return ipath, lpath, images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_scales_and_pairs(tmp_path, gz):
    ipath, lpath, images, labels = _write_mnist(tmp_path, gz=gz)
    x, y = load_mnist(ipath, lpath)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    assert_allclose(x[:, 0], images / 255.0, rtol=0, atol=1e-7)
    assert y.dtype == np.int64
    assert_array_equal(y, labels)
    x_only, none = load_mnist(ipath)
    assert none is None and x_only.shape == x.shape


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match=r"bad\.idx.*magic number.*0x12340801"):
        load_idx(path)
    ipath, lpath, _, _ = _write_mnist(tmp_path)
    with pytest.raises(DataError, match=r"MNIST images.*0x00000803.*got 0x00000801"):
        load_mnist(lpath, ipath)


def test_idx_truncated_and_overlong(tmp_path):
    path = tmp_path / "t.idx"
    write_idx(path, np.zeros((2, 3, 4), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[:-4])
    with pytest.raises(DataError, match=r"t\.idx.*expected 24 data bytes.*got 20.*truncated"):
        load_idx(path)
    path.write_bytes(raw + b"\x00")
    with pytest.raises(DataError, match=r"expected 24 data bytes.*got 25"):
        load_idx(path)
    path.write_bytes(raw[:10])
    with pytest.raises(DataError, match=r"16-byte header.*got 10 bytes"):
        load_idx(path)
    gz = tmp_path / "t.idx.gz"
    gz.write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(DataError, match=r"gzip.*truncated or corrupt"):
        load_idx(gz)


def test_mnist_count_mismatch(tmp_path):
    ipath, lpath, _, _ = _write_mnist(tmp_path, n=5, n_labels=4)
    with pytest.raises(DataError, match=r"as many labels as images.*5 images.*4 labels"):
        load_mnist(ipath, lpath)


def test_write_idx_rejects_int64(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, np.int64))


@pytest.mark.parametrize("reader", [load_idx, load_mnist, load_arrays, load_image_folder,
                                    load_dataset])
def test_missing_path_is_data_error_and_file_not_found(tmp_path, reader):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="nope.npz.*does not exist") as info:
        reader(missing)
    assert isinstance(info.value, FileNotFoundError)


# --- .npz / .npy -----------------------------------------------------------------------

def test_load_arrays_uint8_scaling_and_extra_keys(tmp_path):
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4) * 8
    masks = (images > 100).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=images, masks=masks, labels=np.array([1, 0]))
    ds = load_arrays(tmp_path / "d.npz")
    assert ds.images.shape == (2, 1, 4, 4) and ds.images.dtype == np.float32
    assert_allclose(ds.images[:, 0], images / 255.0, rtol=0, atol=1e-7)
    assert ds.masks.dtype == np.int64 and ds.labels.dtype == np.int64
    assert_array_equal(ds.masks, masks)
    np.save(tmp_path / "f.npy", np.full((3, 2, 5, 5), 0.25))
    ds = load_arrays(tmp_path / "f.npy", dtype=np.float64)
    assert ds.images.shape == (3, 2, 5, 5) and ds.images.dtype == np.float64
    assert ds.masks is None and ds.labels is None


@pytest.mark.parametrize("arrays, words", [
    ({"images": np.array([np.zeros(3), None], dtype=object)}, "pickle"),
    ({"images": np.full((2, 4, 4), np.nan)}, "1?32 NaN or inf"),
    ({"images": np.array([[[np.inf, 0.0]]])}, "1 NaN or inf.*index \\(0, 0, 0, 0\\)"),
    ({"images": np.zeros((2, 4, 4), np.complex64)}, "uint8 or floating.*complex64"),
    ({"images": np.zeros((2, 4, 4), np.int64)}, "uint8 or floating.*int64"),
    ({"images": np.zeros(5)}, r"\(N, H, W\) or \(N, C, H, W\), got \(5,\)"),
    ({"images": np.zeros((2, 8, 8, 3))}, "channels-last"),
    ({"images": np.zeros((0, 4, 4))}, "at least one image"),
    ({"x_train": np.zeros((2, 4, 4))}, "keys 'images'.*x_train"),
    ({"images": np.zeros((2, 4, 4)), "mask": np.zeros((2, 4, 4))}, "keys.*'mask'"),
    ({"images": np.zeros((2, 4, 4)), "masks": np.zeros((3, 4, 4), int)},
     r"masks of shape \(2, 4, 4\).*got \(3, 4, 4\)"),
    ({"images": np.zeros((2, 4, 4)), "masks": np.zeros((2, 4, 4))}, "integer class masks"),
    ({"images": np.zeros((2, 4, 4)), "masks": -np.ones((2, 4, 4), int)}, ">= 0"),
    ({"images": np.zeros((2, 4, 4)), "labels": np.zeros(3, int)}, r"labels of shape \(2,\)"),
])
def test_load_arrays_rejects(tmp_path, arrays, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=f"bad.npz.*{words}"):
        load_arrays(path)


def test_load_arrays_rejects_pickled_npy_and_garbage(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy.*needs pickle"):
        load_arrays(tmp_path / "obj.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.npz.*does not load"):
        load_arrays(tmp_path / "junk.npz")


# --- image folders ---------------------------------------------------------------------

def _write_pngs(folder, names, arrays, mode=None):
    folder.mkdir(exist_ok=True)
    for name, array in zip(names, arrays):
        PIL_Image.fromarray(array, mode=mode).save(folder / name)


def test_image_folder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 6, 7), dtype=np.uint8)
    labels = rng.integers(0, 3, size=(3, 6, 7), dtype=np.uint8)
    _write_pngs(tmp_path / "img", ["b.png", "a.png", "c.png"], pixels)
    _write_pngs(tmp_path / "msk", ["b.png", "a.png", "c.png"], labels)
    (tmp_path / "img" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path / "img", mask_dir=tmp_path / "msk")
    order = [1, 0, 2]  # sorted names: a, b, c
    assert ds.images.shape == (3, 1, 6, 7) and ds.images.dtype == np.float32
    assert_allclose(ds.images[:, 0], pixels[order] / 255.0, rtol=0, atol=1e-7)
    assert_array_equal(ds.masks, labels[order])
    rgb = load_image_folder(tmp_path / "img", grayscale=False, size=(4, 5))
    assert rgb.images.shape == (3, 3, 4, 5) and rgb.masks is None
    assert_allclose(rgb.images[:, 0], rgb.images[:, 2], rtol=0, atol=0)


def test_image_folder_binary_masks_and_jpeg(tmp_path):
    _write_pngs(tmp_path / "img", ["x.jpg"], [np.full((5, 5), 128, np.uint8)])
    _write_pngs(tmp_path / "msk", ["x.png"], [np.where(np.eye(5) > 0, 255, 0).astype(np.uint8)])
    ds = load_image_folder(tmp_path / "img", mask_dir=tmp_path / "msk")
    assert_array_equal(ds.masks[0], np.eye(5, dtype=np.int64))
    assert abs(float(ds.images.mean()) - 128 / 255) < 0.02


def test_image_folder_errors(tmp_path):
    _write_pngs(tmp_path / "img", ["a.png", "b.png"],
                [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)])
    with pytest.raises(DataError, match=r"4x4 like 'a.png', got 5x4.*size=\(H, W\)"):
        load_image_folder(tmp_path / "img")
    assert load_image_folder(tmp_path / "img", size=4).images.shape == (2, 1, 4, 4)
    _write_pngs(tmp_path / "msk", ["a.png"], [np.zeros((4, 4), np.uint8)])
    with pytest.raises(DataError, match=r"same stem.*\['b.png'\]"):
        load_image_folder(tmp_path / "img", mask_dir=tmp_path / "msk", size=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="at least one"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "z.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="z.png.*Pillow cannot read"):
        load_image_folder(tmp_path / "broken")
    green = np.dstack([np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 4))]).astype(np.uint8)
    _write_pngs(tmp_path / "colour", ["a.png", "b.png"], [green, green])
    with pytest.raises(DataError, match="single-channel mask"):
        load_image_folder(tmp_path / "img", mask_dir=tmp_path / "colour", size=4)
    with pytest.raises(DataError, match="a folder of images.*which is a file"):
        load_image_folder(tmp_path / "img" / "a.png")


def test_image_folder_without_pillow_names_the_extra(tmp_path, monkeypatch):
    _write_pngs(tmp_path / "img", ["a.png"], [np.zeros((4, 4), np.uint8)])
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r'pip install "minicae\[images\]"'):
        load_image_folder(tmp_path / "img")


# --- batching and ArrayDataset ---------------------------------------------------------

def test_train_val_split_partitions_and_is_seeded():
    train, val = train_val_split(101, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 81
    assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(101))
    again = train_val_split(101, 0.2, seed=3)
    assert_array_equal(again[1], val)
    assert not np.array_equal(train_val_split(101, 0.2, seed=4)[1], val)
    same = train_val_split(101, 0.2, seed=np.random.default_rng(3))
    assert_array_equal(same[1], val)
    assert len(train_val_split(10, 0.0, seed=0)[1]) == 0
    assert len(train_val_split(10, 0.01, seed=0)[1]) == 1


@pytest.mark.parametrize("n, fraction, error, words", [
    (10, 1.0, ValueError, r"val_fraction in \[0, 1\)"),
    (10, -0.1, ValueError, r"val_fraction in \[0, 1\)"),
    (1, 0.5, ValueError, "at least one training sample"),
    (0, 0.5, ValueError, "n to be an integer >= 1"),
])
def test_train_val_split_rejects(n, fraction, error, words):
    with pytest.raises(error, match=words):
        train_val_split(n, fraction, seed=0)


@given(n=st.integers(1, 60), batch_size=st.integers(1, 70), drop_last=st.booleans(),
       shuffle=st.booleans(), seed=st.integers(0, 2**16))
def test_minibatches_cover_each_index_once(n, batch_size, drop_last, shuffle, seed):
    config = f"n={n} batch_size={batch_size} drop_last={drop_last} shuffle={shuffle}"
    rng = np.random.default_rng(seed) if shuffle else None
    if drop_last and batch_size > n:
        with pytest.raises(ValueError, match="yields no batch"):
            iterate_minibatches(n, batch_size, rng=rng, shuffle=shuffle, drop_last=True)
        return
    batches = list(iterate_minibatches(n, batch_size, rng=rng, shuffle=shuffle,
                                       drop_last=drop_last))
    seen = np.concatenate(batches)
    assert len(seen) == len(np.unique(seen)), config
    assert all(len(b) == batch_size for b in batches[:-1]), config
    expected = n - n % batch_size if drop_last else n
    assert len(seen) == expected, config
    if not drop_last:
        assert_array_equal(np.sort(seen), np.arange(n), err_msg=config)
    if shuffle:
        again = list(iterate_minibatches(n, batch_size, rng=np.random.default_rng(seed),
                                         drop_last=drop_last))
        assert_array_equal(np.concatenate(again), seen, err_msg=config)
    else:
        assert_array_equal(seen, np.arange(expected), err_msg=config)


def test_minibatches_validate_when_called():
    with pytest.raises(ValueError, match="batch_size to be an integer >= 1"):
        iterate_minibatches(10, 0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        iterate_minibatches(10, 2, rng=0)


def test_array_dataset_indexing_and_checks():
    images = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 1, 4, 4)
    masks = np.arange(5 * 4 * 4).reshape(5, 4, 4) % 3
    ds = ArrayDataset(images, masks, labels=np.arange(5), source="mem")
    assert len(ds) == 5
    sub = ds[np.array([4, 1])]
    assert_array_equal(sub.images, images[[4, 1]])
    assert_array_equal(sub.masks, masks[[4, 1]])
    assert_array_equal(sub.labels, [4, 1])
    assert "images=(5, 1, 4, 4) float32" in repr(ds) and "source='mem'" in repr(ds)
    batches = list(ds.batches(2, rng=np.random.default_rng(1)))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert_array_equal(np.sort(np.concatenate([b.labels for b in batches])), np.arange(5))
    with pytest.raises(TypeError, match=r"dataset\[\[3\]\]"):
        ds[3]
    with pytest.raises(ShapeError, match=r"masks of shape \(5, 4, 4\)"):
        ArrayDataset(images, masks[:4])
    with pytest.raises(TypeError, match="floating-point images"):
        ArrayDataset(images.astype(np.uint8))
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        ArrayDataset(images[:, 0])


# --- load_dataset ----------------------------------------------------------------------

def test_load_dataset_dispatch(tmp_path):
    ds = load_dataset("shapes", n=3, size=32, seed=1)
    images, masks = make_shapes(3, size=32, seed=1)
    assert_array_equal(ds.images, images)
    assert_array_equal(ds.masks, masks)
    anomaly = load_dataset("shapes-anomaly", n=2, size=32)
    assert anomaly.masks.dtype == np.int64 and set(np.unique(anomaly.masks)) == {0, 1}
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 1, 4, 4), np.float32))
    assert load_dataset(tmp_path / "d.npz").images.shape == (2, 1, 4, 4)
    _write_pngs(tmp_path / "img", ["a.png"], [np.zeros((4, 4), np.uint8)])
    assert load_dataset(str(tmp_path / "img")).images.shape == (1, 1, 4, 4)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    _write_mnist(mnist, n=3, gz=True)
    _write_mnist(mnist, n=2, prefix="t10k")
    train = load_dataset(mnist)
    assert train.images.shape == (3, 1, 28, 28) and train.labels.shape == (3,)
    assert len(load_dataset(mnist, split="t10k")) == 2
    ipath = mnist / "t10k-images-idx3-ubyte"
    direct = load_dataset(ipath, labels_path=mnist / "t10k-labels-idx1-ubyte")
    assert len(direct) == 2 and direct.labels is not None
    with pytest.raises(DataError, match="single image.*Pass its folder"):
        load_dataset(tmp_path / "img" / "a.png")
    with pytest.raises(DataFileNotFoundError, match="'mnist'.*Nothing is downloaded"):
        load_dataset("mnist")
