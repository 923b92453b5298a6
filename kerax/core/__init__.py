"""The pure core: the layer protocol, naming, RNG rules, symbolic graphs, combinators.

Nothing here imports the Keras shell (``kerax.models``, ``kerax.training``, ...) or keeps
module-level mutable state. See ``docs/design.md``.
"""

from kerax.core.functional import Graph
from kerax.core.layer import Layer, snake_case
from kerax.core.registry import register_layer
from kerax.core.rng import derive
from kerax.core.sequential import Chain
from kerax.core.specs import to_spec
from kerax.core.symbolic import Input, InputLayer, SymbolicTensor

__all__ = [
    "Chain",
    "Graph",
    "Input",
    "InputLayer",
    "Layer",
    "SymbolicTensor",
    "derive",
    "register_layer",
    "snake_case",
    "to_spec",
]
