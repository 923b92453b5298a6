"""Hostile and corrupt model files (RELIABILITY B1-B18, B22): rejected with clear errors,
never executing, importing, opening or extracting anything the file names."""

from __future__ import annotations

import builtins
import importlib
import io
import json
import marshal
import pickle
import resource
import struct
import tempfile
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.core import registry
from kerax.saving import model_file, safe_io
from kerax.saving.model_file import load_model, save_model
from kerax.saving.weights import load_weights

FIXTURES = Path(__file__).parent / "fixtures"


def _model(features=4, units=3):
    model = kx.Sequential([kx.Input((features,)), layers.Dense(units, name="dense")])
    model.build(seed=0)
    return model


def _members(model=None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.kerax"
        save_model(model or _model(), path)
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist()}


def _zip(path, members, symlink=None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in (members.items() if isinstance(members, dict) else members):
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _with(tmp_path, **changes):
    members = _members()
    for key, value in changes.items():
        name = {"config": "config.json", "metadata": "metadata.json", "weights": "model.weights.safetensors",
                "compile": "compile.json", "optimizer": "optimizer.safetensors"}[key]
        members[name] = json.dumps(value).encode() if isinstance(value, (dict, list)) else value
    return _zip(tmp_path / "m.kerax", members)


_LIBRARIES = {"jax", "jaxlib", "numpy", "ml_dtypes", "safetensors", "optax", "scipy", "opt_einsum", "encodings"}


@pytest.fixture
def no_code(monkeypatch):
    """Unpickling, unmarshalling, eval/exec, extraction, or importing anything but the
    numeric libraries' own lazy modules during a load fails the test."""
    # warm up: Python's own (lazy) imports use marshal and exec; kerax imports the module that
    # merges a model build's random draws lazily (which load paths reach depends on the test).
    load_model(FIXTURES / "model_v1.kerax").predict(np.zeros((1, 4), np.float32), verbose=0)
    importlib.import_module("kerax.core.merged_draws")
    real_import = importlib.import_module

    def boom(*a, **k):
        raise AssertionError(f"called with {a!r}")

    def guarded_import(name, *a, **k):
        if name.split(".")[0] not in _LIBRARIES:
            raise AssertionError(f"import_module({name!r}) during a load")
        return real_import(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", guarded_import)
    for mod, name in ((pickle, "loads"), (pickle, "load"), (marshal, "loads"), (builtins, "eval"),
                      (builtins, "exec"), (zipfile.ZipFile, "extractall"), (zipfile.ZipFile, "extract")):
        monkeypatch.setattr(mod, name, boom)


def _seq_config(layer_entry):
    return {"class_name": "Sequential",
            "config": {"name": "s", "input_shape": [4], "layers": [layer_entry]}}


# -- B1-B6: configs that name code, I/O or files --------------------------------------------

@pytest.mark.parametrize("entry, shown", [
    ({"class_name": "os.system", "config": {}}, "os.system"),
    ({"module": "os", "class_name": "system", "config": {}}, "os.system"),
    ({"class": "kerax.config.allow_unsafe", "config": {}}, "kerax.config.allow_unsafe"),  # B4
    ({"class_name": "kerax.load_model", "config": {}}, "kerax.load_model"),  # B5
    ({"class_name": "kerax.utils.set_random_seed", "config": {}}, "kerax.utils.set_random_seed"),
    ({"class_name": "builtins.eval", "config": {}}, "builtins.eval"),
])
def test_dotted_or_module_class_names_are_refused(tmp_path, no_code, entry, shown):
    sentinel = tmp_path / "pwned"
    entry = json.loads(json.dumps(entry).replace("{}", json.dumps({"command": f"touch {sentinel}"})))
    before = dict(registry.layer_classes())
    path = _with(tmp_path, config=_seq_config(entry))
    with pytest.raises(errors.UnsafeContentError, match=f"unknown class '{shown}'"):
        load_model(path)
    path = _with(tmp_path, config=entry)  # the same at the top level
    with pytest.raises(errors.UnsafeContentError, match=f"unknown class '{shown}'"):
        load_model(path)
    assert not sentinel.exists() and registry.layer_classes() == before


@pytest.mark.parametrize("name", ["system", "load_model", "set_random_seed", "Popen", "Layer"])
def test_unknown_plain_class_names_are_refused(tmp_path, no_code, name):
    path = _with(tmp_path, config=_seq_config({"class_name": name, "config": {}}))
    with pytest.raises(errors.UnsafeContentError, match=f"unknown layer class '{name}'"):
        load_model(path)


def test_top_level_class_must_be_a_model(tmp_path, no_code):
    path = _with(tmp_path, config={"class_name": "Dense", "config": {"units": 2}})
    with pytest.raises(errors.UnsafeContentError, match="class 'Dense' is not a model class"):
        load_model(path)


@pytest.mark.parametrize("field, value, err, match", [
    ("activation", "builtins.eval", errors.UnknownNameError, "Unknown activation 'builtins.eval'"),
    ("kernel_initializer", "subprocess.Popen", errors.UnknownNameError, "Unknown initializer 'subprocess.Popen'"),
    ("kernel_initializer", {"class_name": "subprocess.Popen", "config": {}}, errors.UnsafeContentError,
     "unknown class 'subprocess.Popen'"),
])
def test_dotted_functions_in_fields_are_refused(tmp_path, no_code, field, value, err, match):  # B2
    entry = {"class_name": "Dense", "config": {"units": 2, field: value}}
    with pytest.raises(err, match=match):
        load_model(_with(tmp_path, config=_seq_config(entry)))


def test_dotted_loss_in_compile_json_is_refused(tmp_path, no_code):  # B2
    members = _members()
    members["compile.json"] = json.dumps({"optimizer": {"class_name": "Adam", "config": {}},
                                          "loss": "builtins.eval"}).encode()
    with pytest.raises(errors.UnknownNameError, match="Unknown loss 'builtins.eval'"):
        load_model(_zip(tmp_path / "m.kerax", members))
    members["compile.json"] = json.dumps({"optimizer": {"class_name": "os.system", "config": {}}}).encode()
    with pytest.raises(errors.UnsafeContentError, match="unknown class 'os.system'"):
        load_model(_zip(tmp_path / "m.kerax", members))


def test_lambda_with_marshal_bytes_is_refused(tmp_path, no_code):  # B3 (CVE-2024-3660 shape)
    import base64

    code = base64.b64encode(marshal.dumps(compile("1", "x", "eval"))).decode()
    entry = {"class_name": "Lambda", "config": {"function": [code, None, None], "name": "l"}}
    path = _with(tmp_path, config=_seq_config(entry))
    with pytest.raises(errors.UnsafeContentError, match="'Lambda' carries Python code and is refused in safe mode"):
        load_model(path)
    with pytest.raises(errors.UnsafeContentError, match="is Python code and is never loaded"):
        load_model(path, safe_mode=False)
    entry = {"class_name": "FunctionLayer", "config": {"init_fn": code, "apply_fn": code}}
    with pytest.raises(errors.UnsafeContentError, match="'FunctionLayer' carries Python code"):
        load_model(_with(tmp_path, config=_seq_config(entry)))


def test_lambda_loads_only_from_custom_objects_with_safe_mode_off(tmp_path):
    def double(x):
        return 2 * x

    model = kx.Sequential([kx.Input((3,)), layers.Lambda(double)])
    model.build()
    save_model(model, tmp_path / "m.kerax")
    loaded = load_model(tmp_path / "m.kerax", custom_objects={"double": double}, safe_mode=False)
    np.testing.assert_array_equal(loaded(np.ones((1, 3), "float32")), 2 * np.ones((1, 3)))


@pytest.mark.parametrize("value", ["/etc/passwd", "file:///etc/passwd", "http://127.0.0.1/x"])
def test_paths_and_urls_in_configs_are_never_opened(tmp_path, monkeypatch, value):  # B6
    path = _with(tmp_path, config=_seq_config({"class_name": "Dense", "config": {"units": 2, "vocabulary": value}}))
    opened, real_open = [], builtins.open

    def recording_open(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(io, "open", recording_open)
    with pytest.raises(errors.ConfigError, match=r"unknown config keys \['vocabulary'\]"):
        load_model(path)
    assert all(value not in f and "passwd" not in f for f in opened), opened


# -- B7, B8: archive structure and sizes -----------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    ("../evil", "unsafe archive member name '../evil'"),
    ("/abs/evil", "unsafe archive member name '/abs/evil'"),
    ("a\\..\\..\\evil", "unsafe archive member name"),
    ("extra.txt", "unexpected archive member 'extra.txt'"),
    ("dir/", "unsafe archive member name|not a regular file|unexpected"),
])
def test_archive_member_names_are_checked(tmp_path, no_code, bad, match):
    members = list(_members().items()) + [(bad, b"x")]
    with pytest.raises(errors.CorruptFileError, match=match):
        load_model(_zip(tmp_path / "m.kerax", members))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.kerax"]
    assert not (tmp_path.parent / "evil").exists()


def test_symlink_and_duplicate_members_are_refused(tmp_path, no_code):
    members = _members()
    with pytest.raises(errors.CorruptFileError, match="'compile.json' is a symbolic link"):
        load_model(_zip(tmp_path / "a.kerax", members, symlink="compile.json"))
    dup = list(members.items()) + [("config.json", members["config.json"])]
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _zip(tmp_path / "b.kerax", dup)
    with pytest.raises(errors.CorruptFileError, match=r"duplicate archive members \['config.json'\]"):
        load_model(path)


def test_missing_members_and_optimizer_without_compile(tmp_path):
    members = _members()
    del members["model.weights.safetensors"]
    with pytest.raises(errors.CorruptFileError, match=r"lacks members \['model.weights.safetensors'\]"):
        load_model(_zip(tmp_path / "a.kerax", members))
    members = _members()
    members["optimizer.safetensors"] = members["model.weights.safetensors"]
    with pytest.raises(errors.CorruptFileError, match="optimizer.safetensors without compile.json"):
        load_model(_zip(tmp_path / "b.kerax", members))


def test_zip_bomb_is_refused_before_reading(tmp_path, monkeypatch, no_code):  # B8
    members = _members()
    members["config.json"] = b" " * (4 << 20) + members["config.json"]  # deflates to KBs
    path = _zip_deflated(tmp_path / "m.kerax", members)
    assert path.stat().st_size < 64 << 10
    monkeypatch.setattr(safe_io, "MAX_MEMBER_BYTES", 64)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("member was read"))
    with pytest.raises(errors.CorruptFileError, match=r"member '\w+\.\w+' declares \d+ bytes, more than the limit 64"):
        load_model(path)
    monkeypatch.setattr(safe_io, "MAX_MEMBER_BYTES", 1 << 35)
    monkeypatch.setattr(safe_io, "MAX_JSON_BYTES", 1 << 20)
    with pytest.raises(errors.CorruptFileError, match=r"member 'config.json' declares 41\d+ bytes, more than the limit 1048576"):
        load_model(path)


