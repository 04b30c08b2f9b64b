"""Training-step rows of issue 5, the peak-RSS row and the scaling curves.

A thin front to :mod:`minicae.bench` (the harness that ``minicae bench`` uses):

    .venv/bin/python benchmarks/bench_train.py --peers torch --plot scaling.png

Any flag of ``minicae bench`` is accepted; ``--cases`` defaults to the strided
CAE, the documents' 'full'-padding CAE, the dense AE and 20-step peak RSS.
"""

from __future__ import annotations

import sys

from minicae import cli
from minicae.bench.cases import TRAIN_CASES

DEFAULT = ",".join(list(TRAIN_CASES) + ["rss_cae"])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--cases" not in argv:
        argv += ["--cases", DEFAULT]
    return cli.main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main())
