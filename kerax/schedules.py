"""Learning-rate schedules with Keras 3 names, arguments and formulas.

Protocol: a schedule is called with the optimizer's step count (``0`` for the first
update; a Python int or an int32 array, traced or not) and returns the learning rate as a
float32 scalar ``jax.Array``. Each schedule is a frozen, hashable dataclass whose
constructor fields are its config, so it can be passed as ``learning_rate`` to any
``kerax.optimizers`` optimizer, to an optax alias, or through ``jax.jit``. Any optax
schedule (``optax.cosine_decay_schedule(...)``) is accepted wherever a schedule is.

    >>> sched = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    >>> round(float(sched(10)), 6)
    0.05
    >>> get(serialize(sched)) == sched
    True
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
from typing import Any, Callable, Mapping, Union

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from kerax import errors

#: What optimizers accept as ``learning_rate``: a constant or a ``step -> rate`` callable.
LearningRate = Union[float, Callable[[ArrayLike], ArrayLike]]


def _check(ok: bool, who: str, expected: str, received: str) -> None:
    """Raises ``ConfigError("<who> expected ...; received ...")`` unless ``ok``."""
    if not ok:
        raise errors.ConfigError(f"{who} expected {expected}; received {received}.")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class LearningRateSchedule:
    """Base class: a frozen dataclass called as ``schedule(step) -> float32 jax.Array``.

    A subclass declares its config as dataclass fields and implements ``_rate(step)``,
    which gets the step as a float32 array. Fields typed ``float`` are checked to be
    finite real numbers (ints stay ints, so ``decay_steps=1000`` round-trips as ``1000``).
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float) or (f.type == "float | None" and value is not None):
                _check(_is_real(value), type(self).__name__, f"{f.name} to be a finite number",
                       f"{f.name}={value!r}")
            if f.type == "bool":
                _check(isinstance(value, bool), type(self).__name__, f"{f.name} to be a bool",
                       f"{f.name}={value!r}")

    def __call__(self, step: ArrayLike) -> jax.Array:
        """Returns the learning rate at ``step`` (0 for the first update), as float32."""
        return jnp.asarray(self._rate(jnp.asarray(step, jnp.float32)), jnp.float32)

    def _rate(self, step: jax.Array) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} must implement _rate.")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-able dict."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LearningRateSchedule:
        """Builds a schedule from ``get_config()`` output (Keras's ``name`` key is dropped).

        Raises:
          ConfigError: ``config`` is not a dict, or has unknown keys or invalid values.
        """
        _check(isinstance(config, Mapping), f"{cls.__name__}.from_config", "a dict",
               f"config={config!r} of type {type(config).__name__}")
        config = {k: v for k, v in config.items() if k != "name"}
        valid = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(config) - set(valid))
        _check(not unknown, cls.__name__, f"config keys among {valid}", f"unknown key(s) {unknown}")
        return cls(**config)


def _check_steps(who: str, name: str, value: Any) -> None:
    _check(_is_real(value) and value > 0, who, f"{name} > 0", f"{name}={value!r}")


@dataclasses.dataclass(frozen=True)
class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; ``staircase`` floors
    the exponent. Computed by ``optax.exponential_decay``."""

    initial_learning_rate: float
    decay_steps: float
    decay_rate: float
    staircase: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_steps("ExponentialDecay", "decay_steps", self.decay_steps)
        _check(self.decay_rate > 0, "ExponentialDecay", "decay_rate > 0",
               f"decay_rate={self.decay_rate!r}")

    def _rate(self, step: jax.Array) -> jax.Array:
        return optax.exponential_decay(self.initial_learning_rate, self.decay_steps,
                                       self.decay_rate, staircase=self.staircase)(step)


@dataclasses.dataclass(frozen=True)
class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``; ``staircase``
    floors ``step / decay_steps``."""

    initial_learning_rate: float
    decay_steps: float
    decay_rate: float
    staircase: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_steps("InverseTimeDecay", "decay_steps", self.decay_steps)

    def _rate(self, step: jax.Array) -> jax.Array:
        p = step / self.decay_steps
        p = jnp.floor(p) if self.staircase else p
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)


