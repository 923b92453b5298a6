"""Test set-up: four simulated CPU devices, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["KERAS_BACKEND"] = "jax"  # Keras 3 is a test oracle only (the dev extra)
# The tests check numbers, not speed, and most of their time is XLA compiling small
# programs: compile with XLA's optimizations mostly off (about 40% less time; the
# subprocesses some tests start inherit it). KERAX_TEST_OPTIMIZED=1 runs them optimized.
if os.environ.get("KERAX_TEST_OPTIMIZED", "0") != "1":
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One persistent compilation cache for this run, shared by the xdist workers and the
# subprocesses tests start (they inherit the environment): about a fifth of the programs
# the suite compiles are compiled again by another process (the same eager ops, the same
# small models), and a hit skips XLA (8:25 against 10:00 on 2 cores). Fresh every run, so
# tests that count compilations never meet a warm cache; the controller removes it at exit.
# (JAX writes entries without a lock: a read racing another process's write fails to
# decompress, warns and compiles, so the worst case is a warning, never a wrong program.)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="kerax-test-xla-")
    os.environ["KERAX_TEST_OWNS_CACHE"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402,F401


def pytest_unconfigure(config):
    if os.environ.get("KERAX_TEST_OWNS_CACHE") == str(os.getpid()):
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
