"""Battery cases for the core, reshaping, regularization and merge layers."""

from jax.example_libraries import stax

from cases import Case
from kerax import layers

CASES = [
    Case("dense", lambda: layers.Dense(3), (2, 4)),
    Case("dense_relu_nobias", lambda: layers.Dense(5, activation="relu", use_bias=False), (2, 3)),
    Case("dense_rank3", lambda: layers.Dense(2, kernel_initializer="he_normal"), (2, 3, 4)),
    Case("activation", lambda: layers.Activation("gelu"), (2, 4)),
    Case("identity", lambda: layers.Identity(), (2, 3)),
    Case("embedding", lambda: layers.Embedding(10, 4), (2, 5), dtype="int32", int_high=10, grad=True),
    Case("lambda", lambda: layers.Lambda(_double), (2, 3),
         custom_objects=lambda layer: {"_double": layer.function}),
    Case("function_layer", lambda: layers.FunctionLayer(*stax.Dense(3)), (2, 4), exact_init=False,
         custom_objects=lambda layer: {"init_fun": layer.init_fn, "apply_fun": layer.apply_fn}),
    Case("dropout", lambda: layers.Dropout(0.3), (2, 6), training=True),
    Case("dropout_noise_shape", lambda: layers.Dropout(0.5, noise_shape=(None, 1, 3)), (2, 4, 3), training=True),
    Case("flatten", lambda: layers.Flatten(), (2, 3, 4)),
    Case("reshape", lambda: layers.Reshape((2, -1)), (2, 3, 4)),
    Case("permute", lambda: layers.Permute((2, 1)), (2, 3, 4)),
    Case("repeat_vector", lambda: layers.RepeatVector(3), (2, 4)),
    Case("add", lambda: layers.Add(), [(2, 3), (2, 3)]),
    Case("subtract", lambda: layers.Subtract(), [(2, 3), (2, 3)]),
    Case("multiply", lambda: layers.Multiply(), [(2, 3), (2, 3), (2, 3)]),
    Case("average", lambda: layers.Average(), [(2, 3), (2, 1)]),
    Case("maximum", lambda: layers.Maximum(), [(2, 3), (2, 3)]),
    Case("minimum", lambda: layers.Minimum(), [(2, 3), (2, 3)]),
    Case("concatenate", lambda: layers.Concatenate(axis=1), [(2, 3, 2), (2, 1, 2)]),
    Case("dot", lambda: layers.Dot(axes=1), [(2, 3), (2, 3)]),
    Case("dot_normalize", lambda: layers.Dot(axes=(2, 2), normalize=True), [(2, 3, 4), (2, 5, 4)]),
]


def _double(x):
    return 2.0 * x
