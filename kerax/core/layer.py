"""The layer protocol: a frozen dataclass of hyperparameters with two pure functions.

A layer is an immutable description. Its dataclass fields are its config; its weights live
outside it, in the ``params`` and ``state`` pytrees that ``init`` returns::

    params, state = layer.init(rng, x)            # x: array, ShapeDtypeStruct, or a pytree
    y, state = layer.apply(params, state, x, rng=None, training=False)

Guarantees every layer keeps:

* ``init`` reads only shapes and dtypes of ``x``; it works on ``jax.ShapeDtypeStruct`` and
  under ``jax.jit``. ``apply`` is pure: no global state, no mutation of the layer.
* ``params`` holds trainable arrays, ``state`` non-trainable ones, both plain nested dicts.
  A layer without weights returns ``{}`` for either.
* ``training`` is a Python bool (static under ``jit``); a layer that needs randomness in
  training raises :class:`~kerax.errors.MissingRNGError` when ``rng`` is missing.
* Identity, not equality, decides weight sharing: layers compare by ``is``.

Subclassing: every subclass becomes a frozen dataclass by itself (no decorator, no
metaclass), so annotated class attributes are its config::

    class Scale(kx.Layer):
        factor: float = 2.0

        def init(self, rng, x):
            return {}, {}

        def apply(self, params, state, x, *, rng=None, training=False):
            return x * self.factor, state
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
from typing import Any, ClassVar, Iterator

import jax

from kerax import errors, mixed_precision

Params = dict
State = dict


AUX_LOSS = "aux_loss"


def aux_losses(state: Any) -> Any:
    """Sum of the ``aux_loss`` entries layers put in their state (activity regularization):
    auxiliary training losses travel in ``state``, so ``apply`` stays pure."""
    total = 0.0
    if isinstance(state, dict):
        for k, v in state.items():
            total = total + (v if k == AUX_LOSS else aux_losses(v))
    return total


def config_signature(layer: Any) -> Any:
    """What two layers with equal behaviour share: class and config but the name, as JSON
    (every value written out in full); None for a config that JSON cannot hold, or a
    class whose config does not capture its behaviour (``config_is_behaviour = False``:
    functions named by ``__name__`` only); such a layer equals no other."""
    if not getattr(type(layer), "config_is_behaviour", True):
        return None
    try:
        config = dict(layer.get_config())
        config.pop("name", None)
        return type(layer), json.dumps(config, sort_keys=True)
    except (errors.KeraxError, TypeError, ValueError):
        return None


def snake_case(name: str) -> str:
    """``MaxPooling2D`` -> ``max_pooling2d``, ``SimpleRNN`` -> ``simple_rnn`` (as Keras)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclasses.dataclass(frozen=True, eq=False)
