"""Everything ``fit`` / ``evaluate`` check and prepare before anything compiles.

Data is converted and validated on the host (lengths, emptiness, dtypes, label ranges,
target shapes against the model's outputs, optionally finiteness), the model is built
from the first batch if needed, and the compiled steps are fetched from a per-model cache
so that calling ``fit`` again does not recompile.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import numpy as np

from kerax import errors, optimizers
from kerax.data import ArrayData, IterableData, as_data
from kerax.training.objectives import Objectives
from kerax.training.steps import EvalStep, TrainStep

# In-memory data smaller than this is copied to the device once and indexed there.
DEVICE_DATA_BYTES = 1 << 29


@dataclasses.dataclass
class CompileConfig:
    """What ``compile`` was given (objects resolved where that needs no model shapes)."""

    optimizer: Any
    loss: Any
    metrics: Any
    loss_weights: Any
    steps_per_execution: int
    on_nan: str
    max_consecutive_nonfinite: int
    jit_compile: bool
    distribute: Any = None
    dp: Any = None  # kx.privacy.DPSGD: differentially private training steps
    scan_layers: bool = False  # run identical consecutive layers by lax.scan (kerax.core.scan)
    strict_dtypes: bool = False  # refuse inputs of another dtype than the model's (no cast)

    def to_config(self) -> dict:
        from kerax import losses

        ser = lambda l: None if l is None else (losses.serialize(losses.get(l)) if not isinstance(l, (list, dict)) else l)
        opt = self.optimizer
        return {
            "optimizer": optimizers.serialize(opt) if optimizers.has_config(opt) else None,
            "loss": ser(self.loss) if not isinstance(self.loss, (list, dict)) else self.loss,
            "metrics": self.metrics,
            "loss_weights": self.loss_weights,
            "steps_per_execution": self.steps_per_execution,
            **({"scan_layers": True} if self.scan_layers else {}),  # absent when off: older files unchanged
            **({"strict_dtypes": True} if self.strict_dtypes else {}),
            # DP-SGD's four numbers: a loaded model keeps training privately (absent without dp).
            **({"dp": self.dp.get_config()} if self.dp is not None else {}),
        }


def check_steps(name: str, steps: Any) -> None:
    """A count of batches (``steps_per_epoch``, ``validation_steps``, ``steps``): None or an
    int >= 1 (0 or -1 would silently run nothing, or drop the last batch).

    Raises:
      DataError: naming the argument and the received value.
    """
    if steps is not None and not (is_int(steps) and steps >= 1):
        raise errors.DataError(f"{name} must be a positive int; received {steps!r}")


def is_int(value: Any) -> bool:
    """An int or a NumPy integer, not a bool (``True`` is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_batch_size(batch_size: Any) -> int:
    """``batch_size``: None (32, as Keras) or a positive int; returned as an int.

    Raises:
      ConfigError: anything else, named with the received value.
    """
    batch_size = 32 if batch_size is None else batch_size
    if not (is_int(batch_size) and batch_size >= 1):
        raise errors.ConfigError(f"batch_size must be a positive int; received {batch_size!r}")
    return int(batch_size)


def check_fit_args(batch_size: Any, epochs: Any, initial_epoch: Any, steps_per_epoch: Any,
                   validation_steps: Any, validation_freq: Any, seed: Any, shuffle: Any = True) -> int:
    """``fit``'s counts and seed, refused before anything runs (plain and ``ensemble=N``
    alike); returns the batch size (32 for None, as Keras).

    Raises:
      DataError: a step count that is not a positive int.
      ConfigError: ``batch_size`` not a positive int, ``epochs`` / ``initial_epoch``
        negative, ``validation_freq`` not a positive int, ``seed`` not a whole number (and
        negative while shuffling).
    """
    batch_size = check_batch_size(batch_size)
    if not is_int(epochs) or epochs < 0 or initial_epoch < 0:
        raise errors.ConfigError(f"epochs and initial_epoch must be non-negative ints; received {epochs!r}, {initial_epoch!r}")
    check_steps("steps_per_epoch", steps_per_epoch)
    check_steps("validation_steps", validation_steps)
    if not (is_int(validation_freq) and validation_freq >= 1):
        raise errors.ConfigError(f"validation_freq must be a positive int (validate every that many epochs); "
                                 f"received validation_freq={validation_freq!r}")
    whole = is_int(seed) or (isinstance(seed, float) and seed.is_integer())
    if seed is not None and not whole:
        raise errors.ConfigError(f"seed must be a whole number; received seed={seed!r}")
    # The epoch shuffles draw from np.random.default_rng([seed, epoch]), which takes no negatives.
    if seed is not None and shuffle and seed < 0:
        raise errors.ConfigError(f"seed must be a non-negative int when shuffling; received seed={seed!r}")
    return batch_size


def require_compiled(model: Any, what: str) -> CompileConfig:
    compiled = getattr(model, "_compiled", None)
    if compiled is None:
        raise errors.NotCompiledError(
            f"{what}() needs a compiled model: call model.compile(optimizer=..., loss=...) first"
        )
    return compiled


def expand_rank1(model: Any) -> bool:
    """Keras 2 expands 1-D inputs when the model's input is (None, 1) or not declared."""
    declared = getattr(model.core, "declared_input_shape", None)
    if declared is None and hasattr(model.core, "inputs"):
        return False  # functional models declare their inputs; take them as they are
    return declared is None or (len(declared) == 2 and declared[1] == 1)


def prepare(model: Any, x: Any, y: Any, sample_weight: Any, class_weight: Any, name: str) -> ArrayData | IterableData:
    check_strict_dtypes(model, x, name)
    data = as_data(x, y, sample_weight, name=name, expand=expand_rank1(model))
    if class_weight is not None:
        if not isinstance(data, ArrayData):
            raise errors.DataError("class_weight needs in-memory arrays; weight an iterable's batches yourself")
        data.sample_weight = apply_class_weight(data.y, data.sample_weight, class_weight)
    return data


def check_strict_dtypes(model: Any, x: Any, name: str = "x") -> None:
    """With ``compile(strict_dtypes=True)``: every input array of ``x`` must have the dtype of
    the model's input (declared with ``kx.Input``, else the one the model was built for: an
    unbuilt model without ``kx.Input`` is built for its first data, unchecked), as given,
    before any cast (int to float, float64 to float32). In-memory arrays only; an
    iterable's batches are not checked."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None or not compiled.strict_dtypes:
        return
    for where, got, label, want in _input_dtypes(model, x, name):
        if want is not None and got is not None and np.dtype(got) != np.dtype(want):
            raise errors.DTypeError(
                f"{where} has dtype {np.dtype(got)}; the model's {label} is {np.dtype(want)}, and "
                f"compile(strict_dtypes=True) refuses a cast: pass {where}.astype({str(np.dtype(want))!r}) "
                "or compile without strict_dtypes")


def _input_dtypes(model: Any, x: Any, name: str) -> list[tuple[str, Any, str, Any]]:
    """``(where in x, its dtype, the model input's label, its dtype)`` per input of ``x``."""
    dtype = lambda a: getattr(a, "dtype", None) if hasattr(a, "shape") else None  # noqa: E731
    inputs = getattr(model.core, "inputs", None)
    if inputs is None or hasattr(inputs, "node") or not isinstance(inputs, (list, tuple, dict)):  # one input
        # kx.Input(dtype=...) of a functional model or a Sequential; else what it was built for
        declared = getattr(inputs, "dtype", None) if inputs is not None else getattr(model, "_input_dtype", None)
        spec = getattr(model, "_input_spec", None)
        want = declared if declared is not None else getattr(spec, "dtype", None)
        return [(name, dtype(x), "input", want)]
    names = list(model.input_names)
    tensors = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
    if isinstance(x, dict):
        pairs = [(f"{name}[{k!r}]", x[k], k) for k in names if k in x]
    elif isinstance(x, (list, tuple)) and len(x) == len(names):
        pairs = [(f"{name}[{i}]", a, k) for i, (a, k) in enumerate(zip(x, names))]
    else:
        return []  # the model's own check reports the structure
    by_name = dict(zip(names, tensors))
    return [(where, dtype(a), f"input {k!r}", getattr(by_name[k], "dtype", None)) for where, a, k in pairs]


def apply_class_weight(y: Any, sample_weight: Any, class_weight: dict) -> np.ndarray:
    if not isinstance(y, np.ndarray):
        raise errors.DataError("class_weight needs a single array of targets y")
    labels = y.reshape(len(y), -1)
    labels = labels.argmax(axis=1) if labels.shape[1] > 1 else labels[:, 0]
    labels = np.round(labels).astype(np.int64)
    missing = sorted(set(np.unique(labels).tolist()) - set(int(k) for k in class_weight))
    if missing:
        raise errors.DataError(f"class_weight has no weight for classes {missing}")
    lookup = np.array([class_weight.get(i, 0.0) for i in range(int(labels.max()) + 1)], np.float32)
    w = lookup[labels]
    return w if sample_weight is None else w * np.asarray(sample_weight, np.float32)


def first_rows(data: ArrayData, n: int = 1) -> Any:
    return jax.tree.map(lambda a: a[:n], data.x)


def build_if_needed(model: Any, x: Any, seed: Any) -> None:
    """Builds from the data's shapes (all rows: shape errors then show the real shape)."""
    if model._params is None:
        model._build_from(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x), seed)


def output_shapes(model: Any, x: Any) -> list:
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x)
    out = jax.eval_shape(lambda p, s, x: model.apply(p, s, x)[0], model.params, model.state, spec)
    return [tuple(o.shape) for o in jax.tree.leaves(out)] if not isinstance(out, jax.ShapeDtypeStruct) else [tuple(out.shape)]


