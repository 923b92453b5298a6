"""Training checkpoints: a whole ``TrainState`` plus JSON metadata, written atomically.

A checkpoint is a directory ``step_<n>/`` holding ``state.safetensors`` (every array leaf
of the train state, keyed ``<field>/<tree path>``), ``manifest.json`` (format, step, the
key/shape/dtype of every leaf, the tree structures, the rng implementation, the user's
metadata) and ``COMMIT`` (SHA-256 of both files), written last. The directory is built
under ``.tmp-step_<n>-<host>-<pid>`` (files and directory fsynced) and renamed into place, so
a kill at any moment leaves either the previous checkpoints or the new one, never a partial
``step_<n>``. Listing ignores directories without ``COMMIT``. See docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors

FORMAT = "kerax-checkpoint/1"
DATA_FILE = "state.safetensors"
MANIFEST_FILE = "manifest.json"
COMMIT_FILE = "COMMIT"
FIELDS = ("step", "params", "state", "opt_state", "rng")
MAX_MANIFEST_BYTES = 64 * 2**20  # a manifest larger than this is refused as corrupt
CRASH_ENV = "KERAX_TEST_CKPT_CRASH"  # test hook: after-data | before-rename | after-rename
CRASH_POINTS = ("after-data", "before-rename", "after-rename")
_STEP_RE = re.compile(r"^step_(\d+)$")
_TEMP_RE = re.compile(r"^\.(?:tmp|trash)-step_(\d+)-(.+)-(\d+)$")
# dtypes safetensors' numpy backend writes directly; others are stored as same-width uints.
_NATIVE = {np.dtype(t) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                 "uint32", "uint64", "float16", "float32", "float64")}


def _crash_point(name: str) -> None:
    """Kills this process at ``name`` when the test hook asks for it (never set in use)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _key_str(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _local_copy(tree: Any) -> Any:
    """Replicated global arrays (a multi-process run) -> this process's copy."""
    return jax.tree.map(
        lambda a: a.addressable_data(0) if isinstance(a, jax.Array) and not a.is_fully_addressable else a, tree
    )


def _flatten(ts: Any) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """``{"<field>/<path>": leaf}``, the tree structure of each field, the rng impl name."""
    flat: dict[str, Any] = {}
    structures: dict[str, str] = {}
    impl = None
    for field in FIELDS:
        value = getattr(ts, field)
        if field == "rng" and _is_key(value):
            impl = str(jax.random.key_impl(value))
            value = jax.random.key_data(value)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(value)
        structures[field] = str(treedef)
        for path, leaf in leaves:
            key = "/".join([field, _key_str(path)]) if path else field
            if key in flat:
                raise errors.WeightsError(f"checkpoint: two leaves of the train state share the key {key!r}")
            flat[key] = leaf
    return flat, structures, impl


def _to_numpy(flat: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    arrays, specs = {}, {}
    for key, leaf in flat.items():
        a = np.asarray(jax.device_get(leaf), order="C")
        specs[key] = {"shape": list(a.shape), "dtype": a.dtype.name}
        arrays[key] = a if a.dtype in _NATIVE else a.view(np.dtype(f"uint{8 * a.dtype.itemsize}"))
    return arrays, specs


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.generic, jax.Array)) and np.ndim(o) == 0:
        return np.asarray(o).item()
    if isinstance(o, (np.ndarray, jax.Array)):
        return np.asarray(o).tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointManager:
    """Saves, lists, prunes and restores train-state checkpoints in one directory.

    Args:
        directory: where ``step_<n>/`` directories live (created if missing).
        max_to_keep: how many of the newest checkpoints to keep (``None``: all).
        keep_every: also keep every checkpoint whose step is a multiple of this.
        best_metric: also keep the best checkpoint by ``metadata["metrics"][best_metric]``
            (or ``metadata[best_metric]``).
        best_mode: ``"min"`` or ``"max"``.

    On start the manager removes temporary directories left by dead writers on this host.

    Example::

        mgr = kx.checkpoint.CheckpointManager("ckpt", max_to_keep=3)
        mgr.save(int(ts.step), ts, {"epoch": 2})
        ts, meta = mgr.restore(ts)
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3,
                 keep_every: int | None = None, best_metric: str | None = None,
                 best_mode: str = "min") -> None:
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise errors.ConfigError(f"CheckpointManager: max_to_keep must be a positive int or None; received {max_to_keep!r}")
        if keep_every is not None and (not isinstance(keep_every, int) or keep_every < 1):
            raise errors.ConfigError(f"CheckpointManager: keep_every must be a positive int or None; received {keep_every!r}")
        if best_mode not in ("min", "max"):
            raise errors.ConfigError(f"CheckpointManager: best_mode must be 'min' or 'max'; received {best_mode!r}")
        self.directory = Path(directory)
        self.max_to_keep, self.keep_every = max_to_keep, keep_every
        self.best_metric, self.best_mode = best_metric, best_mode
        self.host = socket.gethostname().replace("/", "_")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cleanup()

    # -- listing ------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """The steps of every committed checkpoint, ascending."""
        steps = []
        for entry in os.listdir(self.directory):
            m = _STEP_RE.match(entry)
            if m and (self.directory / entry / COMMIT_FILE).is_file():
                steps.append(int(m.group(1)))
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest committed step, or ``None`` when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The committed step with the best ``best_metric`` (``None`` without one)."""
        if self.best_metric is None:
            return None
        scored = [(v, s) for s in self.all_steps() if (v := self._metric(s)) is not None]
        if not scored:
            return None
        pick = min if self.best_mode == "min" else max
        return pick(scored, key=lambda vs: (vs[0], -vs[1]))[1]

    def metadata(self, step: int) -> dict:
        """The JSON metadata saved with ``step``."""
        return self._manifest(step)["metadata"]

    def cleanup(self, force: bool = False) -> list[str]:
        """Removes temporary directories of dead writers on this host (all with ``force``)."""
        removed = []
        for entry in os.listdir(self.directory):
            m = _TEMP_RE.match(entry)
            if not m:
                continue
            host, pid = m.group(2), int(m.group(3))
            if force or (host == self.host and pid != os.getpid() and not _pid_alive(pid)):
                shutil.rmtree(self.directory / entry, ignore_errors=True)
                removed.append(entry)
        return removed

    # -- saving -------------------------------------------------------------------------------

    def save(self, step: int, train_state: Any, metadata: dict | None = None) -> Path:
        """Writes ``train_state`` as checkpoint ``step`` atomically, then applies retention.

        Raises the ``OSError`` of a failed write (disk full, permission denied) after
        removing the partial temporary directory; earlier checkpoints and ``train_state``
        are untouched. Returns the checkpoint's directory.
        """
        from safetensors.numpy import save as st_save

        step = int(step)
        if step < 0:
            raise errors.ConfigError(f"CheckpointManager.save: step must be >= 0; received {step}")
        try:
            meta_json = json.loads(json.dumps(metadata or {}, default=_json_default, allow_nan=True))
        except (TypeError, ValueError) as e:
            raise errors.ConfigError(f"CheckpointManager.save: metadata must be JSON-serializable; {e}") from None
        train_state = _local_copy(train_state)
        flat, structures, impl = _flatten(train_state)
        arrays, specs = _to_numpy(flat)
        manifest = {"format": FORMAT, "step": step, "rng_impl": impl, "jax_version": jax.__version__,
                    "structures": structures, "tensors": specs, "metadata": meta_json}
        final = self.directory / f"step_{step}"
        if jax.process_count() > 1:  # one writer (process 0); the others wait until it is committed
            from jax.experimental import multihost_utils

            if jax.process_index() != 0:
                multihost_utils.sync_global_devices(f"kerax checkpoint {step}")
                return final
            try:
                return self._write_committed(step, final, arrays, manifest)
            finally:
                multihost_utils.sync_global_devices(f"kerax checkpoint {step}")
        return self._write_committed(step, final, arrays, manifest)

    def _write_committed(self, step: int, final: Path, arrays: dict, manifest: dict) -> Path:
        from safetensors.numpy import save as st_save

        tmp = self.directory / f".tmp-step_{step}-{self.host}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            _write(tmp / DATA_FILE, st_save(arrays, metadata={"format": FORMAT}))
            _crash_point("after-data")
            _write(tmp / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
            commit = {"step": step, "sha256": {f: _sha256(tmp / f) for f in (DATA_FILE, MANIFEST_FILE)}}
            _write(tmp / COMMIT_FILE, json.dumps(commit).encode())
            _fsync_dir(tmp)
            _crash_point("before-rename")
            if final.exists():  # re-saving a step: the old copy goes aside first
                self._discard(final)
            os.rename(tmp, final)
            _crash_point("after-rename")
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune()
        return final

    def _discard(self, path: Path) -> None:
        trash = self.directory / f".trash-{path.name}-{self.host}-{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(path, trash)  # disappears from the listing atomically
        shutil.rmtree(trash, ignore_errors=True)

    def _prune(self) -> None:
        steps = self.all_steps()
        keep = set(steps if self.max_to_keep is None else steps[-self.max_to_keep:])
        if self.keep_every:
            keep |= {s for s in steps if s % self.keep_every == 0}
        best = self.best_step()
        if best is not None:
            keep.add(best)
        for s in steps:
            if s not in keep:
                self._discard(self.directory / f"step_{s}")

    def delete(self, step: int) -> None:
        """Removes checkpoint ``step`` (atomically gone from the listing first)."""
        path = self.directory / f"step_{int(step)}"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint; steps present: {self.all_steps()}")
        self._discard(path)

    # -- restoring ----------------------------------------------------------------------------

    def _manifest(self, step: int) -> dict:
        path = self.directory / f"step_{step}" / MANIFEST_FILE
        if not (self.directory / f"step_{step}" / COMMIT_FILE).is_file():
            raise FileNotFoundError(
                f"{self.directory}: no committed checkpoint for step {step}; steps present: {self.all_steps()}"
            )
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise errors.CorruptFileError(f"{path}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            manifest = json.loads(path.read_bytes())
        except (ValueError, RecursionError) as e:
            raise errors.CorruptFileError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise errors.CorruptFileError(f"{path}: expected format {FORMAT!r}; received {got!r}")
        return manifest

    def _metric(self, step: int) -> float | None:
        try:
            meta = self._manifest(step)["metadata"]
        except (OSError, errors.CorruptFileError):
            return None
        value = (meta.get("metrics") or {}).get(self.best_metric, meta.get(self.best_metric))
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return None if np.isnan(value) else value

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Reads checkpoint ``step`` (default: the newest committed) into ``template``'s shape.

        ``template`` is a ``TrainState`` of the model and optimizer being resumed; every
        leaf's key, shape and dtype must match, else ``IncompatibleCheckpointError`` lists
        the differences and ``template`` is returned to no one (nothing is modified).
        Returns ``(train_state, metadata)``.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load

        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"{self.directory}: no committed checkpoint to restore")
        step = int(step)
        manifest = self._manifest(step)
        where = self.directory / f"step_{step}"
        try:
            commit = json.loads((where / COMMIT_FILE).read_bytes())
            for name, digest in commit["sha256"].items():
                if _sha256(where / name) != digest:
                    raise errors.CorruptFileError(
                        f"{where / name}: content does not match its SHA-256 in {COMMIT_FILE} "
                        f"(damaged after it was written); other steps: {self.all_steps()}"
                    )
            tensors = st_load((where / DATA_FILE).read_bytes())
        except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise errors.CorruptFileError(f"{where}: unreadable checkpoint ({e})") from None
        flat, structures, impl = _flatten(template)
        manifest = _without_retired(manifest, flat, structures)
        specs = manifest["tensors"]
        _check_compatible(where, flat, structures, impl, manifest)
        restored = {}
        for key, ref in flat.items():
            spec = specs[key]
            value = tensors.get(key)
            if value is None:
                raise errors.CorruptFileError(f"{where / DATA_FILE}: tensor {key!r} listed in the manifest is missing")
            value = value.view(np.dtype(jnp.dtype(spec["dtype"]))).reshape(spec["shape"])
            if isinstance(ref, jax.Array) and not _is_key(ref):
                restored[key] = jax.device_put(value, ref.sharding)
            else:
                restored[key] = jnp.asarray(value)
        fields = {}
        for field in FIELDS:
            value = getattr(template, field)
            if field == "rng" and impl is not None:
                value = jax.random.key_data(value)
            paths, treedef = jax.tree_util.tree_flatten_with_path(value)
            leaves = [restored["/".join([field, _key_str(p)]) if p else field] for p, _ in paths]
            value = jax.tree_util.tree_unflatten(treedef, leaves)
            if field == "rng" and impl is not None:
                value = jax.random.wrap_key_data(value, impl=impl)
            fields[field] = value
        return template.replace(**fields), manifest["metadata"]


# Optimizer-state leaves that checkpoints of earlier kerax versions hold and current train
# states do not: Adam's epsilon schedule (now kept by AMSGrad only). Nothing reads them.
RETIRED = frozenset({"opt_state/hyperparams/eps", "opt_state/hyperparams_states/eps/count"})


def _without_retired(manifest: dict, flat: dict, structures: dict) -> dict:
    """``manifest`` less the retired leaves the template lacks (and, when it had any, with
    the template's ``opt_state`` structure: the old one listed them)."""
    stale = {k for k in manifest["tensors"] if k in RETIRED and k not in flat}
    if not stale:
        return manifest
    return {**manifest, "tensors": {k: v for k, v in manifest["tensors"].items() if k not in stale},
            "structures": {**manifest.get("structures", {}), "opt_state": structures["opt_state"]}}


def _check_compatible(where: Path, flat: dict, structures: dict, impl: str | None, manifest: dict) -> None:
    """Raises ``IncompatibleCheckpointError`` with a structural diff (template vs file)."""
    specs = manifest["tensors"]
    missing = sorted(set(flat) - set(specs))
    unexpected = sorted(set(specs) - set(flat))
    lines = []
    if missing:
        lines.append(f"in the model/optimizer but not the checkpoint: {missing}")
    if unexpected:
        lines.append(f"in the checkpoint but not the model/optimizer: {unexpected}")
    for key in sorted(set(flat) & set(specs)):
        ref = flat[key]
        shape, dtype = tuple(np.shape(ref)), np.dtype(getattr(ref, "dtype", None) or np.asarray(ref).dtype).name
        got_shape, got_dtype = tuple(specs[key]["shape"]), specs[key]["dtype"]
        if shape != got_shape or dtype != got_dtype:
            lines.append(f"{key}: expected shape {shape} dtype {dtype}; the checkpoint has shape {got_shape} dtype {got_dtype}")
    if manifest.get("rng_impl") != impl:
        lines.append(f"rng: expected key implementation {impl!r}; the checkpoint has {manifest.get('rng_impl')!r}")
    if not lines and manifest.get("jax_version") == jax.__version__:
        for field, s in structures.items():  # same leaves, different containers (adam vs adamw)
            if manifest["structures"].get(field) != s:
                lines.append(f"{field}: tree structure differs:\n  expected {s}\n  checkpoint {manifest['structures'].get(field)}")
    if lines:
        raise errors.IncompatibleCheckpointError(
            f"{where}: checkpoint does not fit the train state (changed model or optimizer?):\n  - "
            + "\n  - ".join(lines)
        )
