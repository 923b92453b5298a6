"""Reading YAML config files safely: no Python objects, bounded size and expansion.

``yaml.safe_load`` already refuses tags that build Python objects
(``!!python/object/apply:os.system``). Two more limits keep a hostile file from exhausting
memory or time: the file size, and the number of nodes the document expands to once
aliases are followed (a "billion laughs" alias bomb is a few hundred bytes that expand to
billions of nodes when walked).
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from kerax import errors

class _Loader(yaml.SafeLoader):
    """The safe loader, with YAML 1.2's floats: ``1e-3`` is a number, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

MAX_BYTES = 1 << 20  # a config is a few KB; 1 MiB is far beyond any real one
MAX_NODES = 100_000  # nodes after following aliases


def load_yaml_file(path: str | os.PathLike) -> Any:
    """Reads one YAML document from ``path`` with :func:`load_yaml_text`'s limits.

    Raises:
      FileNotFoundError: no such file.
      ConfigError: too large, not UTF-8, not YAML, or over the node limit.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise errors.ConfigError(f"{path}: config file is {size} bytes; the limit is {MAX_BYTES}")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    return load_yaml_text(data, path)


def load_yaml_text(data: bytes | str, where: str = "<config>") -> Any:
    """Parses YAML text with the safe loader, refusing documents over the size or node limits."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise errors.ConfigError(f"{where}: config is {len(data)} bytes; the limit is {MAX_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise errors.ConfigError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None
        _check_expansion(node, where)
        return _Loader(text).get_single_data()
    except yaml.YAMLError as e:
        raise errors.ConfigError(f"{where}: not valid YAML: {_one_line(e)}") from None


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Counts the nodes the document expands to, each shared (aliased) node once per use,
    without expanding it: sizes are memoised per node object; a cycle is refused."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    todo: list[tuple[yaml.Node, bool]] = [(root, False)]
    while todo:  # post-order without recursion (deep nesting must not hit the stack limit)
        node, children_done = todo.pop()
        key = id(node)
        if children_done:
            active.discard(key)
            sizes[key] = total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise errors.ConfigError(
                    f"{where}: the document expands to more than {MAX_NODES} nodes (aliases "
                    "followed); refusing it as a possible alias bomb")
            continue
        if key in sizes:
            continue
        if key in active:
            raise errors.ConfigError(f"{where}: a recursive alias (a node that contains itself)")
        active.add(key)
        todo.append((node, True))
        todo.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
