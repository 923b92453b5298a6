"""Config values <-> JSON: the one schema for architectures, saved models and configs.

Objects serialize as ``{"class_name": name, "config": {...}}``, recursively; tuples as
lists; known activation functions as their names. Deserialization looks class names up in
kerax's own tables only: layer classes through :mod:`kerax.core.registry`, and fields named
``*_initializer`` / ``*_regularizer`` through their modules' tables (field names decide, as in Keras, so
the initializer ``Identity`` never meets the layer ``Identity``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kerax import errors


def is_object_config(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"class_name", "config"}


def to_json(value: Any) -> Any:
    """A JSON-able form of a config value."""
    from kerax import activations
    from kerax.core.layer import Layer
    from kerax.core.registry import registered_name

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Layer):
        return {"class_name": registered_name(type(value)), "config": value.get_config()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if hasattr(value, "get_config"):
        return {"class_name": type(value).__name__, "config": to_json(value.get_config())}
    if callable(value):
        return activations.serialize(value)
    raise errors.ConfigError(
        f"cannot serialize config value {value!r} of type {type(value).__name__}"
    )


def field_from_json(field: str, value: Any, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Rebuilds one config field; the field's name says which table resolves it."""
    from kerax import initializers, regularizers

    if field.endswith("_initializer") and isinstance(value, dict):
        return initializers.get(value)
    if field.endswith("_regularizer") and isinstance(value, dict):
        return regularizers.get(value)
    if field in ("dtype", "dtype_policy") and isinstance(value, dict):
        return value  # a Keras DTypePolicy config: the layer reads its name
    return from_json(value, custom_objects)


def from_json(value: Any, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Rebuilds config values; object configs resolve through kerax's registries only."""
    if isinstance(value, list):
        return [from_json(v, custom_objects) for v in value]
    if is_object_config(value):
        return deserialize(value, custom_objects)
    if isinstance(value, dict):
        return {k: from_json(v, custom_objects) for k, v in value.items()}
    return value


def deserialize(config: Any, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """``{"class_name": ..., "config": ...}`` -> a layer (or initializer) object."""
    from kerax.core import registry

    if not is_object_config(config):
        raise errors.ConfigError(
            "expected an object config {'class_name': ..., 'config': {...}}; "
            f"received {str(config)[:200]}"
        )
    name = config["class_name"]
    cls = registry.resolve_layer(name, custom_objects)
    if not isinstance(config["config"], dict):
        raise errors.ConfigError(
            f"config of {name!r} must be a dict; received {type(config['config']).__name__}"
        )
    return cls.from_config(config["config"], custom_objects=custom_objects)
