"""Core layers: Dense, Activation, Identity, Embedding, and wrappers for plain functions."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from kerax import activations, errors, initializers, mixed_precision
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers._util import cast_input, min_rank, positive_int


class Dense(Layer):
    """Fully connected layer: ``activation(x @ kernel + bias)``.

    Weights: ``kernel (in, units)``, ``bias (units,)`` (Keras layout).

    Input shape: ``(batch, ..., in)``. Output shape: ``(batch, ..., units)``.

    Example: ``layers.Dense(10, activation="relu")``.
    """

    propagates_mask = True

    units: int
    activation: Any = None
    use_bias: bool = True
    kernel_initializer: Any = "glorot_uniform"
    bias_initializer: Any = "zeros"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self, "units", self.units)
        activations.get(self.activation)
        initializers.get(self.kernel_initializer)
        initializers.get(self.bias_initializer)

    def init(self, rng, x):
        min_rank(self, tuple(x.shape), 2)
        dtype = jnp.dtype(self.param_dtype)
        params = {
            "kernel": initializers.get(self.kernel_initializer)(
                derive(rng, "kernel"), (int(x.shape[-1]), self.units), dtype
            )
        }
        if self.use_bias:
            params["bias"] = initializers.get(self.bias_initializer)(
                derive(rng, "bias"), (self.units,), dtype
            )
        return params, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        kernel = params["kernel"]
        shape = tuple(x.shape)
        min_rank(self, shape, 2)
        if shape[-1] != kernel.shape[0]:
            expected = (None,) * (len(shape) - 1) + (kernel.shape[0],)
            raise self._error(
                errors.ShapeError,
                f"expected input shape {errors.fmt_shape(expected)} (last axis "
                f"{kernel.shape[0]}); received input of shape {errors.fmt_shape(shape)}",
            )
        y = cast_input(x, kernel.dtype) @ kernel
        if self.use_bias:
            y = y + params["bias"]
        return mixed_precision.activate(self, y), state


class Activation(Layer):
    """Applies an activation function (a name from ``kx.activations`` or a callable).

    Input shape: any. Output shape: the same.
    """

    propagates_mask = True

    activation: Any = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        activations.get(self.activation)

    def init(self, rng, x):
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        return mixed_precision.activate(self, x), state


class Identity(Layer):
    """Returns its input unchanged (a placeholder layer)."""

    propagates_mask = True

    def init(self, rng, x):
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        return x, state


class Embedding(Layer):
    """Looks up integer ids in a table: ``embeddings[x]``.

    Weights: ``embeddings (input_dim, output_dim)``.

    Input shape: ``(batch, ...)`` integers in ``[0, input_dim)``. Output shape:
    ``(batch, ..., output_dim)``. Ids outside the range give NaN rows (never another row).
    ``mask_zero=True``: id 0 is padding; the output's mask (``x != 0``) reaches the layers
    after it that use masks (recurrent layers, attention, pooling).
    """

    def compute_mask(self, x, mask):
        return (x != 0) if self.mask_zero else None

    input_dim: int
    output_dim: int
    embeddings_initializer: Any = "uniform"
    embeddings_regularizer: Any = None
    mask_zero: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self, "input_dim", self.input_dim)
        positive_int(self, "output_dim", self.output_dim)
        initializers.get(self.embeddings_initializer)

    def init(self, rng, x):
        init = initializers.get(self.embeddings_initializer)
        table = init(derive(rng, "embeddings"), (self.input_dim, self.output_dim),
                     jnp.dtype(self.param_dtype))
        return {"embeddings": table}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            if not jnp.issubdtype(x.dtype, jnp.number):
                raise self._error(errors.DTypeError, f"expected integer ids; received dtype {x.dtype}")
            x = x.astype(jnp.int32)
        table = params["embeddings"]
        valid = (x >= 0) & (x < table.shape[0])  # no wrap-around for negative ids
        rows = jnp.take(table, jnp.where(valid, x, 0), axis=0)
        return jnp.where(valid[..., None], rows, jnp.nan), state


class Lambda(Layer):
    """Wraps a parameter-free function ``fn(x) -> y`` as a layer.

    The function is Python code, so a config names it only by its ``__name__``: loading
    one needs the function passed in ``custom_objects``.

    Example: ``layers.Lambda(lambda x: x / 255.0)``.
    """

    config_is_behaviour: ClassVar[bool] = False  # functions appear by name only

    function: Callable[[Any], Any] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.function):
            raise self._error(errors.ConfigError, f"function must be callable; received {self.function!r}")

    def init(self, rng, x):
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        return self.function(x), state

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "input_shape": _list(self.input_shape),
            "dtype": self.dtype,
            **({} if self.dtype_policy is None else {"dtype_policy": self.dtype_policy}),
            "function": getattr(self.function, "__name__", None),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Lambda":
        name = config.get("function")
        fn = (custom_objects or {}).get(name) if isinstance(name, str) else None
        if not callable(fn):
            raise errors.UnsafeContentError(
                f"Lambda layer function {name!r} is Python code and is never loaded from a "
                "config; pass the function itself: custom_objects={" f"{name!r}: fn" "}"
            )
        rest = {k: v for k, v in config.items() if k != "function"}
        return cls(function=fn, **rest)


def _list(x: Any) -> Any:
    return None if x is None else list(x)


class FunctionLayer(Layer):
    """Wraps a stax-style pair as a layer.

    ``init_fn(rng, input_shape) -> (output_shape, params)`` and
    ``apply_fn(params, x, **kwargs) -> y`` (``rng=`` is passed when given), exactly as
    ``jax.example_libraries.stax`` defines them, so ``FunctionLayer(*stax.Dense(10))``
    works. Not serializable by name: loading needs ``custom_objects``.
    """

    config_is_behaviour: ClassVar[bool] = False  # functions appear by name only

    init_fn: Callable = None
    apply_fn: Callable = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (callable(self.init_fn) and callable(self.apply_fn)):
            raise self._error(
                errors.ConfigError,
                "expects two callables, init_fn(rng, input_shape) and apply_fn(params, x); "
                f"received {self.init_fn!r}, {self.apply_fn!r}",
            )

    def init(self, rng, x):
        _, params = self.init_fn(rng, tuple(x.shape))
        return params, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        kwargs = {} if rng is None else {"rng": rng}
        if params == {}:
            params = ()
        return self.apply_fn(params, x, **kwargs), state

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "input_shape": _list(self.input_shape),
            "dtype": self.dtype,
            **({} if self.dtype_policy is None else {"dtype_policy": self.dtype_policy}),
            "init_fn": getattr(self.init_fn, "__name__", None),
            "apply_fn": getattr(self.apply_fn, "__name__", None),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "FunctionLayer":
        objs = custom_objects or {}
        fns = {k: objs.get(config.get(k)) for k in ("init_fn", "apply_fn")}
        if not all(callable(f) for f in fns.values()):
            raise errors.UnsafeContentError(
                f"FunctionLayer functions {config.get('init_fn')!r}, {config.get('apply_fn')!r} "
                "are Python code and are never loaded from a config; pass them in custom_objects"
            )
        rest = {k: v for k, v in config.items() if k not in fns}
        return cls(**fns, **rest)
