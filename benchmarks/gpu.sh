#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (CUDA 12): install minicae with the gpu extra
# into its own venv, run the whole test suite (the backend fixture runs every
# parametrised test on numpy, numba and cupy), check that no CuPy test was
# skipped, then the benchmark on every backend. One command:
#
#     bash benchmarks/gpu.sh                 # add PEERS=torch to time torch too
#
# Extra arguments go to `minicae bench` (e.g. --quick, --cases cae_strided).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
OUT=${OUT:-benchmarks/results}

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test,gpu]'
if [ -n "${PEERS:-}" ]; then
    "$VENV/bin/python" -m pip install -q -e '.[peers]'
fi

# Fail early, with CuPy's own words, when there is no usable device.
"$VENV/bin/python" - <<'PY'
import cupy
n = cupy.cuda.runtime.getDeviceCount()
props = cupy.cuda.runtime.getDeviceProperties(0)
print(f"CuPy {cupy.__version__}: {n} device(s), device 0 = {props['name']}")
PY

mkdir -p "$OUT"
# Every test; those parametrised over backends (the `backend` fixture) run on
# cupy as well, now that a device is present.
"$VENV/bin/python" -m pytest -q
# The CuPy cases again, alone, failing if any of them was skipped.
"$VENV/bin/python" -m pytest -q -m gpu -rs | tee "$OUT/gpu_tests.txt"
if grep -qi "skipped" "$OUT/gpu_tests.txt"; then
    echo "gpu.sh: some CuPy tests were skipped (see above)" >&2
    exit 1
fi
"$VENV/bin/python" -m minicae bench --backends numpy,numba,cupy \
    ${PEERS:+--peers "$PEERS"} --json "$OUT/bench_gpu.json" "$@"
