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


@pytest.mark.parametrize("task", ["predict", "evaluate"])
def test_predict_and_evaluate_name_their_batch(task):
    model = _big_activations()
    model.compile(optimizer="adam", loss="mse")
    x, y = np.zeros((1, 4), np.float32), np.zeros((1, 1), np.float32)
    with pytest.raises(errors.OutOfMemoryError, match=rf"^{task} of model 'wide' ran out of memory .*"
                                                      rf"{task} holds them and the activations of a batch of 1 row\."):
        model.predict(x, verbose=0) if task == "predict" else model.evaluate(x, y, verbose=0)


def test_other_runtime_errors_pass_through_unchanged():
    from kerax.models.memory import memory_hints

    error = jax.errors.JaxRuntimeError("INTERNAL: something else")
    with pytest.raises(jax.errors.JaxRuntimeError, match="something else"):
        with memory_hints(_big_activations(), "fit", 2):
            raise error
