"""The Keras facade: models that hold their weights and carry the Keras methods."""

from kerax.models.model import Model
from kerax.models.sequential import Sequential

__all__ = ["Model", "Sequential"]
