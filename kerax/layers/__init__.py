"""Every public layer, one family per module."""

from kerax.core.symbolic import InputLayer
from kerax.layers.core import Activation, Dense, Embedding, FunctionLayer, Identity, Lambda
from kerax.layers.merge import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from kerax.layers.regularization import Dropout
from kerax.layers.reshaping import Flatten, Permute, RepeatVector, Reshape

__all__ = [
    "Activation",
    "Add",
    "Average",
    "Concatenate",
    "Dense",
    "Dot",
    "Dropout",
    "Embedding",
    "Flatten",
    "FunctionLayer",
    "Identity",
    "InputLayer",
    "Lambda",
    "Maximum",
    "Minimum",
    "Multiply",
    "Permute",
    "RepeatVector",
    "Reshape",
    "Subtract",
    "add",
    "average",
    "concatenate",
    "dot",
    "maximum",
    "minimum",
    "multiply",
    "subtract",
]
