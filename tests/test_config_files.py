"""Experiment configs: safe YAML reading (RELIABILITY A20, B19, B20), the schema's checks
and messages, and ``--set`` overrides."""

from __future__ import annotations

import time

import pytest
import yaml

from kerax import errors
from kerax.experiments import datasources, runner, schema
from kerax.experiments.yaml_io import MAX_BYTES, load_yaml_file, load_yaml_text

MINIMAL = {"model": {"class_name": "Sequential", "config": {"layers": []}}, "data": {"name": "digits"},
           "compile": {"loss": "mse"}, "fit": {"epochs": 1}}


def test_yaml_reads_plain_documents_and_aliases():
    assert load_yaml_text("a: &x [1, 2]\nb: *x\nc: {d: 0.5}") == {"a": [1, 2], "b": [1, 2], "c": {"d": 0.5}}
    assert load_yaml_text("") is None
    # YAML 1.2 floats (PyYAML's 1.1 rules would read 1e-3 as a string)
    assert load_yaml_text("lr: 1e-3\nbig: 1E+30\nn: 10\ns: e10") == {"lr": 1e-3, "big": 1e30, "n": 10, "s": "e10"}


def test_b19_python_tags_are_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f'!!python/object/apply:os.system ["touch {sentinel}"]\n')
    with pytest.raises(errors.ConfigError, match="evil.yaml: not valid YAML: could not determine a "
                                                 "constructor for the tag .*python/object/apply:os.system"):
        load_yaml_file(path)
    path.write_text(f"fit: !!python/object/new:os.system [touch {sentinel}]\n")
    with pytest.raises(errors.ConfigError, match="python/object/new"):
        load_yaml_file(path)
    assert not sentinel.exists()


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines)


def test_b20_alias_bomb_and_huge_files_are_refused_quickly(tmp_path):
    start = time.perf_counter()
    with pytest.raises(errors.ConfigError, match="expands to more than 100000 nodes"):
        load_yaml_text(_alias_bomb())
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * (10 * 2**20) + "\n")  # 10 MB
    with pytest.raises(errors.ConfigError, match=f"big.yaml: config file is {10 * 2**20 + 4} bytes; "
                                                 f"the limit is {MAX_BYTES}"):
        load_yaml_file(big)
    assert time.perf_counter() - start < 1.0  # the row's bound: a guard against denial of service


def test_yaml_refuses_recursion_bad_bytes_and_missing_files(tmp_path):
    with pytest.raises(errors.ConfigError, match="recursive alias"):
        load_yaml_text("a: &a [1, *a]")
    with pytest.raises(errors.ConfigError, match="not UTF-8"):
        load_yaml_text(b"a: \xff\xfe")
    with pytest.raises(errors.ConfigError, match=r"not valid YAML: .*expected ',' or '\]'"):
        load_yaml_text("a: [1, 2")
    with pytest.raises(FileNotFoundError, match="config file '.*nope.yaml' does not exist"):
        load_yaml_file(tmp_path / "nope.yaml")


def test_validate_fills_defaults():
    config = schema.validate(MINIMAL)
    assert config["fit"] == {"epochs": 1, "batch_size": 32, "validation_split": 0.1, "shuffle": True,
                             "callbacks": []}
    assert config["compile"]["optimizer"] == "adam" and config["compile"]["on_nan"] == "stop"
    assert config["seed"] == 0 and config["distribute"] is None


@pytest.mark.parametrize("change, message", [
    ({"fit": {"epoch": 3}}, r"fit.epoch: unknown key; did you mean 'epochs'\? valid keys: epochs, batch_size"),
    ({"fit": {"epochs": -3}}, r"fit.epochs: expected a value >= 1; found -3"),
    ({"fit": {"epochs": 2, "batch_size": 0}}, r"fit.batch_size: expected a value >= 1; found 0"),
    ({"fit": {"epochs": "ten"}}, r"fit.epochs: expected int; found 'ten'"),
    ({"fit": {"epochs": True}}, r"fit.epochs: expected int; found True"),
    ({"fit": {"epochs": 1, "validation_split": 1.5}}, r"fit.validation_split: expected a fraction in \[0, 1\); found 1.5"),
    ({"fit": None}, r"fit.epochs: missing; this key is required"),
    ({"fit": [1]}, r"fit: expected a mapping; found \[1\]"),
    ({"model": None}, r"model: missing; this key is required"),
    ({"compile": {"loss": "mse", "on_nan": "ignore"}}, r"compile.on_nan: expected one of 'warn', 'stop', 'skip'; found 'ignore'"),
    ({"trian": {}}, r"trian: unknown key; valid keys: name, seed"),
    ({"seeds": 1}, r"seeds: unknown key; did you mean 'seed'\?"),
    ({"distribute": {"devices": 0}}, r"distribute.devices: expected a value >= 1; found 0"),
])
def test_a20_bad_configs_name_the_key_expected_and_found(change, message):
    with pytest.raises(errors.ConfigError, match=message):
        schema.validate({**MINIMAL, **change})


