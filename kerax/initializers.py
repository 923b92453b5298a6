"""Weight initializers with Keras 3 names, defaults and distributions.

Protocol: ``init(key, shape, dtype=jnp.float32) -> jax.Array`` of that shape and dtype.
``key`` is a typed (``jax.random.key(0)``) or raw (``jax.random.PRNGKey(0)``) JAX PRNG key
and the only source of randomness: the same key gives the same values, and Keras's
``seed`` argument does not exist (``from_config`` drops it). Each initializer is a frozen,
hashable dataclass whose constructor fields are its config; fans follow Keras
(``compute_fans``): kernels are ``(in, out)`` or channels-last ``(*window, in, out)``.

    >>> init = get("he_normal")
    >>> init(jax.random.key(0), (3, 3, 16, 32)).shape
    (3, 3, 16, 32)
    >>> serialize(VarianceScaling(scale=2.0))["config"]["scale"]
    2.0
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import types
from typing import Any, Callable, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from kerax import errors
from kerax.core.rng import flat_sample

#: Any ``(key, shape, dtype) -> jax.Array`` function works where an initializer is expected.
InitializerFn = Callable[..., jax.Array]

# Keras divides the truncated normal's stddev by this, the stddev of a unit normal
# truncated to [-2, 2], so that the truncated draw has the intended variance.
_TRUNCATED_STDDEV = 0.87962566103423978


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """Returns ``(fan_in, fan_out)`` of a weight shape, as Keras computes them.

    Rank 0: ``(1, 1)``; rank 1: ``(n, n)``; rank 2: ``(in, out)``; rank > 2, a channels-last
    kernel ``(*window, in, out)``: both fans are multiplied by ``prod(window)``.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _check(ok: bool, who: str, expected: str, received: str) -> None:
    """Raises ``ConfigError("<who> expected ...; received ...")`` unless ``ok``."""
    if not ok:
        raise errors.ConfigError(f"{who} expected {expected}; received {received}.")


@dataclasses.dataclass(frozen=True)
class Initializer:
    """Base class: a frozen dataclass called as ``init(key, shape, dtype) -> jax.Array``.

    A subclass declares its config as dataclass fields (``float`` fields are checked to be
    finite and stored as ``float``) and implements ``_draw(key, shape, dtype)``, which gets
    the shape as a tuple and the dtype as ``np.dtype``. ``random = False`` marks those that
    ignore ``key`` and accept any dtype; the others require a floating dtype.
    """

    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.init and f.type in ("float", float):
                real = isinstance(value, numbers.Real) and not isinstance(value, bool)
                _check(real and math.isfinite(value), type(self).__name__,
                       f"{f.name} to be a finite real number",
                       f"{f.name}={value!r} of type {type(value).__name__}")
                object.__setattr__(self, f.name, float(value))

    def __call__(
        self, key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32
    ) -> jax.Array:
        """Returns a new array of ``shape`` and ``dtype``.

        Raises:
          ShapeError: ``shape`` is not a tuple of non-negative ints, or has a rank the
            initializer cannot fill.
          DTypeError: ``key`` is not a PRNG key, or ``dtype`` is not usable.
        """
        who = type(self).__name__
        try:
            dims = tuple(operator.index(d) for d in shape)
        except TypeError:
            dims = (-1,)
        if any(d < 0 for d in dims):
            raise errors.ShapeError(f"{who} expected shape to be a tuple of non-negative "
                                    f"ints such as (784, 128); received shape={shape!r}.")
        try:
            dt = jnp.dtype(dtype)
        except TypeError:
            dt = np.dtype(object)
        if dt == object or (self.random and not jnp.issubdtype(dt, jnp.floating)):
            kind = "a floating dtype such as float32" if self.random else "a numeric dtype"
            got = repr(dtype) if dt == object else dt.name
            raise errors.DTypeError(f"{who} expected {kind}; received dtype={got}.")
        key_dt = getattr(key, "dtype", None)  # typed key, or raw uint32 key data
        if self.random and not (key_dt is not None and (
                jax.dtypes.issubdtype(key_dt, jax.dtypes.prng_key)
                or (key_dt == np.uint32 and getattr(key, "ndim", 0) >= 1))):
            raise errors.DTypeError(f"{who} expected a JAX PRNG key such as jax.random.key(0); "
                                    f"received key={key!r} of type {type(key).__name__}.")
        return self._draw(key, dims, dt)

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} must implement _draw.")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-able dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Initializer:
        """Builds an initializer from ``get_config()`` output (a Keras ``seed`` is dropped).

        Raises:
          ConfigError: ``config`` is not a dict, or has unknown keys or invalid values.
        """
        _check(isinstance(config, Mapping), f"{cls.__name__}.from_config", "a dict",
               f"config={config!r} of type {type(config).__name__}")
        config = {k: v for k, v in config.items() if k != "seed"}
        valid = sorted(f.name for f in dataclasses.fields(cls) if f.init)
        unknown = sorted(set(config) - set(valid))
        expected = f"config keys among {valid}" if valid else "an empty config (fixed fields)"
        _check(not unknown, cls.__name__, expected, f"unknown key(s) {unknown}")
        return cls(**config)


