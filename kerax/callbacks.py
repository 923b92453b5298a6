"""``kx.callbacks``: the public names of the training callbacks."""

from kerax.training.callbacks import *  # noqa: F401,F403
from kerax.training.callbacks import __all__  # noqa: F401
