#!/usr/bin/env bash
# Everything a session with a lent GPU runs, in one call of about 8 minutes: the tests that
# mean something on a GPU (RELIABILITY D7, the recurrent fast path, mixed precision, the
# lowerings' GPU side), then the benchmark (bench/gpu.sh) in the time left.
#
# For a GPU machine with no network and jax (CUDA) installed system-wide; kerax is imported
# from this checkout. pytest missing: the tests are skipped with a note.
#
#   bash bench/gpu_checks.sh        # logs and results to $OUT if set, else bench/results/
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
dest="${OUT:-bench/results}"
mkdir -p "$dest"

if python3 -c "import pytest" 2>/dev/null; then
  # conftest defaults JAX_PLATFORMS to cpu; "highest" makes GPU matmuls comparable with the
  # float32 references (TF32 otherwise).
  JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false \
    timeout -k 5 "${GPU_TESTS_S:-200}" python3 -m pytest -o addopts="" -p no:cacheprovider -q -s -rs \
    tests/test_gpu_determinism.py tests/test_recurrent_perf_paths.py tests/test_mixed_precision.py \
    tests/test_lowerings.py 2>&1 | tee "$dest/gpu_tests.log"
  echo "gpu_checks.sh: pytest exit status ${PIPESTATUS[0]}"
else
  echo "gpu_checks.sh: pytest is not installed here; tests skipped" | tee "$dest/gpu_tests.log"
fi
BENCH_BUDGET_S="${BENCH_BUDGET_S:-220}" bash bench/gpu.sh
