"""The experiment config: its sections, their keys and types, defaults, and ``--set`` overrides.

A config is a mapping with the sections ``model`` (the ``get_config`` schema of a model, so a
saved model's config is a valid model section), ``data``, ``compile``, ``fit``,
``distribute``, and the keys ``name``, ``seed`` and ``output_dir``. :func:`validate` checks
the keys and types of everything but ``model`` (checked when the model is built) and fills in
defaults; every error names the key by its dotted path (``fit.batch_size``), what was
expected and what was found, and suggests the nearest valid key for a misspelt one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from typing import Any, Callable, Mapping

from kerax import errors
from kerax.experiments.yaml_io import load_yaml_text


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: what it accepts (a check returning an error text or None) and its default."""

    check: Callable[[Any], str | None]
    default: Any = None
    required: bool = False


def typed(*types: type, none: bool = False, more: Callable[[Any], str | None] | None = None):
    names = " or ".join(t.__name__ if t is not dict else "mapping" for t in types) + (" or null" if none else "")

    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        # bool is an int subclass; a config's `true` is never a number
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            return f"expected {names}"
        return more(v) if more else None
    return check


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"expected a value >= {low}"


def fraction(v: float) -> str | None:
    return None if 0 <= v < 1 else "expected a fraction in [0, 1)"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"expected one of {', '.join(map(repr, choices))}"


INT_POS = typed(int, more=at_least(1))
NUMBER = (int, float)

SECTIONS: dict[str, dict[str, Key] | Key] = {
    "name": Key(typed(str, none=True)),
    "seed": Key(typed(int), default=0),
    "output_dir": Key(typed(str, none=True)),
    "model": Key(typed(dict), required=True),
    "data": Key(typed(dict), required=True),  # checked by kerax.experiments.datasources
    "compile": {
        "optimizer": Key(typed(str, dict), default="adam"),
        "loss": Key(typed(str, dict), required=True),
        "metrics": Key(typed(list, dict), default=[]),
        "loss_weights": Key(typed(list, dict, none=True)),
        "steps_per_execution": Key(INT_POS, default=1),
        "on_nan": Key(one_of("warn", "stop", "skip"), default="stop"),
        "dp": Key(typed(dict, none=True)),  # kx.privacy.DPSGD's arguments; checked by the runner
    },
    "fit": {
        "epochs": Key(INT_POS, required=True),
        "batch_size": Key(INT_POS, default=32),
        "validation_split": Key(typed(*NUMBER, more=fraction), default=0.1),
        "shuffle": Key(typed(bool), default=True),
        "callbacks": Key(typed(list), default=[]),
    },
    "distribute": {
        "devices": Key(typed(int, none=True, more=at_least(1))),
        "mode": Key(one_of("shard", "pmap"), default="shard"),
    },
}
OPTIONAL_SECTIONS = ("distribute",)


def unknown_key(path: str, key: Any, valid: list[str]) -> errors.ConfigError:
    """The error for a key not among ``valid``, with the nearest one suggested."""
    hint = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    did = f"did you mean {hint[0]!r}? " if hint else ""
    where = f"{path}.{key}" if path else str(key)
    return errors.ConfigError(f"{where}: unknown key; {did}valid keys: {', '.join(valid)}")


def _found(v: Any) -> str:
    text = repr(v)
    return f"{text[:60]}..." if len(text) > 63 else text


def validate(config: Any) -> dict:
    """Checks a config's keys and types and returns a copy with the defaults filled in.

    Raises:
      ConfigError: not a mapping, an unknown or missing key, or a wrong type or value; the
        message starts with the key's dotted path.
    """
    if not isinstance(config, Mapping):
        raise errors.ConfigError(f"config: expected a mapping of sections; found {_found(config)}")
    out: dict = {}
    for key in config:
        if key not in SECTIONS:
            raise unknown_key("", key, list(SECTIONS))
    for key, spec in SECTIONS.items():
        value = config.get(key)
        if isinstance(spec, Key):
            out[key] = _check_value(key, value, spec)
        elif value is None and key in OPTIONAL_SECTIONS:
            out[key] = None
        else:
            out[key] = check_mapping(key, {} if value is None else value, spec)
    return out