def test_a20_top_level_must_be_a_mapping():
    with pytest.raises(errors.ConfigError, match=r"config: expected a mapping of sections; found \[1, 2\]"):
        schema.validate([1, 2])


def test_data_sections_are_checked_per_data_set():
    assert datasources.check({"name": "digits"}) == {"name": "digits", "test_fraction": 0.2, "split_seed": 0}
    with pytest.raises(errors.UnknownNameError, match="data.name: Unknown data set 'digitz'. Did you mean 'digits'"):
        datasources.check({"name": "digitz"})
    with pytest.raises(errors.ConfigError, match="data.seq_lne: unknown key; did you mean 'seq_len'"):
        datasources.check({"name": "text", "seq_lne": 3})
    with pytest.raises(errors.ConfigError, match=r"data.test_fraction: expected a fraction in \[0, 1\); found 2.0"):
        datasources.check({"name": "digits", "test_fraction": 2.0})


def test_overrides_set_nested_keys_lists_and_named_entries():
    config = {"compile": {"optimizer": "adam"}, "model": {"config": {"layers": [{"config": {"rate": 0.1}}]}}}
    out = schema.apply_overrides(config, ["fit.epochs=3", "compile.optimizer.learning_rate=0.01",
                                          "model.config.layers[0].config.rate=0.5", "fit.callbacks=[]",
                                          "name=exp one"])
    assert out["fit"] == {"epochs": 3, "callbacks": []}
    assert out["compile"]["optimizer"] == {"name": "adam", "learning_rate": 0.01}
    assert out["model"]["config"]["layers"][0]["config"]["rate"] == 0.5
    assert out["name"] == "exp one"
    assert config["compile"]["optimizer"] == "adam"  # the original is untouched


@pytest.mark.parametrize("item, message", [
    ("fit.epochs", r"--set 'fit.epochs': expected KEY.PATH=VALUE"),
    ("=3", r"--set '=3': expected KEY.PATH=VALUE"),
    ("fit..epochs=3", r"expected KEY.PATH=VALUE"),
    ("model.config.layers[3].x=1", r"--set model.config.layers\[3\].x: index \[3\] into a list of 1"),
    ("fit.epochs.x=1", r"--set fit.epochs.x: 'epochs' is 2, not a mapping or list"),
    ("fit.epochs=[1", r"--set fit.epochs: not valid YAML"),
])
def test_bad_overrides_are_explained(item, message):
    config = {"fit": {"epochs": 2}, "model": {"config": {"layers": [{}]}}}
    with pytest.raises(errors.ConfigError, match=message):
        schema.apply_overrides(config, [item])


def test_every_shipped_config_validates_and_round_trips_through_yaml():
    shipped = runner.builtin_configs()
    assert {"digits_cnn", "digits_mlp", "mnist_cnn", "char_lstm", "regression_hello"} <= set(shipped)
    for name in shipped:
        config = runner.read_config(name)
        assert config["name"] == name
        assert runner.read_config(None if name == "digits_cnn" else name) == config
        assert schema.validate(yaml.safe_load(yaml.safe_dump(config))) == {**config, "data": config["data"]}


def test_unknown_config_names_suggest_the_shipped_one():
    with pytest.raises(FileNotFoundError, match=r"config 'digits_cn': no such file and no shipped config "
                                                r"of that name; did you mean 'digits_cnn'\?"):
        runner.read_config("digits_cn")


def test_model_errors_name_the_failing_layer():
    info = {"num_classes": 10}
    layers = [{"class_name": "Flatten", "config": {}}, {"class_name": "Dense", "config": {"unit": 3}}]
    bad = {"class_name": "Sequential", "config": {"layers": layers}}
    with pytest.raises(errors.ConfigError, match=r"model.config.layers\[1\]: Dense.from_config: unknown "
                                                 r"config keys \['unit'\]; Did you mean 'units'\?"):
        runner.build_model(bad, info)
    layers[1] = {"class_name": "Dens", "config": {"units": 3}}
    with pytest.raises(errors.UnsafeContentError, match=r"model.config.layers\[1\]: unknown layer class 'Dens'.*"
                                                        r"Did you mean 'Dense'"):
        runner.build_model(bad, info)
    layers[1] = {"class_name": "Lambda", "config": {"function": "os.system"}}
    with pytest.raises(errors.UnsafeContentError, match="Lambda.*refused in safe mode"):
        runner.build_model(bad, info)
    layers[1] = {"class_name": "Dense", "config": {"units": "${data.vocab_size}"}}
    with pytest.raises(errors.ConfigError, match=r"model.config.layers\[1\].config.units: \$\{data.vocab_size\} "
                                                 r"is not known for this data set; known: num_classes"):
        runner.build_model(bad, info)
    layers[1] = {"class_name": "Dense", "config": {"units": "${data.num_classes}"}}
    assert runner.build_model(bad, info).layers[1].units == 10
