"""Weight files: the params and state trees as one safetensors file keyed by weight path.

Keys are the paths of the trees (``dense/kernel``, ``batch_normalization/moving_mean``);
the file's metadata says which keys are non-trainable state. Loading checks the header
(:mod:`kerax.saving.safe_io`), then every name, shape and dtype against the model before
anything is replaced (verify, then swap), so a file that does not fit leaves the model as
it was.

Stacked weights (a ``Repeat``'s ``block_*``, see :mod:`kerax.core.scan`) are written and
read entry by entry (``repeat/block_0/dense/kernel``, ...): every function here goes
through the per-index view, the one place where trees become named weights.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from kerax import errors
from kerax.core.layer import AUX_LOSS
from kerax.core.scan import restack, unstack
from kerax.core.specs import flat_paths, path_str
from kerax.saving import safe_io

FORMAT = "kerax-weights/1"


def _aux(path: str) -> bool:
    return path.rsplit("/", 1)[-1] == AUX_LOSS  # per-step loss terms in state, not weights


def weights_bytes(params: Any, state: Any) -> bytes:
    """The safetensors bytes of ``params`` and ``state`` (``aux_loss`` entries left out)."""
    from safetensors.numpy import save

    params = {k: np.array(v, order="C") for k, v in named(params).items()}
    state = {k: np.array(v, order="C") for k, v in named(state).items()
             if not _aux(k)}
    clash = sorted(set(params) & set(state))
    if clash:
        raise errors.WeightsError(f"weight paths used in both params and state: {clash}")
    return save({**params, **state}, metadata={"format": FORMAT, "state": json.dumps(sorted(state)),
                                               "int8_scale": INT8_SCALE})


INT8_SCALE = "127/max"  # an int8 weight's "<name>_scale" is 127 / max|w| (Keras 3's convention)


def upgrade_int8_scales(tensors: dict[str, np.ndarray], metadata: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``tensors`` with the int8 scales of files written before kerax 0.1.0 switched to Keras's
    convention (2026-11-29; no ``int8_scale`` in the metadata) inverted: they held
    ``max|w| / 127`` (``w ~= q * scale``), today's ``127 / max|w|`` (``w ~= q / scale``), so
    ``1 / old`` dequantizes exactly as before (an all-zero channel's 0 becomes inf: q = 0)."""
    if metadata.get("int8_scale") == INT8_SCALE:
        return tensors
    out = dict(tensors)
    for key, value in tensors.items():
        scale = key + "_scale"
        if value.dtype == np.int8 and scale in tensors and np.issubdtype(tensors[scale].dtype, np.floating):
            with np.errstate(divide="ignore"):
                out[scale] = (1.0 / tensors[scale]).astype(tensors[scale].dtype)
    return out


def named(tree: Any) -> dict[str, Any]:
    """``{"dense/kernel": leaf, ...}``: the named weights of a params or state tree, stacked
    weights as their entries (NumPy leaves are sliced without copies)."""
    host = lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else np.asarray(a)
    return flat_paths(unstack(jax.tree.map(host, tree)))


