#!/usr/bin/env bash
# The benchmark suite (bench/run.py) on one GPU, in one call of about 6 minutes.
#
# For a GPU machine with NO network where jax (CUDA), flax, equinox, optax, numpy, pyyaml,
# safetensors ... are already installed system-wide: nothing is installed, kerax is
# imported from this checkout (PYTHONPATH), and keras, if missing, is skipped with a note.
# Every workload, every implementation, 3 interleaved rounds, each run in a fresh process;
# --budget-s stops starting new runs in time for the report (the report's notes say so).
#
#   bash bench/gpu.sh      # writes bench_gpu.{json,md,log} to $OUT if set, else bench/results/
#   BENCH_ARGS="--workloads W1,W4 --rounds 1" BENCH_BUDGET_S=120 bash bench/gpu.sh   # a subset
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # each fresh process takes only what it needs
dest="${OUT:-bench/results}"
mkdir -p "$dest"

timeout -k 5 60 python3 -c "import jax; print('jax', jax.__version__, jax.devices())" \
  || { echo "gpu.sh: jax did not start (see above)"; exit 1; }

# A fresh process per run costs about 6-7 s on an H200 (CUDA start-up, imports, GPU
# compilation with autotuning), so the ~135 runs of 3 whole rounds need about 15 minutes;
# BENCH_BUDGET_S (default 330) caps this call at about 6 minutes: round 1 whole, then
# what fits of the others (round-major order). BENCH_BUDGET_S=900 gives all 3 rounds.
budget="${BENCH_BUDGET_S:-330}"
timeout -k 10 "$((budget + 90))" python3 bench/run.py --rounds "${BENCH_ROUNDS:-3}" --budget-s "$budget" \
  --idle-cap 2 --idle-sample 0.2 --timeout 80 ${BENCH_ARGS:-} \
  --json "$dest/bench_gpu.json" --markdown "$dest/bench_gpu.md" 2>&1 | tee "$dest/bench_gpu.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "gpu.sh: bench/run.py timed out; partial runs are in $dest/bench_gpu.json"
exit "$status"
