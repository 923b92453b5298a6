"""``kx.Model``: the Keras facade over a pure combinator, holding the trained weights.

A model *is* a layer: ``init`` and ``apply`` delegate to its pure core (a
:class:`~kerax.core.Graph` here, a :class:`~kerax.core.Chain` for ``Sequential``), never
read the held weights, and let models nest inside other models. On top of that the model
is the one mutable object in kerax: after :meth:`build` (or ``fit``) it holds
``model.params`` and ``model.state``, and carries the Keras methods.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import numpy as np

from kerax import errors
from kerax.core import specs
from kerax.core.functional import Graph
from kerax.core.layer import Layer, check_name
from kerax.core.symbolic import is_symbolic
from kerax.models import weights
from kerax.models.trainer import TrainingMethods


class Model(TrainingMethods, Layer):
    """A functional model: ``kx.Model(inputs, outputs, name=None, dtype_policy=None)``.

    ``inputs`` and ``outputs`` are symbolic tensors (from ``kx.Input`` and layer calls),
    or lists or dicts of them; ``apply`` takes and returns the same structures.
    ``dtype_policy`` (``"mixed_bfloat16"``, ...) applies to the layers that set none; the
    outputs of ``apply`` are then float32 (see :mod:`kerax.mixed_precision`).

    Example::

        x = kx.Input(shape=(4,), name="x")
        y = layers.Dense(2)(layers.Dense(8, activation="relu")(x))
        model = kx.Model(x, y)
    """

    _facade = True

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None,
                 dtype_policy: str | None = None) -> None:
        if inputs is None or outputs is None:
            raise errors.ConfigError(
                "kx.Model needs inputs= and outputs= (symbolic tensors from kx.Input and "
                "layer calls); for a stack of layers use kx.Sequential"
            )
        self._init_facade(name, dtype_policy)
        self._core = Graph(inputs=inputs, outputs=outputs, name=name, dtype_policy=self.dtype_policy)

    def _init_facade(self, name: str | None, dtype_policy: str | None = None) -> None:
        from kerax import mixed_precision

        check_name(type(self).__name__, name)
        self.name = name
        self.input_shape = None
        self.dtype = None
        try:
            self.dtype_policy = None if dtype_policy is None else mixed_precision.name_of(dtype_policy)
        except errors.KeraxError as e:
            raise type(e)(f"{type(self).__name__}: {e.message}") from None
        self._live = False
        self._weights_version = 0
        self._params = None
        self._state = None
        self._weight_order = None
        self._input_spec = None
        self._init_training()

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "_ts" and value is None and self.__dict__.get("_live"):
            self._pull()  # the train state goes away: keep its weights as the held ones
        object.__setattr__(self, key, value)

    @classmethod
    def default_name(cls) -> str:
        return "functional" if cls is Model else super().default_name()

    # -- the pure protocol, delegated -----------------------------------------------------

    @property
    def core(self) -> Layer:
        """The pure combinator this model delegates ``init`` and ``apply`` to."""
        return self._core

    def init(self, rng, x):
        with self._naming_errors():
            return self.core.init(rng, x)

    uses_mask = True

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        from kerax import mixed_precision

        with self._naming_errors():
            y, new_state = self.core.apply(params, state, x, rng=rng, training=training, mask=mask)
        return mixed_precision.outputs_to_variable_dtype(self.dtype_policy, y), new_state

    def apply_masked(self, params, state, x, mask, *, rng=None, training=False, dtype_policy=None):
        extra = {} if dtype_policy is None else {"dtype_policy": dtype_policy}
        with self._naming_errors():
            return self.core.apply_masked(params, state, x, mask, rng=rng, training=training, **extra)

    def penalty(self, params):
        return self.core.penalty(params)

    @contextlib.contextmanager
    def _naming_errors(self):
        """Errors about the model's own inputs name the model, not its pure core."""
        try:
            yield
        except errors.KeraxError as e:
            if not e.path and e.layer_class == type(self.core).__name__:
                e.layer_class = type(self).__name__
                e.layer_name = self.name or self.default_name()
            raise

    def __call__(self, x: Any, training: bool = False) -> Any:
        """On symbolic tensors: a node of a bigger graph. On arrays: the outputs, computed
        with the held weights (``training=False`` unless asked)."""
        if is_symbolic(x):
            return Layer.__call__(self, x)
        y, _ = self.apply(self.params, self.state, x, training=training)
        return y

    # -- structure --------------------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        """The model's direct layers, in order (Input layers first for functional models)."""
        return list(self.core.layers)

    def layer_names(self) -> list[str]:
        return [self.core.layer_name(layer) for layer in self.core.layers]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The direct child layer called ``name`` (or at position ``index``)."""
        layers, names = self.layers, self.layer_names()
        if index is not None:
            if not -len(layers) <= index < len(layers):
                raise errors.LayerNameError(
                    f"get_layer: index {index} is out of range for a model with {len(layers)} layers"
                )
            return layers[index]
        if name in names:
            return layers[names.index(name)]
        raise errors.LayerNameError(
            f"get_layer: no layer named {name!r}.{errors.suggest(str(name), names)} "
            f"Layers: {names}"
        )

    @property
    def input_names(self) -> list[str]:
        return self.core.input_names

    # -- building and held weights ------------------------------------------------------------

    def _declared_specs(self, batch: int = 1) -> Any:
        """Specs for init from the declared input shapes (batch ``batch``)."""
        import jax.numpy as jnp

        tensors = jax.tree.leaves(self.core.inputs, is_leaf=lambda t: hasattr(t, "node"))
        made = [
            jax.ShapeDtypeStruct(specs.with_batch(t.shape, batch), jnp.dtype(t.dtype))
            for t in tensors
        ]
        treedef = jax.tree.structure(self.core.inputs, is_leaf=lambda t: hasattr(t, "node"))
        return jax.tree.unflatten(treedef, made)

    @property
    def built(self) -> bool:
        return self._params is not None

    def build(self, input_shape: Any = None, *, seed: int | jax.Array | None = None) -> None:
        """Creates the held weights for inputs of ``input_shape`` (batch axis included).

        Without ``input_shape`` the declared input shapes are used. ``seed`` defaults to
        the one from ``kx.utils.set_random_seed``, or a fresh random seed.
        """
        if input_shape is None:
            x = self._declared_specs()
        else:
            x = _specs_from_shapes(input_shape)
        self._build_from(x, seed)
        # New weights: the train state (the optimizer's moments, the step) was the old ones'.
        # Dropped only now: a build that fails keeps the model as it was.
        self._live, self._ts = False, None

    def _init_program(self, spec: Any) -> Any:
        """``jit``-ed ``key -> init(key, spec)``, compiled lean: equal layers initialised by
        one vmap (``grouped_init``), the threefry hashes merged (``merged_draws``). Drop it
        and call ``release_free_heap`` when done (see ``_build_from``)."""
        from kerax.core.grouped_init import init_grouped
        from kerax.core.merged_draws import merge_draws

        return jax.jit(merge_draws(lambda k: init_grouped(self.init, k, spec)))

    def _build_from(self, x: Any, seed: Any = None) -> None:
        from kerax.training.memory import memory_hints
        from kerax.training.steps import release_free_heap
        from kerax.utils import make_key

        key = make_key(seed)
        spec = specs.to_spec(x)
        order: list = []

        def traced(rng, x):
            p, s = self.init(rng, x)
            order.extend(weights.ordered_paths(p, s))
            return p, s

        shapes = jax.eval_shape(traced, key, spec)
        with memory_hints(self, "build", weights=shapes):
            params, state = jax.block_until_ready(self._init_program(spec)(key))
        # The program is gone now: hand its freed temporaries, executable and compile
        # scratch back to the OS, or they stay mapped under everything compiled later
        # (bench/ W5 with make_train_step: peak RSS 422-428 -> 378-386 MB, 3 processes).
        release_free_heap()
        self._weight_order = order
        self._live = False  # both held trees are replaced: nothing to read from a train state first
        self._params, self._state = params, state
        if isinstance(spec, jax.ShapeDtypeStruct):
            from kerax.core.symbolic import ShapeSpec

            self._input_spec = ShapeSpec((None, *spec.shape[1:]), spec.dtype)

    def _ensure_built(self) -> None:
        if self._params is None:
            try:
                self.build()
            except errors.ShapeError:
                raise errors.NotBuiltError(
                    f"model {self.name or self.default_name()!r} has no weights yet and its "
                    "input shape is not fully known; call model.build(input_shape) or fit it "
                    "first"
                ) from None

    # While ``fit`` trains, the freshest weights are those of the train state ``_ts``,
    # whose buffers each step donates; the held copies are made from it only when read
    # (``_live``), instead of after every epoch. Assigning the held weights bumps
    # ``_weights_version`` so that ``fit`` can tell a callback's assignment from a read.

    def _pull(self) -> None:
        from kerax.training.train_state import copy_tree

        params, state = copy_tree((self._ts.params, self._ts.state))  # first: a failed copy changes nothing
        self._live = False
        self.__dict__["_held_params"], self.__dict__["_held_state"] = params, state

    @property
    def _params(self) -> Any:
        if self._live:
            self._pull()
        return self.__dict__["_held_params"]

    def _pull_for_assignment(self) -> None:
        """Before one held tree is assigned: the other one read from the train state. A train
        state that cannot be read (a failed step took it) is dropped from following."""
        if self._live:
            try:
                self._pull()
            except Exception:  # noqa: BLE001 - the assignment replaces what could not be read
                self._live = False

    @_params.setter
    def _params(self, value: Any) -> None:
        self._pull_for_assignment()
        self.__dict__["_held_params"] = value
        self._weights_version += 1

    @property
    def _state(self) -> Any:
        if self._live:
            self._pull()
        return self.__dict__["_held_state"]

    @_state.setter
    def _state(self, value: Any) -> None:
        self._pull_for_assignment()
        self.__dict__["_held_state"] = value
        self._weights_version += 1

    @property
    def params(self) -> dict:
        """The held trainable weights (a nested dict keyed by layer names)."""
        self._ensure_built()
        return self._params

    @params.setter
    def params(self, value: dict) -> None:
        self._ensure_built()
        weights.check_tree("params", self._params, value)
        self._params = value

    @property
    def state(self) -> dict:
        """The held non-trainable values (BatchNormalization's statistics, ...)."""
        self._ensure_built()
        return self._state

    @state.setter
    def state(self, value: dict) -> None:
        self._ensure_built()
        weights.check_tree("state", self._state, value)
        self._state = value

    def get_weights(self) -> list[np.ndarray]:
        """The held weights as a flat list of NumPy arrays, in Keras order (layer by layer,
        each layer's trainable weights first, in creation order)."""
        self._ensure_built()
        return [np.asarray(a) for a in weights.gather(self._params, self._state, self._weight_order)]

    def set_weights(self, values: list) -> None:
        """Sets the held weights from a list in :meth:`get_weights` order."""
        self._ensure_built()
        self._params, self._state = weights.scatter(
            self._params, self._state, self._weight_order, values
        )

    def count_params(self) -> int:
        """Total number of values in params and state."""
        return weights.count(self.params) + weights.count(self.state)

    def summary(self, print_fn: Callable[[str], Any] | None = None, line_length: int | None = None) -> None:
        """Prints a Keras-style table: layer (type), output shape, param count, totals."""
        from kerax.models.summary import summary_text

        text = summary_text(self, line_length=line_length)
        (print_fn or print)(text)

    # -- config -------------------------------------------------------------------------------

    def get_config(self) -> dict:
        config = self.core.get_config()
        config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Model":
        core = Graph.from_config(config, custom_objects)
        model = cls.__new__(cls)
        model._init_facade(config.get("name"), config.get("dtype_policy"))
        model._core = core
        return model

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or self.default_name()!r}>"


def _specs_from_shapes(shape: Any) -> Any:
    """A shape (tuple of ints), or a list/dict of shapes -> ShapeDtypeStructs (float32)."""
    import jax.numpy as jnp

    def is_shape(s: Any) -> bool:
        return isinstance(s, (tuple, list)) and all(isinstance(d, int) or d is None for d in s)

    if is_shape(shape):
        return jax.ShapeDtypeStruct(specs.with_batch(shape, shape[0] or 1), jnp.float32)
    if isinstance(shape, dict):
        return {k: _specs_from_shapes(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)):
        return [_specs_from_shapes(s) for s in shape]
    raise errors.ConfigError(f"build: input_shape must be a shape tuple (batch first); received {shape!r}")


