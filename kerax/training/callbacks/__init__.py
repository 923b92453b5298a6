"""Callbacks: hooks into ``fit`` / ``evaluate`` / ``predict`` with Keras's names."""

from kerax.training.callbacks.backup import BackupAndRestore
from kerax.training.callbacks.base import Callback, CallbackList
from kerax.training.callbacks.checkpoint import ModelCheckpoint
from kerax.training.callbacks.logging import CSVLogger, History, LambdaCallback
from kerax.training.callbacks.monitor import (
    EarlyStopping,
    LearningRateScheduler,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from kerax.training.callbacks.tensorboard import TensorBoard  # imports tensorboardX only when built

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