def _fixed(value: Any) -> Any:
    """A preset's field: a fixed value, not a constructor argument, not in the config."""
    return dataclasses.field(default=value, init=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Constant(Initializer):
    """Every value equal to ``value``. ``key`` is ignored; any dtype works."""

    random: ClassVar[bool] = False
    value: float = 0.0

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        return jnp.full(shape, self.value, dtype)


@dataclasses.dataclass(frozen=True)
class Zeros(Constant):
    """All zeros. ``key`` is ignored; any dtype works."""

    value: float = _fixed(0.0)


@dataclasses.dataclass(frozen=True)
class Ones(Constant):
    """All ones. ``key`` is ignored; any dtype works."""

    value: float = _fixed(1.0)


@dataclasses.dataclass(frozen=True)
class RandomNormal(Initializer):
    """Normal distribution ``N(mean, stddev**2)``."""

    mean: float = 0.0
    stddev: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.stddev >= 0, type(self).__name__, "stddev >= 0", f"stddev={self.stddev}")

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        # The barrier keeps XLA from folding the scale into the sampler's own constants under
        # jit, which rounds differently from eager execution (init must be equal both ways).
        def sample(n):
            draw = self.stddev * jax.lax.optimization_barrier(jax.random.normal(key, n, dtype))
            return draw + self.mean if self.mean else draw

        return flat_sample(sample, shape)


@dataclasses.dataclass(frozen=True)
class TruncatedNormal(RandomNormal):
    """``N(mean, stddev**2)`` redrawn outside ``mean +- 2 * stddev`` (Keras semantics)."""

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        return flat_sample(lambda n: self.mean + self.stddev * jax.random.truncated_normal(key, -2.0, 2.0, n, dtype), shape)


@dataclasses.dataclass(frozen=True)
class RandomUniform(Initializer):
    """Uniform distribution on ``[minval, maxval)``."""

    minval: float = -0.05
    maxval: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.minval <= self.maxval, "RandomUniform", "minval <= maxval",
               f"minval={self.minval}, maxval={self.maxval}")

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        return flat_sample(lambda n: jax.random.uniform(key, n, dtype, self.minval, self.maxval), shape)


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


