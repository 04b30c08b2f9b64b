#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: run the whole test suite (the backend
# fixture runs every parametrised test on numpy, numba and cupy), check that no
# CuPy test was skipped, then the benchmark on every backend. One command:
#
#     bash benchmarks/gpu.sh                 # installs minicae[test,gpu] into .venv-gpu
#     INSTALL=0 PYTHON=python3 bash benchmarks/gpu.sh
#                                            # no network: a Python that already has
#                                            # CuPy, pytest and hypothesis, used as is
#     PEERS=torch,torch-cuda bash benchmarks/gpu.sh   # time PyTorch on CPU and GPU too
#
# Variables: PYTHON, VENV, INSTALL (1/0), BACKENDS (default numpy,numba,cupy),
# PEERS, PYTEST_ARGS (extra arguments of the full suite, e.g. "-n 8" with
# pytest-xdist), OUT (where the logs and bench_gpu.json go). Extra arguments go
# to `minicae bench` (e.g. --quick, --cases cae_strided, --plot scaling.png).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
INSTALL=${INSTALL:-1}
BACKENDS=${BACKENDS:-numpy,numba,cupy}
OUT=${OUT:-benchmarks/results}

if [ "$INSTALL" = 1 ]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    PY="$VENV/bin/python"
    "$PY" -m pip install -q --upgrade pip
    # CuPy for CUDA 12 (the gpu extra); on CUDA 13 install cupy-cuda13x first
    "$PY" -m pip install -q -e '.[test,gpu]'
    if [ -n "${PEERS:-}" ]; then
        "$PY" -m pip install -q -e '.[peers]'
    fi
else
    PY="$PYTHON"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# Fail early, with CuPy's own words, when there is no usable device.
"$PY" - <<'PY'
import cupy
n = cupy.cuda.runtime.getDeviceCount()
props = cupy.cuda.runtime.getDeviceProperties(0)
name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
print(f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}: "
      f"{n} device(s), device 0 = {name}")
PY

mkdir -p "$OUT"
# Every test; those parametrised over backends (the `backend` fixture) run on
# cupy as well, now that a device is present.
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
"$PY" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/gpu_suite.txt"
# The CuPy cases again, alone, failing if any of them was skipped.
"$PY" -m pytest -q -p no:cacheprovider -m gpu -rs 2>&1 | tee "$OUT/gpu_tests.txt"
if grep -qiE "[0-9]+ skipped" "$OUT/gpu_tests.txt"; then
    echo "gpu.sh: some CuPy tests were skipped (see above)" >&2
    exit 1
fi
"$PY" -m minicae bench --backends "$BACKENDS" ${PEERS:+--peers "$PEERS"} \
    --json "$OUT/bench_gpu.json" "$@" 2>&1 | tee "$OUT/bench_gpu.txt"
