"""kerax: the Keras workflow on a pure functional JAX core.

The curated public API. The pure core: ``kx.Layer``, ``kx.layers``, ``kx.activations``,
``kx.initializers``; the Keras facade: ``kx.Sequential``, ``kx.Model``, ``kx.Input``.
"""

from kerax import (
    activations,
    callbacks,
    checkpoint,
    data,
    datasets,
    distribute,
    errors,
    initializers,
    layers,
    losses,
    metrics,
    mixed_precision,
    optimizers,
    privacy,
    regularizers,
    schedules,
    utils,
)
from kerax.core import Chain, Graph, Input, Layer, SymbolicTensor, register_layer
from kerax.models import Model, Sequential
from kerax.models.quantize import quantize
from kerax.saving import load_model
from kerax.training import TrainState, make_eval_step, make_predict_step, make_train_step
from kerax.training.ensemble import vmap_train_step

__version__ = "0.1.0"

__all__ = [
    "Chain",
    "Graph",
    "Input",
    "Layer",
    "Model",
    "Sequential",
    "SymbolicTensor",
    "TrainState",
    "__version__",
    "activations",
    "callbacks",
    "checkpoint",
    "data",
    "datasets",
    "distribute",
    "errors",
    "initializers",
    "layers",
    "load_model",
    "losses",
    "make_eval_step",
    "make_predict_step",
    "make_train_step",
    "metrics",
    "mixed_precision",
    "optimizers",
    "privacy",
    "quantize",
    "register_layer",
    "regularizers",
    "schedules",
    "utils",
    "vmap_train_step",
]
