"""Saving and loading: model files (.kerax), weight files (safetensors), Keras .weights.h5."""

from kerax.saving.keras_h5 import load_keras_weights
from kerax.saving.model_file import load_model, save_model
from kerax.saving.weights import load_weights, save_weights

__all__ = ["load_keras_weights", "load_model", "load_weights", "save_model", "save_weights"]