@dataclasses.dataclass(frozen=True)
class PolynomialDecay(LearningRateSchedule):
    """From ``initial_learning_rate`` to ``end_learning_rate`` over ``decay_steps``:
    ``(initial - end) * (1 - min(step, decay_steps) / decay_steps) ** power + end``.

    With ``cycle=True`` the horizon is the first multiple of ``decay_steps`` not below
    ``step`` (``decay_steps`` itself at step 0), as in Keras. Without ``cycle`` this is
    ``optax.polynomial_schedule``.
    """

    initial_learning_rate: float
    decay_steps: float
    end_learning_rate: float = 0.0001
    power: float = 1.0
    cycle: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_steps("PolynomialDecay", "decay_steps", self.decay_steps)

    def _rate(self, step: jax.Array) -> jax.Array:
        if not self.cycle:
            return optax.polynomial_schedule(self.initial_learning_rate, self.end_learning_rate,
                                             self.power, self.decay_steps)(step)
        horizon = self.decay_steps * jnp.where(step == 0, 1.0,
                                               jnp.ceil(step / self.decay_steps))
        frac = 1.0 - step / horizon
        return ((self.initial_learning_rate - self.end_learning_rate) * frac ** self.power
                + self.end_learning_rate)


@dataclasses.dataclass(frozen=True)
class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary.

    ``boundaries`` must be strictly increasing and one shorter than ``values``.
    """

    boundaries: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        who = "PiecewiseConstantDecay"
        try:
            b, v = tuple(self.boundaries), tuple(self.values)
        except TypeError:
            b, v = (None,), ()
        _check(all(map(_is_real, b + v)), who, "boundaries and values to be lists of numbers",
               f"boundaries={self.boundaries!r}, values={self.values!r}")
        _check(len(b) == len(v) - 1, who, "len(boundaries) == len(values) - 1",
               f"boundaries of length {len(b)} and values of length {len(v)}")
        _check(all(x < y for x, y in zip(b, b[1:])), who,
               "strictly increasing boundaries", f"boundaries={list(b)}")
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "values", v)

    def _rate(self, step: jax.Array) -> jax.Array:
        index = jnp.sum(step > jnp.asarray(self.boundaries, jnp.float32))
        return jnp.asarray(self.values, jnp.float32)[index]


@dataclasses.dataclass(frozen=True)
class CosineDecay(LearningRateSchedule):
    """Cosine decay from the start rate to ``alpha`` times it over ``decay_steps``, after an
    optional linear warmup.

    Without ``warmup_target``: ``initial * ((1 - alpha) * c + alpha)``, with
    ``c = 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps))``
    (``optax.cosine_decay_schedule``). With ``warmup_target``: a linear ramp from
    ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps``
    (``optax.linear_schedule``), then the cosine decay from ``warmup_target``
    (joined with ``optax.join_schedules``).
    """

    initial_learning_rate: float
    decay_steps: float
    alpha: float = 0.0
    warmup_target: float | None = None
    warmup_steps: float = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_steps("CosineDecay", "decay_steps", self.decay_steps)
        _check(self.warmup_steps >= 0, "CosineDecay", "warmup_steps >= 0",
               f"warmup_steps={self.warmup_steps!r}")

    def _rate(self, step: jax.Array) -> jax.Array:
        if self.warmup_target is None:
            return optax.cosine_decay_schedule(self.initial_learning_rate, self.decay_steps,
                                               self.alpha)(step)
        decay = optax.cosine_decay_schedule(self.warmup_target, self.decay_steps, self.alpha)
        if self.warmup_steps == 0:
            return decay(step)
        warmup = optax.linear_schedule(self.initial_learning_rate, self.warmup_target,
                                       self.warmup_steps)
        return optax.join_schedules([warmup, decay], [self.warmup_steps])(step)


@dataclasses.dataclass(frozen=True)
class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR), Keras's formula.

    The first period lasts ``first_decay_steps``; each restart lasts ``t_mul`` times longer
    and peaks at ``m_mul`` times the previous peak:
    ``initial * ((1 - alpha) * m_mul**i * 0.5 * (1 + cos(pi * f)) + alpha)``, with ``i``
    the restart index and ``f`` the completed fraction of the current period.
    """

    initial_learning_rate: float
    first_decay_steps: float
    t_mul: float = 2.0
    m_mul: float = 1.0
    alpha: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_steps("CosineDecayRestarts", "first_decay_steps", self.first_decay_steps)
        _check(self.t_mul > 0, "CosineDecayRestarts", "t_mul > 0", f"t_mul={self.t_mul!r}")

    def _rate(self, step: jax.Array) -> jax.Array:
        fraction = step / self.first_decay_steps
        if self.t_mul == 1.0:
            restart = jnp.floor(fraction)
            fraction = fraction - restart
        else:
            restart = jnp.floor(jnp.log(1.0 - fraction * (1.0 - self.t_mul))
                                / math.log(self.t_mul))
            done = (1.0 - self.t_mul ** restart) / (1.0 - self.t_mul)
            fraction = (fraction - done) / self.t_mul ** restart
        cosine = 0.5 * self.m_mul ** restart * (1.0 + jnp.cos(math.pi * fraction))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