def write_atomic(path: str | os.PathLike, blob: bytes) -> None:
    """Writes ``blob`` to ``path`` via a temp file in the same folder, fsync and rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it (mkstemp uses 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_weights(model: Any, path: str | os.PathLike) -> None:
    """Writes ``model.params`` and ``model.state`` to ``path`` atomically (temp + rename)."""
    write_atomic(path, weights_bytes(model.params, model.state))


def match_tensors(expected: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: Any, *,
                  skip_mismatch: bool = False, allow_cast: bool = False,
                  check_finite: bool = False) -> dict[str, np.ndarray]:
    """Checks file tensors against ``expected`` (anything with ``shape`` and ``dtype``).

    Returns:
      the tensors to assign, by key (cast to the expected dtype when ``allow_cast``).

    Raises:
      IncompatibleCheckpointError: missing or unexpected keys (listed), a shape or dtype
        that differs (named, expected vs got), or non-finite values with ``check_finite``.
    """
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if (missing or unexpected) and not skip_mismatch:
        raise errors.IncompatibleCheckpointError(
            f"{where}: weights do not match the model: missing {missing}, unexpected {unexpected}"
        )
    out, skipped = {}, []
    for key, ref in expected.items():
        if key not in tensors:
            continue
        value, want = tensors[key], np.dtype(ref.dtype)
        if value.shape != tuple(ref.shape):
            if skip_mismatch:
                skipped.append(f"{key} (shape {value.shape}, expected {tuple(ref.shape)})")
                continue
            raise errors.IncompatibleCheckpointError(
                f"{where}: weight {key!r} expected shape {tuple(ref.shape)} dtype {want}; "
                f"the file has shape {value.shape} dtype {value.dtype}"
            )
        if value.dtype != want:
            if not allow_cast and not skip_mismatch:
                raise errors.IncompatibleCheckpointError(
                    f"{where}: weight {key!r} expected dtype {want} shape {tuple(ref.shape)}; the "
                    f"file has dtype {value.dtype}. Pass allow_cast=True to convert it"
                )
            if not allow_cast:
                skipped.append(f"{key} (dtype {value.dtype}, expected {want})")
                continue
            value = value.astype(want)
        if check_finite and np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise errors.IncompatibleCheckpointError(
                f"{where}: weight {key!r} has {bad} non-finite values (NaN/inf); "
                "check_finite=True refuses them"
            )
        out[key] = value
    if skip_mismatch and (missing or unexpected or skipped):  # as Keras: said, not silent
        warnings.warn(f"{where}: skip_mismatch=True left {len(missing) + len(skipped)} weight(s) of the model as "
                      f"they were: missing {missing}, mismatched {skipped}; ignored unexpected {unexpected}",
                      stacklevel=4)  # model.load_weights -> saving.load_weights -> here
    return out


def swap_in(model: Any, params: Any, state: Any, new: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """New ``(params, state)`` trees of the same structure: ``new`` values where given, else
    the old leaves (abstract leaves become zeros)."""
    import jax.numpy as jnp

    def one(tree: Any) -> Any:
        view = unstack(tree)
        flat, treedef = jax.tree_util.tree_flatten_with_path(view)
        leaves = []
        for p, old in flat:
            key = path_str(p)
            if key in new:
                leaves.append(jnp.asarray(new[key]))
            elif isinstance(old, jax.ShapeDtypeStruct):
                leaves.append(jnp.zeros(old.shape, old.dtype))
            else:
                leaves.append(jnp.asarray(old))
        return restack(jax.tree_util.tree_unflatten(treedef, leaves), tree)

    return one(params), one(state)


def expected_weights(params: Any, state: Any) -> dict[str, Any]:
    """``{path: leaf}`` of every weight the file must hold (``aux_loss`` excluded)."""
    view = {**flat_paths(unstack(params, abstract=True)), **flat_paths(unstack(state, abstract=True))}
    return {k: v for k, v in view.items() if not _aux(k)}


def load_weights(model: Any, path: str | os.PathLike, skip_mismatch: bool = False, *,
                 allow_cast: bool = False, check_finite: bool = False) -> None:
    """Reads a file written by :func:`save_weights` into ``model`` (checked before use).

    Raises:
      FileNotFoundError: no such file. CorruptFileError: truncated or malformed.
      IncompatibleCheckpointError: the weights do not fit the model (see match_tensors).
    """
    try:
        tensors, metadata = safe_io.read_safetensors(safe_io.read_file(path), path)
    except errors.CorruptFileError as e:
        raise errors.CorruptFileError(f"not a readable weights file: {e}") from None
    tensors = upgrade_int8_scales(tensors, metadata)
    params, state = model.params, model.state
    new = match_tensors(expected_weights(params, state), tensors, path, skip_mismatch=skip_mismatch,
                        allow_cast=allow_cast, check_finite=check_finite)
    model.params, model.state = swap_in(model, params, state, new)
