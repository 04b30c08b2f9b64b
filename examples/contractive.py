"""A contractive autoencoder: penalise ||dh/dx||_F^2 and watch the code flatten.

For a sigmoid encoder layer h = s(Wx + b) the Jacobian is
J = diag(s'(a)) W, so ||J||_F^2 = sum_j s'(a_j)^2 sum_i W_ji^2
(docs/maths.md, "Contractive penalty, dense layer"). The same dense
autoencoder is trained with and without lambda * ||J||_F^2 and, on held-out
images, the script reports

- the mean of ||J||_F^2 of the first encoder layer (closed form above), and
- the measured sensitivity ||h(x + delta) - h(x)|| / ||delta|| for small
  random delta, which the Jacobian norm bounds;

both are clearly lower with the penalty, at a cost in MSE (lambda trades the two).
Sizes: default 800 images of 16x16 for 20 epochs, ``--full`` 5,000 images
of 28x28 for 60 epochs, ``--tiny`` a smoke test.
"""

from __future__ import annotations

import sys

import numpy as np

from minicae import data, plots, to_device, to_numpy
from minicae.models import DenseAutoencoder
from minicae.train import fit

from _common import out_path, parser, pick, setup


def first_layer(model):
    """The first Linear layer's weight and bias, on the host."""
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            weight = to_numpy(p.data).astype(np.float64)
            bias = to_numpy(dict(model.named_parameters())[name[:-6] + "bias"].data)
            return weight, bias.astype(np.float64)
    raise ValueError("no weight")


def jacobian_norm_sq(model, x):
    """Mean over samples of ||dh/dx||_F^2 = sum_j s'(a_j)^2 sum_i W_ji^2 (sigmoid)."""
    weight, bias = first_layer(model)
    a = x.reshape(len(x), -1).astype(np.float64) @ weight.T + bias      # a = x Wᵀ + b
    h = 1 / (1 + np.exp(-a))
    return float((((h * (1 - h)) ** 2) @ (weight ** 2).sum(axis=1)).mean())


def sensitivity(model, x, *, scale=1e-3, seed=0):
    """Mean ||h(x + delta) - h(x)|| / ||delta|| of the first layer for random delta."""
    weight, bias = first_layer(model)
    flat = x.reshape(len(x), -1).astype(np.float64)
    delta = np.random.default_rng(seed).standard_normal(flat.shape) * scale
    h = 1 / (1 + np.exp(-(flat @ weight.T + bias)))
    h_moved = 1 / (1 + np.exp(-((flat + delta) @ weight.T + bias)))
    return float((np.linalg.norm(h_moved - h, axis=1) / np.linalg.norm(delta, axis=1)).mean())


def main(argv=None):
    p = parser(__doc__.splitlines()[0], out="runs/examples/contractive")
    p.add_argument("--weight", type=float, default=0.05, help="lambda (default 0.05)")
    args = p.parse_args(argv)
    backend = setup(args)
    n = pick(args, tiny=64, quick=800, full=5000)
    size = pick(args, tiny=16, quick=16, full=28)
    epochs = args.epochs or pick(args, tiny=1, quick=20, full=60)
    images, _ = data.make_shapes(n, size=size, texture=False, seed=args.seed)
    held_out, train = images[: n // 8], images[n // 8:]
    common = dict(hidden=[32], decoder_hidden=[], activation="sigmoid",
                  code_activation="sigmoid", input_shape=[1, size, size], seed=args.seed)
    models = {
        "plain": DenseAutoencoder(size * size, **common),
        "contractive": DenseAutoencoder(size * size, penalty={
            "kind": "contractive", "weight": args.weight, "activation": "sigmoid"}, **common),
    }
    print(f"backend {backend}; {len(train)} training, {len(held_out)} held-out images of "
          f"{size}x{size}; lambda = {args.weight}")
    print(f"{'model':<12} {'val MSE':>8} {'mean ||J||_F^2':>15} {'||dh||/||dx||':>14}")
    for name, model in models.items():
        fit(model, train, lr=5e-3, epochs=epochs, batch_size=16, seed=args.seed,
            val_fraction=0, progress=False)
        model.eval()
        mse = float(((to_numpy(model(to_device(held_out))) - held_out) ** 2).mean())
        print(f"{name:<12} {mse:8.5f} {jacobian_norm_sq(model, held_out):15.4f} "
              f"{sensitivity(model, held_out, seed=args.seed):14.4f}")
        print(f"  reconstructions: "
              f"{plots.save_reconstructions(model, held_out, out_path(args, name + '.png'))}")
        print(f"  filters: "
              f"{plots.save_filters(model, out_path(args, name + '_filters.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
