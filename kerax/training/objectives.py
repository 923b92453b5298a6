"""What ``compile`` resolves: per-output losses, loss weights and metrics, as pure functions.

A model's outputs are one array, a list, or a dict. ``Objectives`` flattens them to a
list of named outputs, each with an optional loss, a weight and its metrics, and gives the
step builders three pure functions: ``loss`` (the weighted total and each output's loss),
``update`` (accumulate metric states) and ``compute`` (the logs).

Losses are averaged over the real examples only: ``sum(loss * sample_weight * mask) /
sum(mask)``, where ``mask`` is 0 for padding rows. Without padding and weights this is
Keras's ``sum_over_batch_size``; with padding it stays exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors, losses, metrics
from kerax.core.symbolic import SymbolicTensor

NAN_KEY = "_nonfinite"  # metric-state entry counting non-finite steps (not a metric)


def _flatten(tree: Any, names: tuple[str, ...], what: str) -> list:
    """Model outputs or targets as a list in output order."""
    if len(names) == 1 and not isinstance(tree, (list, tuple, dict)):
        return [tree]
    if isinstance(tree, dict):
        missing = [n for n in names if n not in tree]
        unknown = [k for k in tree if k not in names]
        if missing or unknown:
            raise errors.InputStructureError(
                f"{what}: expected keys {list(names)}; received {list(tree)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        return [tree[n] for n in names]
    if isinstance(tree, (list, tuple)) and len(tree) == len(names):
        return list(tree)
    if len(names) == 1 and isinstance(tree, (list, tuple)) and len(tree) == 1:
        return list(tree)
    raise errors.InputStructureError(
        f"{what}: the model has {len(names)} output{'s' if len(names) > 1 else ''} "
        f"{list(names)}; received {type(tree).__name__}"
        + (f" of length {len(tree)}" if isinstance(tree, (list, tuple)) else "")
    )


def output_names(model: Any) -> tuple[str, ...]:
    """Keras's names for a model's outputs: dict keys, or the producing layers' names."""
    from kerax.core.functional import Graph

    core = getattr(model, "core", model)
    if isinstance(core, Graph):
        outs = core.outputs
        if isinstance(outs, dict):
            return tuple(outs)
        if isinstance(outs, SymbolicTensor):
            return ("output",)
        names = [core.layer_name(t.node.layer) for t in outs]
        return tuple(n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names))
    return ("output",)


def _per_output(spec: Any, names: tuple[str, ...], what: str, default: Any) -> list:
    """A loss/weight/metrics spec given once, as a list, or as a dict -> one per output."""
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise errors.ConfigError(
                f"compile: {what} names unknown outputs {unknown}; the outputs are {list(names)}"
            )
        return [spec.get(n, default) for n in names]
    if isinstance(spec, (list, tuple)) and len(names) > 1 and what != "metrics":
        if len(spec) != len(names):
            raise errors.ConfigError(
                f"compile: {len(spec)} {what} given for {len(names)} outputs {list(names)}"
            )
        return list(spec)
    if isinstance(spec, (list, tuple)) and what == "metrics" and len(names) > 1 and spec and all(
        isinstance(s, (list, tuple)) for s in spec
    ):
        return [list(s) for s in spec]
    return [spec] * len(names)


