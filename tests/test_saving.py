"""Whole-model files: round trips (B21), optimizer state, format, the weights loader (B14-B17)."""

from __future__ import annotations

import json
import zipfile

import jax
import numpy as np
import pytest

import kerax as kx
from cases import all_cases
from kerax import errors, layers
from kerax.saving.model_file import load_model, save_model


def _predict(model, x):
    out, _ = jax.jit(lambda p, s, x: model.apply(p, s, x))(model.params, model.state, x)
    return jax.tree.map(np.asarray, out)


def _same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _roundtrip(model, tmp_path, **kw):
    path = tmp_path / "m.kerax"
    save_model(model, path)
    return load_model(path, **kw)


def test_sequential_round_trip_and_members(tmp_path):
    model = kx.Sequential([kx.Input((4,)), layers.Dense(8, activation="relu"),
                           layers.BatchNormalization(), layers.Dense(2)], name="seq")
    model.build(seed=3)
    loaded = _roundtrip(model, tmp_path)
    assert type(loaded) is kx.Sequential and loaded.name == "seq"
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    _same(_predict(model, x), _predict(loaded, x))
    _same(model.get_weights(), loaded.get_weights())
    with zipfile.ZipFile(tmp_path / "m.kerax") as zf:
        assert zf.namelist() == ["metadata.json", "config.json", "model.weights.safetensors"]
        meta = json.loads(zf.read("metadata.json"))
        config = json.loads(zf.read("config.json"))
    assert meta["format"] == "kerax.model" and meta["format_version"] == 1
    assert meta["class_name"] == "Sequential" and meta["jax_version"] == jax.__version__
    assert {"kerax_version", "date"} <= set(meta)
    assert config["class_name"] == "Sequential" and config["config"]["name"] == "seq"


def test_sequential_built_from_data_records_its_input_spec(tmp_path):
    model = kx.Sequential([layers.Embedding(10, 3), layers.Flatten(), layers.Dense(2)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).integers(0, 10, size=(8, 5)).astype("int32")
    model.fit(x, np.zeros((8, 2), "float32"), verbose=0, epochs=1)
    loaded = _roundtrip(model, tmp_path)
    _same(_predict(model, x), _predict(loaded, x))


def test_functional_multi_io_shared_and_nested_round_trip(tmp_path):
    a, b = kx.Input((4,), name="a"), kx.Input((3,), name="b")
    shared = layers.Dense(5, name="shared")
    inner = kx.Sequential([kx.Input((5,)), layers.Dense(2)], name="inner")
    y1 = inner(shared(a))
    y2 = layers.Dense(1)(layers.Concatenate()([shared(a), b]))
    model = kx.Model([a, b], [y1, y2], name="multi")
    model.build(seed=1)
    loaded = _roundtrip(model, tmp_path)
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 3)).astype("float32")]
    _same(_predict(model, x), _predict(loaded, x))
    assert loaded.layer_names() == model.layer_names()


def _compiled_model(dropout=True):
    model = kx.Sequential([kx.Input((4,)), layers.Dense(8, activation="relu"),
                           layers.Dropout(0.3 if dropout else 0.0), layers.Dense(2)])
    model.compile(kx.optimizers.Adam(1e-2), "mse", metrics=["mae"])
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")


def test_adam_state_round_trip_gives_the_identical_next_step(tmp_path):
    x, y = _data()
    model = _compiled_model()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False, seed=0)
    save_model(model, tmp_path / "m.kerax")
    loaded = load_model(tmp_path / "m.kerax")
    assert isinstance(loaded.optimizer.transformation, kx.optimizers.Adam)
    assert int(loaded._ts.step) == int(model._ts.step) == 4
    _same(jax.tree.map(np.asarray, loaded._ts.opt_state), jax.tree.map(np.asarray, model._ts.opt_state))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    _same(jax.tree.map(np.asarray, model.params), jax.tree.map(np.asarray, loaded.params))
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == model.evaluate(x, y, verbose=0, return_dict=True)


