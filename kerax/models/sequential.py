"""``kx.Sequential``: a stack of layers, the Keras facade over :class:`~kerax.core.Chain`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core import specs
from kerax.core.layer import Layer
from kerax.core.sequential import Chain
from kerax.core.symbolic import InputLayer, SymbolicTensor
from kerax.models.model import Model


class Sequential(Model):
    """A linear stack of layers: ``kx.Sequential([layers.Dense(64), layers.Dense(10)])``.

    The input shape comes from a leading ``kx.Input(shape)``, from the first layer's
    ``input_shape=``, from :meth:`build`, or from the first batch ``fit`` sees.
    ``dtype_policy`` (``"mixed_bfloat16"``, ...) applies to the layers that set none
    (see :mod:`kerax.mixed_precision`).
    """

    def __init__(self, layers: list | None = None, name: str | None = None,
                 dtype_policy: str | None = None) -> None:
        self._init_facade(name, dtype_policy)
        self._layers: list[Layer] = []
        self._declared: tuple | None = None
        self._core = self._chain()
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: Layer | SymbolicTensor) -> None:
        """Appends a layer (or, first, a ``kx.Input`` declaring the input shape)."""
        if self._params is not None:
            raise errors.ConfigError(
                f"Sequential {self.name or 'sequential'!r}: cannot add a layer after the model "
                "is built (its weights exist); build a new Sequential instead"
            )
        if isinstance(layer, SymbolicTensor) and isinstance(layer.node.layer, InputLayer):
            if self._layers:
                raise errors.ConfigError("Sequential: a kx.Input can only come first")
            self._declared = tuple(layer.shape[1:])
            self._input_dtype = layer.dtype
        elif isinstance(layer, Layer):
            self._layers.append(layer)
        else:
            raise TypeError(
                f"Sequential.add expects a kerax layer; received {type(layer).__name__}"
            )
        self._core = self._chain()
        self.input_shape = self._core.declared_input_shape[1:] if self._core.declared_input_shape else None

    def pop(self) -> Layer:
        """Removes and returns the last layer (before the model is built)."""
        if self._params is not None:
            raise errors.ConfigError("Sequential: cannot pop a layer after the model is built")
        layer = self._layers.pop()
        self._core = self._chain()
        return layer

    def _chain(self) -> Chain:
        return Chain(tuple(self._layers), name=self.name, input_shape=self._declared,
                     dtype_policy=self.dtype_policy)

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    def layer_names(self) -> list[str]:
        return list(self.core.names)

    @property
    def input_names(self) -> list[str]:
        return ["input"]

    def _declared_specs(self, batch: int = 1) -> Any:
        shape = self.core.declared_input_shape
        if shape is None:
            raise errors.ShapeError("Sequential model has no declared input shape")
        dtype = getattr(self, "_input_dtype", jnp.float32)
        return jax.ShapeDtypeStruct(specs.with_batch(shape, batch), jnp.dtype(dtype))

    def get_config(self) -> dict:
        from kerax.core import config

        extra = {} if self.dtype_policy is None else {"dtype_policy": self.dtype_policy}
        return {
            "name": self.name,
            **extra,
            "input_shape": None if self._declared is None else list(self._declared),
            "layers": [config.to_json(layer) for layer in self._layers],
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Sequential":
        from kerax.core import config as cfg

        if not isinstance(config, dict) or not isinstance(config.get("layers", []), list):
            raise errors.ConfigError("Sequential config must be a dict with a list of layers")
        valid = ["dtype_policy", "input_shape", "layers", "name"]
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise errors.ConfigError(
                f"Sequential.from_config: unknown config keys {unknown};"
                f"{errors.suggest(unknown[0], valid)} valid keys: {valid}"
            )
        model = cls(name=config.get("name"), dtype_policy=config.get("dtype_policy"))
        if config.get("input_shape") is not None:
            model._declared = tuple(config["input_shape"])
        for entry in config.get("layers", []):
            model.add(cfg.deserialize(entry, custom_objects))
        if not model._layers:
            model._core = model._chain()
        return model
