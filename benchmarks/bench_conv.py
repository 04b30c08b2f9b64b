"""Convolution rows of issue 5 (fwd+bwd and fwd alone) on every backend and peer.

A thin front to :mod:`minicae.bench` (the harness that ``minicae bench`` uses):

    .venv/bin/python benchmarks/bench_conv.py --peers torch --json conv.json

Any flag of ``minicae bench`` is accepted; ``--cases`` defaults to the conv
and convT rows plus the NumPy sgemm reference.
"""

from __future__ import annotations

import sys

from minicae import cli
from minicae.bench.cases import CONV_CASES

DEFAULT = ",".join(list(CONV_CASES) + ["sgemm"])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--cases" not in argv:
        argv += ["--cases", DEFAULT]
    return cli.main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main())
