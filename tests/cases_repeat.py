"""Battery cases for layers.Repeat (blocks run by lax.scan over stacked weights)."""

from cases import Case
from kerax.layers.core import Dense
from kerax.layers.normalization import LayerNormalization
from kerax.layers.regularization import Dropout
from kerax.layers.repeat import Repeat
from kerax.models.sequential import Sequential

CASES = [
    Case("repeat_dense", lambda: Repeat(Dense(5, activation="tanh"), 3), (2, 5)),
    Case("repeat_sequential_dropout_remat",
         lambda: Repeat(Sequential([Dense(4), LayerNormalization(), Dropout(0.5)]), 2, remat=True), (2, 3, 4),
         training=True),
]