_BY_NAME: types.MappingProxyType[str, type[LearningRateSchedule]] = types.MappingProxyType({
    cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay, PolynomialDecay,
                                  PiecewiseConstantDecay, CosineDecay, CosineDecayRestarts)
})
_DICT_KEYS = frozenset({"class_name", "config", "module", "registered_name"})


def names() -> tuple[str, ...]:
    """Returns the schedule class names, sorted."""
    return tuple(sorted(_BY_NAME))


def get(identifier: Any) -> LearningRate:
    """Resolves a learning-rate identifier.

    Args:
      identifier: a number (returned as a Python ``float``), a ``LearningRateSchedule``, any
        ``step -> rate`` callable such as an optax schedule (returned as it is), or a
        config dict ``{"class_name": ..., "config": {...}}`` as ``serialize`` or Keras
        writes it (``module`` / ``registered_name`` are ignored; classes resolve only
        through this module's table).

    Raises:
      UnknownNameError: an unknown ``class_name``.
      ConfigError: a malformed dict, or a value of another type.
    """
    if isinstance(identifier, Mapping):
        extra = sorted(set(identifier) - _DICT_KEYS)
        if extra or not isinstance(identifier.get("class_name"), str):
            raise errors.ConfigError(
                "Expected a schedule config {'class_name': str, 'config': dict}; "
                f"received {dict(identifier)!r}.")
        cls = _BY_NAME.get(identifier["class_name"])
        if cls is None:
            raise errors.unknown_name("learning rate schedule", identifier["class_name"],
                                      _BY_NAME)
        return cls.from_config(identifier.get("config") or {})
    if callable(identifier) and not isinstance(identifier, type):
        return identifier
    if isinstance(identifier, bool) or not isinstance(identifier, (numbers.Real, jax.Array)):
        raise errors.ConfigError(
            "Expected a learning rate: a float, a schedule such as ExponentialDecay(...), a "
            f"step -> rate callable or a schedule config dict; received {identifier!r} of "
            f"type {type(identifier).__name__}.")
    return float(identifier)


def serialize(schedule: LearningRate) -> float | dict[str, Any]:
    """Returns a float as it is, or ``{"class_name": ..., "config": {...}}`` for a schedule.

    Raises:
      ConfigError: ``schedule`` is a plain callable (an optax schedule), which has no config.
    """
    if isinstance(schedule, LearningRateSchedule) and _BY_NAME.get(
            type(schedule).__name__) is type(schedule):
        return {"class_name": type(schedule).__name__, "config": schedule.get_config()}
    if callable(schedule):
        raise errors.ConfigError(
            f"Cannot serialize learning_rate={schedule!r}: a plain callable has no config. "
            f"Use one of kerax.schedules' classes ({', '.join(names())}) to save it.")
    return get(schedule)
