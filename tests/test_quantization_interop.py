"""int8 weights moving in and out of kerax: Keras 3 as the oracle for the scale convention,
set_weights into int8 slots, and files written in the earlier convention (converted on
load). The quantizer itself is tested in test_quantization.py."""

from __future__ import annotations

import json
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.layers.quantized import QuantizedDense


def _old_convention(blob: bytes) -> bytes:
    """A weights blob as kerax wrote it before 2026-11-29: scales max|w| / 127, no marker."""
    from safetensors.numpy import load, save
    from safetensors import safe_open
    import tempfile

    tensors = load(blob)
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(blob)
        f.flush()
        with safe_open(f.name, "numpy") as h:
            meta = dict(h.metadata())
    assert meta.pop("int8_scale") == "127/max"
    old = {k: (1.0 / v).astype(v.dtype) if k.endswith("_scale") else v for k, v in tensors.items()}
    return save(old, metadata=meta)


def test_files_of_the_earlier_scale_convention_load_converted(tmp_path):
    """Weights and model files written before the switch to Keras's convention held
    max|w| / 127 and no int8_scale marker: they load converted, predicting as before."""
    import zipfile

    model = kx.Sequential([kx.Input(shape=(6,)), layers.Dense(5, activation="relu"), layers.Dense(3)])
    model.build(seed=1)
    q = kx.quantize(model)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    want = q.predict(x, verbose=0)

    q.save_weights(tmp_path / "new.safetensors")
    (tmp_path / "old.safetensors").write_bytes(_old_convention((tmp_path / "new.safetensors").read_bytes()))
    fresh = kx.quantize(model)
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    fresh.load_weights(tmp_path / "old.safetensors")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), want, rtol=1e-6)

    q.save(tmp_path / "new.kerax", include_optimizer=False)
    with zipfile.ZipFile(tmp_path / "new.kerax") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["model.weights.safetensors"] = _old_convention(members["model.weights.safetensors"])
    config = json.loads(members["config.json"])

    def drop_format(tree):  # the wrappers' configs without the entry (as written before)
        if isinstance(tree, dict):
            return {k: drop_format(v) for k, v in tree.items() if k != "scale_format"}
        return [drop_format(v) for v in tree] if isinstance(tree, list) else tree

    members["config.json"] = json.dumps(drop_format(config)).encode()
    assert b"scale_format" not in members["config.json"]
    with zipfile.ZipFile(tmp_path / "old.kerax", "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    np.testing.assert_allclose(kx.load_model(tmp_path / "old.kerax").predict(x, verbose=0), want, rtol=1e-6)


def test_scale_format_other_than_keras_is_refused():
    with pytest.raises(errors.ConfigError, match=r"scale_format must be 'keras'; received 'max/127'"):
        QuantizedDense(layer=layers.Dense(3), scale_format="max/127")


def test_int8_dense_weights_move_between_keras_and_kerax():
    """Keras 3 as the oracle: the same int8 kernel and kernel_scale (names, order, values),
    and Keras's int8 weights set into kerax's quantized model give the float model's outputs
    to int8 precision (Keras itself also quantizes the inputs; kerax keeps them float)."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(6, 4)).astype(np.float32)
    bias = rng.normal(size=(4,)).astype(np.float32)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    kd = keras.layers.Dense(4)
    kd.build((None, 6))
    kd.set_weights([kernel, bias])
    kd.quantize("int8")
    k_names = [v.path.split("/")[-1] for v in kd.weights]
    k_weights = {n: np.asarray(v) for n, v in zip(k_names, kd.get_weights())}

    model = kx.Sequential([kx.Input(shape=(6,)), layers.Dense(4)])
    model.build()
    model.set_weights([kernel, bias])
    q = kx.quantize(model)
    assert k_names == ["bias", "kernel", "kernel_scale"]  # Keras's order is get_weights' order
    ours = dict(zip(k_names, q.get_weights()))
    assert ours["kernel"].dtype == np.int8 and ours["kernel_scale"].shape == (4,)
    np.testing.assert_array_equal(ours["kernel"], k_weights["kernel"])
    np.testing.assert_allclose(ours["kernel_scale"], k_weights["kernel_scale"], rtol=1e-6)

    q.set_weights([k_weights[n] for n in k_names])
    np.testing.assert_allclose(q.predict(x, verbose=0), x @ kernel + bias, atol=0.05)


def test_an_int8_weights_file_is_refused_by_the_float_model(tmp_path):
    model = kx.Sequential([kx.Input(shape=(3,)), layers.Dense(2)])
    model.build()
    kx.quantize(model).save_weights(tmp_path / "q.safetensors")
    with pytest.raises(errors.IncompatibleCheckpointError, match=r"unexpected \['dense/kernel_scale'\]"):
        model.load_weights(tmp_path / "q.safetensors")


def test_set_weights_refuses_what_an_int8_kernel_cannot_hold():
    """A float kernel in an int8 slot would be truncated (to zeros) and 300 would wrap to 44:
    both are refused, naming the weight; int8 values (as get_weights returns them) are taken."""
    model = kx.Sequential([kx.Input(shape=(4,)), layers.Dense(3)])
    model.build()
    q = kx.quantize(model)
    weights = q.get_weights()
    at = [i for i, w in enumerate(weights) if w.dtype == np.int8]
    assert len(at) == 1
    i = at[0]
    with pytest.raises(errors.WeightsError, match=r"'dense/kernel' expected integer values \(int8\); received float32"):
        q.set_weights(weights[:i] + [weights[i].astype(np.float32) * 0.01] + weights[i + 1:])
    wide = np.zeros(weights[i].shape, np.int64)
    wide.flat[-1] = 300
    with pytest.raises(errors.WeightsError, match=r"'dense/kernel' expected int8 values in \[-128, 127\]; received values in \[0, 300\]"):
        q.set_weights(weights[:i] + [wide] + weights[i + 1:])
    mine = np.arange(weights[i].size, dtype=np.int8).reshape(weights[i].shape)
    q.set_weights(weights[:i] + [mine] + weights[i + 1:])
    np.testing.assert_array_equal(q.state["dense"]["kernel"], mine)
    assert q.state["dense"]["kernel"].dtype == jnp.int8