def test_adam_file_from_earlier_versions_with_its_epsilon_schedule_loads(tmp_path):
    # Earlier kerax Adam states held an epsilon schedule (hyperparams['eps'] and its count);
    # such a file loads, those leaves dropped, and trains on as a current file does.
    from safetensors.numpy import load as st_load, save as st_save

    x, y = _data()
    model = _compiled_model()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, seed=0)
    save_model(model, tmp_path / "new.kerax")
    with zipfile.ZipFile(tmp_path / "new.kerax") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    tensors = st_load(members["optimizer.safetensors"])
    assert ".hyperparams['eps']" not in tensors
    tensors[".hyperparams['eps']"] = np.asarray(1e-7 / np.sqrt(1 - 0.999 ** 3), np.float32)
    tensors[".hyperparams_states['eps'].count"] = np.asarray(2, np.int32)
    members["optimizer.safetensors"] = st_save(tensors, metadata={"rng_impl": "threefry2x32"})
    with zipfile.ZipFile(tmp_path / "old.kerax", "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    old, new = load_model(tmp_path / "old.kerax"), load_model(tmp_path / "new.kerax")
    _same(*(jax.tree.map(np.asarray, (m._ts.step, m._ts.params, m._ts.opt_state)) for m in (old, new)))
    old.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    new.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    _same(old.get_weights(), new.get_weights())


def test_compile_false_and_include_optimizer_false(tmp_path):
    x, y = _data()
    model = _compiled_model()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not load_model(_save(model, tmp_path / "a.kerax"), compile=False).compiled
    save_model(model, tmp_path / "b.kerax", include_optimizer=False)
    with zipfile.ZipFile(tmp_path / "b.kerax") as zf:
        assert "compile.json" not in zf.namelist() and "optimizer.safetensors" not in zf.namelist()
    assert not load_model(tmp_path / "b.kerax").compiled


def test_compiled_but_untrained_model_saves_compile_args_only(tmp_path):
    model = _compiled_model()
    model.build(seed=0)
    loaded = load_model(_save(model, tmp_path / "m.kerax"))
    assert loaded.compiled and loaded._ts is None
    with zipfile.ZipFile(tmp_path / "m.kerax") as zf:
        assert "compile.json" in zf.namelist() and "optimizer.safetensors" not in zf.namelist()


def test_raw_optax_optimizer_warns_and_saves_without_it(tmp_path):
    import optax

    model = kx.Sequential([kx.Input((4,)), layers.Dense(2)])
    model.compile(optax.sgd(0.1), "mse")
    model.build(seed=0)
    with pytest.warns(UserWarning, match="not a kerax optimizer"):
        save_model(model, tmp_path / "m.kerax")
    assert not load_model(tmp_path / "m.kerax").compiled
    model.compile(kx.optimizers.LossScaleOptimizer(optax.sgd(0.1)), "mse")  # no config inside either
    with pytest.warns(UserWarning, match="inside a LossScaleOptimizer"):
        save_model(model, tmp_path / "m2.kerax")
    assert not load_model(tmp_path / "m2.kerax").compiled


def _save(model, path):
    save_model(model, path)
    return path


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    model = kx.Sequential([kx.Input((4,)), layers.Dense(2)])
    model.build(seed=0)
    path = _save(model, tmp_path / "m.kerax")
    before = path.read_bytes()
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.kerax"]


# -- B21: every layer of the battery table, wrapped in a model -------------------------------

def _case_model(case):
    layer = case.make()
    shapes = case.shape if isinstance(case.shape, list) else [case.shape]
    inputs = [kx.Input(tuple(s[1:]), dtype=case.dtype) for s in shapes]
    out = layer(inputs if isinstance(case.shape, list) else inputs[0])
    return kx.Model(inputs if isinstance(case.shape, list) else inputs[0], out), layer


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
def test_every_battery_layer_round_trips(case, tmp_path):
    model, layer = _case_model(case)
    # eager init (no XLA compile of init: keeps 100+ cases fast); the weights are random
    model._params, model._state = model.init(jax.random.key(0), model._declared_specs(batch=2))
    path = _save(model, tmp_path / "m.kerax")
    if case.custom_objects is not None:
        with pytest.raises(errors.UnsafeContentError, match="refused in safe mode"):
            load_model(path)
        loaded = load_model(path, custom_objects=case.custom_objects(layer), safe_mode=False)
    else:
        loaded = load_model(path)
    # same architecture (config) and the same weights -> the same function; one compile
    assert loaded.get_config() == model.get_config()
    _same(jax.tree.map(np.asarray, model.params), jax.tree.map(np.asarray, loaded.params))
    _same(jax.tree.map(np.asarray, model.state), jax.tree.map(np.asarray, loaded.state))
    apply = jax.jit(lambda p, s, x: model.apply(p, s, x)[0])
    x = case.inputs()
    _same(apply(model.params, model.state, x), apply(loaded.params, loaded.state, x))


# -- Keras .weights.h5 import ------------------------------------------------------------------

def _keras():
    return pytest.importorskip("keras")


def test_keras_sequential_weights_h5_loads(tmp_path):
    keras = _keras()
    from kerax.saving.keras_h5 import load_keras_weights

    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    km.save_weights(tmp_path / "k.weights.h5")
    model = kx.Sequential([kx.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(2)])
    load_keras_weights(model, tmp_path / "k.weights.h5")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), km.predict(x, verbose=0), atol=1e-5, rtol=1e-5)


