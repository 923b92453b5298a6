"""Importing Keras 3 ``.weights.h5`` files into a kerax model of the same architecture.

Keras 3 writes one HDF5 group per layer, ``layers/<snake_case class name>[_<n>]/vars/<i>``
(``_<n>`` counting earlier layers of the same class in the model's layer order), with the
datasets ``0..k`` in the layer's weight order (trainable, then non-trainable, in creation
order); sub-objects such as an RNN's cell have their own groups (``layers/lstm/cell/vars``)
and nested models their own ``layers`` group. kerax orders each layer's weights the same
way (``Model.get_weights``), so the i-th Keras variable of a layer is the i-th kerax weight.

The file is untrusted: soft and external links, virtual datasets and external storage are
refused before anything is read (B12), every dataset's shape and dtype is compared with the
model's before it is read, and the model receives nothing until every weight checked out.
``h5py`` is an optional dependency.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from kerax import errors
from kerax.saving import safe_io

_CHILD_ORDER = ("cell", "forward_layer", "backward_layer")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is installed in the dev environment
        raise ImportError("load_keras_weights needs h5py: pip install h5py") from None
    return h5py


def snake_case(name: str) -> str:
    """Keras's group name for a class: ``BatchNormalization`` -> ``batch_normalization``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def load_keras_weights(model: Any, path: str | os.PathLike) -> None:
    """Reads a Keras 3 ``.weights.h5`` file into ``model`` (same architecture).

    Raises:
      ImportError: h5py is not installed. FileNotFoundError: no such file.
      CorruptFileError: not an HDF5 weights file; a group or dataset is missing.
      UnsafeContentError: soft/external links, virtual datasets or external storage.
      IncompatibleCheckpointError: a layer's variable count, shapes or dtypes differ.
    """
    h5py = _h5py()
    os.stat(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise errors.CorruptFileError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        _check_links(h5py, f, path)
        params, state = model.params, model.state
        new: dict[str, np.ndarray] = {}
        _match(model, model, (), f, path, new, _order(model))
    from kerax.saving.weights import swap_in

    model.params, model.state = swap_in(model, params, state, new)


def _check_links(h5py: Any, root: Any, path: Any) -> None:
    """B12: refuses soft/external links, virtual datasets and external raw storage."""
    todo = [root]
    while todo:
        group = todo.pop()
        for key in group:
            link = group.get(key, getlink=True)
            where = f"{group.name.rstrip('/')}/{key}"
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                raise errors.UnsafeContentError(
                    f"{path}: {where} is a {type(link).__name__}; links are never followed")
            item = group.get(key)
            if isinstance(item, h5py.Group):
                todo.append(item)
            elif isinstance(item, h5py.Dataset):
                if item.is_virtual or item.external:
                    kind = "virtual dataset" if item.is_virtual else "dataset with external storage"
                    raise errors.UnsafeContentError(f"{path}: {where} is a {kind}; refused")


def _layers_of(model: Any) -> list[tuple[str, Any]]:
    from kerax.core.symbolic import InputLayer

    return [(n, l) for n, l in zip(model.layer_names(), model.layers) if not isinstance(l, InputLayer)]


def _match(root: Any, container: Any, prefix: tuple, group: Any, path: Any, new: dict,
           order: list) -> None:
    """Pairs ``container``'s layers with the file's groups and checks each layer's weights
    (``order``: the root model's weights in Keras order, paths relative to the root)."""
    from kerax.models.model import Model

    if "layers" not in group:
        raise errors.CorruptFileError(f"{path}: group {group.name!r} has no 'layers' group")
    groups, seen = group["layers"], {}
    for name, layer in _layers_of(container):
        base = snake_case(type(layer).__name__)
        count = seen.get(base, 0)
        seen[base] = count + 1
        key = base if count == 0 else f"{base}_{count}"
        mine = prefix + (name,)
        entries = [(kind, p) for kind, p in order if p[:len(mine)] == mine]
        if not entries:
            continue
        if key not in groups:
            raise errors.CorruptFileError(
                f"{path}: no group '{groups.name}/{key}' for layer {name!r} ({type(layer).__name__}); "
                f"the file has {sorted(groups)}")
        if isinstance(layer, Model):
            _match(root, layer, mine, groups[key], path, new, entries)
            continue
        datasets = _datasets(groups[key])
        if len(datasets) != len(entries):
            raise errors.IncompatibleCheckpointError(
                f"{path}: layer {name!r} ({type(layer).__name__}) has {len(entries)} weights; the "
                f"file's group '{groups[key].name}' has {len(datasets)}")
        for (kind, p), ds in zip(entries, datasets):
            _take(root, kind, p, ds, path, new)


def _order(model: Any) -> list:
    from kerax.models import weights as mweights

    model._ensure_built()
    if model._weight_order is None:  # pragma: no cover - set by every build path
        return mweights.ordered_paths(model.params, model.state)
    return model._weight_order


def _datasets(group: Any) -> list:
    """The group's variables in Keras order: its own ``vars/0..n``, then sub-objects'."""
    out = []
    if "vars" in group:
        v = group["vars"]
        out.extend(v[str(i)] for i in range(len(v)) if str(i) in v)
        if len(out) != len(v):
            raise errors.CorruptFileError(f"{group.name}/vars: expected datasets 0..{len(v) - 1}")
    children = [k for k in group if k != "vars"]
    children.sort(key=lambda k: (_CHILD_ORDER.index(k) if k in _CHILD_ORDER else len(_CHILD_ORDER), k))
    for k in children:
        out.extend(_datasets(group[k]))
    return out


def _take(model: Any, kind: str, p: tuple, ds: Any, path: Any, new: dict) -> None:
    from kerax.core.scan import unstack
    from kerax.core.specs import flat_paths

    key = "/".join(p)
    ref = flat_paths(unstack(model.params if kind == "params" else model.state, abstract=True)).get(key)
    if ref is None:
        raise errors.IncompatibleCheckpointError(f"{path}: the model has no weight {key!r}")
    if tuple(ds.shape) != tuple(ref.shape):
        raise errors.IncompatibleCheckpointError(
            f"{path}: weight {key!r} expected shape {tuple(ref.shape)}; the file's {ds.name} has "
            f"shape {tuple(ds.shape)}")
    if ds.dtype.kind not in "fiub" or ds.dtype.itemsize > 8:
        raise errors.IncompatibleCheckpointError(f"{path}: {ds.name} has dtype {ds.dtype}; expected numbers")
    if ds.size * ds.dtype.itemsize > safe_io.MAX_MEMBER_BYTES:
        raise errors.CorruptFileError(f"{path}: {ds.name} is larger than the limit {safe_io.MAX_MEMBER_BYTES}")
    new[key] = np.asarray(ds[()]).astype(np.dtype(ref.dtype))
