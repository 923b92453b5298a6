"""Turning user data (arrays, lists, dicts, iterables of batches) into batches for the loops.

User-facing: ``batches`` (arrays to seeded, shuffled batches, in ``fit``'s order),
``from_iterable`` (any loader to NumPy batches ``fit`` takes), and ``augment``: pure JAX
image augmentations (``random_flip``, ``random_crop``, ``random_translate``, ``compose``).
"""

from kerax.data import augment
from kerax.data.arrays import ArrayData, as_arrays, epoch_order
from kerax.data.augment import compose, random_crop, random_flip, random_translate
from kerax.data.batching import batches, from_iterable
from kerax.data.iterables import IterableData, as_data

__all__ = [
    "ArrayData",
    "IterableData",
    "as_arrays",
    "as_data",
    "augment",
    "batches",
    "compose",
    "epoch_order",
    "from_iterable",
    "random_crop",
    "random_flip",
    "random_translate",
]
