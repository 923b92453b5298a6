"""``kx.quantize``: post-training int8 quantization of a trained model's weights.

``kx.quantize(model, mode="int8")`` returns a new model (``model`` is left as it was) in
which every Dense, ConvND / ConvNDTranspose / DepthwiseConvND / SeparableConvND and
Embedding layer is replaced by its int8 wrapper from :mod:`kerax.layers.quantized`, with
its kernels quantized per output channel from the trained weights. Every other layer keeps
its float32 weights. The transformation runs on the model's config: the config is
rewritten (each supported layer entry becomes ``{"class_name": "QuantizedDense", "config":
{"layer": <the Dense entry>, "name": ...}}``), rebuilt through the registry like a saved
model, and the weights are carried over by layer name, so Sequential and functional
models, nested models and shared layers (one entry, one set of weights) all work, and the
result saves and loads like any model.

The pure core has no model classes, so this module lives in the shell (``kerax.models``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from kerax import errors
from kerax.core import config as cfg
from kerax.core.layer import Layer
from kerax.core.registry import registered_name
from kerax.layers.quantized import QuantizedConv, QuantizedDense, QuantizedEmbedding, _Quantized
from kerax.models import weights as mweights
from kerax.models.model import Model
from kerax.models.sequential import Sequential

MODES = ("int8",)
WRAPPERS = (QuantizedDense, QuantizedConv, QuantizedEmbedding)


def quantize(model: Model, mode: str = "int8", *, verbose: bool = False,
             print_fn: Callable[[str], Any] | None = None) -> Model:
    """A copy of a trained model with int8 kernels (per-output-channel float32 scales).

    Args:
      model: a built ``kx.Sequential`` or ``kx.Model`` (fitted, built, or loaded).
      mode: ``"int8"`` (the only mode): symmetric per-channel weight quantization,
        dequantized on the fly in the forward pass.
      verbose: print which layers were quantized and which kept float32 weights.
      print_fn: where ``verbose`` prints (default ``print``).

    Returns:
      A new model of the same class, layer names and weight paths, holding the quantized
      weights, compiled as ``model`` was (if it was), ready for ``predict``, ``evaluate``
      and ``save``. Its int8 kernels sit in ``state`` (non-trainable): ``fit`` trains only
      the float weights left (biases, unquantized layers).

    Raises:
      ConfigError: an unknown ``mode``; a Sequential listing one layer object twice.
      NotBuiltError: ``model`` has no weights yet.
      TypeError: ``model`` is not a kerax model.

    Example::

        q = kx.quantize(model)                 # model: a trained kx.Sequential
        q.predict(x_test)
        q.save("model-int8.kerax", include_optimizer=False)
    """
    if mode not in MODES:
        raise errors.ConfigError(f"quantize: unknown mode {mode!r}; valid modes: {list(MODES)}")
    if not isinstance(model, Model):
        raise TypeError(f"quantize expects a kx.Model or kx.Sequential; received {type(model).__name__}")
    if not model.built:
        raise errors.NotBuiltError(
            f"quantize: model {model.name or model.default_name()!r} has no weights yet; "
            "quantization reads trained weights, so fit, build or load the model first")
    config, params, state = _rewrite_model(model, model.params, model.state)
    new = cfg.deserialize({"class_name": registered_name(type(model)), "config": config})
    _install(new, model, params, state)
    if verbose:
        (print_fn or print)(format_report(quantization_report(new)))
    return new


# -- rewriting the config and carrying the weights over --------------------------------------

def _rewrite_model(model: Model, params: dict, state: dict) -> tuple[dict, dict, dict]:
    """``model``'s config with supported layers replaced, and the matching weight trees."""
    config = model.get_config()
    layers, names = model.layers, model.layer_names()
    if isinstance(model, Sequential) and len({id(l) for l in layers}) != len(layers):
        raise errors.ConfigError(
            f"quantize: Sequential {model.name or model.default_name()!r} lists one layer object "
            "more than once (a shared layer), which its config cannot express; build the model "
            "as a functional kx.Model to share a layer")
    new_params: dict = {}
    new_state: dict = {}
    for layer, name, entry in zip(layers, names, config["layers"]):
        obj, p, s = _rewrite_layer(layer, name, params.get(name, {}), state.get(name, {}))
        entry["class_name"], entry["config"] = obj["class_name"], obj["config"]
        if "name" in entry["config"]:
            entry["config"]["name"] = name  # rebuilt containers must give the same names
        if p:
            new_params[name] = p
        if s:
            new_state[name] = s
    return config, new_params, new_state


