"""Paolo Galeone's convolutional autoencoder with 'full' padding, on generated shapes.

Paolo Galeone's convolutional-autoencoder tutorial keeps the image size
without transposed convolutions: the encoder pads its input by k-1 zeros on
every side, so its n feature maps are (H + k - 1) wide; the decoder's
'valid' convolution with the same k brings them back to H (docs/maths.md,
section "Full padding"). With the tutorial's numbers, 28x28 images and a
5x5 kernel: pad 4 -> 36x36, encoder maps 32x32, decoder output 28x28.

The data are minicae's generated textured shapes at 28x28 (nothing is
downloaded). Sizes: default 600 images for 4 epochs (well under a minute),
``--full`` 5,000 images, 16 maps, 30 epochs, ``--tiny`` a smoke test.
"""

from __future__ import annotations

import sys

import minicae
from minicae import data, plots
from minicae.models import ConvAutoencoder
from minicae.train import fit

from _common import out_path, parser, pick, setup


def main(argv=None):
    p = parser(__doc__.splitlines()[0], out="runs/examples/conv_full_padding")
    p.add_argument("--kernel-size", type=int, default=5, help="k (default 5, the tutorial's)")
    args = p.parse_args(argv)
    backend = setup(args)
    n = pick(args, tiny=48, quick=600, full=5000)
    size = pick(args, tiny=16, quick=28, full=28)
    maps = pick(args, tiny=4, quick=8, full=16)
    epochs = args.epochs or pick(args, tiny=1, quick=4, full=30)
    k = args.kernel_size
    images, _ = data.make_shapes(n, size=size, seed=args.seed)

    model = ConvAutoencoder(1, channels=[maps], kernel_size=k, scheme="full",
                            activation="relu", output_activation="sigmoid", seed=args.seed)
    z = model.encode(images[:2])
    x_hat = model.decode(z)
    print(f"backend {backend}; {n} shapes images of {size}x{size}")
    print(f"input {size}x{size} -> pad k-1 = {k - 1} per side -> {size + 2 * (k - 1)}x"
          f"{size + 2 * (k - 1)} -> encoder ({maps} filters {k}x{k}) -> {z.shape[2]}x"
          f"{z.shape[3]} maps -> 'valid' decoder conv -> {x_hat.shape[2]}x{x_hat.shape[3]}")
    assert z.shape[2] == size + k - 1 and x_hat.shape[2:] == images.shape[2:]

    history = fit(model, images, loss="mse", lr=2e-3, epochs=epochs, batch_size=32,
                  seed=args.seed, progress=not args.tiny)
    last = history.epochs[-1]
    print(f"after {epochs} epochs: validation MSE {last['val_loss']:.5f} (mean-image "
          f"baseline {history.baseline_mse:.5f})")
    for name, path in (("reconstructions", plots.save_reconstructions(
                            model, images[-8:], out_path(args, "reconstructions.png"))),
                       ("filters", plots.save_filters(model, out_path(args, "filters.png"))),
                       ("loss", plots.save_loss_curves(history, out_path(args, "loss.png")))):
        print(f"{name}: {path}")
    minicae.save(out_path(args, "conv_full_padding.npz"), model, epochs=epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
