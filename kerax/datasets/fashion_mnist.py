"""Fashion-MNIST: 60,000 training and 10,000 test 28x28 images of 10 kinds of clothing.

A drop-in replacement for MNIST (same files, shapes and dtypes), and a harder one.
``load_data`` returns what ``keras.datasets.fashion_mnist.load_data`` returns; files come
from ``path``, the cache ``$KERAX_HOME/datasets/fashion_mnist/``, or a mirror (checked
against the published MD5 sums) unless ``KERAX_OFFLINE=1``.
"""

from __future__ import annotations

import os

from kerax.datasets.mnist import IdxSource, Split, load_idx_source

__all__ = ["CLASS_NAMES", "load_data"]

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

FASHION_MNIST = IdxSource(
    name="fashion_mnist",
    title="Fashion-MNIST",
    files=(("train-images-idx3-ubyte.gz", "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
           ("train-labels-idx1-ubyte.gz", "md5:25c81989df183df01b3e8a0aad5dffbe"),
           ("t10k-images-idx3-ubyte.gz", "md5:bef4ecab320f06d8554ea6380940ec79"),
           ("t10k-labels-idx1-ubyte.gz", "md5:bb300cfdad3c16e7a12a480ee83cd310")),
    # The S3 website endpoint serves plain HTTP only; the MD5 check guards integrity.
    mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
             "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    npz_name="fashion_mnist.npz",
)


def load_data(path: str | os.PathLike | None = None) -> Split:
    """Loads Fashion-MNIST as Keras does: ``((x_train, y_train), (x_test, y_test))``.

    Args:
      path: a directory holding the four IDX files (plain or ``.gz``), or a Keras-style
        ``.npz`` (``x_train, y_train, x_test, y_test``). ``None``: the cache
        ``$KERAX_HOME/datasets/fashion_mnist/``, downloading into it when needed.

    Returns:
      uint8 images ``(60000, 28, 28)`` / ``(10000, 28, 28)`` and uint8 labels 0..9
      (names in ``CLASS_NAMES``).

    Raises:
      DatasetNotFoundError: the files are absent and cannot be downloaded.
      CorruptFileError: a file is truncated, malformed or inconsistent.
    """
    return load_idx_source(FASHION_MNIST, path)