def _keras_functional(lib, inp_fn, L):
    inp = inp_fn((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu")(inp)
    x = L.BatchNormalization()(x)
    x = L.Reshape((36, 4))(x)
    x = L.LSTM(5)(x)
    return lib.Model(inp, L.Dense(2)(x))


def test_keras_functional_weights_h5_loads(tmp_path):
    keras = _keras()
    from kerax.saving.keras_h5 import load_keras_weights

    km = _keras_functional(keras, keras.Input, keras.layers)
    rng = np.random.default_rng(0)
    bn = km.layers[2]  # non-trivial moving statistics
    bn.moving_mean.assign(rng.normal(size=4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, size=4).astype("float32"))
    km.save_weights(tmp_path / "k.weights.h5")
    model = _keras_functional(kx, kx.Input, layers)
    load_keras_weights(model, tmp_path / "k.weights.h5")
    x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), km.predict(x, verbose=0), atol=1e-5, rtol=1e-5)


def test_keras_weights_h5_mismatch_and_missing_h5py(tmp_path, monkeypatch):
    keras = _keras()
    import sys

    from kerax.saving.keras_h5 import load_keras_weights

    keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)]).save_weights(tmp_path / "k.weights.h5")
    model = kx.Sequential([kx.Input((4,)), layers.Dense(3)])
    model.build(seed=0)
    before = jax.tree.map(np.asarray, model.params)
    with pytest.raises(errors.IncompatibleCheckpointError,
                       match=r"'dense/kernel' expected shape \(4, 3\); the file's /layers/dense/vars/0 has shape \(5, 3\)"):
        load_keras_weights(model, tmp_path / "k.weights.h5")
    _same(before, jax.tree.map(np.asarray, model.params))
    with pytest.raises(errors.CorruptFileError, match="no group '/layers/dense_1'"):
        load_keras_weights(kx.Sequential([kx.Input((5,)), layers.Dense(3), layers.Dense(3)]), tmp_path / "k.weights.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(errors.CorruptFileError, match="not a readable HDF5 file"):
        load_keras_weights(model, tmp_path / "bad.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="needs h5py: pip install h5py"):
        load_keras_weights(model, tmp_path / "k.weights.h5")


@pytest.mark.parametrize("kind", ["soft", "external", "virtual", "external_storage"])
def test_hdf5_links_and_virtual_datasets_are_refused(tmp_path, kind):  # B12
    import h5py

    from kerax.saving.keras_h5 import load_keras_weights

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros((4, 3), "float32")
    (tmp_path / "raw.bin").write_bytes(b"\0" * 48)
    with h5py.File(tmp_path / "k.h5", "w") as f:
        v = f.create_group("layers/dense/vars")
        f["layers/dense/vars/1"] = np.zeros(3, "float32")
        if kind == "soft":
            f["data"] = np.zeros((4, 3), "float32")
            v["0"] = h5py.SoftLink("/data")
        elif kind == "external":
            v["0"] = h5py.ExternalLink(str(other), "/data")
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(4, 3), dtype="float32")
            layout[:] = h5py.VirtualSource(str(other), "data", shape=(4, 3))
            v.create_virtual_dataset("0", layout)
        else:
            v.create_dataset("0", shape=(4, 3), dtype="float32", external=[(str(tmp_path / "raw.bin"), 0, 48)])
    model = kx.Sequential([kx.Input((4,)), layers.Dense(3)])
    with pytest.raises(errors.UnsafeContentError, match="/layers/dense/vars/0 is a .*(Link|dataset).*"):
        load_keras_weights(model, tmp_path / "k.h5")
