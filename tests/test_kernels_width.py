"""The SIMD kernels at every vector width: tests/test_kernels_simd.py run again in a
subprocess whose Numba compiles for another CPU (``NUMBA_CPU_NAME``, with that
CPU's own features), one this machine can execute: 64-byte vectors and 32
registers (AVX-512), 32-byte and 16 (AVX2), 16-byte and 16 (SSE2, the layout
NEON's 16-byte vectors share)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba", reason="the SIMD kernels need Numba")

_TESTS = Path(__file__).resolve().parent
_X86 = platform.machine().lower() in ("x86_64", "amd64")
# (codegen CPU, host feature it needs, vector bytes, vector registers)
TARGETS = [("skylake-avx512", "avx512f", 64, 32), ("haswell", "avx2", 32, 16),
           ("generic", None, 16, 32 if not _X86 else 16)]


def _host_has(feature):
    import llvmlite.binding as llvm
    return feature is None or f"+{feature}" in llvm.get_host_cpu_features().flatten()


@pytest.mark.slow
@pytest.mark.parametrize("cpu,feature,width,registers", TARGETS)
def test_simd_kernels_at_each_vector_width(cpu, feature, width, registers, tmp_path):
    if feature is not None and not (_X86 and _host_has(feature)):
        pytest.skip(f"this CPU cannot run code built for {cpu} (needs {feature})")
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="",
               NUMBA_CACHE_DIR=str(tmp_path / "numba"), HYPOTHESIS_PROFILE="ci")
    probe = subprocess.run(
        [sys.executable, "-c", "from minicae.kernels import _simd; "
         "print(_simd.VECTOR_BYTES, _simd.VECTOR_REGISTERS)"],
        env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == [str(width), str(registers)], probe.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(_TESTS / "test_kernels_simd.py")],
        env=env, cwd=_TESTS.parent, capture_output=True, text=True)
    assert run.returncode == 0, f"{cpu}: {run.stdout[-3000:]}{run.stderr[-2000:]}"
