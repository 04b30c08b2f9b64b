"""Readers refuse hostile files before allocating what their headers or streams promise.

Each file is built here (streamed, never held whole), then read in a fresh
interpreter whose peak resident set (``ru_maxrss``) is compared with that of
an interpreter that imports the same modules and reads nothing: a rejected
file may cost at most 64 MB above that baseline.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from minicae.data import load_dataset
from minicae.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT_KB = 64 * 1024
ZEROS_MIB = 256           # what an unbounded reader would allocate, at least

CHILD = """
import resource, sys
from minicae.data import load_dataset
from minicae.errors import DataError
import PIL.Image
status = "no file"
if len(sys.argv) > 1:
    try:
        load_dataset(sys.argv[1])
        status = "accepted"
    except DataError as exc:
        status = "rejected: " + str(exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(status)
"""


def _peak_kb(*argv):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak, status = proc.stdout.splitlines()[:2]
    return int(peak), status


def _zeros(n_mib):
    chunk = bytes(1 << 20)
    return (chunk for _ in range(n_mib))


def idx_gzip_bomb(folder):
    """A header for one 28x28 image, then ZEROS_MIB MiB of zeros, gzipped (~1 MB)."""
    path = folder / "bomb-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(bytes([0, 0, 8, 3]) + (1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        for chunk in _zeros(ZEROS_MIB):
            fh.write(chunk)
    return path


def idx_huge_header(folder):
    """A gzipped IDX header promising 60000 x 60000 x 60000 bytes, and 100 bytes."""
    path = folder / "huge-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") * 3
                                   + bytes(100)))
    return path


def _npy_header(shape, dtype="<f4"):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npz_member_bomb(folder):
    """An 'images' member whose header says (1, 28, 28) followed by ZEROS_MIB of zeros."""
    path = folder / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((1, 28, 28), "|u1") + bytes(784))
            for chunk in _zeros(ZEROS_MIB):
                fh.write(chunk)
    return path


def npz_huge_header(folder):
    """An 'images' member that promises 400 GB of float32 and holds 10 bytes."""
    path = folder / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", _npy_header((100000, 1, 1000, 1000)) + bytes(10))
    return path


def npy_huge_header(folder):
    path = folder / "huge.npy"
    path.write_bytes(_npy_header((100000, 1, 1000, 1000)) + bytes(10))
    return path


def png_bomb(folder, side=14000):
    """A side x side grey PNG of zeros (~190 KB on disk, 196 MB decoded), in a folder."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    packer, row = zlib.compressobj(9), bytes(side + 1)      # filter byte 0, then zeros
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    images = folder / "images"
    images.mkdir()
    (images / "big.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return images


MAKERS = [idx_gzip_bomb, idx_huge_header, npz_member_bomb, npz_huge_header, npy_huge_header,
          png_bomb]
WORDS = {idx_gzip_bomb: "longer than its header", idx_huge_header: "more than this machine",
         npz_member_bomb: "expected 784 data bytes", npz_huge_header: "more than this machine",
         npy_huge_header: "more than this machine", png_bomb: "decompression-bomb"}


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__)
def test_rejected_file_is_one_clear_error(maker, tmp_path):
    pytest.importorskip("PIL")
    path = maker(tmp_path)
    with pytest.raises(DataError, match=WORDS[maker]):
        load_dataset(path)


@pytest.mark.slow
def test_peak_memory_of_rejected_files_stays_within_64_mb(tmp_path):
    pytest.importorskip("PIL")
    baseline, status = _peak_kb()
    assert status == "no file"
    for maker in MAKERS:
        folder = tmp_path / maker.__name__
        folder.mkdir()
        path = maker(folder)
        peak, status = _peak_kb(str(path))
        assert status.startswith("rejected") and WORDS[maker] in status, (maker, status)
        assert peak - baseline <= LIMIT_KB, (
            f"{maker.__name__}: peak {peak} KB, baseline {baseline} KB, "
            f"{(peak - baseline) / 1024:.0f} MB above it (limit 64 MB)")