@dataclasses.dataclass(frozen=True)
class Objectives:
    """Resolved losses, weights and metrics, one entry per model output."""

    names: tuple[str, ...]
    losses: tuple[Any, ...]
    weights: tuple[float, ...]
    metrics: tuple[tuple[Any, ...], ...]

    @classmethod
    def create(cls, model: Any, loss: Any = None, metrics_spec: Any = None,
               loss_weights: Any = None, output_shapes: list | None = None) -> "Objectives":
        names = output_names(model)
        loss_list = [None if l is None else losses.get(l) for l in _per_output(loss, names, "losses", None)]
        weights = [float(w) for w in _per_output(1.0 if loss_weights is None else loss_weights, names, "loss_weights", 1.0)]
        metric_lists = []
        for i, spec in enumerate(_per_output(metrics_spec or [], names, "metrics", [])):
            spec = spec if isinstance(spec, (list, tuple)) else [spec]
            shape = output_shapes[i] if output_shapes else None
            metric_lists.append(tuple(metrics.get(m, loss=loss_list[i], output_shape=shape) for m in spec))
        if all(l is None for l in loss_list):
            raise errors.ConfigError("compile: no loss given; pass loss=... (e.g. 'mse')")
        return cls(names, tuple(loss_list), tuple(weights), tuple(metric_lists))

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    def log_names(self) -> list[str]:
        out = ["loss"]
        if self.multi:
            out += [f"{n}_loss" for n, l in zip(self.names, self.losses) if l is not None]
        for n, ms in zip(self.names, self.metrics):
            out += [f"{n}_{m.name}" if self.multi else m.name for m in ms]
        return out

    # -- host-side checks, before anything compiles -------------------------------------------

    def check_shapes(self, y_true_shapes: list, y_pred_shapes: list) -> None:
        for name, loss, t, p in zip(self.names, self.losses, y_true_shapes, y_pred_shapes):
            if loss is not None:
                try:
                    loss.check_shapes(tuple(t), tuple(p))
                except errors.KeraxError as e:
                    if self.multi:
                        e.message = f"output {name!r}: {e.message}"
                    raise

    def validate_targets(self, y_true: list, y_pred_shapes: list) -> None:
        for name, loss, t, p in zip(self.names, self.losses, y_true, y_pred_shapes):
            if loss is not None and isinstance(t, np.ndarray):
                loss.validate_targets(t, tuple(p))

    # -- pure functions used inside the compiled steps ----------------------------------------

    def flatten_outputs(self, tree: Any) -> list:
        return _flatten(tree, self.names, "model outputs")

    def flatten_targets(self, tree: Any) -> list:
        return _flatten(tree, self.names, "targets y")

    def loss(self, y_true: Any, y_pred: Any, sample_weight: Any, mask: Any,
             count: Any = None) -> tuple[jax.Array, list]:
        """``(total, [per-output losses])``; weights and padding handled as documented.

        ``count``: the number of real rows to average over (default: this batch's); data
        parallelism passes the global count so that per-device losses add up."""
        yt, yp = self.flatten_targets(y_true), self.flatten_outputs(y_pred)
        w = mask if sample_weight is None else mask * sample_weight
        count = jnp.maximum(jnp.sum(mask) if count is None else count, 1.0)
        total = jnp.zeros((), jnp.float32)
        parts = []
        for loss, weight, t, p in zip(self.losses, self.weights, yt, yp):
            if loss is None:
                parts.append(None)
                continue
            per_example = loss.call(t, p).astype(jnp.float32)
            per_example = per_example.reshape(per_example.shape[0], -1).mean(axis=1)
            value = jnp.sum(jnp.where(w > 0, per_example * w, 0.0)) / count
            parts.append(value)
            total = total + weight * value
        return total, parts

    def init(self) -> dict:
        state = {"loss": metrics.Mean().init(), NAN_KEY: jnp.zeros((2,), jnp.float32)}
        for n, l in zip(self.names, self.losses):
            if self.multi and l is not None:
                state[f"{n}_loss"] = metrics.Mean().init()
        for n, ms in zip(self.names, self.metrics):
            for m in ms:
                state[f"{n}_{m.name}" if self.multi else m.name] = m.init()
        return state

    def update(self, state: dict, total: Any, parts: list, y_true: Any, y_pred: Any,
               sample_weight: Any, mask: Any) -> dict:
        """Accumulates one batch into the metric states (pure)."""
        state = dict(state)
        count = jnp.sum(mask)
        mean = metrics.Mean()
        state["loss"] = mean.update(state["loss"], total, sample_weight=count)
        for n, part in zip(self.names, parts):
            if self.multi and part is not None:
                state[f"{n}_loss"] = mean.update(state[f"{n}_loss"], part, sample_weight=count)
        w = mask if sample_weight is None else mask * sample_weight
        for n, ms, t, p in zip(self.names, self.metrics, self.flatten_targets(y_true), self.flatten_outputs(y_pred)):
            for m in ms:
                key = f"{n}_{m.name}" if self.multi else m.name
                state[key] = m.update(state[key], t, p, sample_weight=w)
        return state

    def compute(self, state: dict) -> dict:
        out = {"loss": metrics.Mean().compute(state["loss"])}
        for n, l in zip(self.names, self.losses):
            if self.multi and l is not None:
                out[f"{n}_loss"] = metrics.Mean().compute(state[f"{n}_loss"])
        for n, ms in zip(self.names, self.metrics):
            for m in ms:
                key = f"{n}_{m.name}" if self.multi else m.name
                out[key] = m.compute(state[key])
        return out
