"""Config in, trained model and its records out: what ``kerax train`` does.

:func:`read_config` finds and checks a config; :func:`train` builds the data, model,
optimizer and callbacks from it, fits with a resumable backup, evaluates on the held-out
split and writes the run's files to its output directory::

    config.yaml     the config as run (defaults filled in, overrides applied)
    model.kerax     the trained model (architecture, weights, optimizer state)
    history.json    per-epoch logs; history.csv the same as a table
    metrics.json    held-out test metrics
    privacy.json    with compile.dp: the (epsilon, delta) spent, the steps and the DP-SGD settings
    curves.png      loss and metrics per epoch, training and validation
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import difflib
import inspect
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kerax import errors
from kerax.experiments import datasources, schema
from kerax.experiments.plots import plot_history
from kerax.experiments.preemption import StopOnSignal
from kerax.experiments.yaml_io import load_yaml_file

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "digits_cnn"
RESUME_MODES = ("auto", "required", "never")
# callbacks a config may name, and their options that are paths inside the output directory
CALLBACKS = {"EarlyStopping": (), "ReduceLROnPlateau": (), "TerminateOnNaN": (),
             "CSVLogger": ("filename",), "ModelCheckpoint": ("filepath",), "TensorBoard": ("log_dir",)}


def builtin_configs() -> dict[str, Path]:
    """The configs shipped with kerax, by name (``digits_cnn`` is the default)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def config_path(arg: str | None) -> Path:
    """A config file: ``arg`` as a path, else a shipped config's name; None: the default."""
    if arg is None:
        arg = DEFAULT_CONFIG
    if os.path.isfile(arg):
        return Path(arg)
    shipped = builtin_configs()
    if arg in shipped or arg.removesuffix(".yaml") in shipped:
        return shipped[arg.removesuffix(".yaml")]
    hint = difflib.get_close_matches(arg, list(shipped), n=1)
    raise FileNotFoundError(f"config {arg!r}: no such file and no shipped config of that name"
                            f"{f'; did you mean {hint[0]!r}?' if hint else ''} "
                            f"(shipped: {', '.join(shipped)})")


def read_config(arg: str | None, overrides: list[str] = ()) -> dict:
    """Reads, overrides and checks a config; returns it with every default filled in."""
    path = config_path(arg)
    raw = load_yaml_file(path)
    config = schema.validate(schema.apply_overrides(raw, list(overrides)))
    config["data"] = datasources.check(config["data"])
    if config["name"] is None:
        config["name"] = path.stem
    return config


def build_model(model_config: dict, info: dict) -> Any:
    """The model a config's ``model`` section describes (``${data.KEY}`` filled from ``info``).
    Class names resolve through kerax's registry only; code-carrying layers are refused.
    An error names the failing entry's path (``model.config.layers[2]``)."""
    from kerax.saving import model_file

    model_config = datasources.substitute(model_config, info)
    try:
        model_file.check_config(model_config, True, "model")
        return model_file._rebuild("model", model_config, None)
    except errors.KeraxError as e:
        where = _failing_layer(model_config) or "model"
        text = str(e).replace("model: config.json", "").lstrip(": ")
        cls = errors.ConfigError if isinstance(e, errors.CorruptFileError) else type(e)
        raise cls(f"{where}: {text}") from None