class Layer:
    """Base class of every kerax layer: a frozen dataclass with ``init`` and ``apply``.

    Keyword-only fields shared by all layers:
      name: the layer's name inside its container; ``None`` lets the container choose
        one from the class name (``dense``, ``dense_1``, ...).
      input_shape: Keras's convenience for the first layer of a ``Sequential``: the
        shape of one example, without the batch axis.
      dtype: dtype of the layer's weights (``None``: float32). Inputs are cast to it.
      dtype_policy: a mixed-precision policy name (``"mixed_bfloat16"``, ...; see
        :mod:`kerax.mixed_precision`); ``None`` takes the container's. Left out of
        ``get_config`` when ``None``.
    """

    name: str | None = dataclasses.field(default=None, kw_only=True)
    input_shape: tuple | None = dataclasses.field(default=None, kw_only=True)
    dtype: str | None = dataclasses.field(default=None, kw_only=True)
    dtype_policy: str | None = dataclasses.field(default=None, kw_only=True)

    # Subclasses that manage their own mutable attributes (the Keras facade) opt out.
    _facade: ClassVar[bool] = False

    # Masks (Keras's padding masks, passed explicitly): a container gives ``mask=`` to the
    # ``apply`` of layers with ``uses_mask``, and asks ``compute_mask`` for each output's
    # mask; ``propagates_mask`` layers hand their input's mask on unchanged.
    uses_mask: ClassVar[bool] = False
    propagates_mask: ClassVar[bool] = False

    # Whether equal configs mean equal behaviour (False where the config names Python
    # functions only by name): grouped weight creation and scan_layers rely on it.
    config_is_behaviour: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls._facade:
            dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)

    def __post_init__(self) -> None:
        check_name(type(self).__name__, self.name)
        if self.input_shape is not None:
            self._set("input_shape", _as_shape(self.input_shape, type(self).__name__))
        for f in dataclasses.fields(self):
            if f.name.endswith("_regularizer") and getattr(self, f.name) is not None:
                from kerax import regularizers

                regularizers.get(getattr(self, f.name))
        if isinstance(self.dtype, (dict, mixed_precision.Policy)):  # a Keras DTypePolicy
            self._set("dtype", mixed_precision.name_of(self.dtype))
        if isinstance(self.dtype, str) and self.dtype in mixed_precision.MIXED_NAMES:
            # Keras accepts a policy name as dtype= ("mixed_float16"): it is the policy.
            if self.dtype_policy not in (None, self.dtype):
                raise errors.ConfigError(
                    f"{type(self).__name__}: dtype={self.dtype!r} and dtype_policy="
                    f"{self.dtype_policy!r} disagree; pass only dtype_policy="
                )
            self._set("dtype_policy", self.dtype)
            self._set("dtype", None)
        if self.dtype_policy is not None:
            try:
                self._set("dtype_policy", mixed_precision.name_of(self.dtype_policy))
            except errors.KeraxError as e:
                raise type(e)(f"{type(self).__name__}: {e.message}") from None
            if self.dtype is not None:
                raise errors.ConfigError(
                    f"{type(self).__name__}: pass dtype= or dtype_policy=, not both; received "
                    f"dtype={self.dtype!r}, dtype_policy={self.dtype_policy!r}"
                )
        if self.dtype is not None:
            import jax.numpy as jnp

            try:
                self._set("dtype", jnp.dtype(self.dtype).name)
            except TypeError:
                raise errors.ConfigError(
                    f"{type(self).__name__}: unknown dtype {self.dtype!r}"
                ) from None

    # -- the protocol ------------------------------------------------------------------

    def init(self, rng: jax.Array, x: Any) -> tuple[Params, State]:
        """Creates ``(params, state)`` for inputs shaped like ``x`` (shapes only)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement init")

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        rng: jax.Array | None = None,
        training: bool = False,
    ) -> tuple[Any, State]:
        """Runs the layer: returns ``(outputs, new_state)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement apply")

    def compute_mask(self, x: Any, mask: Any) -> Any:
        """The mask of this layer's output, given its input and the input's mask.

        ``mask`` is a boolean array ``(batch, time)`` (True = real step) or None; for
        several inputs, a list of them. The default hands it on when ``propagates_mask``.
        """
        return mask if self.propagates_mask else None

    def apply_masked(self, params: Params, state: State, x: Any, mask: Any, *,
                     rng: jax.Array | None = None, training: bool = False,
                     dtype_policy: str | None = None) -> tuple[Any, State, Any]:
        """``apply`` plus mask propagation and dtype policy: ``(y, new_state, output_mask)``.

        Containers call this on their children, with their resolved ``dtype_policy``
        (given only when there is one); containers override it to carry masks and the
        policy through their own children. This is the one place a policy casts: params
        and inputs go to the compute dtype (see :mod:`kerax.mixed_precision`).
        """
        layer, params, x = mixed_precision.autocast(self, dtype_policy, params, x)
        extra = {"mask": mask} if layer.uses_mask else {}
        y, new_state = layer.apply(params, state, x, rng=rng, training=training, **extra)
        return y, new_state, layer.compute_mask(x, mask)

    # Which weight each ``*_regularizer`` field applies to, where the name alone does not say
    # (``recurrent_regularizer`` -> ``recurrent_kernel``); otherwise ``kernel_regularizer``
    # -> ``kernel``.
    regularized_weights: ClassVar[Any] = types.MappingProxyType({})

    def penalty(self, params: Params) -> Any:
        """The weight-regularization term this layer adds to the training loss (0 if none)."""
        from kerax import regularizers

        total = 0.0
        for f in dataclasses.fields(self):
            if f.name.endswith("_regularizer") and getattr(self, f.name) is not None:
                weight = self.regularized_weights.get(f.name, f.name[: -len("_regularizer")])
                if weight in params:
                    total = total + regularizers.get(getattr(self, f.name))(params[weight])
        return total

    def __iter__(self) -> Iterator[Any]:
        """``init, apply = layer``: the stax-style function pair."""
        return iter((self.init, self.apply))

    def __call__(self, x: Any) -> Any:
        """Calls the layer on symbolic tensors (from ``kx.Input``) to build a graph."""
        from kerax.core import symbolic

        return symbolic.call_layer(self, x)

    # -- names and config --------------------------------------------------------------

    @classmethod
    def default_name(cls) -> str:
        """The base of the name a container gives an unnamed layer of this class."""
        return snake_case(cls.__name__)

    @property
    def param_dtype(self) -> str:
        """The dtype ``init`` creates weights in: ``dtype``, the policy's variable dtype,
        or float32."""
        if self.dtype is None and self.dtype_policy is not None:
            return mixed_precision.Policy(self.dtype_policy).variable_dtype
        return self.dtype or "float32"

    @property
    def compute_dtype(self) -> str:
        """The dtype ``apply`` computes in (inputs are cast to it): the policy's compute
        dtype, else :attr:`param_dtype`."""
        if self.dtype is None and self.dtype_policy is not None:
            return mixed_precision.Policy(self.dtype_policy).compute_dtype
        return self.param_dtype

    def get_config(self) -> dict:
        """The layer's hyperparameters as a JSON-able dict (its dataclass fields)."""
        from kerax.core import config

        # dtype_policy is left out when None, so configs written before it existed (and
        # the golden files) stay the same.
        return {
            f.name: config.to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.init and not (f.name == "dtype_policy" and self.dtype_policy is None)
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Layer":
        """Rebuilds a layer from :meth:`get_config`'s output."""
        from kerax.core import config as cfg

        if not isinstance(config, dict):
            raise errors.ConfigError(
                f"{cls.__name__}.from_config expected a dict; received {type(config).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(config) - names)
        if unknown:
            raise errors.ConfigError(
                f"{cls.__name__}.from_config: unknown config keys {unknown};"
                f"{errors.suggest(unknown[0], names)} valid keys: {sorted(names)}"
            )
        kwargs = {k: cfg.field_from_json(k, v, custom_objects) for k, v in config.items()}
        return cls(**kwargs)

    # -- helpers for subclasses ---------------------------------------------------------

    def _set(self, field: str, value: Any) -> None:
        """Normalises a field in ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, field, value)

    def _error(self, cls: type[errors.KeraxError], message: str) -> errors.KeraxError:
        """An error that names this layer (containers add its path as it propagates)."""
        return cls(message, layer_class=type(self).__name__, layer_name=self.name)

    def __repr__(self) -> str:
        shown = [f for f in dataclasses.fields(self) if f.init and f.repr]
        shown = [f for f in shown if not f.kw_only] + [f for f in shown if f.kw_only]
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in shown
            if f.default is dataclasses.MISSING or getattr(self, f.name) != f.default
        )
        return f"{type(self).__name__}({fields})"


def check_name(who: str, name: Any) -> None:
    """Layer names are non-empty strings without '/' (the weight-path separator), not ending
    in ``_*`` (the key of a ``Repeat``'s stacked weights, :mod:`kerax.core.scan`)."""
    if name is not None and (not isinstance(name, str) or not name or "/" in name):
        raise errors.ConfigError(
            f"{who}: name must be a non-empty string without '/' (it separates nested "
            f"layers in weight paths); received name={name!r}"
        )
    if isinstance(name, str) and name.endswith("_*"):
        raise errors.ConfigError(
            f"{who}: name must not end in '_*' (it marks a Repeat's stacked weights in weight "
            f"trees); received name={name!r}"
        )


def _as_shape(shape: Any, who: str) -> tuple:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        dims = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise errors.ConfigError(
            f"{who}: input_shape must be a tuple of ints (None for unknown); "
            f"received {shape!r}"
        ) from None
    if any(d is not None and d < 0 for d in dims):
        raise errors.ConfigError(f"{who}: input_shape has a negative dimension: {dims}")
    return dims
