"""Whole-model files (``.kerax``): architecture, weights and optimizer state in one zip.

A ``.kerax`` file is a zip archive (members stored or deflated) holding exactly:

* ``metadata.json``: ``{"format": "kerax.model", "format_version": 1, "kerax_version",
  "jax_version", "date", "class_name"}`` (and ``input_spec`` when the model was built
  from data rather than a declared input shape; ``privacy_ledger``, the DP-SGD steps
  behind the weights, ``[[steps, noise_multiplier, sample_rate], ...]``, when it has any);
* ``config.json``: ``{"class_name": <registered name>, "config": model.get_config()}``;
* ``model.weights.safetensors``: params and state keyed by weight path
  (:mod:`kerax.saving.weights`);
* optionally ``compile.json`` (optimizer, loss and metrics configs, and the ``DPSGD``
  settings of ``compile(dp=...)``) and
  ``optimizer.safetensors`` (the train state's ``opt_state`` leaves keyed by their tree
  path, plus ``step`` and the rng key data), so a loaded model continues training with the
  identical next step.

Loading never runs code from the file: members are read by name through
:mod:`kerax.saving.safe_io` (size limits checked first), classes resolve only through
kerax's registry and ``custom_objects``, code-carrying layers (``Lambda``,
``FunctionLayer``) are refused unless ``safe_mode=False``, and every tensor is checked
against the rebuilt architecture before the model receives any of it.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import warnings
import zipfile
from typing import Any, Mapping

import jax
import numpy as np

from kerax import errors
from kerax.saving import safe_io
from kerax.saving import weights as wfile

FORMAT = "kerax.model"
# 2: compile.json may hold a DP-SGD setting ("dp"), which a reader of version 1 would drop
# and train without noise; files without one are still written as version 1.
FORMAT_VERSION = 2
METADATA, CONFIG, WEIGHTS = "metadata.json", "config.json", "model.weights.safetensors"
COMPILE, OPTIMIZER = "compile.json", "optimizer.safetensors"
# Layers whose config names Python functions: refused by load_model unless safe_mode=False.
CODE_LAYERS = ("Lambda", "FunctionLayer")
RNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


# -- saving -------------------------------------------------------------------------------------

def save_model(model: Any, path: str | os.PathLike, include_optimizer: bool = True) -> None:
    """Writes ``model`` (architecture, weights, optionally optimizer state) to one file.

    The file is written atomically: a temp file in the same folder, fsync, then rename, so
    ``path`` always holds either the old file or the complete new one.

    Raises:
      ConfigError: the model's config cannot be serialized.
      NotBuiltError: the model has no weights and no known input shape.
    """
    from kerax.core import config as cfg
    from kerax.core.registry import registered_name

    params, state = model.params, model.state  # builds from declared shapes if needed
    members = {
        CONFIG: _dumps({"class_name": registered_name(type(model)), "config": cfg.to_json(model.get_config())}),
        WEIGHTS: wfile.weights_bytes(params, state),
    }
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kerax_version": _kerax_version(),
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "class_name": registered_name(type(model)),
    }
    spec = getattr(model, "_input_spec", None)
    if spec is not None:
        meta["input_spec"] = {"shape": list(spec.shape), "dtype": str(np.dtype(spec.dtype))}
    from kerax.privacy import accountant

    ledger = accountant.ledger_of(model)  # a save during a DP fit (ModelCheckpoint) counts its steps so far
    if ledger:  # the DP-SGD steps behind these weights: they describe the weights, optimizer or not
        meta["privacy_ledger"] = accountant.ledger_to_json(ledger)
    if include_optimizer and getattr(model, "_compiled", None) is not None:
        members.update(_optimizer_members(model))
    if COMPILE not in members or json.loads(members[COMPILE]).get("dp") is None:
        meta["format_version"] = 1  # nothing a version-1 reader would misread
    members[METADATA] = _dumps(meta)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in (METADATA, CONFIG, COMPILE, WEIGHTS, OPTIMIZER):
            if name in members:
                info = zipfile.ZipInfo(name, _FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
                info.external_attr = 0o100644 << 16
                zf.writestr(info, members[name])
    wfile.write_atomic(path, buf.getvalue())


def _dumps(value: Any) -> bytes:
    import json

    return json.dumps(value, indent=1, allow_nan=True).encode("utf-8")


def _kerax_version() -> str:
    import kerax

    return str(getattr(kerax, "__version__", "unknown"))


def _optimizer_members(model: Any) -> dict[str, bytes]:
    """``compile.json`` (and ``optimizer.safetensors`` once trained); nothing, with a
    warning, when the compile arguments have no config (a raw optax transformation)."""
    from kerax import optimizers

    compiled = model._compiled
    if not optimizers.has_config(compiled.optimizer):
        warnings.warn("save_model: the optimizer is not a kerax optimizer (a raw optax transformation, alone "
                      "or inside a LossScaleOptimizer, has no config); the file holds no compile arguments or "
                      "optimizer state", stacklevel=3)
        return {}
    try:
        conf = compiled.to_config()
        conf["loss"] = _ser(compiled.loss, "loss")
        conf["metrics"] = _ser(compiled.metrics, "metric")
        conf["on_nan"] = compiled.on_nan
        conf["max_consecutive_nonfinite"] = compiled.max_consecutive_nonfinite
        blob = _dumps(conf)
    except (errors.ConfigError, TypeError, ValueError) as e:
        warnings.warn(f"save_model: the compile arguments cannot be saved ({e}); the file holds "
                      "no compile arguments or optimizer state", stacklevel=3)
        return {}
    out = {COMPILE: blob}
    ts = getattr(model, "_ts", None)
    if ts is not None:
        out[OPTIMIZER] = _train_state_bytes(ts)
    return out


def _ser(value: Any, kind: str) -> Any:
    """Loss / metric arguments of compile -> JSON (names kept, objects as configs)."""
    from kerax import losses, metrics

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_ser(v, kind) for v in value]
    if isinstance(value, dict) and not (isinstance(value.get("class_name"), str) and "config" in value):
        return {str(k): _ser(v, kind) for k, v in value.items()}
    if isinstance(value, dict):
        return value
    if kind == "loss":
        return losses.serialize(losses.get(value))
    return metrics.serialize(metrics.get(value))


def _train_state_bytes(ts: Any) -> bytes:
    from safetensors.numpy import save

    leaves = {jax.tree_util.keystr(p): np.array(v, order="C")
              for p, v in jax.tree_util.tree_flatten_with_path(ts.opt_state)[0]}
    rng = ts.rng
    typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    leaves["step"] = np.asarray(ts.step)
    leaves["rng"] = np.asarray(jax.random.key_data(rng) if typed else rng)
    impl = str(jax.random.key_impl(rng)) if typed else "raw"
    return save(leaves, metadata={"format": "kerax-optimizer/1", "rng_impl": impl})


# -- loading ------------------------------------------------------------------------------------

def load_model(path: str | os.PathLike, custom_objects: Mapping[str, Any] | None = None,
               safe_mode: bool = True, compile: bool = True, check_finite: bool = False,
               allow_cast: bool = False) -> Any:
    """Reads a model written by :func:`save_model`.

    Args:
      path: the ``.kerax`` file.
      custom_objects: ``{name: class or function}`` for user classes not registered with
        ``kx.register_layer``, and for the functions of Lambda / FunctionLayer layers.
      safe_mode: refuse layers whose config names Python code (Lambda, FunctionLayer).
      compile: compile the model as saved and restore its optimizer state, if present.
      check_finite: refuse weights holding NaN or inf (by default they load as saved).
      allow_cast: convert weights whose dtype differs from the architecture's.

    Raises:
      FileNotFoundError: no such file.
      CorruptFileError: truncated, not a kerax model file, malformed members, over limits.
      UnsafeContentError: a class name that is not a kerax / registered / custom class, a
        dotted or module-qualified name, or a code-carrying layer in safe mode.
      IncompatibleCheckpointError: a newer file format; weights that do not fit the
        architecture (missing, unexpected, shape, dtype, non-finite with check_finite).
    """
    limits = {METADATA: safe_io.MAX_JSON_BYTES, CONFIG: safe_io.MAX_JSON_BYTES,
              COMPILE: safe_io.MAX_JSON_BYTES}
    members = safe_io.read_archive(path, (METADATA, CONFIG, WEIGHTS), (COMPILE, OPTIMIZER), limits)
    if OPTIMIZER in members and COMPILE not in members:
        raise errors.CorruptFileError(f"{path}: {OPTIMIZER} without {COMPILE}")
    meta = safe_io.parse_json(members[METADATA], f"{path}:{METADATA}")
    _check_metadata(path, meta)
    config = safe_io.parse_json(members[CONFIG], f"{path}:{CONFIG}")
    check_config(config, safe_mode, f"{path}:{CONFIG}")
    model = _rebuild(path, config, custom_objects)
    tensors, metadata = safe_io.read_safetensors(members[WEIGHTS], f"{path}:{WEIGHTS}")
    tensors = wfile.upgrade_int8_scales(tensors, metadata)
    params_abs, state_abs = _abstract_build(path, model, meta)
    new = wfile.match_tensors(wfile.expected_weights(params_abs, state_abs), tensors, f"{path}:{WEIGHTS}",
                              allow_cast=allow_cast, check_finite=check_finite)
    opt = ts_parts = None
    if compile and COMPILE in members:
        opt = _compile_args(path, members)
        if OPTIMIZER in members:
            ts_parts = _opt_state(path, members[OPTIMIZER], opt[0], params_abs, allow_cast)
    model._params, model._state = wfile.swap_in(model, params_abs, state_abs, new)
    if opt is not None:
        optimizer, kwargs = opt
        model.compile(optimizer=optimizer, **kwargs)
        if ts_parts is not None:
            from kerax.training.train_state import TrainState

            step, opt_state, rng = ts_parts
            copy = lambda t: jax.tree.map(lambda a: a.copy(), t)
            model._ts = TrainState(step=step, params=copy(model._params), state=copy(model._state),
                                   opt_state=opt_state, rng=rng, tx=model._compiled.optimizer)
    if meta.get("privacy_ledger") is not None:
        from kerax.privacy import accountant

        try:
            model._privacy_ledger = accountant.ledger_from_json(meta["privacy_ledger"])
        except errors.ConfigError as e:
            raise errors.CorruptFileError(f"{path}:{METADATA}: malformed privacy_ledger ({e.message})") from None
        if not compile and COMPILE in members:  # privacy_spent's delta: the run's, compiled or not
            conf = safe_io.parse_json(members[COMPILE], f"{path}:{COMPILE}")
            if isinstance(conf, dict) and conf.get("dp") is not None:
                model._privacy_delta = _dp_config(conf["dp"], f"{path}:{COMPILE}").delta
    return model


def _check_metadata(path: Any, meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise errors.CorruptFileError(f"{path}: not a kerax model file (metadata format {got!r}, "
                                      f"expected {FORMAT!r})")
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise errors.CorruptFileError(f"{path}: metadata format_version must be a positive int; "
                                      f"received {version!r}")
    if version > FORMAT_VERSION:
        raise errors.IncompatibleCheckpointError(
            f"{path}: file format version {version} is newer than this kerax reads "
            f"({FORMAT_VERSION}; saved by kerax {meta.get('kerax_version')!r}). Upgrade kerax to load it")


def check_config(config: Any, safe_mode: bool, where: Any) -> None:
    """Refuses class names kerax never writes (dotted, module-qualified) and, in safe mode,
    layers carrying Python code; walks the config without recursion."""
    todo = [config]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            name = node.get("class_name", node.get("class"))
            if "module" in node or "registered_name" in node or "class" in node:
                raise errors.UnsafeContentError(
                    f"{where}: unknown class {_qualified(node)!r}: kerax configs name classes by "
                    "their registered name only, never by module")
            if "class_name" in node and not (isinstance(name, str) and _NAME.match(name)):
                raise errors.UnsafeContentError(
                    f"{where}: unknown class {name!r}: configs may only name kerax classes, classes "
                    "registered with kx.register_layer, or entries of custom_objects")
            if safe_mode and name in CODE_LAYERS:
                raise errors.UnsafeContentError(
                    f"{where}: layer class {name!r} carries Python code and is refused in safe "
                    "mode; if you trust this file, pass safe_mode=False and the functions in "
                    "custom_objects")
            todo.extend(node.values())


def _qualified(node: dict) -> str:
    parts = [node.get("module"), node.get("class_name", node.get("class"))]
    return ".".join(str(p) for p in parts if p is not None)


def _rebuild(path: Any, config: Any, custom_objects: Mapping[str, Any] | None) -> Any:
    from kerax.core import config as cfg
    from kerax.core.registry import resolve_layer
    from kerax.models.model import Model

    if not (isinstance(config, dict) and set(config) == {"class_name", "config"}):
        raise errors.CorruptFileError(f"{path}: {CONFIG} must be {{'class_name': ..., 'config': {{...}}}}")
    cls = resolve_layer(config["class_name"], custom_objects)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise errors.UnsafeContentError(f"{path}: class {config['class_name']!r} is not a model class")
    try:
        return cfg.deserialize(config, custom_objects)
    except errors.KeraxError:
        raise
    except (TypeError, KeyError, IndexError, AttributeError, ValueError, RecursionError) as e:
        raise errors.CorruptFileError(
            f"{path}: {CONFIG} does not describe a model ({type(e).__name__}: {str(e)[:300]})") from None


def _abstract_build(path: Any, model: Any, meta: dict) -> tuple[Any, Any]:
    """The shapes of the model's params and state (traced, nothing computed), recording its
    weight order and input spec as ``build`` would."""
    import jax.numpy as jnp

    from kerax.core.symbolic import ShapeSpec
    from kerax.models import weights as mweights

    spec = meta.get("input_spec")
    if spec is not None:
        try:
            shape = tuple(1 if d is None else int(d) for d in spec["shape"])
            x = jax.ShapeDtypeStruct(shape, jnp.dtype(str(spec["dtype"])))
        except (TypeError, KeyError, ValueError) as e:
            raise errors.CorruptFileError(f"{path}: metadata input_spec is malformed ({e})") from None
    else:
        try:
            x = model._declared_specs()
        except errors.ShapeError:
            raise errors.CorruptFileError(
                f"{path}: the model declares no input shape and the metadata has no input_spec") from None
    order: list = []

    def traced(rng, x):
        p, s = model.init(rng, x)
        order.extend(mweights.ordered_paths(p, s))
        return p, s

    params, state = jax.eval_shape(traced, jax.random.key(0), x)
    model._weight_order = order
    if isinstance(x, jax.ShapeDtypeStruct):
        model._input_spec = ShapeSpec((None, *x.shape[1:]), x.dtype)
    return params, state


def _compile_args(path: Any, members: dict) -> tuple[Any, dict]:
    from kerax import losses, metrics, optimizers

    where = f"{path}:{COMPILE}"
    conf = safe_io.parse_json(members[COMPILE], where)
    if not isinstance(conf, dict) or not isinstance(conf.get("optimizer"), dict):
        raise errors.CorruptFileError(f"{where}: expected an object with an optimizer config")
    check_config(conf, True, where)
    optimizer = optimizers.get(conf["optimizer"])

    def load(value: Any, get: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"class_name", "config"}:
            return get(value)
        if isinstance(value, list):
            return [load(v, get) for v in value]
        if isinstance(value, dict):
            return {k: load(v, get) for k, v in value.items()}
        return value

    kwargs = {"loss": load(conf.get("loss"), losses.get), "metrics": load(conf.get("metrics"), metrics.get),
              "loss_weights": conf.get("loss_weights")}
    for key in ("steps_per_execution", "on_nan", "max_consecutive_nonfinite", "scan_layers", "strict_dtypes"):
        if key in conf:
            kwargs[key] = conf[key]
    if conf.get("dp") is not None:  # files without it (no DP, or older kerax) compile without dp
        kwargs["dp"] = _dp_config(conf["dp"], where)
    return optimizer, kwargs


def _dp_config(value: Any, where: str) -> Any:
    """The saved ``DPSGD`` (plain numbers; the accountant's ledger is not saved)."""
    from kerax.privacy import DPSGD

    try:
        return DPSGD.from_config(value)
    except errors.ConfigError as e:
        raise errors.CorruptFileError(f"{where}: malformed dp setting ({e.message})") from None


# Optimizer-state leaves that files from earlier kerax versions hold and current ones do not:
# Adam's epsilon schedule (now kept by AMSGrad only). Dropped on load; nothing reads them.
_RETIRED = frozenset({".hyperparams['eps']", ".hyperparams_states['eps'].count"})


def _opt_state(path: Any, blob: bytes, optimizer: Any, params_abs: Any, allow_cast: bool) -> tuple:
    import jax.numpy as jnp

    where = f"{path}:{OPTIMIZER}"
    tensors, meta = safe_io.read_safetensors(blob, where)
    abstract = jax.eval_shape(optimizer.init, params_abs)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    expected = {jax.tree_util.keystr(p): v for p, v in flat}
    impl = meta.get("rng_impl", "")
    if impl not in RNG_IMPLS + ("raw",):
        raise errors.CorruptFileError(f"{where}: unknown rng_impl {impl!r}; expected one of {list(RNG_IMPLS)}")
    rng_shape = (2,) if impl in ("threefry2x32", "raw") else (4,)
    expected["step"] = jax.ShapeDtypeStruct((), jnp.int32)
    expected["rng"] = jax.ShapeDtypeStruct(rng_shape, jnp.uint32)
    tensors = {k: v for k, v in tensors.items() if k in expected or k not in _RETIRED}
    got = wfile.match_tensors(expected, tensors, where, allow_cast=allow_cast)
    leaves = [jnp.asarray(got[jax.tree_util.keystr(p)]) for p, _ in flat]
    opt_state = jax.tree_util.tree_unflatten(treedef, leaves)
    rng = jnp.asarray(got["rng"])
    rng = rng if impl == "raw" else jax.random.wrap_key_data(rng, impl=impl)
    return jnp.asarray(got["step"]), opt_state, rng