def objectives_for(model: Any, compiled: CompileConfig, sample_x: Any) -> Objectives:
    cache = model._step_cache
    key = ("objectives", id(compiled))
    if key not in cache:
        shapes = output_shapes(model, sample_x)
        cache[key] = Objectives.create(model, compiled.loss, compiled.metrics, compiled.loss_weights, shapes)
    return cache[key]


def check_targets(objectives: Objectives, model: Any, batch: ArrayData) -> None:
    """A6-A9: targets must fit the outputs' shapes; labels must be valid for the loss."""
    if batch.y is None:
        raise errors.DataError("fit/evaluate need targets y (or batches (x, y))")
    out_shapes = output_shapes(model, batch.x)  # abstract: shows the data's real shapes
    y_list = objectives.flatten_targets(batch.y)
    objectives.check_shapes([np.shape(t) for t in y_list], out_shapes)
    objectives.validate_targets([np.asarray(t) for t in y_list], out_shapes)


def step_model(model: Any, compiled: CompileConfig | None) -> Any:
    """What the compiled steps call ``apply`` on: the model, or with ``scan_layers`` the
    model with its runs of identical layers scanned (same params tree, same results)."""
    if compiled is None or not getattr(compiled, "scan_layers", False):
        return model
    from kerax.core.scan import scan_layers

    return scan_layers(model)


