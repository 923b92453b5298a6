"""The exceptions kerax raises, and the helpers that format their messages.

Every class subclasses the built-in exception users already catch (``ValueError``,
``TypeError``, ``OSError``), so ``except ValueError`` keeps working. Messages name the
layer or key, what was expected and what was received.
"""

from __future__ import annotations

from typing import Any, Iterable


class KeraxError(Exception):
    """Base class of every kerax error.

    Errors raised by a layer carry ``layer_class``; containers add the child's name to
    ``path`` as the error passes through them, so the message names the full weight path
    (``Layer 'sequential/dense_1' (Dense): ...``).
    """

    def __init__(self, message: str = "", *, layer_class: str | None = None,
                 layer_name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.layer_class = layer_class
        self.layer_name = layer_name
        self.path: list[str] = []

    def add_context(self, name: str, layer_class: str) -> None:
        """Prepends a container's name for its child to the error's layer path."""
        if self.layer_class is None:
            self.layer_class = layer_class
        self.path.insert(0, name)

    def __str__(self) -> str:
        if self.path:
            return f"Layer {'/'.join(self.path)!r} ({self.layer_class}): {self.message}"
        if self.layer_class and self.layer_name:
            return f"Layer {self.layer_name!r} ({self.layer_class}): {self.message}"
        if self.layer_class:
            return f"{self.layer_class}: {self.message}"
        return self.message

    def __reduce__(self):
        return (type(self), (str(self),))


class ShapeError(KeraxError, ValueError):
    """An input or weight has the wrong shape or rank for a layer."""


class DTypeError(KeraxError, TypeError):
    """An input has a dtype a layer cannot take (strings, objects, ...)."""


class InputStructureError(KeraxError, ValueError):
    """Inputs given as the wrong structure: too few, too many, unknown or missing names."""


class LayerNameError(KeraxError, ValueError):
    """Two layers of one container share a name, or a name does not exist."""


class GraphError(KeraxError, ValueError):
    """A functional graph is malformed: a cycle, a dangling tensor, an unused input."""


class MissingRNGError(KeraxError, ValueError):
    """A layer needs randomness (``training=True``) but ``apply`` got no ``rng``."""


class UnknownNameError(KeraxError, ValueError):
    """A string identifier (activation, initializer, loss, ...) is not known."""


class ConfigError(KeraxError, ValueError):
    """A layer hyperparameter or a config entry is invalid."""


class NotBuiltError(KeraxError, ValueError):
    """A model's weights were asked for before it was built."""


class NotCompiledError(KeraxError, RuntimeError):
    """``fit`` / ``evaluate`` / ``train_on_batch`` before ``compile``."""


class NonFiniteLossError(KeraxError, FloatingPointError):
    """Training produced non-finite losses more often than allowed (``on_nan="skip"``)."""


class OutOfMemoryError(KeraxError, MemoryError):
    """XLA could not allocate what a step or the weights need (``RESOURCE_EXHAUSTED``); the
    message gives the model's size, the batch size and what would need less memory."""


class DataError(KeraxError, ValueError):
    """Training or evaluation data is unusable: empty, mismatched lengths, non-finite."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A data set's files are not on this machine and cannot be downloaded."""


class LabelError(DataError):
    """Labels are out of range or of the wrong kind for the loss."""


class UnsafeContentError(KeraxError, ValueError):
    """A file or config names something kerax refuses to load (code, unknown classes)."""


class CorruptFileError(KeraxError, ValueError):
    """A file is truncated, malformed or inconsistent."""


class WeightsError(KeraxError, ValueError):
    """Weights given to a model do not match its structure, shapes or dtypes."""


class IncompatibleCheckpointError(WeightsError):
    """Saved weights or a checkpoint do not fit the model they are loaded into."""


def fmt_shape(shape: Iterable[Any] | None) -> str:
    """Formats a shape the Keras way: ``(None, 4)``, ``(3,)``."""
    if shape is None:
        return "None"
    dims = tuple(None if d is None else int(d) for d in shape)
    return str(dims)


def suggest(name: str, valid: Iterable[str]) -> str:
    """Returns ``" Did you mean 'x'?"`` for the closest valid name, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: Any, valid: Iterable[str]) -> UnknownNameError:
    """Builds the error for an unknown identifier, listing the valid ones."""
    valid = sorted(set(valid))
    return UnknownNameError(
        f"Unknown {kind} {name!r}.{suggest(str(name), valid)} Valid {kind} names: "
        + ", ".join(valid)
    )