def _zip_deflated(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# -- B9-B11: safetensors headers ----------------------------------------------------------------

def _st(header: dict, data: bytes = b"", declared: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if declared is None else declared) + text + data


@pytest.mark.parametrize("blob, match", [
    (_st({"dense/kernel": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 16]}}, b"\0" * 16),
     r"shape \(2147483648, 2147483648\) of F32 needs \d+ bytes; its offsets hold 16"),  # B9
    (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, declared=10**12),
     "header too large"),  # B10
    (_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlaps"),  # B11
    (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "gap at byte 0"),
    (_st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "run past the data section"),
    (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "cover 4 bytes of a 8-byte"),
    (_st({"a": {"dtype": "PY_OBJECT", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown dtype 'PY_OBJECT'"),
    (_st({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "non-negative ints"),
    (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4), "data_offsets must be"),
    (_st({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "exactly dtype, shape, data_offsets"),
    (_st({"__metadata__": {"x": 1}}), "__metadata__ must map strings"),
    (_st([1, 2]), "not a JSON object"),
    (b"\x10\0\0\0\0\0\0\0{}", "truncated: header declares 16 bytes"),
    (b"\x01\0", "truncated: 2 bytes"),
])
def test_safetensors_headers_are_checked_before_decoding(tmp_path, monkeypatch, blob, match):
    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "load", lambda *a: pytest.fail("decoded before checking"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(errors.CorruptFileError, match=match):
        safe_io.read_safetensors(blob, "w.safetensors")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50_000  # KiB: no huge allocation
    (tmp_path / "w.safetensors").write_bytes(blob)
    with pytest.raises(errors.CorruptFileError, match="not a readable weights file"):
        load_weights(_model(), tmp_path / "w.safetensors")  # the weights loader uses the same checks
    with pytest.raises(errors.CorruptFileError, match=match):
        load_model(_with(tmp_path, weights=blob))


def test_header_limits_are_module_constants(monkeypatch):
    blob = _st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    monkeypatch.setattr(safe_io, "MAX_HEADER_BYTES", 16)
    with pytest.raises(errors.CorruptFileError, match="header too large: \\d+ bytes declared, limit 16"):
        safe_io.read_safetensors(blob, "w")
    monkeypatch.setattr(safe_io, "MAX_HEADER_BYTES", 1000)
    monkeypatch.setattr(safe_io, "MAX_TENSORS", 0)
    with pytest.raises(errors.CorruptFileError, match="1 tensors; the limit is 0"):
        safe_io.read_safetensors(blob, "w")


def test_bfloat16_tensors_decode():
    import ml_dtypes
    from safetensors.numpy import save

    a = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    out, _ = safe_io.read_safetensors(save({"a": a, "b": np.ones(2, np.int32)}), "w")
    np.testing.assert_array_equal(out["a"], a) and np.testing.assert_array_equal(out["b"], [1, 1])


# -- B13: truncated and foreign files ------------------------------------------------------------

@pytest.mark.parametrize("cut", [0.5, 8, 0, 0.9])
def test_truncated_files_say_truncated(tmp_path, cut):
    path = tmp_path / "m.kerax"
    save_model(_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(errors.CorruptFileError, match="truncated"):
        load_model(path)


def test_random_bytes_missing_path_and_directories(tmp_path):
    (tmp_path / "r.kerax").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(errors.CorruptFileError, match="not a kerax model file"):
        load_model(tmp_path / "r.kerax")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.kerax")
    with pytest.raises(errors.CorruptFileError, match="not a regular file"):
        load_model(tmp_path)
    with pytest.raises(errors.CorruptFileError, match="member 'config.json' is damaged"):
        load_model(_flip_byte(tmp_path / "c.kerax"))


def _flip_byte(path):
    _zip(path, _members())
    data = bytearray(path.read_bytes())
    start = data.index(b"config.json") + len(b"config.json") + 10  # inside the stored bytes
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


# -- B14-B17: weights that do not fit --------------------------------------------------------------

def _weights_of(model):
    return _members(model)["model.weights.safetensors"]


def test_wrong_shape_names_the_weight_and_leaves_the_model(tmp_path):  # B14
    path = _with(tmp_path, weights=_weights_of(_model(features=5)))
    with pytest.raises(errors.IncompatibleCheckpointError,
                       match=r"'dense/kernel' expected shape \(4, 3\) dtype float32; the file has shape \(5, 3\)"):
        load_model(path)
    target = _model()
    before = jax.tree.map(np.asarray, target.params)
    save_model(_model(features=5), tmp_path / "w5.kerax")
    (tmp_path / "w5.safetensors").write_bytes(_weights_of(_model(features=5)))
    with pytest.raises(errors.IncompatibleCheckpointError, match="'dense/kernel' expected shape"):
        load_weights(target, tmp_path / "w5.safetensors")
    jax.tree.map(np.testing.assert_array_equal, target.params, before)


def test_int64_weights_need_allow_cast(tmp_path):  # B15
    from safetensors.numpy import save

    blob = save({"dense/kernel": np.ones((4, 3), np.int64), "dense/bias": np.zeros(3, np.float32)})
    path = _with(tmp_path, weights=blob)
    with pytest.raises(errors.IncompatibleCheckpointError,
                       match="'dense/kernel' expected dtype float32 shape \\(4, 3\\); the file has dtype int64. Pass allow_cast=True"):
        load_model(path)
    loaded = load_model(path, allow_cast=True)
    assert loaded.params["dense"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(loaded.params["dense"]["kernel"], np.ones((4, 3)))


def test_missing_and_unexpected_tensors_are_listed(tmp_path):  # B16
    from safetensors.numpy import save

    blob = save({"dense/kernel": np.ones((4, 3), np.float32), "evil/extra": np.zeros(1, np.float32)})
    with pytest.raises(errors.IncompatibleCheckpointError,
                       match=r"missing \['dense/bias'\], unexpected \['evil/extra'\]"):
        load_model(_with(tmp_path, weights=blob))


def test_skip_mismatch_loads_what_fits_and_says_what_it_left(tmp_path):  # B16, relaxed
    src = kx.Sequential([kx.Input((4,)), layers.Dense(3), layers.Dense(2)])
    src.build(seed=1)
    src.save_weights(tmp_path / "w.safetensors")
    dst = kx.Sequential([kx.Input((4,)), layers.Dense(3), layers.Dense(5), layers.Dense(1)])
    dst.build(seed=2)
    before = jax.tree.map(np.asarray, dst.params)
    with pytest.warns(UserWarning, match=r"skip_mismatch=True left 4 weight\(s\) of the model as they were: "
                                         r"missing \['dense_2/bias', 'dense_2/kernel'\], mismatched "
                                         r"\['dense_1/bias \(shape \(2,\), expected \(5,\)\)', "
                                         r"'dense_1/kernel \(shape \(3, 2\), expected \(3, 5\)\)'\]"):
        dst.load_weights(tmp_path / "w.safetensors", skip_mismatch=True)
    np.testing.assert_array_equal(dst.params["dense"]["kernel"], src.params["dense"]["kernel"])  # loaded
    np.testing.assert_array_equal(dst.params["dense_1"]["kernel"], before["dense_1"]["kernel"])  # kept
    np.testing.assert_array_equal(dst.params["dense_2"]["kernel"], before["dense_2"]["kernel"])


def test_nan_weights_load_unless_check_finite(tmp_path):  # B17
    from safetensors.numpy import save

    blob = save({"dense/kernel": np.full((4, 3), np.nan, np.float32), "dense/bias": np.zeros(3, np.float32)})
    path = _with(tmp_path, weights=blob)
    assert np.isnan(np.asarray(load_model(path).params["dense"]["kernel"])).all()
    with pytest.raises(errors.IncompatibleCheckpointError, match="'dense/kernel' has 12 non-finite values"):
        load_model(path, check_finite=True)


# -- B18: JSON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    (b"{not json", "invalid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep; the limit is"),
    (b'{"format": 1, "format": 2}', "duplicate key 'format'"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_bad_json_is_a_corrupt_file(tmp_path, text, match):
    with pytest.raises(errors.CorruptFileError, match=match):
        load_model(_with(tmp_path, config=text))
    with pytest.raises(errors.CorruptFileError, match=match):
        load_model(_with(tmp_path, metadata=text))


def test_oversized_json_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_io, "MAX_JSON_BYTES", 1000)
    with pytest.raises(errors.CorruptFileError, match="JSON of 5\\d{6} bytes is over the limit 1000"):
        safe_io.parse_json(b" " * 5_000_000 + b"{}", "big.json")
    with pytest.raises(errors.CorruptFileError, match="member 'config.json' declares \\d+ bytes, more than the limit 1000"):
        load_model(_with(tmp_path, config={"class_name": "Sequential", "config": {"name": "x" * 2000}}))


def test_malformed_config_shapes(tmp_path):
    with pytest.raises(errors.CorruptFileError, match="config.json must be"):
        load_model(_with(tmp_path, config=[1, 2]))
    with pytest.raises(errors.ConfigError, match="must be a dict"):
        load_model(_with(tmp_path, config=_seq_config({"class_name": "Dense", "config": [1]})))


# -- metadata and versions (B22) -------------------------------------------------------------------

def test_metadata_is_checked(tmp_path):
    meta = json.loads(_members()["metadata.json"])
    with pytest.raises(errors.IncompatibleCheckpointError, match="format version 3 is newer than this kerax reads \\(2"):
        load_model(_with(tmp_path, metadata={**meta, "format_version": 3}))
    with pytest.raises(errors.CorruptFileError, match="not a kerax model file \\(metadata format 'keras'"):
        load_model(_with(tmp_path, metadata={**meta, "format": "keras"}))
    with pytest.raises(errors.CorruptFileError, match="format_version must be a positive int; received '1'"):
        load_model(_with(tmp_path, metadata={**meta, "format_version": "1"}))


def test_checked_in_version_1_file_loads_and_predicts(no_code):  # B22
    expected = json.loads((FIXTURES / "model_v1.json").read_text())
    model = load_model(FIXTURES / "model_v1.kerax")
    x = np.asarray(expected["x"], np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(expected["y"]), rtol=1e-6, atol=1e-6)
    assert model.compiled and int(model._ts.step) == expected["step"]


def make_fixture() -> None:  # pragma: no cover - run once by hand to regenerate the fixture
    """python -c 'import sys; sys.path.insert(0, "tests"); import test_saving_hostile as t; t.make_fixture()'"""
    model = kx.Sequential([kx.Input((4,)), layers.Dense(3, activation="relu"), layers.BatchNormalization(),
                           layers.Dense(2)], name="fixture")
    model.compile(kx.optimizers.Adam(1e-2), "mse", metrics=["mae"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, seed=0)
    FIXTURES.mkdir(exist_ok=True)
    save_model(model, FIXTURES / "model_v1.kerax")
    (FIXTURES / "model_v1.json").write_text(json.dumps(
        {"x": x[:3].tolist(), "y": model.predict(x[:3], verbose=0).tolist(), "step": int(model._ts.step)}))


def test_saving_sources_use_no_code_loading_primitives():
    here = Path(model_file.__file__).parent
    for name in ("model_file.py", "safe_io.py", "weights.py", "keras_h5.py"):
        if not (here / name).exists():
            continue
        src = (here / name).read_text()
        code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("#", "*")))
        for word in ("import pickle", "marshal", "eval(", "exec(", ".extractall(", "importlib", "__import__", "yaml"):
            assert word not in code, f"{name} uses {word}"
