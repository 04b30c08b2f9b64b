"""The ``minicae segment`` workflow: every method and baseline on held-out images.

:func:`run_segment` trains (or loads) an autoencoder on the unlabelled
training images, segments the held-out images with each method, scores them
against the masks and writes overlay pictures; :func:`format_table` renders
the scores. The CLI only parses arguments (:func:`add_segment_arguments`)
and prints.

Methods (rows of the table):

- ``kmeans_features``: k-means on the autoencoder's pooled hypercolumns;
- ``kmeans_pixels``: k-means on raw intensities (the baseline);
- ``kmeans_pixels_pooled``: k-means on intensities pooled the same way as the
  features (texture energy of the pixels: a hand-made baseline);
- ``otsu``: Otsu's threshold on intensity;
- ``kmeans_gabor``: the classic texture baseline (Jain & Farrokhnia 1991):
  16 Gabor filters (4 orientations x 4 frequencies), tanh energies,
  Gaussian smoothing, k-means (:class:`~minicae.segment.texture.TextureEnergy`);
- ``mrf_features``, ``mrf_pixels_pooled``, ``mrf_gabor``: the k-means labels
  of the autoencoder's, the pooled pixels' and the Gabor features refined by
  a mean-field Potts prior
  (:func:`~minicae.segment.cluster.mean_field_segment`);
- ``head_pretrained``, ``head_random``, ``head_pixels``: the same
  :class:`SegmentationHead` on the pretrained encoder's features, on a
  randomly initialised encoder of the same shape, and on raw pixels, each
  trained on the same ``labels`` images (``head_finetune`` with
  ``--finetune``), and ``head_gabor`` on the Gabor energies;
- ``anomaly_otsu``, ``anomaly_percentile``: reconstruction-error maps on
  images with pasted defects (shapes data), thresholded; ``auroc`` column.
  With ``corruption`` set (a denoising autoencoder for the features), the
  error maps come from a second autoencoder of the same shape trained
  without corruption.

The autoencoder is pretrained on every image (``pretrain_on='all'``,
held-out ones included; no mask is used) or on the training split only
(``'train'``); the heads see the ``labels`` labelled images and nothing
else. Docs: docs/segmentation.md.

Unsupervised labels are matched to classes by a Hungarian assignment per
image before scoring. With ``task='fg'`` (default) every class > 0 is merged
into foreground, so ``miou`` is the foreground/background mean IoU.
"""

from __future__ import annotations

import json
import os
import time

import numpy

from .._runfiles import atomic_write
from .anomaly import reconstruction_error_map, threshold_scores
from .cluster import kmeans_segment, match_labels, mean_field_segment
from .features import PixelFeatures
from .head import SegmentationHead
from .metrics import adjusted_rand_index, foreground, roc_auc, segmentation_scores
from .texture import TextureEnergy

__all__ = ["add_segment_arguments", "run_segment", "format_table", "DEFAULTS"]

DEFAULTS = dict(data="shapes", masks=None, n_images=300, image_size=64, test_fraction=0.67,
                textures=[2], eval_split="test", segments=None, mrf_beta=8.0, mrf_window=15,
                labels=10, task="fg", checkpoint=None, channels=[8, 16], kernel_size=3,
                epochs=5, lr=2e-3, batch_size=32, corruption="masking",
                corruption_level=0.3, pretrain_on="auto", pool="energy", window=5, smooth=1,
                n_init=4, head_hidden=[16, 16], head_epochs=80, head_lr=1e-2, dice_weight=0.0,
                finetune=False, augment=False, anomaly="auto", error_window=5, percentile=95.0,
                overlays=6, out="runs/segment", json=None, seed=0, backend=None)

COLUMNS = ("miou", "pixel_accuracy", "dice", "ari", "auroc")


