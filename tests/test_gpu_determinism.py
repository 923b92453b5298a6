"""D7 (GPU only): D1's bitwise reproducibility across processes on a GPU, with XLA's
deterministic GPU ops on; without them, whether the two runs differ is recorded, not
asserted (atomics in reductions may reorder additions).

Skipped unless JAX's default backend is a GPU. conftest defaults JAX_PLATFORMS to cpu, so on
a GPU machine run: ``JAX_PLATFORMS=cuda pytest tests/test_gpu_determinism.py -p no:xdist -s``
(``bench/gpu_checks.sh`` does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import pytest

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu",
                                reason="D7 needs a GPU (JAX's default backend here is "
                                       f"{jax.default_backend()!r})")

_SCRIPT = "import sys; sys.path.insert(0, {tests!r})\nfrom test_training import _train_hash\nprint(_train_hash(11))\n"


def _hash_in_a_new_process(tmp_path: Path, deterministic: bool) -> str:
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).parent)))
    flags = os.environ.get("XLA_FLAGS", "")
    if deterministic:
        flags += " --xla_gpu_deterministic_ops=true"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**env, "XLA_FLAGS": flags.strip()})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_d7_deterministic_gpu_ops_give_bitwise_equal_weights_across_processes(tmp_path):
    assert _hash_in_a_new_process(tmp_path, True) == _hash_in_a_new_process(tmp_path, True)


def test_d7_without_the_flag_informational(tmp_path):
    a, b = _hash_in_a_new_process(tmp_path, False), _hash_in_a_new_process(tmp_path, False)
    verdict = "equal" if a == b else "DIFFERENT"
    print(f"D7 (informational): two processes without --xla_gpu_deterministic_ops: {verdict} ({a[:12]} / {b[:12]})")
    if a != b:
        warnings.warn("D7: without --xla_gpu_deterministic_ops two GPU runs gave different weights", stacklevel=1)