def _rewrite_layer(layer: Layer, name: str, params: dict, state: dict) -> tuple[dict, dict, dict]:
    if isinstance(layer, Model):
        config, p, s = _rewrite_model(layer, params, state)
        return {"class_name": registered_name(type(layer)), "config": config}, p, s
    for wrapper in WRAPPERS:
        if isinstance(layer, wrapper.wraps):
            q = wrapper(layer=layer, name=name)
            p, s = q.quantize_weights(params, state)
            return cfg.to_json(q), p, s
    return cfg.to_json(layer), params, state


def _install(new: Model, old: Model, params: dict, state: dict) -> None:
    """Gives ``new`` the weights, checked against its own (abstract) init, and ``old``'s
    input spec and compile settings."""
    import jax.numpy as jnp

    spec = getattr(old, "_input_spec", None)
    try:
        x = (jax.ShapeDtypeStruct((1, *spec.shape[1:]), jnp.dtype(spec.dtype)) if spec is not None
             else new._declared_specs())
    except errors.ShapeError:
        x = None  # built from data with unknown dims: the trees' own order is the init order
    order: list = []
    if x is not None:
        def traced(rng, x):
            p, s = new.init(rng, x)
            order.extend(mweights.ordered_paths(p, s))
            return p, s

        params_abs, state_abs = jax.eval_shape(traced, jax.random.key(0), x)
        mweights.check_tree("params", params_abs, params)
        mweights.check_tree("state", state_abs, state)
    else:
        order = mweights.ordered_paths(params, state)
    new._params = jax.tree.map(jnp.asarray, params)
    new._state = jax.tree.map(jnp.asarray, state)
    new._weight_order = order
    new._input_spec = spec
    if hasattr(old, "_input_dtype"):
        new._input_dtype = old._input_dtype
    new._compiled = old._compiled  # a description only: the optimizer state starts afresh
    # The DP-SGD steps behind the weights are behind the quantized ones too.
    from kerax.privacy import accountant

    new._privacy_ledger = accountant.ledger_of(old)


# -- reporting -------------------------------------------------------------------------------

def quantization_report(model: Model) -> list[dict]:
    """Every layer of ``model`` that holds weights, and whether they are int8.

    Returns:
      ``[{"path": "dense", "layer": "Dense", "quantized": True, "int8": ["kernel"]}, ...]``
      in layer order; nested models' layers appear under their paths (``inner/dense``),
      a shared layer once. ``layer`` is the float class a quantized wrapper holds.
    """
    out: list[dict] = []

    def walk(m: Model, params: dict, state: dict, prefix: str) -> None:
        seen: set[str] = set()
        for layer, name in zip(m.layers, m.layer_names()):
            if name in seen:
                continue
            seen.add(name)
            p, s = params.get(name, {}), state.get(name, {})
            if isinstance(layer, Model):
                walk(layer, p, s, f"{prefix}{name}/")
            elif isinstance(layer, _Quantized):
                out.append({"path": prefix + name, "layer": type(layer.layer).__name__,
                            "quantized": True, "int8": list(layer.quantized_weights)})
            elif mweights.count(p) + mweights.count(s):
                out.append({"path": prefix + name, "layer": type(layer).__name__,
                            "quantized": False, "int8": []})

    walk(model, model.params, model.state, "")
    return out


def format_report(report: list[dict]) -> str:
    """The report of :func:`quantization_report` as two lines of text."""
    def fmt(rows: list[dict]) -> str:
        return ", ".join(f"{r['path']} ({r['layer']})" for r in rows) or "none"

    q = [r for r in report if r["quantized"]]
    f = [r for r in report if not r["quantized"]]
    return (f"quantize: int8 weights in {len(q)} layer{'s' * (len(q) != 1)}: {fmt(q)}\n"
            f"quantize: float32 weights kept in {len(f)} layer{'s' * (len(f) != 1)}: {fmt(f)}")
