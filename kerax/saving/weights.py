"""Weight files: the params and state trees as one safetensors file keyed by weight path.

Keys are the paths of the trees (``dense/kernel``, ``batch_normalization/moving_mean``);
the file's metadata says which keys are non-trainable state. Loading checks every name,
shape and dtype against the model before anything is replaced (verify, then swap), so a
file that does not fit leaves the model as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from kerax import errors
from kerax.core.layer import AUX_LOSS
from kerax.core.specs import flat_paths

FORMAT = "kerax-weights/1"


def _unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _aux(path: str) -> bool:
    return path.rsplit("/", 1)[-1] == AUX_LOSS  # per-step loss terms in state, not weights


def save_weights(model: Any, path: str | os.PathLike) -> None:
    """Writes ``model.params`` and ``model.state`` to ``path`` atomically (temp + rename)."""
    from safetensors.numpy import save

    params = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat_paths(model.params).items()}
    state = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat_paths(model.state).items()
             if not _aux(k)}
    clash = sorted(set(params) & set(state))
    if clash:
        raise errors.WeightsError(f"weight paths used in both params and state: {clash}")
    blob = save({**params, **state}, metadata={"format": FORMAT, "state": json.dumps(sorted(state))})
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(model: Any, path: str | os.PathLike, skip_mismatch: bool = False) -> None:
    """Reads a file written by :func:`save_weights` into ``model`` (checked before use)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        data = Path(path).read_bytes()
        tensors = load(data)
    except FileNotFoundError:
        raise
    except (SafetensorError, ValueError, OSError) as e:
        raise errors.CorruptFileError(f"{path}: not a readable weights file ({e})") from None
    expected = {"params": flat_paths(model.params), "state": flat_paths(model.state)}
    wanted = {k: v for k, v in {**expected["params"], **expected["state"]}.items() if not _aux(k)}
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    if (missing or unexpected) and not skip_mismatch:
        raise errors.IncompatibleCheckpointError(
            f"{path}: weights do not match the model: missing {missing}, unexpected {unexpected}"
        )
    new = {}
    for key, ref in wanted.items():
        if key not in tensors:
            continue
        value = tensors[key]
        if value.shape != tuple(ref.shape) or value.dtype != np.dtype(ref.dtype):
            if skip_mismatch:
                continue
            raise errors.IncompatibleCheckpointError(
                f"{path}: weight {key!r} expected shape {tuple(ref.shape)} dtype {np.dtype(ref.dtype)}; "
                f"the file has shape {value.shape} dtype {value.dtype}"
            )
        new[key] = value
    trees = {}
    for kind in ("params", "state"):
        merged = {k: (new[k] if k in new else v) for k, v in expected[kind].items()}
        trees[kind] = jax.tree.map(lambda a: jax.numpy.asarray(a), _unflatten(merged)) if merged else {}
    model.params, model.state = trees["params"], trees["state"]