def add_segment_arguments(p):
    """Register ``minicae segment``'s options on an argparse parser."""
    d = DEFAULTS
    p.add_argument("--data", default=d["data"],
                   help="'shapes' (generated textured shapes, default), 'textures' "
                        "(mosaics of real photographs, needs minicae[realdata]), a .npz "
                        "with 'images' and optional 'masks', or a folder of images")
    p.add_argument("--textures", type=int, nargs="+", default=d["textures"],
                   metavar="K", help="textures data: textures per image, K or LOW HIGH "
                                     "(2-5, default 2: foreground/background)")
    p.add_argument("--eval-split", choices=("val", "test"), default=d["eval_split"],
                   help="textures data: score on the validation or the test photographs' "
                        "regions (choose settings on val)")
    p.add_argument("--segments", type=int, default=None,
                   help="clusters per image for the unsupervised rows (default: the "
                        "number of classes)")
    p.add_argument("--mrf-beta", type=float, default=d["mrf_beta"],
                   help="mrf_* rows: weight of the Potts neighbourhood term")
    p.add_argument("--mrf-window", type=int, default=d["mrf_window"],
                   help="mrf_* rows: neighbourhood window (odd)")
    p.add_argument("--masks", default=None, help="folder data: the parallel mask folder")
    p.add_argument("--n-images", type=int, default=d["n_images"], help="shapes: how many")
    p.add_argument("--image-size", type=int, default=d["image_size"], help="shapes: H = W")
    p.add_argument("--test-fraction", type=float, default=d["test_fraction"],
                   help="held-out share of the images (never trained on or labelled)")
    p.add_argument("--labels", type=int, default=d["labels"],
                   help="labelled training images for the few-label heads (0: no heads)")
    p.add_argument("--task", choices=("fg", "classes"), default=d["task"],
                   help="fg: foreground vs background (default); classes: every class")
    p.add_argument("--checkpoint", default=None, help="load this autoencoder, do not train")
    p.add_argument("--channels", type=int, nargs="+", default=d["channels"],
                   help="'full' conv autoencoder: maps per encoder layer")
    p.add_argument("--kernel-size", type=int, default=d["kernel_size"], help="kxk kernels")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="autoencoder epochs")
    p.add_argument("--lr", type=float, default=d["lr"], help="autoencoder learning rate")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per step")
    p.add_argument("--corruption", choices=("none", "gaussian", "masking", "salt_pepper"),
                   default=d["corruption"],
                   help="denoising autoencoder: corrupt its inputs this way (default masking)")
    p.add_argument("--corruption-level", type=float, default=d["corruption_level"],
                   help="gaussian: standard deviation; masking, salt_pepper: probability")
    p.add_argument("--pretrain-on", choices=("auto", "all", "train"),
                   default=d["pretrain_on"],
                   help="autoencoder images: all (unlabelled pretraining on every image, "
                        "held-out ones included; no masks are used), train only, or auto "
                        "(train for the textures data, else all)")
    p.add_argument("--pool", choices=("none", "mean", "energy"), default=d["pool"],
                   help="feature pooling: none, local mean, or texture energy (default)")
    p.add_argument("--window", type=int, default=d["window"], help="pooling window (odd)")
    p.add_argument("--smooth", type=int, default=d["smooth"],
                   help="3x3 majority-filter passes over k-means label maps")
    p.add_argument("--n-init", type=int, default=d["n_init"], help="k-means restarts")
    p.add_argument("--head-hidden", type=int, nargs="*", default=d["head_hidden"],
                   help="head hidden widths (none: a 1x1 convolution)")
    p.add_argument("--head-epochs", type=int, default=d["head_epochs"], help="head epochs")
    p.add_argument("--head-lr", type=float, default=d["head_lr"], help="head learning rate")
    p.add_argument("--dice-weight", type=float, default=d["dice_weight"],
                   help="add this times the Dice loss to the head's cross-entropy")
    p.add_argument("--finetune", action="store_true",
                   help="also fine-tune the pretrained encoder with the head")
    p.add_argument("--augment", action="store_true",
                   help="train the heads on the 8 flips and rotations of each labelled "
                        "image (8x the images per epoch)")
    p.add_argument("--anomaly", choices=("auto", "on", "off"), default=d["anomaly"],
                   help="anomaly rows (auto: on for the shapes data)")
    p.add_argument("--error-window", type=int, default=d["error_window"],
                   help="window of the local mean over reconstruction errors")
    p.add_argument("--percentile", type=float, default=d["percentile"],
                   help="anomaly_percentile threshold")
    p.add_argument("--overlays", type=int, default=d["overlays"],
                   help="held-out images per overlay PNG")
    p.add_argument("--out", default=d["out"], help="folder for the overlay PNGs")
    p.add_argument("--json", default=None, help="write the metrics table as JSON here")
    p.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None,
                   help="compute backend")
    p.add_argument("--seed", type=int, default=d["seed"], help="seeds data, split, weights")


def _options(opts):
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in vars(opts).items() if k in DEFAULTS}
                  if not isinstance(opts, dict) else opts)
    unknown = set(merged) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"run_segment: unknown options {sorted(unknown)}.")
    return merged


