"""Resolving class names from configs to classes, without importing anything.

A config names classes as strings (``{"class_name": "Dense", "config": {...}}``). They
resolve only to:

* subclasses of :class:`kerax.Layer` defined inside the ``kerax`` package,
* classes the user registered with :func:`register_layer`,
* the names in ``custom_objects`` passed by the caller,
* the other kerax tables (initializers, ...), through :func:`resolve`.

No name is ever imported (no ``importlib``, no dotted paths), so a config cannot reach
``os.system`` or any other callable. Registration marks the class itself; there is no
module-level table to mutate.
"""

from __future__ import annotations

from typing import Any, Mapping

from kerax import errors

_MARK = "__kerax_registered_name__"


def register_layer(cls: type | None = None, *, name: str | None = None) -> Any:
    """Makes a user's layer class loadable from configs by name.

    Use as a decorator, ``@kx.register_layer`` or ``@kx.register_layer(name="MyDense")``.
    """
    from kerax.core.layer import Layer

    def mark(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, Layer)):
            raise TypeError(f"register_layer expects a kerax.Layer subclass; received {c!r}")
        key = name or c.__name__
        clash = layer_classes().get(key)
        if clash is not None and clash is not c:
            raise errors.LayerNameError(
                f"register_layer: the name {key!r} is already taken by "
                f"{clash.__module__}.{clash.__qualname__}; pass name=... to register "
                f"{c.__module__}.{c.__qualname__} under another name"
            )
        setattr(c, _MARK, key)
        return c

    return mark if cls is None else mark(cls)


def _subclasses(cls: type) -> list[type]:
    out, todo = [], list(cls.__subclasses__())
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def layer_classes() -> dict[str, type]:
    """All loadable layer classes by name: kerax's own and the registered ones."""
    from kerax.core.layer import Layer

    table: dict[str, type] = {}
    for c in _subclasses(Layer):
        registered = c.__dict__.get(_MARK)
        if registered is not None:
            table[registered] = c
        elif c.__module__.split(".")[0] == "kerax" and not c.__name__.startswith("_"):
            table.setdefault(c.__name__, c)
    return table


def registered_name(cls: type) -> str:
    """The name a config uses for ``cls``."""
    return cls.__dict__.get(_MARK) or cls.__name__


def resolve_layer(name: Any, custom_objects: Mapping[str, Any] | None = None) -> type:
    """The layer class called ``name``; UnsafeContentError for anything else."""
    if custom_objects and isinstance(name, str) and name in custom_objects:
        return custom_objects[name]
    table = layer_classes()
    if not isinstance(name, str) or name not in table:
        raise errors.UnsafeContentError(
            f"unknown layer class {name!r}: configs may only name kerax layers, classes "
            "registered with kx.register_layer, or entries of custom_objects"
            + (errors.suggest(name, table) if isinstance(name, str) else "")
        )
    return table[name]
