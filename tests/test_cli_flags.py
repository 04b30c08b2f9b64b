"""Every invalid flag value of every subcommand: one line on stderr, status 2, nothing written.

The table runs in-process through :func:`minicae.cli.main` (fast); a handful
of rows run again as real subprocesses. Each row runs in an empty working
directory that must stay as the row left it: a rejected command writes
nothing, not even a run directory.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from minicae.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _npz_garbage(d):
    (d / "junk.npz").write_bytes(b"not a zip at all")
    return "junk.npz"


def _npz_object(d):
    np.savez(d / "obj.npz", images=np.array([{"a": 1}], dtype=object))
    return "obj.npz"


def _idx_too_long(d):
    with gzip.open(d / "long-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + (1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                 + bytes(784 + 4096))
    return "long-images-idx3-ubyte.gz"


def _idx_truncated(d):
    (d / "short-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big")
                                         + (28).to_bytes(4, "big") * 2 + bytes(100))
    return "short-idx3-ubyte"


def _empty_folder(d):
    (d / "empty").mkdir()
    (d / "empty" / "notes.txt").write_text("no images here")
    return "empty"


def _a_file(d):
    (d / "afile").write_text("x")
    return "afile"


def _a_dir(d):
    (d / "adir").mkdir()
    return "adir"


# (argv, words in the message); "{junk.npz}"-style fields are made by the makers above
MAKERS = {"npz_garbage": _npz_garbage, "npz_object": _npz_object,
          "idx_long": _idx_too_long, "idx_short": _idx_truncated,
          "empty": _empty_folder, "file": _a_file, "dir": _a_dir}

TRAIN = [
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--epochs", "two"], "invalid int"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-5"], "--batch-size"), (["--batch-size", "1.5"], "invalid int"),
    (["--lr", "0"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"), (["--lr", "fast"], "invalid float"),
    (["--n-images", "0"], "--n-images"), (["--n-images", "-3"], "--n-images"),
    (["--n-images", "1.5"], "invalid int"), (["--image-size", "8"], "--image-size"),
    (["--image-size", "0"], "--image-size"), (["--image-size", "-32"], "--image-size"),
    (["--channels-in", "2"], "--channels-in"), (["--channels-in", "0"], "--channels-in"),
    (["--channels", "0"], "--channels"), (["--channels", "8", "-1"], "--channels"),
    (["--model", "dense", "--hidden", "0"], "--hidden"),
    (["--model", "dense", "--hidden", "64", "-2"], "--hidden"),
    (["--kernel-size", "0"], "--kernel-size"), (["--kernel-size", "-3"], "--kernel-size"),
    (["--penalty-weight", "-1"], "--penalty-weight"),
    (["--penalty-weight", "nan"], "--penalty-weight"),
    (["--rho", "0"], "--rho"), (["--rho", "1"], "--rho"), (["--rho", "1.5"], "--rho"),
    (["--k", "0"], "--k"), (["--k", "-4"], "--k"),
    (["--val-fraction", "1"], "--val-fraction"), (["--val-fraction", "-0.1"], "--val-fraction"),
    (["--val-fraction", "1.5"], "--val-fraction"), (["--patience", "0"], "--patience"),
    (["--seed", "-1"], "--seed"),
    (["--denoise", "masking", "--noise-level", "2"], "--noise-level"),
    (["--denoise", "masking", "--noise-level", "-0.1"], "--noise-level"),
    (["--denoise", "salt_pepper", "--noise-level", "1.5"], "--noise-level"),
    (["--denoise", "gaussian", "--noise-level", "0"], "--noise-level"),
    (["--denoise", "gaussian", "--noise-level", "-1"], "--noise-level"),
    (["--denoise", "gaussian", "--noise-level", "inf"], "--noise-level"),
    (["--model", "gan"], "invalid choice"), (["--model", "vae", "--latent", "0"], "--latent"),
    (["--model", "conv-vae", "--beta", "-1"], "--beta"),
    (["--model", "vae", "--iwae-k", "0"], "--iwae-k"),
    (["--backend", "tpu"], "invalid choice"),
    (["--optimizer", "rmsprop"], "invalid choice"), (["--loss", "l2"], "invalid choice"),
    (["--denoise", "blur"], "invalid choice"), (["--activation", "gelu"], "invalid choice"),
    (["--code-activation", "gelu"], "invalid choice"), (["--penalty", "l2"], "invalid choice"),
    (["--on-nonfinite", "ignore"], "invalid choice"), (["--frobnicate"], "unrecognized"),
    (["--out", "{file}"], "afile"), (["--data", "no/such/file.npz"], "no/such/file.npz"),
    (["--data", "{npz_garbage}"], "junk.npz"), (["--data", "{npz_object}"], "pickle"),
    (["--data", "{idx_long}"], "longer than its header"),
    (["--data", "{idx_short}"], "truncated"), (["--data", "{empty}"], "at least one"),
    (["--kernel-size", "60000"], "more than this machine's"),
    (["--n-images", "100000000"], "more than this machine's"),
    (["--image-size", "100000"], "more than this machine's"),
    (["--penalty", "kl"], "sigmoid"),
]
SEGMENT = [
    (["--n-images", "0"], "--n-images"), (["--image-size", "8"], "--image-size"),
    (["--test-fraction", "0"], "--test-fraction"), (["--test-fraction", "1"], "--test-fraction"),
    (["--labels", "0"], "--labels"), (["--channels", "0"], "--channels"),
    (["--kernel-size", "0"], "--kernel-size"), (["--epochs", "0"], "--epochs"),
    (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--batch-size", "0"], "--batch-size"),
    (["--window", "4"], "--window"), (["--window", "0"], "--window"),
    (["--smooth", "-1"], "--smooth"), (["--n-init", "0"], "--n-init"),
    (["--head-hidden", "0"], "--head-hidden"), (["--head-epochs", "0"], "--head-epochs"),
    (["--head-epochs", "-5"], "--head-epochs"), (["--head-lr", "-1"], "--head-lr"),
    (["--dice-weight", "-1"], "--dice-weight"), (["--dice-weight", "inf"], "--dice-weight"),
    (["--error-window", "2"], "--error-window"), (["--percentile", "0"], "--percentile"),
    (["--percentile", "101"], "--percentile"), (["--percentile", "-5"], "--percentile"),
    (["--overlays", "-1"], "--overlays"), (["--seed", "-1"], "--seed"),
    (["--corruption", "masking", "--corruption-level", "2"], "--corruption-level"),
    (["--corruption", "gaussian", "--corruption-level", "0"], "--corruption-level"),
    (["--json", "no/such/dir/out.json"], "--json"), (["--json", "{dir}"], "directory"),
    (["--out", "{file}"], "--out"), (["--data", "no/such.npz"], "--data"),
    (["--masks", "no/such/masks"], "--masks"), (["--checkpoint", "no/such.npz"], "--checkpoint"),
    (["--task", "all"], "invalid choice"), (["--pool", "max"], "invalid choice"),
    (["--anomaly", "maybe"], "invalid choice"), (["--corruption", "blur"], "invalid choice"),
    (["--pretrain-on", "test"], "invalid choice"), (["--window", "five"], "invalid int"),
]
BENCH = [
    (["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"),
    (["--threads", "many"], "invalid int"), (["--repeats", "0"], "--repeats"),
    (["--repeats", "-2"], "--repeats"), (["--json", "no/such/dir/b.json"], "--json"),
    (["--json", "{dir}"], "directory"), (["--plot", "no/such/dir/p.png"], "--plot"),
    (["--cases", "nope"], "unknown cases"), (["--backends", "tpu"], "tpu"),
    (["--peers", "jax"], "jax"),
]
DEMO = [
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--epochs", "x"], "invalid int"), (["--out", "{file}"], "afile"),
]
CASES = ([("train", a, w) for a, w in TRAIN] + [("segment", a, w) for a, w in SEGMENT]
         + [("bench", a, w) for a, w in BENCH] + [("demo", a, w) for a, w in DEMO]
         + [("tune", ["--kernel-size", "0"], "--kernel-size"), ("tune", ["--lr", "0"], "--lr"),
            ("info", ["--kernels", "--batch-size", "0"], "--batch-size"),
            ("info", ["--bogus"], "unrecognized"), (None, ["frobnicate"], "invalid choice"),
            (None, [], "required")])


def _argv(command, args, folder):
    argv = [] if command is None else [command]
    for a in args:
        if a.startswith("{"):
            a = MAKERS[a.strip("{}")](folder)
        argv.append(a)
    return argv


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command, args, words", CASES,
                         ids=[" ".join([c or ""] + a) for c, a, _ in CASES])
def test_invalid_flag_is_one_line_and_status_2(command, args, words, tmp_path, monkeypatch,
                                               capsys):
    monkeypatch.chdir(tmp_path)
    argv = _argv(command, args, tmp_path)
    before = _listing(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exc:            # argparse's own errors
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2, (status, err)
    assert out == "", out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert words in err, err
    assert err.startswith(f"minicae {command}: error: " if command else "minicae: error: ")
    assert _listing(tmp_path) == before, "a rejected command wrote files"


def test_table_covers_every_subcommand_and_100_cases():
    assert len(CASES) >= 100
    assert {c for c, _, _ in CASES} >= {"train", "segment", "bench", "demo", "info", None}


@pytest.mark.parametrize("argv, words", [
    (["train", "--lr", "nan", "--out", "r"], "--lr"),
    (["train", "--denoise", "masking", "--noise-level", "2", "--out", "r"], "--noise-level"),
    (["segment", "--head-epochs", "0"], "--head-epochs"),
    (["bench", "--json", "missing/dir/b.json"], "--json"),
    (["train", "--kernel-size", "60000", "--out", "r"], "more than this machine's"),
])
def test_invalid_flag_in_a_real_process(argv, words, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, MINICAE_BACKEND="numpy")
    proc = subprocess.run([sys.executable, "-m", "minicae", *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