@dataclasses.dataclass(frozen=True)
class VarianceScaling(Initializer):
    """Variance ``scale / n``, with ``n`` the fan-in, the fan-out or their mean (``mode``).

    ``"truncated_normal"`` draws within 2 stddev, stddev
    ``sqrt(scale / n) / 0.87962566103423978``; ``"untruncated_normal"`` uses stddev
    ``sqrt(scale / n)``; ``"uniform"`` draws from ``[-limit, limit)``,
    ``limit = sqrt(3 * scale / n)``. ``n`` is at least 1. ``"normal"`` means
    ``"truncated_normal"``, as in Keras.
    """

    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self) -> None:
        super().__post_init__()
        who = type(self).__name__
        _check(self.scale > 0, who, "scale > 0", f"scale={self.scale}")
        _check(self.mode in _MODES, who, f"mode to be one of {', '.join(map(repr, _MODES))}",
               f"mode={self.mode!r}")
        dist = self.distribution.lower() if isinstance(self.distribution, str) else None
        dist = "truncated_normal" if dist == "normal" else dist
        _check(dist in _DISTRIBUTIONS, who,
               f"distribution to be one of {', '.join(map(repr, _DISTRIBUTIONS))}",
               f"distribution={self.distribution!r}")
        object.__setattr__(self, "distribution", dist)

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return flat_sample(lambda n: jax.random.uniform(key, n, dtype, -limit, limit), shape)
        if self.distribution == "untruncated_normal":
            return flat_sample(lambda n: math.sqrt(variance) * jax.random.normal(key, n, dtype), shape)
        stddev = math.sqrt(variance) / _TRUNCATED_STDDEV
        return flat_sample(lambda n: stddev * jax.random.truncated_normal(key, -2.0, 2.0, n, dtype), shape)


def _preset(scale: float, mode: str, distribution: str) -> Callable[[type], type]:
    """Class decorator: a VarianceScaling with fixed fields and an empty config."""

    def make(cls: type) -> type:
        cls.__annotations__ = {"scale": "float", "mode": "str", "distribution": "str"}
        cls.scale, cls.mode, cls.distribution = map(_fixed, (scale, mode, distribution))
        return dataclasses.dataclass(frozen=True)(cls)

    return make


@_preset(1.0, "fan_avg", "uniform")
class GlorotUniform(VarianceScaling):
    """Glorot (Xavier) uniform: ``VarianceScaling(1.0, "fan_avg", "uniform")``."""


@_preset(1.0, "fan_avg", "truncated_normal")
class GlorotNormal(VarianceScaling):
    """Glorot (Xavier) normal: ``VarianceScaling(1.0, "fan_avg", "truncated_normal")``."""


@_preset(2.0, "fan_in", "uniform")
class HeUniform(VarianceScaling):
    """He uniform: ``VarianceScaling(2.0, "fan_in", "uniform")``."""


@_preset(2.0, "fan_in", "truncated_normal")
class HeNormal(VarianceScaling):
    """He normal: ``VarianceScaling(2.0, "fan_in", "truncated_normal")``."""


@_preset(1.0, "fan_in", "uniform")
class LecunUniform(VarianceScaling):
    """LeCun uniform: ``VarianceScaling(1.0, "fan_in", "uniform")``."""


@_preset(1.0, "fan_in", "truncated_normal")
class LecunNormal(VarianceScaling):
    """LeCun normal: ``VarianceScaling(1.0, "fan_in", "truncated_normal")``."""


