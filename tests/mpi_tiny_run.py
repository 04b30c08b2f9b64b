"""A tiny training run for tests/test_distributed.py (run under mpirun or alone).

Writes ``<results>/rank<r>.npz`` holding the final weights, the per-step
(local loss, local sample count) pairs and the per-epoch history, so the test
can compare ranks with each other and with a single process.

    mpirun -n 2 python tests/mpi_tiny_run.py RESULTS --batch-size 4 --distributed
    python tests/mpi_tiny_run.py RESULTS --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicae import nn  # noqa: E402
from minicae.models import ConvAutoencoder  # noqa: E402
from minicae.train import fit  # noqa: E402

N_TRAIN, N_VAL, SIZE = 19, 6, 8      # 19 = 8 + 8 + 3: the last global batch splits 2/1


class RecordingMSE(nn.MSELoss):
    """MSELoss that remembers (value, batch size) of every training step."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.steps = []

    def __call__(self, pred, target):
        value = super().__call__(pred, target)
        if self.model.training:          # not the validation passes
            self.steps.append((float(value), int(pred.shape[0])))
        return value


def tiny_data(seed=3):
    rng = numpy.random.default_rng(seed)
    x = rng.random((N_TRAIN + N_VAL, 1, SIZE, SIZE)).astype(numpy.float32)
    return x[:N_TRAIN], x[N_TRAIN:]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--distributed", action="store_true")
    p.add_argument("--ckpt", choices=("per-rank", "shared"), default="per-rank")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--corruption", default=None)
    args = p.parse_args(argv)

    ctx = None
    rank = 0
    if args.distributed:
        from minicae.distributed import init

        ctx = init()
        rank = ctx.rank
    x, x_val = tiny_data()
    # rank 1 starts from other weights on purpose: fit must broadcast rank 0's
    model = ConvAutoencoder(1, channels=(3,), kernel_size=3, scheme="full",
                            input_size=[SIZE, SIZE], seed=rank)
    loss = RecordingMSE(model)
    ckpt_dir = os.path.join(args.results, "ckpt" if args.ckpt == "shared" else
                            f"ckpt_rank{rank}")
    history = fit(model, x, x_val=x_val, loss=loss, optimizer="adam", lr=1e-2,
                  epochs=args.epochs, batch_size=args.batch_size, seed=7,
                  corruption=args.corruption, checkpoint_dir=ckpt_dir,
                  resume=args.resume, progress=False, distributed=ctx)
    weights = {f"w:{k}": numpy.asarray(v) for k, v in model.state_dict().items()}
    numpy.savez(os.path.join(args.results, f"rank{rank}.npz"),
                steps=numpy.asarray(loss.steps, dtype=numpy.float64).reshape(-1, 2),
                train_loss=numpy.asarray(history["train_loss"], dtype=numpy.float64),
                val_loss=numpy.asarray(history["val_loss"], dtype=numpy.float64),
                **weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
