"""Readers for the IDX files of MNIST-style data sets and for Keras-style ``.npz`` archives.

IDX layout (big-endian): two zero bytes, a dtype code (0x08 = uint8), the number of
dimensions, one uint32 per dimension, then the values in C order. Images are
``0x00000803`` (uint8, 3 dims), labels ``0x00000801`` (uint8, 1 dim). A file may be
gzip-compressed; that is detected from its first bytes (1f 8b), not its name.

Every size is checked against the bytes actually present before anything is allocated
for the values, so a corrupt header cannot ask for gigabytes.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from kerax import errors

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK"
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
# The four files of an MNIST-style split, in the order load_data returns them.
SPLIT_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_CHUNK = 1 << 20


def _read_exactly(stream, n: int, path: Path) -> bytes:
    """Reads ``n`` bytes in chunks, so memory follows the data present, not the header."""
    parts, got = [], 0
    while got < n:
        block = stream.read(min(_CHUNK, n - got))
        if not block:
            break
        parts.append(block)
        got += len(block)
    if got < n:
        raise errors.CorruptFileError(
            f"{path}: truncated: the header declares {n} bytes of values, the file holds {got}")
    return b"".join(parts)


def _parse(stream, path: Path, expect_magic: int | None, size: int | None) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise errors.CorruptFileError(
            f"{path}: too short for an IDX header: expected at least 4 bytes, got {len(head)}")
    magic = int.from_bytes(head, "big")
    zero, code, ndim = head[:2], head[2], head[3]
    if zero != b"\0\0" or code not in IDX_DTYPES or ndim == 0 or (
            expect_magic is not None and magic != expect_magic):
        want = f"0x{expect_magic:08x}" if expect_magic is not None else "0x0000TTNN"
        raise errors.CorruptFileError(
            f"{path}: bad IDX magic number: expected {want}, got 0x{magic:08x}")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise errors.CorruptFileError(
            f"{path}: truncated header: expected {4 * ndim} bytes of dimensions, got {len(raw_dims)}")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = IDX_DTYPES[code]
    declared = int(np.prod(dims, dtype=object)) * dtype.itemsize  # object: no int64 overflow
    if size is not None:  # plain file: compare with its size before reading anything
        actual = size - 4 - 4 * ndim
        if actual != declared:
            raise errors.CorruptFileError(
                f"{path}: size mismatch: the header declares dims {dims} = {declared} bytes "
                f"of values, the file holds {actual}")
    data = _read_exactly(stream, declared, path)
    extra = len(stream.read(_CHUNK))
    if extra:
        raise errors.CorruptFileError(
            f"{path}: size mismatch: the header declares dims {dims} = {declared} bytes "
            f"of values, the file holds more (at least {extra} extra bytes)")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file, gzipped or not, into a native-endian array of its declared shape.

    Args:
      path: the file.
      expect_magic: when given, the exact magic number required (``IMAGES_MAGIC``,
        ``LABELS_MAGIC``).

    Raises:
      CorruptFileError: bad magic, truncated, extra bytes, or not valid gzip.
    """
    path = Path(path)
    try:
        if _head(path)[:2] == GZIP_MAGIC:
            with gzip.open(path, "rb") as stream:
                return _parse(stream, path, expect_magic, None)
        with open(path, "rb") as stream:
            return _parse(stream, path, expect_magic, os.fstat(stream.fileno()).st_size)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise errors.CorruptFileError(f"{path}: not a valid gzip stream ({e})") from None


def find_idx_split(directory: Path) -> tuple[list[Path], list[str]]:
    """Finds the four IDX files of a split in ``directory``, each plain or ``.gz``.

    Returns ``(found, missing)``: the paths found, and the names of the files missing.
    """
    found, missing = [], []
    for name in SPLIT_FILES:
        candidates = [directory / name, directory / f"{name}.gz"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found.append(hit)
    return found, missing


def _checked_pair(x: np.ndarray, y: np.ndarray, xname: str, yname: str, where: str,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype != np.uint8 or x.ndim != 3:
        raise errors.CorruptFileError(
            f"{where}: {xname} must be uint8 images of shape (n, rows, cols); "
            f"got {x.dtype} of shape {x.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise errors.CorruptFileError(
            f"{where}: {yname} must be integer labels of shape (n,); got {y.dtype} of shape {y.shape}")
    if len(x) != len(y):
        raise errors.CorruptFileError(
            f"{where}: {xname} holds {len(x)} images but {yname} holds {len(y)} labels; "
            "they must be equal")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise errors.CorruptFileError(
            f"{where}: {yname} must be class ids in [0, {num_classes}); "
            f"got values in [{y.min()}, {y.max()}]")
    return x, y.astype(np.uint8)


def read_idx_split(paths: list[Path], num_classes: int = 10):
    """Reads the four IDX files (as ``find_idx_split`` orders them) into Keras's structure.

    Returns ``((x_train, y_train), (x_test, y_test))``: uint8 images ``(n, rows, cols)``
    and uint8 labels ``(n,)``.
    """
    arrays = [read_idx(p, IMAGES_MAGIC if i % 2 == 0 else LABELS_MAGIC)
              for i, p in enumerate(paths)]
    train = _checked_pair(arrays[0], arrays[1], paths[0].name, paths[1].name,
                          str(paths[0].parent), num_classes)
    test = _checked_pair(arrays[2], arrays[3], paths[2].name, paths[3].name,
                         str(paths[2].parent), num_classes)
    return train, test


def read_npz_split(path: str | os.PathLike, num_classes: int = 10):
    """Reads a Keras-style ``.npz`` (``x_train, y_train, x_test, y_test``) without pickle.

    Returns ``((x_train, y_train), (x_test, y_test))`` as ``read_idx_split``.

    Raises:
      CorruptFileError: not a zip archive, a key missing, object arrays, bad shapes.
    """
    path = Path(path)
    if not is_zip(path):  # np.load would take a plain .npy (or try pickle) instead
        raise errors.CorruptFileError(f"{path}: not an .npz archive: expected a zip file "
                                      f"starting with b'PK', got {_head(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            present = sorted(archive.files)
            arrays = {k: archive[k] for k in NPZ_KEYS if k in present}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as e:
        # ValueError: object arrays (pickle refused) or a malformed array header.
        raise errors.CorruptFileError(f"{path}: not a readable .npz archive ({e})") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise errors.CorruptFileError(
            f"{path}: missing arrays {missing}: expected keys {list(NPZ_KEYS)}, found {present}")
    train = _checked_pair(arrays["x_train"], arrays["y_train"], "x_train", "y_train", str(path),
                          num_classes)
    test = _checked_pair(arrays["x_test"], arrays["y_test"], "x_test", "y_test", str(path),
                         num_classes)
    return train, test


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def is_zip(path: Path) -> bool:
    """True when the file starts with the zip signature (an ``.npz``)."""
    return _head(path)[:2] == ZIP_MAGIC
