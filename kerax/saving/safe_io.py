"""Bounded, checked readers for untrusted files: zip members, JSON, safetensors.

Every reader checks declared sizes against the limits below *before* it reads or
allocates, and turns every way a file can be malformed into ``CorruptFileError`` naming
the file and what is wrong. Nothing here imports, unpickles, evaluates or extracts:

* zip archives are opened with :class:`zipfile.ZipFile` and members read by name into
  memory (``ZipFile.open``); the member list is checked first (only the expected names, no
  ``..``, absolute or backslash paths, no symlinks, no duplicates, stored/deflated only);
* JSON is size- and depth-checked by a linear scan before :func:`json.loads` sees it, and
  duplicate object keys are refused;
* a safetensors header (8-byte little-endian length, JSON) is parsed and checked here
  (known dtypes, ``prod(shape) * itemsize == end - begin``, offsets sorted, contiguous,
  covering the data section) before any tensor is decoded.

The limits are module constants so tests (and users with unusual files) can change them.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from typing import Any, Iterable

import numpy as np

from kerax import errors

MAX_MEMBER_BYTES = 1 << 35  # one zip member or one weights file (32 GiB)
MAX_JSON_BYTES = 1 << 24  # one JSON document (16 MiB)
MAX_JSON_DEPTH = 512  # nesting of arrays and objects
MAX_HEADER_BYTES = 100_000_000  # a safetensors header (as the safetensors library)
MAX_TENSORS = 200_000  # tensors in one safetensors file
MAX_ZIP_ENTRIES = 64  # entries in the central directory

# safetensors dtype -> (numpy dtype name, itemsize)
DTYPES = {
    "BOOL": ("bool", 1), "U8": ("uint8", 1), "I8": ("int8", 1), "U16": ("uint16", 2),
    "I16": ("int16", 2), "F16": ("float16", 2), "BF16": ("bfloat16", 2), "U32": ("uint32", 4),
    "I32": ("int32", 4), "F32": ("float32", 4), "U64": ("uint64", 8), "I64": ("int64", 8),
    "F64": ("float64", 8),
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _corrupt(where: Any, what: str) -> errors.CorruptFileError:
    return errors.CorruptFileError(f"{where}: {what}")


# -- files and zip archives -----------------------------------------------------------------

def read_file(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (default MAX_MEMBER_BYTES).

    Raises:
      FileNotFoundError: no such path. CorruptFileError: not a regular file, or too large.
    """
    limit = MAX_MEMBER_BYTES if limit is None else limit
    st = os.stat(path)  # FileNotFoundError for a missing path, as users expect
    if not stat.S_ISREG(st.st_mode):
        raise _corrupt(path, "not a regular file")
    if st.st_size > limit:
        raise _corrupt(path, f"file is {st.st_size} bytes, more than the limit {limit}")
    with open(path, "rb") as f:
        data = f.read(min(st.st_size, limit) + 1)
    if len(data) > limit:
        raise _corrupt(path, f"file grew past the limit {limit} bytes while being read")
    return data


