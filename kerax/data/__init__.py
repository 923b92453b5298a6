"""Turning user data (arrays, lists, dicts, iterables of batches) into batches for the loops."""

from kerax.data.arrays import ArrayData, as_arrays, epoch_order
from kerax.data.iterables import IterableData, as_data

__all__ = ["ArrayData", "IterableData", "as_arrays", "as_data", "epoch_order"]
