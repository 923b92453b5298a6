"""MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 grey levels.

``load_data`` returns what ``keras.datasets.mnist.load_data`` returns. The files come from
``path``, else from the cache ``$KERAX_HOME/datasets/mnist/``, else from a mirror
(checked against the published MD5 sums) unless ``KERAX_OFFLINE=1``.

This module also holds the loading policy shared with ``fashion_mnist``
(``IdxSource`` and ``load_idx_source``): any data set shipped as the four standard IDX files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from kerax import errors
from kerax.datasets import _cache, _idx

__all__ = ["load_data"]

Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class IdxSource:
    """Where an IDX data set comes from: its cache name, files with checksums, mirrors."""

    name: str  # cache sub-directory and the name in messages
    title: str
    files: tuple[tuple[str, str], ...]  # (file name, "md5:<hex>"), in SPLIT_FILES order
    mirrors: tuple[str, ...]
    npz_name: str  # a Keras-style archive accepted in place of the four files


MNIST = IdxSource(
    name="mnist",
    title="MNIST",
    files=(("train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
           ("train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432"),
           ("t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
           ("t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c")),
    mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/",
             "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    npz_name="mnist.npz",
)


def _not_found(source: IdxSource, directory: Path, missing: list[str], why: str):
    names = ", ".join(f"{m}.gz" for m in missing)
    return errors.DatasetNotFoundError(
        f"{source.title} files not found in {directory}: missing {names}. {why}\n"
        f"Put the files there (gzipped or not; the four standard IDX files "
        f"{', '.join(_idx.SPLIT_FILES)}), or a Keras-style {source.npz_name}, "
        f"or pass load_data(path=...) with a directory holding them or an .npz file. "
        f"The .gz files are at {' or '.join(source.mirrors)}")


def _load_path(source: IdxSource, path: Path) -> Split:
    if path.is_dir():
        found, missing = _idx.find_idx_split(path)
        if not missing:
            return _idx.read_idx_split(found)
        if (path / source.npz_name).is_file():
            return _idx.read_npz_split(path / source.npz_name)
        raise _not_found(source, path, missing, f"({path} was passed as path=.)")
    if path.is_file():
        if _idx.is_zip(path):
            return _idx.read_npz_split(path)
        raise errors.CorruptFileError(
            f"{path}: path= must be a directory of the four IDX files or an .npz archive; "
            "this file is not a zip archive")
    raise errors.DatasetNotFoundError(
        f"{source.title}: path={str(path)!r} does not exist; expected a directory of the four "
        f"IDX files ({', '.join(_idx.SPLIT_FILES)}, plain or .gz) or an .npz archive")


def load_idx_source(source: IdxSource, path: str | os.PathLike | None = None) -> Split:
    """Loads an IDX data set from ``path``, the cache, or a mirror, in that order.

    Raises:
      DatasetNotFoundError: no files and no download; the message says where to put which.
      CorruptFileError: the files are there but malformed.
    """
    if path is not None:
        return _load_path(source, Path(path).expanduser())
    directory = _cache.cache_dir(source.name)
    found, missing = _idx.find_idx_split(directory)
    if missing and (directory / source.npz_name).is_file():
        return _idx.read_npz_split(directory / source.npz_name)
    if missing:
        wanted = {n: c for n, c in source.files if n.removesuffix(".gz") in missing}
        problems = _cache.fetch_missing(directory, wanted, source.mirrors)
        found, missing = _idx.find_idx_split(directory)
        if missing:
            why = ("Not downloaded: KERAX_OFFLINE is set." if _cache.offline() else
                   f"Download failed: {problems[0]}"
                   + (f" (and {len(problems) - 1} more files)" if len(problems) > 1 else "") + ".")
            raise _not_found(source, directory, missing, why)
    return _idx.read_idx_split(found)


def load_data(path: str | os.PathLike | None = None) -> Split:
    """Loads MNIST as Keras does: ``((x_train, y_train), (x_test, y_test))``.

    Args:
      path: a directory holding the four IDX files (plain or ``.gz``), or a Keras-style
        ``mnist.npz``. ``None``: the cache ``$KERAX_HOME/datasets/mnist/``, downloading
        into it when the files are missing and ``KERAX_OFFLINE`` is not set.

    Returns:
      ``x_train`` uint8 ``(60000, 28, 28)``, ``y_train`` uint8 ``(60000,)``,
      ``x_test`` uint8 ``(10000, 28, 28)``, ``y_test`` uint8 ``(10000,)``; labels 0..9.

    Raises:
      DatasetNotFoundError: the files are absent and cannot be downloaded.
      CorruptFileError: a file is truncated, malformed or inconsistent.

    Example:
      >>> (x_train, y_train), (x_test, y_test) = kx.datasets.mnist.load_data()  # doctest: +SKIP
    """
    return load_idx_source(MNIST, path)
