"""The classic dense autoencoder on MNIST: 784-64-64 | 64-784, sigmoid output.

The well-known Keras MNIST example trains a model with two ReLU layers of 64
units in the encoder, one of 64 and a sigmoid output of 784 in the decoder,
Adam (lr 0.001), batch 256, 50 epochs, MSE loss. This is the same model in
minicae (``DenseAutoencoder()`` defaults to exactly that architecture).

Nothing is downloaded. Point the script at MNIST files you already have
(``train-images-idx3-ubyte[.gz]`` and, optionally, its labels and the
``t10k`` test files), e.g. from the MNIST page or a mirror of it::

    python examples/dense_mnist.py --images ~/data/mnist/train-images-idx3-ubyte.gz \
        --test-images ~/data/mnist/t10k-images-idx3-ubyte.gz --full

Without files, ``--synthetic`` trains on generated digit-like strokes
instead (shapes of the same size and value range, not MNIST).

Sizes: default 15 epochs on up to 6,000 images (well under a minute), ``--full``
that example's 50 epochs on every image, ``--tiny`` a smoke test.

Expected result of the full run: the test MSE of that setting is
*not measured here* (this repository cannot download MNIST); run it with
``--full`` and read the printed test MSE. For reference, the mean-image
baseline (predict the average digit) is printed next to it.
"""

from __future__ import annotations

import sys

import numpy as np

import minicae
from minicae import data, plots
from minicae.models import DenseAutoencoder
from minicae.train import evaluate, fit

from _common import out_path, parser, pick, setup

WHERE_TO_GET_MNIST = (
    "dense_mnist.py: no images given. Nothing is downloaded: pass MNIST-format IDX "
    "files you have, e.g.\n"
    "  --images train-images-idx3-ubyte.gz [--labels train-labels-idx1-ubyte.gz]\n"
    "  [--test-images t10k-images-idx3-ubyte.gz]\n"
    "(the files of the MNIST database, Fashion-MNIST or KMNIST all work), or run with "
    "--synthetic to train on generated digit-like strokes instead.")


def synthetic_digits(n, *, seed=0, size=28):
    """Digit-like images: 1-3 thick quadratic Bezier strokes, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, 24)[:, None]                      # points along a stroke
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        img = np.zeros((size, size))
        for _ in range(rng.integers(1, 4)):
            p0, p1, p2 = rng.uniform(6, size - 6, size=(3, 2))
            pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2   # B(t)
            d2 = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
            img = np.maximum(img, np.exp(-d2 / (2 * 1.1 ** 2)).max(axis=0))
        images[i, 0] = np.clip(1.4 * img, 0, 1)
    return images


def load(args):
    """(train images, test images or None, source text)."""
    if args.images:
        x, _ = data.load_mnist(args.images, args.labels)
        x_test = data.load_mnist(args.test_images)[0] if args.test_images else None
        return x, x_test, args.images
    if args.synthetic:
        n = pick(args, tiny=128, quick=4000, full=60000)
        x = synthetic_digits(n + n // 6, seed=args.seed)
        return x[:n], x[n:], "synthetic strokes"
    return None, None, None


def main(argv=None):
    p = parser(__doc__.splitlines()[0], out="runs/examples/dense_mnist")
    p.add_argument("--images", help="IDX images, e.g. train-images-idx3-ubyte.gz")
    p.add_argument("--labels", help="IDX labels (optional; only checked for consistency)")
    p.add_argument("--test-images", help="IDX test images, e.g. t10k-images-idx3-ubyte.gz")
    p.add_argument("--synthetic", action="store_true",
                   help="no MNIST files: train on generated digit-like strokes")
    args = p.parse_args(argv)
    x, x_test, source = load(args)
    if x is None:
        print(WHERE_TO_GET_MNIST, file=sys.stderr)
        return 2
    backend = setup(args)
    limit = pick(args, tiny=128, quick=6000, full=len(x))
    x = x[:limit]
    epochs = args.epochs or pick(args, tiny=1, quick=15, full=50)
    print(f"data: {len(x)} training images {x.shape[1:]} from {source}; backend {backend}")

    # the Keras example's model and training settings
    model = DenseAutoencoder(784, hidden=(64, 64), decoder_hidden=(64,), activation="relu",
                             code_activation="relu", output_activation="sigmoid",
                             input_shape=list(x.shape[1:]), seed=args.seed)
    history = fit(model, x, loss="mse", optimizer="adam", lr=1e-3, epochs=epochs,
                  batch_size=256, val_fraction=0.1, seed=args.seed, progress=not args.tiny)
    last = history.epochs[-1]
    print(f"after {epochs} epochs: train MSE {last['train_loss']:.5f}, validation MSE "
          f"{last['val_loss']:.5f} (mean-image baseline {history.baseline_mse:.5f})")
    if x_test is not None and len(x_test):
        test_mse, l0 = evaluate(model, x_test, "mse")
        baseline = float(((x_test - x.mean(axis=0)) ** 2).mean())
        print(f"test MSE {test_mse:.5f} on {len(x_test)} images (mean-image baseline "
              f"{baseline:.5f}); mean ||z||_0 {l0:.1f} of 64 code units")
    shown = x_test if x_test is not None and len(x_test) else x
    for name, path in (("reconstructions", plots.save_reconstructions(
                            model, shown, out_path(args, "reconstructions.png"))),
                       ("filters", plots.save_filters(model, out_path(args, "filters.png"))),
                       ("loss", plots.save_loss_curves(history, out_path(args, "loss.png")))):
        print(f"{name}: {path}")
    minicae.save(out_path(args, "dense_mnist.npz"), model, epochs=epochs, source=source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
