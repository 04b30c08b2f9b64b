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


def _env(cpu, folder):
    return dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="",
                NUMBA_CACHE_DIR=str(folder / "numba"), HYPOTHESIS_PROFILE="ci")


def _native(width, registers):
    from minicae.kernels import _simd
    return (_simd.VECTOR_BYTES, _simd.VECTOR_REGISTERS) == (width, registers)


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """Every other width's run of test_kernels_simd.py, started at once: each is one
    single-threaded process that spends its time compiling, so they share the cores."""
    started = {}
    for cpu, feature, width, registers in TARGETS:
        if (feature is None or _X86 and _host_has(feature)) and not _native(width, registers):
            started[cpu] = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                 str(_TESTS / "test_kernels_simd.py")],
                env=_env(cpu, tmp_path_factory.mktemp(cpu)), cwd=_TESTS.parent,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield started
    for proc in started.values():
        if proc.poll() is None:            # a test stopped before reading it
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("cpu,feature,width,registers", TARGETS)
def test_simd_kernels_at_each_vector_width(cpu, feature, width, registers, tmp_path, suites):
    if feature is not None and not (_X86 and _host_has(feature)):
        pytest.skip(f"this CPU cannot run code built for {cpu} (needs {feature})")
    probe = subprocess.run(
        [sys.executable, "-c", "from minicae.kernels import _simd; "
         "print(_simd.VECTOR_BYTES, _simd.VECTOR_REGISTERS)"],
        env=_env(cpu, tmp_path), capture_output=True, text=True, check=True)
    assert probe.stdout.split() == [str(width), str(registers)], probe.stdout
    if cpu not in suites:
        pytest.skip(f"{width}-byte vectors with {registers} registers are this CPU's own: "
                    f"tests/test_kernels_simd.py runs them in the suite itself")
    out, _ = suites[cpu].communicate()
    assert suites[cpu].returncode == 0, f"{cpu}: {out[-5000:]}"