def _load(o):
    from ..data import load_arrays, load_image_folder, make_shapes

    if o["data"] == "shapes":
        return make_shapes(o["n_images"], size=o["image_size"], seed=o["seed"])
    if o["data"] == "textures":
        return _load_textures(o)
    if os.path.isdir(o["data"]):
        ds = load_image_folder(o["data"], mask_dir=o["masks"])
    else:
        ds = load_arrays(o["data"])
    if ds.masks is None:
        raise ValueError(f"minicae segment: expected masks with the images in "
                         f"{o['data']!r} (a 'masks' array in the .npz, or --masks FOLDER), "
                         f"got none. Segmentation metrics need ground truth.")
    return ds.images, ds.masks


def _n_test(n, o):
    frac = o["test_fraction"]
    if not 0 < frac < 1:
        raise ValueError(f"minicae segment: expected --test-fraction in (0, 1), got {frac}.")
    return max(1, int(round(frac * n)))


def _load_textures(o):
    from ..data.mosaics import make_texture_mosaics

    k = o["textures"]
    if len(k) not in (1, 2):
        raise ValueError(f"minicae segment: expected --textures K or --textures LOW HIGH, "
                         f"got {len(k)} numbers.")
    n_test = _n_test(o["n_images"], o)
    # training images come from the train band of every photograph, held-out ones
    # from the val or test band: no held-out pixel is ever trained on
    kw = dict(size=o["image_size"], n_textures=k[0] if len(k) == 1 else tuple(k),
              seed=o["seed"])
    x_tr, m_tr = make_texture_mosaics(o["n_images"] - n_test, split="train", **kw)
    x_te, m_te = make_texture_mosaics(n_test, split=o["eval_split"], **kw)
    return numpy.concatenate([x_tr, x_te]), numpy.concatenate([m_tr, m_te])


def _split(n, o):
    n_test = _n_test(n, o)
    order = numpy.random.default_rng([o["seed"], 7]).permutation(n)
    if o["data"] == "textures":                 # the held-out images are the last ones
        order = numpy.concatenate([numpy.arange(n - n_test, n), numpy.arange(n - n_test)])
    test, train = numpy.sort(order[:n_test]), order[n_test:]
    if len(train) < 2:
        raise ValueError(f"minicae segment: {n} images leave {len(train)} for training; "
                         f"lower --test-fraction or add images.")
    labels = o["labels"]
    if not 0 <= labels <= len(train):
        raise ValueError(f"minicae segment: expected --labels in [0, {len(train)}] (the "
                         f"training images), got {labels}.")
    return train, numpy.sort(train[:labels]), test


def _autoencoder(o, x_train, log):
    from .. import checkpoint
    from ..models import ConvAutoencoder
    from ..train import fit

    if o["checkpoint"]:
        model = checkpoint.load(o["checkpoint"]).model
        log(f"loaded {o['checkpoint']}")
        return model
    model = ConvAutoencoder(x_train.shape[1], channels=o["channels"],
                            kernel_size=o["kernel_size"], scheme="full", seed=o["seed"],
                            input_size=list(x_train.shape[2:]))
    t0 = time.perf_counter()
    corruption = None if o["corruption"] == "none" else o["corruption"]
    history = fit(model, x_train, epochs=o["epochs"], lr=o["lr"], batch_size=o["batch_size"],
                  seed=o["seed"], corruption=corruption,
                  corruption_level=o["corruption_level"], progress=False)
    log(f"autoencoder trained in {time.perf_counter() - t0:.0f}s, val MSE "
        f"{history.epochs[-1].get('val_loss', float('nan')):.5f} (mean-image baseline "
        f"{history.baseline_mse or float('nan'):.5f})")
    return model


def _random_twin(model):
    from ..models import model_from_config

    config = dict(model.get_config())
    config["seed"] = int(config.get("seed", 0)) + 1000
    return model_from_config(type(model).__name__, config)


def run_segment(opts, *, log=None):
    """Run every method; return ``(results, pictures)``.

    Parameters
    ----------
    opts : argparse.Namespace or dict
        The options of :func:`add_segment_arguments` (missing ones default to
        ``DEFAULTS``).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    results : dict
        ``{method: {"miou", "pixel_accuracy", "dice", "ari"[, "auroc"],
        "seconds"}}``.
    pictures : dict
        ``{method: path of its overlay PNG}`` (empty without matplotlib).
    """
    o = _options(opts)
    if o["backend"]:
        from ..backend import use_backend

        with use_backend(o["backend"]):
            return _run(o, log or (lambda msg: None))
    return _run(o, log or (lambda msg: None))


