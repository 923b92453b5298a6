"""Where downloaded data sets live, and downloading one file with a checksum check.

The cache is ``$KERAX_HOME/datasets/<name>/`` (``KERAX_HOME`` defaults to ``~/.kerax``).
A download goes to a temporary file beside its target, is checked against a published
checksum, and only then renamed into place, so the cache never holds a partial or
tampered file. ``KERAX_OFFLINE=1`` turns downloading off (tests set it).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from kerax import errors

TIMEOUT_S = 15.0  # per socket operation: an offline machine fails fast, a slow mirror is skipped
MAX_BYTES = 256 << 20  # the largest file any loader fetches is ~26 MiB; refuse runaway responses
_CHUNK = 1 << 20


def kerax_home() -> Path:
    """Returns ``$KERAX_HOME``, or ``~/.kerax`` when it is unset or empty."""
    home = os.environ.get("KERAX_HOME")
    return Path(home).expanduser() if home else Path.home() / ".kerax"


def cache_dir(name: str | None = None) -> Path:
    """Returns the directory that holds data set ``name`` (or all data sets); creates nothing.

    Example: ``kx.datasets.cache_dir("mnist")`` -> ``~/.kerax/datasets/mnist``.
    """
    root = kerax_home() / "datasets"
    return root / name if name else root


def offline() -> bool:
    """True when ``KERAX_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get("KERAX_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def file_checksum(path: Path, algorithm: str) -> str:
    """Returns the hex digest of a file's bytes with ``algorithm`` (``"md5"``, ``"sha256"``)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _split_checksum(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not value:
        raise errors.ConfigError(
            f"checksum must look like 'sha256:<hex>' or 'md5:<hex>'; received {checksum!r}")
    return algorithm, value.lower()


def download(url: str, dest: Path, checksum: str, *, timeout: float = TIMEOUT_S,
             max_bytes: int = MAX_BYTES) -> Path:
    """Downloads ``url`` to ``dest`` atomically, verifying ``checksum`` (``"md5:<hex>"``).

    Raises:
      CorruptFileError: the bytes do not match the checksum, or exceed ``max_bytes``;
        nothing is written to ``dest``.
      OSError: the download itself failed (``urllib.error.URLError`` is one).
    """
    algorithm, expected = _split_checksum(checksum)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.new(algorithm, usedforsecurity=False)
        size = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(_CHUNK), b""):
                size += len(block)
                if size > max_bytes:
                    raise errors.CorruptFileError(
                        f"{url}: response is larger than expected: over {max_bytes} bytes")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise errors.CorruptFileError(
                f"{url}: {algorithm} checksum mismatch: expected {expected}, got {actual}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def fetch_missing(directory: Path, files: Mapping[str, str], mirrors: Sequence[str], *,
                  timeout: float = TIMEOUT_S) -> list[str]:
    """Downloads each of ``files`` (name -> checksum) absent from ``directory``.

    Mirrors are tried in order for each file. Returns one line per file that could not be
    fetched, naming every mirror's failure; an empty list means all files are present.
    Under ``KERAX_OFFLINE=1`` nothing is downloaded.
    """
    directory = Path(directory)
    missing = [name for name in files if not (directory / name).is_file()]
    if missing and offline():
        return [f"{name}: not downloaded, KERAX_OFFLINE is set" for name in missing]
    problems, dead = [], set()
    for name in missing:
        reasons = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            if mirror in dead:  # unreachable: don't wait out its timeout once per file
                reasons.append(f"{url} (skipped: unreachable above)")
                continue
            try:
                download(url, directory / name, files[name], timeout=timeout)
                break
            except urllib.error.HTTPError as e:  # the server answered: try the next file there
                reasons.append(f"{url} (HTTP {e.code} {e.reason})")
            except errors.CorruptFileError as e:
                reasons.append(f"{url} ({e})")
            except OSError as e:  # URLError, timeouts, refused connections, a read-only cache
                dead.add(mirror)
                reasons.append(f"{url} ({getattr(e, 'reason', None) or e})")
        else:
            problems.append(f"{name}: " + "; ".join(reasons))
    return problems
