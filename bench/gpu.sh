#!/usr/bin/env bash
# One call on a GPU machine (under 8 minutes): the workloads on one GPU, kerax against
# hand-written JAX, and DataParallel's two modes. Prints a report to stdout.
#   bash bench/gpu.sh            (from the repository root; installs kerax with the cuda extra)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
pip install -q -e ".[cuda]" 2>&1 | tail -2
python -c "import jax; print(jax.devices())"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
for w in mlp cnn lstm; do
  timeout 150 python bench/fit_vs_floor.py --workload "$w" || echo "workload $w failed or timed out"
done
timeout 90 python bench/data_parallel.py --gpu || echo "data_parallel failed or timed out"