def _check_options(o):
    if o["segments"] is not None and o["segments"] < 2:
        raise ValueError(f"minicae segment: expected --segments >= 2, got {o['segments']}.")
    if o["mrf_window"] < 1 or o["mrf_window"] % 2 == 0:
        raise ValueError(f"minicae segment: expected an odd --mrf-window >= 1, got "
                         f"{o['mrf_window']}.")
    if not o["mrf_beta"] >= 0:
        raise ValueError(f"minicae segment: expected --mrf-beta >= 0, got {o['mrf_beta']}.")


def _run(o, log):
    _check_options(o)
    images, masks = _load(o)
    train, labelled, test = _split(len(images), o)
    truth_all = foreground(masks) if o["task"] == "fg" else numpy.asarray(masks, numpy.int64)
    n_classes = int(truth_all.max()) + 1 if o["task"] == "classes" else 2
    x_train, x_test, truth = images[train], images[test], truth_all[test]
    x_lab, m_lab = images[labelled], truth_all[labelled]
    log(f"data: {len(train)} training ({len(labelled)} labelled), {len(test)} held-out "
        f"images of shape {tuple(images.shape[1:])}; {n_classes} classes")
    # unsupervised pretraining and feature statistics use no masks, so they may see the
    # held-out images (pretrain_on="all", transductive); the heads see only x_lab, m_lab
    pretrain_on = o["pretrain_on"]
    if pretrain_on == "auto":      # real photographs: keep the held-out regions unseen
        pretrain_on = "train" if o["data"] == "textures" else "all"
    x_pre = images if pretrain_on == "all" else x_train
    model = _autoencoder(o, x_pre, log)
    pool = None if o["pool"] == "none" else o["pool"]
    feat_kw = dict(pool=pool, smooth=o["window"] if pool else 0)
    results, predictions = {}, {}

    def record(name, pred, t0, extra=None, raw=None):
        results[name] = dict(segmentation_scores(truth if extra is None else extra[0], pred,
                                                 n_classes=n_classes if extra is None
                                                 else 2))
        if raw is not None and k != n_classes:    # ARI of the clusters, before merging
            results[name]["ari"] = float(numpy.mean([adjusted_rand_index(t, r) for t, r
                                                     in zip(truth, raw)]))
        if extra is not None:
            results[name]["auroc"] = extra[1]
        results[name]["seconds"] = time.perf_counter() - t0
        predictions[name] = pred
        log(f"{name}: mIoU {results[name]['miou']:.3f} "
            f"({results[name]['seconds']:.1f}s)")

    km = dict(smooth=o["smooth"], n_init=o["n_init"], seed=o["seed"])
    k = o["segments"] or n_classes
    mrf = dict(beta=o["mrf_beta"], window=o["mrf_window"])
    gabor = TextureEnergy()                     # fitted in the loop, so its row is timed
    for name, extractor in (("kmeans_features", PixelFeatures(model, **feat_kw)),
                            ("kmeans_pixels", PixelFeatures(None)),
                            ("kmeans_pixels_pooled", PixelFeatures(None, **feat_kw)),
                            ("kmeans_gabor", gabor)):
        t0 = time.perf_counter()
        if not hasattr(extractor, "mean_"):
            extractor.fit(x_pre)
        f = extractor.transform(x_test)
        labels = kmeans_segment(f, k, **km)
        record(name, match_labels(labels, truth, n_classes=n_classes), t0, raw=labels)
        if name != "kmeans_pixels":
            refined = mean_field_segment(f, labels, k, **mrf)
            record(name.replace("kmeans", "mrf"),
                   match_labels(refined, truth, n_classes=n_classes), t0, raw=refined)

    t0 = time.perf_counter()
    gray = x_test.mean(axis=1)
    above, _ = threshold_scores(gray, method="otsu")
    record("otsu", match_labels(above, truth, n_classes=n_classes), t0)

    heads = [("head_pretrained", model), ("head_random", _random_twin(model)),
             ("head_pixels", None), ("head_gabor", gabor)]
    if o["finetune"]:
        heads.append(("head_finetune", model))
    if o["augment"]:
        x_lab, m_lab = _dihedral(x_lab, m_lab)
    for name, mdl in heads if o["labels"] else ():
        t0 = time.perf_counter()
        extractor = mdl if name == "head_gabor" else PixelFeatures(mdl, **feat_kw).fit(x_pre)
        head = SegmentationHead(n_classes, hidden=tuple(o["head_hidden"]),
                                epochs=o["head_epochs"], lr=o["head_lr"],
                                dice_weight=o["dice_weight"], seed=o["seed"],
                                extractor=extractor, finetune=name == "head_finetune")
        record(name, head.fit(x_lab, m_lab).predict(x_test), t0)

    anomaly = o["anomaly"] == "on" or (o["anomaly"] == "auto" and o["data"] == "shapes")
    x_anom = None
    if anomaly:
        from ..data import make_shapes_anomaly

        x_anom, m_anom = make_shapes_anomaly(len(test), size=images.shape[2],
                                             channels=images.shape[1], seed=o["seed"] + 1)
        m_anom = m_anom.astype(numpy.int64)
        # a denoising autoencoder learns to repair what it has not seen, which blurs the
        # error map (validation seeds: AUROC 0.917/0.902 vs 0.928/0.961 without
        # corruption), so the anomaly maps come from a plain reconstruction twin
        detector = model
        if o["corruption"] != "none" and not o["checkpoint"]:
            detector = _autoencoder(dict(o, corruption="none"), x_pre, log)
        t0 = time.perf_counter()
        err = reconstruction_error_map(detector, x_anom, smooth=o["error_window"])
        auc = roc_auc(m_anom, err)
        for method in ("otsu", "percentile"):
            pred, _ = threshold_scores(err, method=method, percentile=o["percentile"])
            record(f"anomaly_{method}", pred, t0, extra=(m_anom, auc))
    pictures = _overlays(o, x_test, truth, x_anom, m_anom if anomaly else None, predictions,
                         results, log)
    if o["json"]:
        _write_json(o["json"], results)
    return results, pictures


