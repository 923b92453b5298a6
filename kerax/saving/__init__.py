"""Saving and loading: weight files (safetensors)."""

from kerax.saving.weights import load_weights, save_weights

__all__ = ["load_weights", "save_weights"]
