"""``kx.checkpoint``: atomic training checkpoints of a whole ``TrainState``.

See :class:`CheckpointManager` and docs/checkpoints.md.
"""

from kerax.saving.checkpoint import FORMAT, CheckpointManager

__all__ = ["FORMAT", "CheckpointManager"]
