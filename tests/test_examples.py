"""The examples run and do what they say (at reduced size)."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import kerax as kx

EXAMPLES = Path(__file__).parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses (kx.Layer subclasses) look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_pure_core_example_trains_an_ensemble():
    result = _load("pure_core").main(steps=150, members=3)
    assert result["final_loss"] < 0.2 * result["first_loss"]
    assert result["accuracy"] > 0.95
    assert len(result["member_accuracy"]) == 3 and min(result["member_accuracy"]) > 0.9
    assert len(result["per_example_grad_norms"]) == 4


def test_custom_train_loop_example_learns():
    result = _load("custom_train_loop").main(epochs=2)
    assert result["steps"] == 2 * (1792 // 64)
    assert result["history"][-1]["val_accuracy"] > 0.7


def test_data_parallel_example_matches_one_device():
    result = _load("data_parallel").main(epochs=1, n=256)
    assert result["max_weight_diff"] < 1e-5
    assert result["history_1"]["loss"] == pytest.approx(result["history_n"]["loss"], rel=1e-5)


def test_text_lstm_example_learns_with_masking():
    result = _load("text_lstm").main(n_train=640, n_test=128, epochs=2, verbose=0)  # whole batches only
    assert result["test_accuracy"] > 0.8


# -- hello_world ---------------------------------------------------------------------------

def test_hello_world_learns_y_equals_2x_minus_1():
    result = _load("hello_world").main()  # full size: 500 epochs of one 6-row batch
    assert abs(result["prediction"] - 19.0) < 0.5
    assert abs(result["kernel"] - 2.0) < 0.05 and abs(result["bias"] + 1.0) < 0.1
    assert result["final_loss"] < 1e-3 * result["first_loss"]


# -- digits_cnn ----------------------------------------------------------------------------

def test_digits_cnn_example_learns_real_digits():
    result = _load("digits_cnn").main(epochs=5, verbose=0)
    assert result["test_accuracy"] > 0.9  # chance is 0.1; the full 20 epochs reach ~0.98
    assert result["history"]["loss"][-1] < 0.5 * result["history"]["loss"][0]


# -- mnist_mlp -----------------------------------------------------------------------------

def _write_idx(path: Path, values: np.ndarray, magic: int) -> None:
    """An IDX file by hand: big-endian int32 magic, then each dimension, then uint8 values."""
    header = struct.pack(f">i{values.ndim}i", magic, *values.shape)
    path.write_bytes(header + values.astype(np.uint8).tobytes())


def _tiny_mnist(directory: Path, n_train: int = 512, n_test: int = 256) -> None:
    """MNIST-shaped files where each class is a fixed random image plus noise (learnable)."""
    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = np.clip(prototypes[labels] + rng.normal(scale=60, size=(n, 28, 28)), 0, 255)
        _write_idx(directory / f"{split}-images-idx3-ubyte", images, 0x00000803)
        _write_idx(directory / f"{split}-labels-idx1-ubyte", labels, 0x00000801)


def test_mnist_mlp_example_learns_from_idx_files(tmp_path):
    _tiny_mnist(tmp_path)
    result = _load("mnist_mlp").main(path=tmp_path, epochs=2, limit=384, verbose=0)
    assert result["n_train"] == 384  # limit= keeps the first 384 of the 512 rows (3 batches)
    assert result["test_accuracy"] > 0.8  # chance is 0.1
    assert result["history"]["loss"][1] < result["history"]["loss"][0]


def test_mnist_mlp_example_exits_2_when_files_are_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAX_OFFLINE", "1")
    monkeypatch.setenv("KERAX_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        _load("mnist_mlp").main()
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "MNIST files not found" in message
    assert "train-images-idx3-ubyte" in message and "KERAX_OFFLINE" in message


# -- functional_multi_io --------------------------------------------------------------------

def test_functional_multi_io_example_trains_both_heads_with_one_shared_layer():
    module = _load("functional_multi_io")
    result = module.main(n_train=1280, n_test=256, epochs=4, verbose=0)  # whole batches only
    test, history = result["test"], result["history"]
    assert test["label_accuracy"] > 0.6  # 4 classes: chance is 0.25
    assert history["value_loss"][-1] < 0.5 * history["value_loss"][0]
    # Better than always predicting the mean value (whose MSE is the variance).
    assert test["value_loss"] < 0.5 * result["value_variance"]

    model, width, meta = result["model"], 32, module.META_DIM
    dense = lambda n_in, n_out: n_in * n_out + n_out
    # The shared Dense is called twice but holds one kernel and one bias.
    expected = (dense(64, width) + dense(width, width) + dense(meta, width)
                + dense(2 * width, width) + dense(width, 4) + dense(width, 1))
    assert model.count_params() == expected
    assert sum(a.size for a in jax.tree.leaves(model.params)) == expected
    assert set(model.params["shared"]) == {"bias", "kernel"}
    assert [name for name in model.params if name.startswith("shared")] == ["shared"]


# -- custom_layer ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def custom_layer():
    # Loaded once: each load defines (and registers) a new GaussianRBF class.
    return _load("custom_layer")


def test_custom_layer_example_saves_and_loads_exactly(custom_layer):
    result = custom_layer.main(n=400, epochs=15, verbose=0)
    assert result["test_accuracy"] > 0.9  # two classes: chance is 0.5
    model, x = result["model"], result["x_test"]
    expected = model.predict(x)
    for loaded in (result["loaded"], result["loaded_custom"]):
        assert type(loaded.layers[0]) is custom_layer.GaussianRBF
        np.testing.assert_array_equal(loaded.predict(x), expected)
        assert loaded.get_config() == model.get_config()
    layer = model.layers[0]
    assert layer.get_config()["units"] == 16 and layer.get_config()["gamma"] == 2.0
    assert custom_layer.GaussianRBF.from_config(layer.get_config()).get_config() == layer.get_config()


def test_custom_layer_matches_the_formula(custom_layer):
    layer = custom_layer.GaussianRBF(3, gamma=0.5)
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    params, state = layer.init(jax.random.key(0), jax.ShapeDtypeStruct(x.shape, x.dtype))
    y, _ = layer.apply(params, state, x)
    c = np.asarray(params["centers"])
    reference = np.exp(-0.5 * ((x[:, None, :] - c[None]) ** 2).sum(-1))
    np.testing.assert_allclose(np.asarray(y), reference, rtol=1e-5)
    assert c.shape == (3, 2) and state == {}


def test_custom_layer_rejects_bad_hyperparameters(custom_layer):
    with pytest.raises(kx.errors.ConfigError,
                       match=r"expected units to be a positive int; received units=0"):
        custom_layer.GaussianRBF(0)
    with pytest.raises(kx.errors.ConfigError, match=r"expected gamma > 0; received gamma=-1.0"):
        custom_layer.GaussianRBF(4, gamma=-1.0)


# -- transfer_learning -----------------------------------------------------------------------

def test_transfer_learning_example_freezes_the_features():
    # 720 base images and 672 new ones make whole batches of 48: fewer programs to compile.
    result = _load("transfer_learning").main(base_epochs=3, head_epochs=4, fine_tune_epochs=0,
                                             n_new=672, batch_size=48, verbose=0)
    before, after = result["params_before"], result["params_after_head"]
    # Frozen: bitwise the same after training the classifier.
    for a, b in zip(jax.tree.leaves(before["features"]), jax.tree.leaves(after["features"])):
        np.testing.assert_array_equal(a, b)
    # Trained: every classifier weight moved.
    for a, b in zip(jax.tree.leaves(before["classifier"]), jax.tree.leaves(after["classifier"])):
        assert not np.array_equal(a, b)
    assert result["head_accuracy"] > 0.8  # 5 classes: chance is 0.2
    assert result["fine_tune_accuracy"] is None
