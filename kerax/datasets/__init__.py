"""Small real data sets that work offline, and loaders for the standard files of bigger ones.

- ``load_digits()``: the 1,797 8x8 digits bundled with scikit-learn; never downloads.
- ``mnist.load_data()``, ``fashion_mnist.load_data()``: as in Keras, from IDX files or an
  ``.npz`` in ``path=``, the cache ``cache_dir(name)``, or a checksummed download.
- ``text.load_corpus()``: a character-level corpus (standard-library docstrings by default).

Set ``KERAX_HOME`` to move the cache (default ``~/.kerax``), ``KERAX_OFFLINE=1`` to forbid
downloads. See ``docs/datasets.md``.
"""

from kerax.datasets import fashion_mnist, mnist, text
from kerax.datasets._cache import cache_dir
from kerax.datasets.digits import load_digits

__all__ = ["cache_dir", "fashion_mnist", "load_digits", "mnist", "text"]
