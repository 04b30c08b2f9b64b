"""Segmentation with autoencoder features: k-means, a few-label head, anomaly maps.

The sparse autoencoder for segmentation (docs/maths.md) uses an autoencoder's
code as the front end of an
image segmenter. Here a 'full'-padding convolutional autoencoder is trained
on unlabelled generated shapes; its encoder maps are per-pixel features
(minicae.segment.PixelFeatures) that are then

1. clustered with k-means, clusters matched to classes by a Hungarian
   assignment per image (unsupervised), against k-means on raw pixels;
2. fed to a small convolutional head trained on a few labelled images;
3. replaced by the reconstruction error, thresholded with Otsu's method, to
   find pasted defects (anomaly segmentation).

Scores (foreground/background mean IoU, Dice, AUROC) are on held-out images.
``minicae segment`` runs the complete comparison; this script is the short
version written against the library API. Sizes: default 240 images of
32x32, ``--full`` 1,000 images and longer training, ``--tiny`` a smoke test.
"""

from __future__ import annotations

import sys

from minicae import data, plots
from minicae.models import ConvAutoencoder
from minicae.segment import (PixelFeatures, SegmentationHead, foreground, kmeans_segment,
                             match_labels, reconstruction_error_map, roc_auc,
                             segmentation_scores, threshold_scores)
from minicae.train import fit

from _common import out_path, parser, pick, setup


def main(argv=None):
    p = parser(__doc__.splitlines()[0], out="runs/examples/segmentation")
    p.add_argument("--labels", type=int, default=10, help="labelled images for the head")
    args = p.parse_args(argv)
    backend = setup(args)
    n = pick(args, tiny=40, quick=240, full=1000)
    size = pick(args, tiny=16, quick=32, full=32)
    epochs = args.epochs or pick(args, tiny=1, quick=6, full=20)
    head_epochs = pick(args, tiny=2, quick=50, full=150)
    images, masks = data.make_shapes(n, size=size, seed=args.seed)   # textured shapes
    truth = foreground(masks)
    n_test = max(4, n // 5)
    x_test, t_test = images[:n_test], truth[:n_test]
    x_train = images[n_test:]
    n_lab = min(args.labels, len(x_train))
    print(f"backend {backend}; {len(x_train)} unlabelled training images ({n_lab} of them "
          f"labelled for the head), {n_test} held-out, {size}x{size}")

    model = ConvAutoencoder(1, channels=[8, 16], kernel_size=3, scheme="full",
                            seed=args.seed)
    history = fit(model, x_train, lr=2e-3, epochs=epochs, batch_size=32, seed=args.seed,
                  progress=not args.tiny)
    print(f"autoencoder: validation MSE {history.epochs[-1]['val_loss']:.5f} "
          f"(mean-image baseline {history.baseline_mse:.5f})")

    results, shown = {}, {}
    slugs = {"k-means on AE features": "kmeans_features", "k-means on pixels": "kmeans_pixels"}
    for name, mdl in (("k-means on AE features", model), ("k-means on pixels", None)):
        extractor = PixelFeatures(mdl, pool="energy", smooth=5).fit(x_train)
        labels = kmeans_segment(extractor.transform(x_test), 2, smooth=1, seed=args.seed)
        pred = match_labels(labels, t_test, n_classes=2)
        results[name], shown[name] = segmentation_scores(t_test, pred, n_classes=2), pred

    extractor = PixelFeatures(model, pool="energy", smooth=5).fit(x_train)
    head = SegmentationHead(2, epochs=head_epochs, extractor=extractor, seed=args.seed)
    pred = head.fit(x_train[:n_lab], truth[n_test:n_test + n_lab]).predict(x_test)
    name = f"head on {n_lab} labelled images"
    slugs[name] = "head"
    results[name], shown[name] = segmentation_scores(t_test, pred, n_classes=2), pred

    x_anom, defects = data.make_shapes_anomaly(n_test, size=size, seed=args.seed + 1)
    defects = defects.astype("int64")
    error = reconstruction_error_map(model, x_anom, smooth=5)
    found, _ = threshold_scores(error, method="otsu")
    results["anomaly: error + Otsu"] = dict(segmentation_scores(defects, found, n_classes=2),
                                            auroc=roc_auc(defects, error))

    print(f"{'method':<30} {'mIoU':>6} {'Dice':>6} {'AUROC':>6}")
    for name, r in results.items():
        auroc = f"{r['auroc']:6.3f}" if "auroc" in r else f"{'':>6}"
        print(f"{name:<30} {r['miou']:6.3f} {r['dice']:6.3f} {auroc}")
    k = min(4, n_test)
    for name, pred in shown.items():
        print(f"overlay ({name}): " + plots.save_overlays(
            x_test[:k], t_test[:k], pred[:k], out_path(args, f"overlay_{slugs[name]}.png")))
    print("overlay (anomaly): " + plots.save_overlays(
        x_anom[:k], defects[:k], found[:k], out_path(args, "overlay_anomaly.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
