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

import jax  # noqa: E402,F401
