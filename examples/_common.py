"""Shared command-line plumbing for the example scripts (not part of minicae).

Every example takes the same size flags: the default run finishes in under a
minute on a laptop CPU, ``--full`` uses the settings of the model's original source and
``--tiny`` is the smoke-test size that tests/test_examples.py runs.
"""

from __future__ import annotations

import argparse
import os

import minicae


def parser(description, *, out):
    """An ArgumentParser with --out, --tiny, --full, --epochs, --seed, --backend."""
    p = argparse.ArgumentParser(description=description)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true",
                      help="a few seconds: the size the test suite runs")
    size.add_argument("--full", action="store_true",
                      help="the original source's full settings (minutes to hours)")
    p.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None,
                   help="array backend (default: MINICAE_BACKEND, else numba if installed)")
    p.add_argument("--out", default=out, help=f"folder for the PNGs (default {out})")
    return p


def pick(args, *, tiny, quick, full):
    """The setting for the chosen size."""
    return tiny if args.tiny else full if args.full else quick


def setup(args):
    """Select the backend, create the output folder; return the backend name."""
    if args.backend:
        minicae.set_backend(args.backend)
    os.makedirs(args.out, exist_ok=True)
    return minicae.get_backend().name


def out_path(args, name):
    return os.path.join(args.out, name)