def train_step_for(model: Any, compiled: CompileConfig, objectives: Objectives, on_nan: str) -> TrainStep:
    key = ("train", id(objectives), on_nan)
    if key not in model._step_cache:
        model._step_cache[key] = TrainStep(step_model(model, compiled), objectives, compiled.steps_per_execution, on_nan,
                                           distribute=compiled.distribute, dp=compiled.dp)
    return model._step_cache[key]


def eval_step_for(model: Any, objectives: Objectives) -> EvalStep:
    key = ("eval", id(objectives))
    if key not in model._step_cache:
        compiled = getattr(model, "_compiled", None)
        model._step_cache[key] = EvalStep(step_model(model, compiled), objectives,
                                          distribute=getattr(compiled, "distribute", None))
    return model._step_cache[key]


def nbytes(data: ArrayData) -> int:
    return sum(a.nbytes for t in (data.x, data.y, data.sample_weight) if t is not None for a in jax.tree.leaves(t))


def to_device(data: ArrayData, what: str = "the training data") -> tuple:
    """``(x, y, sample_weight)`` on the device, whole (``OutOfMemoryError`` naming ``what``
    and its size when they do not fit)."""
    from kerax.training.memory import data_hints

    put = lambda t: None if t is None else jax.device_put(t)  # noqa: E731
    sw = None if data.sample_weight is None else np.asarray(data.sample_weight, np.float32)
    with data_hints(what, nbytes(data)):
        return put(data.x), put(data.y), put(sw)


def host_logs(logs: dict) -> dict:
    """Device logs -> Python floats (lists for vector metrics), in one transfer."""
    values = jax.device_get(list(logs.values()))
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist() for k, v in zip(logs, values)}
