"""Data parallelism on many devices and many processes: ``DataParallel``, ``initialize``."""

from kerax.distribute.data_parallel import DataParallel, replicate, shard_batch, unreplicate
from kerax.distribute.multiprocess import initialize, is_chief

__all__ = ["DataParallel", "initialize", "is_chief", "replicate", "shard_batch", "unreplicate"]