def _failing_layer(config: Any, path: str = "model") -> str | None:
    """The path of the first layer entry that does not build on its own (nested models
    included), or None."""
    from kerax.core import config as cfg

    layers = config.get("config", {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return None
    for i, entry in enumerate(layers):
        here = f"{path}.config.layers[{i}]"
        try:
            cfg.deserialize(entry, None)
        except Exception:  # noqa: BLE001 - only locating; the caller reports the error itself
            return _failing_layer(entry, here) or here
    return None


def compile_model(model: Any, config: dict, devices: int | None) -> None:
    """Compiles ``model`` as the ``compile`` and ``distribute`` sections say."""
    from kerax import losses, optimizers

    c = config["compile"]
    name, options = schema.named("compile.optimizer", c["optimizer"])
    optimizer = _make("compile.optimizer", lambda: type(optimizers.get(name)).from_config(options))
    name, options = schema.named("compile.loss", c["loss"])
    loss = _make("compile.loss", lambda: losses.get({"class_name": type(losses.get(name)).__name__,
                                                      "config": options}) if options else losses.get(name))
    metric_list = ([_metric(f"compile.metrics[{i}]", m) for i, m in enumerate(c["metrics"])]
                   if isinstance(c["metrics"], list) else c["metrics"])
    model.compile(optimizer=optimizer, loss=loss, metrics=metric_list, loss_weights=c["loss_weights"],
                  steps_per_execution=c["steps_per_execution"], on_nan=c["on_nan"],
                  distribute=_distribute(config.get("distribute"), devices), dp=_dp(c["dp"]))


def _dp(options: dict | None) -> Any:
    """``compile.dp``: the arguments of ``kx.privacy.DPSGD`` (None: no DP-SGD)."""
    from kerax.privacy import DPSGD

    if options is None:
        return None
    valid = [f.name for f in dataclasses.fields(DPSGD)]
    for key in options:
        if key not in valid:
            raise schema.unknown_key("compile.dp", key, valid)
    for key in ("l2_norm_clip", "noise_multiplier"):
        if key not in options:
            raise errors.ConfigError(f"compile.dp.{key}: required (valid keys: {', '.join(valid)})")
    return _make("compile.dp", lambda: DPSGD(**options))


def _metric(path: str, entry: Any) -> Any:
    from kerax import metrics

    if isinstance(entry, str):  # resolved by compile, which knows the loss ("accuracy")
        return entry
    name, options = schema.named(path, entry)
    return _make(path, lambda: metrics.deserialize({"class_name": name, "config": options}))


def _distribute(section: dict | None, devices: int | None) -> Any:
    import jax

    from kerax.distribute import DataParallel

    n = devices if devices is not None else (section or {}).get("devices")
    if n is None or (n == 1 and devices is not None):
        return None
    available = jax.local_devices()
    if n > len(available):
        raise errors.ConfigError(f"distribute.devices: {n} devices asked for; this machine has "
                                 f"{len(available)} ({available[0].platform})")
    return DataParallel(devices=available[:n], mode=(section or {}).get("mode", "shard"))


def _make(path: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except errors.KeraxError as e:
        raise type(e)(f"{path}: {e}") from None


def build_callbacks(entries: list, output_dir: Path) -> list:
    """The ``fit.callbacks`` entries as callback objects; path options are inside ``output_dir``."""
    from kerax import callbacks

    out = []
    for i, entry in enumerate(entries):
        path = f"fit.callbacks[{i}]"
        name, options = schema.named(path, entry)
        if name not in CALLBACKS:
            hint = difflib.get_close_matches(name, list(CALLBACKS), n=1)
            raise errors.ConfigError(f"{path}.name: unknown callback {name!r}"
                                     f"{f'; did you mean {hint[0]!r}?' if hint else ''} "
                                     f"(available: {', '.join(CALLBACKS)})")
        cls = getattr(callbacks, name)
        valid = [p for p in inspect.signature(cls).parameters if p not in ("self", "kwargs")]
        for key in options:
            if key not in valid:
                raise schema.unknown_key(f"{path} ({name})", key, valid)
        for key in CALLBACKS[name]:
            if key in options:
                options[key] = str(output_dir / options[key])
        out.append(_make(f"{path} ({name})", lambda: cls(**options)))
    return out


def default_output_dir(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


@dataclasses.dataclass
class Run:
    """What :func:`train` produced."""

    model: Any
    history: dict
    test_metrics: dict
    output_dir: Path
    privacy: Any = None  # kx.privacy.PrivacySpent of a DP-SGD run (compile.dp), else None
    privacy_printed: bool = False  # fit printed it (verbose, and it ran steps)


def train(config: dict, output_dir: str | os.PathLike | None = None, resume: str = "auto",
          devices: int | None = None, verbose: int | str = "auto", stop_event: Any = None,
          log: Callable[[str], None] = print, announce: bool = True) -> Run:
    """Trains as ``config`` says and writes the run's files to ``output_dir``.

    Args:
      config: a checked config (:func:`read_config`).
      output_dir: where the files go; default ``config["output_dir"]`` or ``runs/<name>-<time>``.
      resume: ``"auto"`` continues from a backup in ``output_dir/backup`` if there is one
        (and says so), ``"required"`` fails if there is none, ``"never"`` deletes it.
      devices: data-parallel over this many local devices (overrides ``distribute.devices``).
      verbose: 0 silent, 1 progress bar, 2 a line per epoch, "auto" (1 in a terminal, else 2).
      stop_event: a ``threading.Event`` (e.g. set on SIGTERM); once set, the run backs up
        and raises :class:`~kerax.experiments.preemption.Preempted`.
      log: where progress lines go; ``announce``: also say when there is nothing to resume.

    Raises:
      ConfigError, UnknownNameError, ShapeError...: the config does not describe a run.
      DatasetNotFoundError: the data set's files are missing.
      FileNotFoundError: ``resume="required"`` and no backup.
    """
    import jax

    from kerax import callbacks as kcallbacks
    from kerax.saving.checkpoint import CheckpointManager
    from kerax.utils import set_random_seed

    if resume not in RESUME_MODES:
        raise errors.ConfigError(f"resume: expected one of {', '.join(RESUME_MODES)}; found {resume!r}")
    out = Path(output_dir or config["output_dir"] or default_output_dir(config["name"]))
    backup_dir = out / "backup"
    latest = CheckpointManager(backup_dir).latest_step() if backup_dir.is_dir() else None
    chief = jax.process_index() == 0
    say = log if chief and verbose else (lambda _: None)
    if latest is None and resume == "required":
        raise FileNotFoundError(f"--resume required: no checkpoint in {backup_dir}")
    if resume == "never" and backup_dir.exists():
        shutil.rmtree(backup_dir)
        latest = None
    if resume != "never" and (announce or latest is not None):
        say(f"resuming from the checkpoint at step {latest} in {backup_dir}" if latest is not None
            else f"no checkpoint in {backup_dir}: starting from scratch")

    set_random_seed(config["seed"])
    data = datasources.load(config["data"])
    model = build_model(config["model"], data.info)
    compile_model(model, config, devices)
    out.mkdir(parents=True, exist_ok=True)
    if chief:
        _write_yaml(out / "config.yaml", config)
    backup = kcallbacks.BackupAndRestore(str(backup_dir))
    cbs = build_callbacks(config["fit"]["callbacks"], out) + [backup]
    if stop_event is not None:
        cbs.append(StopOnSignal(stop_event, backup))
    fit = config["fit"]
    record = kcallbacks.History()  # the epochs so far, also when fit raises
    try:
        history = model.fit(data.x_train, data.y_train, batch_size=fit["batch_size"], epochs=fit["epochs"],
                            validation_split=fit["validation_split"], shuffle=fit["shuffle"],
                            callbacks=cbs + [record], seed=config["seed"], verbose=verbose)
    except errors.NonFiniteLossError as e:  # on_nan: skip's limit of consecutive bad steps
        if chief:
            _write_records(out, record.history, None, config["name"])
            _privacy(model, out)
        raise errors.NonFiniteLossError(f"{e}. {_backup_note(out)}") from None
    on_nan = "stop" if any(isinstance(c, kcallbacks.TerminateOnNaN) for c in cbs) else config["compile"]["on_nan"]
    _check_finite(model, history, out, chief, config["name"], on_nan)
    test = model.evaluate(data.x_test, data.y_test, batch_size=fit["batch_size"], verbose=0,
                          return_dict=True)
    test = {f"test_{k}": float(v) for k, v in test.items()}
    if chief:
        model.save(out / "model.kerax")
        _write_records(out, history.history, test, config["name"])
    printed = getattr(history, "privacy", None) is not None and verbose not in (0, False)
    return Run(model, history.history, test, out, _privacy(model, out if chief else None), printed)


def _check_finite(model: Any, history: Any, out: Path, chief: bool, name: str, on_nan: str) -> None:
    """Fails the run (RELIABILITY C11) when its last epoch's loss is not finite, after writing
    the history; says what the weights and the backup hold under ``on_nan``."""
    losses = history.history.get("loss") or [0.0]
    if math.isfinite(float(losses[-1])):
        return
    if chief:
        _write_records(out, history.history, None, name)
        _privacy(model, out)  # the steps taken spent privacy all the same
    epochs = history.epoch or list(range(len(losses)))
    first = next(e for e, v in zip(epochs, losses) if not math.isfinite(float(v))) + 1
    if on_nan == "stop":
        what = f"epoch {first}: non-finite loss; training stopped before applying that update."
    elif on_nan == "skip":
        what = (f"epoch {epochs[-1] + 1}: every step had a non-finite loss and was skipped "
                "(compile.on_nan: skip).")
    else:
        what = (f"epoch {first}: non-finite loss, and compile.on_nan: warn applied that update and "
                "the ones after it; with on_nan: stop, training stops before such an update.")
    raise errors.NonFiniteLossError(f"{what} {_backup_note(out)}")


def _privacy(model: Any, out: Path | None) -> Any:
    """With ``compile.dp``: the ``(epsilon, delta)`` of every DP-SGD step behind the weights
    (the model's privacy ledger, steps before a resume included), written to
    ``out/privacy.json`` unless ``out`` is None; else None."""
    from kerax.privacy import accountant

    dp = getattr(model._compiled, "dp", None)
    if dp is None:
        return None
    try:
        spent = accountant.privacy_spent(model, dp.delta)
    except (ImportError, errors.ConfigError):  # fit has warned that the epsilon is unknown
        return None
    if out is not None:
        record = {"epsilon": spent.epsilon if math.isfinite(spent.epsilon) else str(spent.epsilon),
                  "delta": spent.delta, "steps": spent.steps, **dp.get_config()}
        (out / "privacy.json").write_text(json.dumps(record, indent=1) + "\n")
    return spent


def _backup_note(out: Path) -> str:
    """What the run's backup holds, and how to go on from it."""
    from kerax.saving.checkpoint import CheckpointManager

    backup = out / "backup"
    step = CheckpointManager(backup).latest_step() if backup.is_dir() else None
    if step is None:
        return "No epoch ended with a finite loss, so there is no backup to resume from."
    meta = CheckpointManager(backup).metadata(step)
    epoch, batch = int(meta["epoch"]) + 1, meta.get("batch")
    when = (f"after epoch {epoch} (step {step}), the last epoch that ended with a finite loss" if batch is None
            else f"of epoch {epoch} before its batch {batch} (step {step})")
    return (f"{backup} holds the weights {when}. After fixing the cause (the data, say), continue from "
            f"there with: kerax train {out / 'config.yaml'} --output-dir {out} --resume. A resumed "
            "run restores the optimizer's state as it was, learning rate included: to change "
            "the optimizer (a lower learning rate, say), start over with --resume never.")


def _jsonable(history: dict) -> dict:
    return {k: [float(v) if math.isfinite(float(v)) else str(float(v)) for v in vs] for k, vs in history.items()}


def _write_records(out: Path, history: dict, test: dict | None, name: str) -> None:
    """history.json / .csv, curves.png and (``test`` given) metrics.json."""
    hist = _jsonable(history)
    (out / "history.json").write_text(json.dumps(hist, indent=1) + "\n")
    if test is not None:
        finite = {k: v if math.isfinite(v) else str(v) for k, v in test.items()}  # strict JSON, as history.json
        (out / "metrics.json").write_text(json.dumps(finite, indent=1) + "\n")
    keys = list(hist)
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for e in range(max((len(v) for v in hist.values()), default=0)):
            writer.writerow([e + 1, *(hist[k][e] if e < len(hist[k]) else "" for k in keys)])
    plot_history(history, out / "curves.png", title=name)


def _write_yaml(path: Path, config: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))


def load_inputs(path: str | os.PathLike) -> np.ndarray:
    """An ``.npy`` array of inputs, read without pickle."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise errors.CorruptFileError(f"{path}: not a NumPy .npy array without objects ({e})") from None
