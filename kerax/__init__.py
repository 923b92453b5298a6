"""kerax: the Keras workflow on a pure functional JAX core.

The curated public API. The pure core: ``kx.Layer``, ``kx.layers``, ``kx.activations``,
``kx.initializers``; the Keras facade: ``kx.Sequential``, ``kx.Model``, ``kx.Input``.
"""

from kerax import activations, errors, initializers, layers, utils
from kerax.core import Chain, Graph, Input, Layer, SymbolicTensor, register_layer
from kerax.models import Model, Sequential

__version__ = "0.1.0"

__all__ = [
    "Chain",
    "Graph",
    "Input",
    "Layer",
    "Model",
    "Sequential",
    "SymbolicTensor",
    "__version__",
    "activations",
    "errors",
    "initializers",
    "layers",
    "register_layer",
    "utils",
]
