"""The training level: ``TrainState``, the pure step builders, the fit loop and callbacks."""

from kerax.training.steps import make_eval_step, make_predict_step, make_train_step
from kerax.training.train_state import TrainState

__all__ = ["TrainState", "make_eval_step", "make_predict_step", "make_train_step"]