def check_mapping(path: str, value: Any, spec: Mapping[str, Key]) -> dict:
    """Checks one mapping against its keys; returns it with defaults filled in."""
    if not isinstance(value, Mapping):
        raise errors.ConfigError(f"{path}: expected a mapping; found {_found(value)}")
    for sub in value:
        if sub not in spec:
            raise unknown_key(path, sub, list(spec))
    return {sub: _check_value(f"{path}.{sub}", value.get(sub), s) for sub, s in spec.items()}


def _check_value(path: str, value: Any, spec: Key) -> Any:
    if value is None:
        if spec.required:
            raise errors.ConfigError(f"{path}: missing; this key is required")
        return copy.deepcopy(spec.default)
    problem = spec.check(value)
    if problem:
        raise errors.ConfigError(f"{path}: {problem}; found {_found(value)}")
    return value


def apply_overrides(config: Any, overrides: list[str]) -> dict:
    """Applies ``key.path=value`` overrides (values parsed as YAML scalars or flow
    collections: ``3``, ``0.01``, ``true``, ``[a, b]``) to a copy of ``config``. A path may
    index lists: ``model.config.layers[3].config.rate=0.5``.

    A path into a string-valued entry turns it into a mapping with a ``name``
    (``compile.optimizer.learning_rate=0.01`` on ``optimizer: adam`` gives
    ``{name: adam, learning_rate: 0.01}``).

    Raises:
      ConfigError: an override without ``=``, a malformed path, an index out of range, or
        a value that is not YAML.
    """
    out = copy.deepcopy(dict(config)) if isinstance(config, Mapping) else {}
    for item in overrides:
        key, eq, text = item.partition("=")
        steps = _path_steps(key.strip()) if eq else None
        if not steps:
            raise errors.ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. fit.epochs=3")
        value = load_yaml_text(text, f"--set {key}")
        node: Any = out
        for i, step in enumerate(steps[:-1]):
            node = _child(node, step, steps[i + 1], key)
        last = steps[-1]
        if isinstance(last, int):
            _check_index(node, last, key)
        node[last] = value
    return out


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path_steps(key: str) -> list | None:
    """``a.b[2].c`` -> ``["a", "b", 2, "c"]``; None if malformed."""
    steps, pos = [], 0
    while pos < len(key):
        if key[pos] == "." and steps and pos + 1 < len(key) and key[pos + 1] != "[":
            pos += 1
        m = _STEP.match(key, pos)
        if not m:
            return None
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return steps or None


def _check_index(node: Any, index: int, key: str) -> None:
    if not isinstance(node, list) or index >= len(node):
        size = f"a list of {len(node)}" if isinstance(node, list) else _found(node)
        raise errors.ConfigError(f"--set {key}: index [{index}] into {size}")


def _child(node: Any, step: Any, next_step: Any, key: str) -> Any:
    if isinstance(step, int):
        _check_index(node, step, key)
        child = node[step]
    else:
        if not isinstance(node, dict):
            raise errors.ConfigError(f"--set {key}: {step!r} inside {_found(node)}, not a mapping")
        child = node.get(step)
    if isinstance(child, str) and not isinstance(next_step, int):
        child = {"name": child}
    elif child is None:
        child = [] if isinstance(next_step, int) else {}
    elif not isinstance(child, (dict, list)):
        raise errors.ConfigError(f"--set {key}: {step!r} is {_found(child)}, not a mapping or list")
    node[step] = child
    return child


def named(path: str, value: Any) -> tuple[str, dict]:
    """Splits a ``name`` or ``{name: ..., **options}`` entry (optimizer, loss, callback)."""
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise errors.ConfigError(f"{path}: expected a name or a mapping with a 'name' key; "
                                 f"found {_found(value)}")
    options = {k: v for k, v in value.items() if k != "name"}
    return value["name"], options