@dataclasses.dataclass(frozen=True)
class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain``, as Keras builds it.

    The shape is flattened to ``(prod(shape[:-1]), shape[-1])``; the QR decomposition of a
    normal draw gives ``Q``, whose columns are sign-fixed by ``diag(R)``, so for the
    flattened ``W``: ``W.T @ W = gain**2 * I`` (rows >= columns) or ``W @ W.T = gain**2 * I``.
    """

    gain: float = 1.0

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        if len(shape) < 2:
            raise errors.ShapeError(
                "Orthogonal expected a shape of rank >= 2 (a matrix or a kernel); "
                f"received shape={shape} of rank {len(shape)}."
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        work = dtype if dtype.itemsize >= 4 else np.dtype(np.float32)  # QR needs >= 32 bits
        a = flat_sample(lambda n: jax.random.normal(key, n, work), (max(rows, cols), min(rows, cols)))
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Identity(Initializer):
    """``gain`` times the identity matrix (``jnp.eye(rows, cols)``); 2-D shapes only."""

    random: ClassVar[bool] = False
    gain: float = 1.0

    def _draw(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        if len(shape) != 2:
            raise errors.ShapeError(
                "Identity expected a 2-D shape (rows, cols); "
                f"received shape={shape} of rank {len(shape)}."
            )
        return jnp.eye(*shape, dtype=dtype) * jnp.asarray(self.gain).astype(dtype)


# Name -> class: snake_case names, Keras's aliases, then the class names themselves.
_SNAKE_NAMES: types.MappingProxyType[str, type[Initializer]] = types.MappingProxyType({
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "random_normal": RandomNormal, "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
    "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal, "identity": Identity,
})
_BY_NAME: types.MappingProxyType[str, type[Initializer]] = types.MappingProxyType({
    **_SNAKE_NAMES,
    "zero": Zeros, "one": Ones, "normal": RandomNormal, "uniform": RandomUniform,
    "IdentityInitializer": Identity, "OrthogonalInitializer": Orthogonal,
    **{cls.__name__: cls for cls in _SNAKE_NAMES.values()},
})
_DICT_KEYS = frozenset({"class_name", "config", "module", "registered_name"})


def names() -> tuple[str, ...]:
    """Returns the snake_case initializer names (class names are accepted too), sorted."""
    return tuple(sorted(_SNAKE_NAMES))


def _lookup(name: str) -> type[Initializer]:
    """The class registered under ``name``, or an error listing the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise errors.unknown_name("initializer", name, _SNAKE_NAMES) from None


def get(identifier: Any) -> Initializer | InitializerFn | None:
    """Resolves an initializer identifier.

    Args:
      identifier: ``None``; a name (``"glorot_uniform"`` or ``"GlorotUniform"``), built
        with default arguments; a config dict ``{"class_name": ..., "config": {...}}`` (as
        ``serialize`` writes it; Keras's ``module`` / ``registered_name`` keys are
        ignored; the class resolves only through this module's name table); an
        ``Initializer`` instance or class; or a plain ``(key, shape, dtype)`` callable.

    Returns:
      The initializer (``None`` for ``None``).

    Raises:
      UnknownNameError: an unknown name or ``class_name``; the message lists valid names.
      ConfigError: a malformed dict or config, or a value of another type.
    """
    if identifier is None or isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        return _lookup(identifier)()
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, Mapping):
        extra = sorted(set(identifier) - _DICT_KEYS)
        if "class_name" not in identifier or extra or not isinstance(identifier["class_name"], str):
            raise errors.ConfigError(
                "Expected an initializer config {'class_name': str, 'config': dict}; "
                f"received {dict(identifier)!r}."
            )
        config = identifier.get("config")
        return _lookup(identifier["class_name"]).from_config({} if config is None else config)
    if callable(identifier) and not isinstance(identifier, type):
        return identifier
    raise errors.ConfigError(
        "Expected an initializer: a name such as 'glorot_uniform', a config dict, an "
        f"Initializer or a (key, shape, dtype) callable; received initializer={identifier!r} "
        f"of type {type(identifier).__name__}."
    )


def serialize(initializer: Initializer | str | None) -> dict[str, Any] | None:
    """Returns ``{"class_name": "GlorotUniform", "config": {...}}``, which ``get`` rebuilds.

    Raises:
      ConfigError: ``initializer`` is a plain function or a class kerax does not know.
    """
    if initializer is None:
        return None
    if isinstance(initializer, str):
        initializer = get(initializer)
    cls = type(initializer)
    if isinstance(initializer, Initializer) and _BY_NAME.get(cls.__name__) is cls:
        return {"class_name": cls.__name__, "config": initializer.get_config()}
    raise errors.ConfigError(
        f"Cannot serialize initializer={initializer!r}: only kerax's built-in initializers "
        "can be serialized. Pass a registered name (one of "
        + ", ".join(names())
        + ") or an instance of one of their classes."
    )
