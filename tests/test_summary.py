"""model.summary() against golden text: names, output shapes, parameter counts, totals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kerax as kx
from kerax import errors, layers

GOLDEN = Path(__file__).parent / "golden"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("KERAX_UPDATE_GOLDEN"):
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text()


def test_sequential_summary_golden():
    model = kx.Sequential([
        kx.Input(shape=(8, 8, 1)),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, name="logits"),
    ], name="mlp")
    lines = []
    model.summary(print_fn=lines.append)
    _check("summary_sequential.txt", lines[0])
    # Counts by hand: 64*32 + 32 = 2080; 32*10 + 10 = 330.
    assert "Total params: 2,410" in lines[0] and "Non-trainable params: 0" in lines[0]


def test_functional_summary_golden():
    a = kx.Input(shape=(4,), name="a")
    b = kx.Input(shape=(2,), name="b")
    shared = layers.Dense(3, name="shared")
    h = layers.concatenate([shared(a), layers.Dense(3)(b)])
    out = layers.Add()([layers.Dense(3)(h), shared(a)])
    model = kx.Model([a, b], out, name="two_inputs")
    lines = []
    model.summary(print_fn=lines.append)
    _check("summary_functional.txt", lines[0])
    # shared: 4*3+3 = 15; dense: 2*3+3 = 9; dense_1: 6*3+3 = 21.
    assert "Total params: 45" in lines[0]


def test_summary_of_unbuilt_model_without_input_shape():
    with pytest.raises(errors.NotBuiltError, match="input shape is not fully known"):
        kx.Sequential([layers.Dense(2)]).summary()
