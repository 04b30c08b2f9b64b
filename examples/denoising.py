"""A denoising convolutional autoencoder: corrupted input, clean target.

Training pairs are (corrupt(x), x): the model cannot copy its input, so it
must learn what shapes look like. ``minicae.train.fit(corruption=...)``
draws fresh noise for every batch ('gaussian': x + level*N(0, 1);
'masking': pixels zeroed with probability level; 'salt_pepper': pixels set
to 0 or 1 with probability level), seeded so runs repeat exactly.

The script reports the MSE between the noisy input and the clean image and
between the reconstruction and the clean image, on held-out images.
Sizes: default 800 images of 32x32 for 6 epochs, ``--full`` 5,000 images
for 30 epochs, ``--tiny`` a smoke test.
"""

from __future__ import annotations

import sys

import numpy as np

from minicae import data, plots, to_device, to_numpy
from minicae.models import ConvAutoencoder
from minicae.train import CORRUPTIONS, corrupt, fit

from _common import out_path, parser, pick, setup


def main(argv=None):
    p = parser(__doc__.splitlines()[0], out="runs/examples/denoising")
    p.add_argument("--noise", choices=CORRUPTIONS, default="gaussian")
    p.add_argument("--level", type=float, default=0.3, help="noise level (default 0.3)")
    args = p.parse_args(argv)
    backend = setup(args)
    n = pick(args, tiny=48, quick=800, full=5000)
    size = pick(args, tiny=16, quick=32, full=32)
    epochs = args.epochs or pick(args, tiny=1, quick=6, full=30)
    images, _ = data.make_shapes(n, size=size, texture=False, seed=args.seed)
    held_out, train = images[: n // 10], images[n // 10:]

    model = ConvAutoencoder(1, channels=[16, 32], kernel_size=3, scheme="strided",
                            input_size=size, seed=args.seed)
    history = fit(model, train, lr=3e-3, epochs=epochs, batch_size=32, seed=args.seed,
                  corruption=args.noise, corruption_level=args.level,
                  progress=not args.tiny)
    noisy = corrupt(held_out, args.noise, args.level, np.random.default_rng(args.seed + 1))
    model.eval()
    x_hat = to_numpy(model(to_device(noisy)))
    noisy_mse = float(((np.clip(noisy, 0, 1) - held_out) ** 2).mean())
    denoised_mse = float(((x_hat - held_out) ** 2).mean())
    print(f"backend {backend}; {args.noise} noise, level {args.level}; {len(train)} "
          f"training and {len(held_out)} held-out images of {size}x{size}")
    gain = noisy_mse / max(denoised_mse, 1e-12)
    verdict = f"{gain:.2f}x lower than the noisy input's" if gain >= 1 else \
        f"{1 / gain:.2f}x higher than the noisy input's: nothing was denoised"
    print(f"held-out MSE to the clean image: noisy input {noisy_mse:.5f}, reconstruction "
          f"{denoised_mse:.5f} ({verdict})")
    for name, path in (("denoised", plots.save_reconstructions(
                            model, held_out, out_path(args, "denoised.png"), x_input=noisy)),
                       ("loss", plots.save_loss_curves(history, out_path(args, "loss.png")))):
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
