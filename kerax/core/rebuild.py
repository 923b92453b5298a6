"""Rebuilding a functional graph from its config, with every reference checked.

The config lists layers (by name), nodes (layer calls whose inputs are references
``{"ref": [layer_name, call_index, output_index]}``) and the graph's inputs and outputs.
Nodes are replayed in dependency order; a reference to a call that does not exist is a
dangling tensor and a dependency loop is a cycle: both are :class:`GraphError`.
"""

from __future__ import annotations

from typing import Any

import jax

from kerax import errors
from kerax.core import config as cfg
from kerax.core.symbolic import Input, InputLayer, _leaf


def _is_ref(x: Any) -> bool:
    return isinstance(x, dict) and set(x) == {"ref"}


def _refs(tree: Any) -> list:
    out = []

    def walk(x: Any) -> None:
        if _is_ref(x):
            r = x["ref"]
            if not (isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
                    and all(isinstance(i, int) for i in r[1:])):
                raise errors.ConfigError(f"malformed tensor reference {x!r}")
            out.append(tuple(r))
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        else:
            raise errors.ConfigError(f"expected tensor references; received {x!r}")

    walk(tree)
    return out


def _resolve(tree: Any, made: dict) -> Any:
    if _is_ref(tree):
        name, k, i = tree["ref"]
        if (name, k) not in made:
            raise errors.GraphError(
                f"dangling reference: call {k} of layer {name!r} does not exist in the config"
            )
        leaves = jax.tree.leaves(made[(name, k)], is_leaf=_leaf)
        if not 0 <= i < len(leaves):
            raise errors.GraphError(
                f"dangling reference: layer {name!r} call {k} has {len(leaves)} outputs; "
                f"the config asks for output {i}"
            )
        return leaves[i]
    if isinstance(tree, list):
        return [_resolve(v, made) for v in tree]
    return {k: _resolve(v, made) for k, v in tree.items()}


def graph_from_config(config: dict, custom_objects: dict | None) -> tuple[Any, Any, dict]:
    """Returns ``(inputs, outputs, {layer object id: name})`` rebuilt from ``config``."""
    for key in ("layers", "nodes", "inputs", "outputs"):
        if key not in config:
            raise errors.ConfigError(f"functional config is missing the key {key!r}")
    layers: dict[str, Any] = {}
    for entry in config["layers"]:
        if not isinstance(entry, dict) or "name" not in entry:
            raise errors.ConfigError(f"malformed layer entry in functional config: {entry!r}"[:300])
        name = entry["name"]
        if name in layers:
            raise errors.LayerNameError(f"functional config lists two layers named {name!r}")
        obj = {k: v for k, v in entry.items() if k != "name"}
        layers[name] = cfg.deserialize(obj, custom_objects)

    made: dict[tuple[str, int], Any] = {}
    for name, layer in layers.items():
        if isinstance(layer, InputLayer):
            made[(name, 0)] = Input(
                batch_shape=layer.shape, dtype=layer.input_dtype, name=layer.name
            )
            layers[name] = made[(name, 0)].node.layer

    pending = []
    counts: dict[str, int] = {}
    for node in config["nodes"]:
        name = node.get("layer") if isinstance(node, dict) else None
        if name not in layers:
            raise errors.GraphError(f"a node calls unknown layer {name!r}")
        k = counts.get(name, 0)
        counts[name] = k + 1
        pending.append(((name, k), node["inputs"], _refs(node["inputs"])))

    known = set(made) | {key for key, _, _ in pending}
    for key, _, deps in pending:
        for d in deps:
            if (d[0], d[1]) not in known:
                raise errors.GraphError(
                    f"dangling reference: layer {key[0]!r} reads call {d[1]} of layer "
                    f"{d[0]!r}, which does not exist in the config"
                )
    while pending:
        ready = [p for p in pending if all((d[0], d[1]) in made for d in p[2])]
        if not ready:
            stuck = sorted({key[0] for key, _, _ in pending})
            raise errors.GraphError(f"the functional config has a cycle among layers {stuck}")
        for key, args, _ in ready:
            made[key] = layers[key[0]](_resolve(args, made))
        pending = [p for p in pending if p[0] not in made]

    names = {id(layer): name for name, layer in layers.items()}
    return _resolve(config["inputs"], made), _resolve(config["outputs"], made), names


def rename(graph: Any, names: dict[int, str]) -> None:
    """Gives the rebuilt graph's layers the names the config had."""
    by_id = {id(layer): names.get(id(layer), graph.layer_name(layer)) for layer in graph.layers}
    if len(set(by_id.values())) != len(by_id):
        raise errors.LayerNameError("functional config gives two layers the same name")
    object.__setattr__(graph, "_by_id", by_id)
