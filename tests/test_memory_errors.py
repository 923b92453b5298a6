"""RELIABILITY C17: XLA's out-of-memory errors reach the user as ``OutOfMemoryError`` with
the model's size, the batch size and what would need less memory.

The sizes are far beyond any machine (terabytes), so every allocation fails at once and
nothing is paged in.
"""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers


def _big_activations():
    """24 MiB of weights, but a (batch, 2^20, 2^20) activation inside."""
    return kx.Sequential([kx.Input((4,)), layers.Dense(2**20), layers.RepeatVector(2**20), layers.Dense(1),
                          layers.GlobalAveragePooling1D()], name="wide")


def test_a_parameter_of_2_40_elements_fails_the_first_fit_with_its_size():
    model = kx.Sequential([kx.Input((2**20,)), layers.Dense(2**20)], name="huge")
    model.compile(optimizer="adam", loss="mse")
    x = np.zeros((2, 2**20), np.float32)
    with pytest.raises(errors.OutOfMemoryError) as info:
        model.fit(x, x, verbose=0)
    message = str(info.value)
    assert message.startswith("building the weights of model 'huge' ran out of memory on the cpu device")
    assert f"The model has {2**40 + 2**20:,} parameters (4.0 TiB)" in message
    assert "the weights alone need this much" in message
    assert isinstance(info.value, MemoryError)
    assert isinstance(info.value.__cause__, jax.errors.JaxRuntimeError)  # XLA's own error stays chained
    assert not model.built


def test_a_step_that_does_not_fit_names_the_batch_and_the_optimizer_state():
    model = _big_activations()
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(errors.OutOfMemoryError) as info:
        model.fit(np.zeros((3, 4), np.float32), np.zeros((3, 1), np.float32), batch_size=2, verbose=0)
    params = 4 * 2**20 + 2**20 + 2**20 + 1
    message = str(info.value)
    assert message.startswith("fit of model 'wide' ran out of memory on the cpu device (")
    assert f"The model has {params:,} parameters (24.0 MiB)" in message
    # Adam: a first and a second moment per parameter, and a few scalars (its step count,
    # the injected learning rate)
    values = int(re.search(r"the optimizer's state \(([\d,]+) values, 48\.0 MiB\)", message)[1].replace(",", ""))
    assert 2 * params < values <= 2 * params + 4
    assert "the activations of a batch of 2 rows" in message and "a smaller batch_size" in message
    # The failed step had been given the weights (donated): they went with it, and later
    # calls say so instead of blaming their own small batches.
    assert "they are lost with it; build the model again" in message
    with pytest.raises(errors.OutOfMemoryError, match=r"^predict of model 'wide': its weights are gone"):
        model.predict(np.zeros((1, 4), np.float32), verbose=0)
    model.build(seed=0)  # fresh weights: a new shortage is reported as such again
    with pytest.raises(errors.OutOfMemoryError, match=r"^predict of model 'wide' ran out of memory"):
        model.predict(np.zeros((1, 4), np.float32), verbose=0)


def test_data_too_large_for_the_device_is_named_with_its_size():
    model = kx.Sequential([layers.Dense(3, input_shape=(4,))])
    model.compile(optimizer="sgd", loss="mse")
    x = np.broadcast_to(np.zeros((1, 4), np.float32), (2**38, 4))  # 4 TiB, a view of 16 bytes
    y = np.broadcast_to(np.zeros((1, 3), np.float32), (2**38, 3))
    with pytest.raises(errors.OutOfMemoryError, match=r"^copying the training data \(7\.0 TiB\) to the cpu device "
                                                      r"ran out of memory .* pass an iterable of batches"):
        model.fit(x, y, batch_size=32, verbose=0)


def test_only_allocation_failures_count_and_keys_in_the_weights_are_fine():
    from kerax.training.memory import is_out_of_memory

    error = jax.errors.JaxRuntimeError
    assert is_out_of_memory(error("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8 bytes."))
    assert is_out_of_memory(error("INTERNAL: CUDA_ERROR_OUT_OF_MEMORY: out of memory"))
    assert is_out_of_memory(error("INTERNAL: cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(error("RESOURCE_EXHAUSTED: grpc: received message larger than max"))
    from kerax.training.memory import _count

    assert _count({"w": np.zeros((3,), np.float32), "seed": jax.random.key(0)}) == (3, 12)


@pytest.mark.parametrize("task", ["predict", "evaluate"])
def test_predict_and_evaluate_name_their_batch(task):
    model = _big_activations()
    model.compile(optimizer="adam", loss="mse")
    x, y = np.zeros((1, 4), np.float32), np.zeros((1, 1), np.float32)
    with pytest.raises(errors.OutOfMemoryError, match=rf"^{task} of model 'wide' ran out of memory .*"
                                                      rf"{task} holds them and the activations of a batch of 1 row\."):
        model.predict(x, verbose=0) if task == "predict" else model.evaluate(x, y, verbose=0)


def test_other_runtime_errors_pass_through_unchanged():
    from kerax.training.memory import memory_hints

    error = jax.errors.JaxRuntimeError("INTERNAL: something else")
    with pytest.raises(jax.errors.JaxRuntimeError, match="something else"):
        with memory_hints(_big_activations(), "fit", 2):
            raise error