def read_archive(path: str | os.PathLike, required: Iterable[str], optional: Iterable[str] = (),
                 limits: dict[str, int] | None = None) -> dict[str, bytes]:
    """Reads the members of a zip archive into memory after checking its member list.

    Args:
      path: the archive. required / optional: the only member names allowed.
      limits: per-member size limits (default MAX_MEMBER_BYTES).

    Returns:
      ``{name: bytes}`` for the members present.

    Raises:
      FileNotFoundError: no such path.
      CorruptFileError: empty, truncated or not a zip; a member name that is unexpected,
        missing, duplicated, absolute, contains ``..`` or a backslash; a symlink or
        directory member; encryption or a compression other than stored/deflated; a
        declared size over its limit; a member whose bytes do not check out (CRC, size).
    """
    required, allowed = set(required), set(required) | set(optional)
    limits = limits or {}
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _corrupt(path, "not a regular file")
    if st.st_size == 0:
        raise _corrupt(path, "empty file (0 bytes): truncated, or not a kerax model file")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        what = "truncated or damaged zip archive" if head in _ZIP_MAGIC else "not a kerax model file (not a zip archive)"
        raise _corrupt(path, f"{what} ({e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise _corrupt(path, f"archive has {len(infos)} entries; at most {MAX_ZIP_ENTRIES} allowed")
        names = [i.filename for i in infos]
        for info in infos:
            _check_member(path, info, allowed)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _corrupt(path, f"duplicate archive members {dupes}")
        missing = sorted(required - set(names))
        if missing:
            raise _corrupt(path, f"archive lacks members {missing}: truncated or not a kerax model file")
        for info in infos:  # every declared size checked before any member is read
            limit = min(limits.get(info.filename, MAX_MEMBER_BYTES), MAX_MEMBER_BYTES)
            if info.file_size > limit:
                raise _corrupt(path, f"member {info.filename!r} declares {info.file_size} bytes, "
                                     f"more than the limit {limit}")
        out = {}
        for info in infos:
            try:
                with zf.open(info) as member:
                    data = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
                raise _corrupt(path, f"member {info.filename!r} is damaged or truncated ({e})") from None
            except Exception as e:  # zlib.error and friends
                raise _corrupt(path, f"member {info.filename!r} is damaged ({type(e).__name__}: {e})") from None
            if len(data) != info.file_size:
                raise _corrupt(path, f"member {info.filename!r} has {len(data)} bytes; its header "
                                     f"declares {info.file_size}")
            out[info.filename] = data
    return out


def _check_member(path: Any, info: zipfile.ZipInfo, allowed: set) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if (not name or "\\" in name or name.startswith("/") or ".." in parts or ":" in name
            or "\x00" in name):
        raise _corrupt(path, f"unsafe archive member name {name!r}")
    mode = (info.external_attr >> 16) & 0o170000
    if mode == stat.S_IFLNK:
        raise _corrupt(path, f"archive member {name!r} is a symbolic link")
    if info.is_dir() or (mode and mode != stat.S_IFREG):
        raise _corrupt(path, f"archive member {name!r} is not a regular file")
    if name not in allowed:
        raise _corrupt(path, f"unexpected archive member {name!r}; allowed: {sorted(allowed)}")
    if info.flag_bits & 0x1:
        raise _corrupt(path, f"archive member {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _corrupt(path, f"archive member {name!r} uses compression {info.compress_type}; "
                             "only stored or deflated members are read")


# -- JSON --------------------------------------------------------------------------------------

def json_depth(text: str) -> int:
    """Maximum nesting of ``[``/``{`` in a JSON text (a linear scan; no recursion)."""
    depth = best = 0
    in_str = escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _no_dupes(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_json(data: bytes | str, where: Any) -> Any:
    """Parses a JSON document after checking its size and nesting depth.

    Raises:
      CorruptFileError: over MAX_JSON_BYTES or MAX_JSON_DEPTH, not UTF-8, invalid JSON,
        or an object with a duplicated key.
    """
    if len(data) > MAX_JSON_BYTES:
        raise _corrupt(where, f"JSON of {len(data)} bytes is over the limit {MAX_JSON_BYTES}")
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as e:
        raise _corrupt(where, f"not UTF-8 text ({e})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise _corrupt(where, f"JSON nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_no_dupes)
    except (ValueError, RecursionError) as e:
        raise _corrupt(where, f"invalid JSON ({str(e)[:200]})") from None


# -- safetensors -------------------------------------------------------------------------------

def read_safetensors(data: bytes, where: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Checks a safetensors blob's header, then decodes it.

    Returns:
      ``(tensors, metadata)``: NumPy arrays by name and the ``__metadata__`` strings.

    Raises:
      CorruptFileError: truncated; header length over MAX_HEADER_BYTES or past the end;
        an unknown dtype; a shape that does not match its byte range; offsets out of the
        data section, out of order, overlapping or leaving gaps; over MAX_TENSORS tensors.
    """
    header, metadata, base = check_safetensors_header(data, where)
    names = sorted(header)
    if any(header[n]["dtype"] == "BF16" for n in names):
        return _decode(data, header, base), metadata
    from safetensors.numpy import load

    try:
        return dict(load(bytes(data))), metadata
    except Exception as e:  # the header checked out, so this would be a library bug
        raise _corrupt(where, f"safetensors could not decode the file ({e})") from None


def check_safetensors_header(data: bytes, where: Any) -> tuple[dict, dict, int]:
    """Validates the header; returns ``(entries, metadata, data_start)``."""
    if len(data) < 8:
        raise _corrupt(where, f"truncated: {len(data)} bytes, shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise _corrupt(where, f"header too large: {n} bytes declared, limit {MAX_HEADER_BYTES}")
    if 8 + n > len(data):
        raise _corrupt(where, f"truncated: header declares {n} bytes but the file has {len(data) - 8}")
    header = parse_json(bytes(data[8:8 + n]), f"{where} (safetensors header)")
    if not isinstance(header, dict):
        raise _corrupt(where, "safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(where, "safetensors __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise _corrupt(where, f"{len(header)} tensors; the limit is {MAX_TENSORS}")
    size = len(data) - 8 - n
    spans = []
    for name, entry in header.items():
        spans.append(_check_entry(where, name, entry, size))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap at byte {pos}"
            raise _corrupt(where, f"tensor {name!r} at bytes [{begin}, {end}) {what}")
        pos = end
    if pos != size:
        raise _corrupt(where, f"tensors cover {pos} bytes of a {size}-byte data section")
    return header, metadata, 8 + n


def _check_entry(where: Any, name: str, entry: Any, size: int) -> tuple[int, int, str]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _corrupt(where, f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise _corrupt(where, f"tensor {name!r}: unknown dtype {dtype!r}; known: {sorted(DTYPES)}")
    ints = lambda v: isinstance(v, list) and all(type(d) is int and d >= 0 for d in v)
    if not ints(shape) or len(shape) > 64:
        raise _corrupt(where, f"tensor {name!r}: shape must be a list of non-negative ints; received {shape!r}")
    if not ints(offs) or len(offs) != 2 or offs[0] > offs[1]:
        raise _corrupt(where, f"tensor {name!r}: data_offsets must be [begin, end]; received {offs!r}")
    begin, end = offs
    if end > size:
        raise _corrupt(where, f"tensor {name!r}: bytes [{begin}, {end}) run past the data section "
                              f"({size} bytes): truncated or corrupt")
    nbytes = math.prod(shape) * DTYPES[dtype][1]  # Python ints: no overflow
    if nbytes != end - begin:
        raise _corrupt(where, f"tensor {name!r}: shape {tuple(shape)} of {dtype} needs {nbytes} "
                              f"bytes; its offsets hold {end - begin}")
    return begin, end, name


def _decode(data: bytes, header: dict, base: int) -> dict[str, np.ndarray]:
    import ml_dtypes

    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        kind = DTYPES[e["dtype"]][0]
        dt = np.dtype(ml_dtypes.bfloat16 if kind == "bfloat16" else kind).newbyteorder("<")
        arr = np.frombuffer(data, dtype=dt, count=(end - begin) // dt.itemsize, offset=base + begin)
        out[name] = arr.reshape(e["shape"]).copy()
    return out

