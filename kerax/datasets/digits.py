"""The 1,797 real 8x8 handwritten digits that scikit-learn ships, split for training.

The file is read straight from scikit-learn's install (``sklearn/datasets/data/
digits.csv.gz``, 64 pixel values 0..16 and the label per row) without importing
scikit-learn, which would take seconds. No network is ever needed.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np

from kerax import errors

__all__ = ["load_digits"]

N_SAMPLES = 1797
CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)  # of digits 0..9


def digits_file() -> Path:
    """Returns the path of scikit-learn's ``digits.csv.gz``.

    Raises:
      DatasetNotFoundError: scikit-learn is not installed, or its copy lacks the file.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise errors.DatasetNotFoundError(
            "load_digits reads the digits file bundled with scikit-learn, which is not "
            "installed: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise errors.DatasetNotFoundError(
            f"scikit-learn is installed but {path} is missing; reinstall it: "
            "pip install --force-reinstall scikit-learn")
    return path


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError) as e:
        raise errors.CorruptFileError(f"{path}: not a readable digits table ({e})") from None
    if table.shape != (N_SAMPLES, 65):
        raise errors.CorruptFileError(
            f"{path}: expected a table of shape ({N_SAMPLES}, 65), got {table.shape}")
    return table[:, :64], table[:, 64].astype(np.int32)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns sorted (train, test) row indices with each class split in proportion.

    The test set holds ``ceil(test_fraction * n)`` rows; each class gets the floor of its
    share and the rows left over go to the classes with the largest remainders (ties to the
    smaller class id), so every class keeps its proportion to within one row.
    """
    classes, counts = np.unique(y, return_counts=True)
    n_test = math.ceil(test_fraction * len(y))
    share = test_fraction * counts
    per_class = np.floor(share).astype(int)
    leftover = n_test - int(per_class.sum())
    order = np.lexsort((classes, -(share - per_class)))  # largest remainder first
    per_class[order[:leftover]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k]
                           for c, k in zip(classes, per_class)])
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """Loads the 8x8 digits as ``((x_train, y_train), (x_test, y_test))``, split by class.

    Args:
      test_fraction: share of the rows held out, in (0, 1); the default gives 1437 / 360.
      seed: seeds the split; the same seed gives the same split on every machine.

    Returns:
      ``x`` float32 ``(n, 8, 8, 1)`` in [0, 1] (the raw 0..16 values / 16) and ``y`` int32
      ``(n,)`` in 0..9; rows keep the file's order within each part.

    Raises:
      ConfigError: ``test_fraction`` outside (0, 1) or leaving a part empty.
      DatasetNotFoundError: scikit-learn is not installed.

    Example:
      >>> (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
      >>> x_train.shape, x_test.shape
      ((1437, 8, 8, 1), (360, 8, 8, 1))
    """
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise errors.ConfigError(f"test_fraction must be in (0, 1); received {test_fraction!r}")
    n_test = math.ceil(test_fraction * N_SAMPLES)
    if n_test >= N_SAMPLES:
        raise errors.ConfigError(
            f"test_fraction={test_fraction!r} leaves no training rows: {n_test} of {N_SAMPLES} "
            "would be test rows")
    pixels, y = _read(digits_file())
    x = (pixels / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    train, test = stratified_split(y, test_fraction, seed)
    return (x[train], y[train]), (x[test], y[test])