def _dihedral(x, masks):
    """The 8 rotations and mirror images of every image and mask (the dihedral group).

    Non-square images get the 4 that keep their shape (half turns and mirrors).
    """
    xs, ms = [], []
    for k in range(4) if x.shape[2] == x.shape[3] else (0, 2):
        x_r, m_r = numpy.rot90(x, k, axes=(2, 3)), numpy.rot90(masks, k, axes=(1, 2))
        xs += [x_r, x_r[..., ::-1]]
        ms += [m_r, m_r[..., ::-1]]
    return (numpy.ascontiguousarray(numpy.concatenate(xs)),
            numpy.ascontiguousarray(numpy.concatenate(ms)))


def _overlays(o, x_test, truth, x_anom, m_anom, predictions, results, log):
    if not o["overlays"] or not o["out"]:
        return {}
    try:
        from ..plots import save_overlays
        from .pictures import save_method_grid, save_miou_bars
        os.makedirs(o["out"], exist_ok=True)
        pictures = {}
        k = o["overlays"]
        for name, pred in predictions.items():
            is_anomaly = name.startswith("anomaly")
            imgs, tru = (x_anom, m_anom) if is_anomaly else (x_test, truth)
            path = os.path.join(o["out"], f"overlay_{name}.png")
            pictures[name] = save_overlays(imgs[:k], tru[:k], pred[:k], path)
        same = {n: p for n, p in predictions.items() if not n.startswith("anomaly")}
        pictures["methods"] = save_method_grid(x_test, truth, same,
                                               os.path.join(o["out"], "methods.png"), n=k)
        pictures["miou"] = save_miou_bars(results, os.path.join(o["out"], "miou.png"))
        return pictures
    except RuntimeError as exc:          # matplotlib missing: the table still stands
        log(f"overlays skipped: {exc}")
        return {}


def _write_json(path, results):
    payload = {name: {k: float(v) for k, v in row.items() if k in COLUMNS}
               for name, row in results.items()}
    text = json.dumps(payload, indent=1)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def format_table(results):
    """One text table: a row per method, the metric columns and seconds."""
    head = f"{'method':<22}" + "".join(f"{c:>15}" for c in COLUMNS + ("seconds",))
    lines = [head, "-" * len(head)]
    for name, row in results.items():
        cells = "".join(f"{row[c]:>15.3f}" if c in row else f"{'':>15}"
                        for c in COLUMNS + ("seconds",))
        lines.append(f"{name:<22}" + cells)
    return "\n".join(lines)
