"""Keras-named optimizers that are optax gradient transformations.

Protocol: each optimizer is a frozen, hashable dataclass whose fields (Keras 3 names,
order and defaults) are its config, and it *is* an optax transformation:
``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``,
delegating to the transformation it builds. Equal configs compare and hash equal, so an
optimizer can be static data under ``jax.jit``.

That transformation is ``optax.inject_hyperparams`` around a chain of: Keras's gradient
clip (at most one of ``clipnorm``, per tensor; ``global_clipnorm``; ``clipvalue``), the optax
alias with Keras's options, and Keras's decoupled ``weight_decay``
(``w -= learning_rate * weight_decay * w``, with ``w`` before the step; needs ``params``).
``state.hyperparams["learning_rate"]`` holds the rate: ``get_learning_rate`` and
``set_learning_rate`` read and replace it inside any state (for ``ReduceLROnPlateau``).
``learning_rate`` may be a float, a ``kerax.schedules`` schedule or any optax schedule.

    >>> state = get("adam").init({"w": jnp.zeros(3)})
    >>> round(float(get_learning_rate(state)), 6)
    0.001
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from kerax import errors, schedules
from kerax.loss_scale import LossScaleOptimizer  # re-exported: kx.optimizers.LossScaleOptimizer
from kerax.schedules import LearningRate

_INJECT_STATES = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)
_UNIT = ("a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
_NONNEG = ("a finite number >= 0", lambda v: 0.0 <= v < math.inf)
_POS = ("a finite number > 0", lambda v: 0.0 < v < math.inf)
# Field name -> (what it must be, test), for every float field of every optimizer.
_RULES: types.MappingProxyType[str, tuple[str, Callable[[float], bool]]] = types.MappingProxyType({
    "momentum": _UNIT, "beta_1": _UNIT, "beta_2": _UNIT, "rho": _UNIT, "epsilon": _NONNEG,
    "initial_accumulator_value": _NONNEG, "weight_decay": _NONNEG,
    "clipnorm": _POS, "clipvalue": _POS, "global_clipnorm": _POS})
_CLIPS = ("clipnorm", "clipvalue", "global_clipnorm")
_COMMON = ("weight_decay",) + _CLIPS


def _clip_by_norm(max_norm: float) -> optax.GradientTransformation:
    """Keras ``clipnorm``: each tensor ``g`` becomes ``g * max_norm / max(|g|, max_norm)``."""
    per_tensor = optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: per_tensor.update(g, state)[0], updates), state

    return optax.GradientTransformation(per_tensor.init, update)


@dataclasses.dataclass(frozen=True, repr=False)
class Optimizer:
    """Base class; see the module docstring. A subclass declares ``learning_rate`` and its
    own fields and implements ``_transform(learning_rate, eps)``: the optax alias for the
    injected learning-rate array (``eps`` is ``None`` unless ``_epsilon`` schedules it)."""

    _: dataclasses.KW_ONLY
    weight_decay: float | None = None
    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None

    def __post_init__(self) -> None:
        who = type(self).__name__
        raw = getattr(self, "learning_rate")
        try:
            lr = schedules.get(raw)
        except errors.ConfigError as e:
            raise errors.ConfigError(f"{who}: {e}") from None
        if not callable(lr) and not (math.isfinite(lr) and lr > 0):
            raise errors.ConfigError(
                f"{who} expected learning_rate to be a float > 0 or a schedule; received "
                f"learning_rate={raw!r}.")
        object.__setattr__(self, "learning_rate", lr)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _RULES and not (value is None and f.default is None):
                expected, ok = _RULES[f.name]
                real = isinstance(value, numbers.Real) and not isinstance(value, bool)
                if not (real and ok(float(value))):
                    raise errors.ConfigError(f"{who} expected {f.name} to be {expected}; "
                                             f"received {f.name}={value!r}.")
                object.__setattr__(self, f.name, float(value))
            elif f.type == "bool" and not isinstance(value, bool):
                raise errors.ConfigError(f"{who} expected {f.name} to be a bool; "
                                         f"received {f.name}={value!r}.")
        clips = {name: getattr(self, name) for name in _CLIPS if getattr(self, name) is not None}
        if len(clips) > 1:
            raise errors.ConfigError(
                f"{who} expected at most one of clipnorm, clipvalue and global_clipnorm "
                f"(as Keras); received {', '.join(f'{k}={v}' for k, v in clips.items())}.")

    # -- the optax transformation ------------------------------------------------------
    def _transform(self, learning_rate: jax.Array, eps: Any) -> optax.GradientTransformation:
        raise NotImplementedError(f"{type(self).__name__} must implement _transform.")

    def _epsilon(self) -> Any:
        return None

    def _factory(self, learning_rate: jax.Array, eps: Any = None) -> Any:
        parts = []
        if self.clipnorm is not None:
            parts.append(_clip_by_norm(self.clipnorm))
        elif self.global_clipnorm is not None:
            parts.append(optax.clip_by_global_norm(self.global_clipnorm))
        elif self.clipvalue is not None:
            parts.append(optax.clip(self.clipvalue))
        parts.append(self._transform(learning_rate, eps))
        if self.weight_decay:
            parts.append(optax.add_decayed_weights(-learning_rate * self.weight_decay))
        return optax.chain(*parts) if len(parts) > 1 else parts[0]

    @functools.cached_property
    def _tx(self) -> optax.GradientTransformationExtraArgs:
        return optax.inject_hyperparams(self._factory)(
            learning_rate=self.learning_rate, eps=self._epsilon())

    def init(self, params: Any) -> Any:
        """Returns the optimizer state for ``params`` (an ``InjectStatefulHyperparamsState``)."""
        return self._tx.init(params)

    def update(self, updates: Any, state: Any, params: Any = None, **extra: Any) -> Any:
        """Turns gradients into updates to add to ``params``; returns ``(updates, state)``."""
        return self._tx.update(updates, state, params, **extra)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_tx"}  # _tx: closures

    # -- config ------------------------------------------------------------------------
    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        """Config keys in Keras's order: learning_rate, the optimizer's own, then clipping."""
        names = [f.name for f in dataclasses.fields(cls)]
        return tuple(n for n in names if n not in _COMMON) + tuple(n for n in names if n in _COMMON)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-able dict (a schedule as its config).

        Raises:
          ConfigError: ``learning_rate`` is a plain callable (an optax schedule).
        """
        config = {name: getattr(self, name) for name in self._field_names()}
        config["learning_rate"] = schedules.serialize(self.learning_rate)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Optimizer:
        """Builds an optimizer from ``get_config()`` output or a Keras 3 config (``name`` is
        dropped; EMA, loss-scale and accumulation keys only at their defaults).

        Raises:
          ConfigError: not a dict; unknown keys, unsupported Keras options, invalid values.
        """
        if not isinstance(config, Mapping):
            raise errors.ConfigError(f"{cls.__name__}.from_config expected a dict; received "
                                     f"config={config!r} of type {type(config).__name__}.")
        config = dict(config)
        for key, default in _KERAS_ONLY.items():
            value = config.pop(key, default)
            if default is not _ANY and value != default:
                raise errors.ConfigError(f"{cls.__name__} config has {key}={value!r}, a Keras "
                                         f"option kerax does not support; expected {default!r}.")
        valid = sorted(cls._field_names())
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise errors.ConfigError(f"{cls.__name__} expected config keys among {valid}; "
                                     f"received unknown key(s) {unknown}."
                                     f"{errors.suggest(unknown[0], valid)}")
        return cls(**config)

    def __repr__(self) -> str:
        fields = {f.name: f for f in dataclasses.fields(self)}
        shown = [f"learning_rate={self.learning_rate!r}"] + [
            f"{name}={getattr(self, name)!r}" for name in self._field_names()
            if name != "learning_rate" and getattr(self, name) != fields[name].default]
        return f"{type(self).__name__}({', '.join(shown)})"


_ANY = object()
# Keras 3 config keys with no kerax equivalent -> the value kerax accepts (_ANY: ignored).
_KERAS_ONLY: types.MappingProxyType[str, Any] = types.MappingProxyType({
    "name": _ANY, "use_ema": False, "ema_momentum": _ANY, "ema_overwrite_frequency": _ANY,
    "loss_scale_factor": None, "gradient_accumulation_steps": None, "jit_compile": _ANY,
    "is_legacy_optimizer": False,
})


@dataclasses.dataclass(frozen=True, repr=False)
class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum: ``optax.sgd``. Exact while the rate is constant;
    Keras's velocity ``v = momentum * v - lr * g`` holds past rates, optax's trace of ``g``
    is scaled by the current one, so they differ for a while after the rate changes."""

    learning_rate: LearningRate = 0.01
    momentum: float = 0.0
    nesterov: bool = False

    def _transform(self, learning_rate, eps):
        return optax.sgd(learning_rate, self.momentum or None, self.nesterov)


@dataclasses.dataclass(frozen=True, repr=False)
class Adam(Optimizer):
    """Adam as Keras computes it; ``amsgrad=True``: ``optax.amsgrad``.

    Keras adds ``epsilon`` to ``sqrt(v)`` before the bias correction ("epsilon hat"):
    ``w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)``, computed
    as written (:func:`_keras_adam`: one division per weight where ``optax.adam`` takes
    three); its inner state is ``optax.adam``'s. AMSGrad is ``optax.amsgrad`` with the
    epsilon scheduled as ``epsilon / sqrt(1 - beta_2**t)`` (``hyperparams["eps"]``), which
    makes it add epsilon where Keras does; it keeps the maximum of the bias-corrected ``v``,
    Keras of the raw ``v`` corrected with the current step; equal while ``v`` grows.
    Only AMSGrad holds that schedule: evaluating it every step cost plain Adam several
    small GPU kernels per step (see ``docs/performance.md``).
    """

    learning_rate: LearningRate = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False

    def _epsilon(self):
        if not self.amsgrad:
            return None
        eps, beta_2 = self.epsilon, self.beta_2
        return lambda count: eps / jnp.sqrt(1.0 - beta_2 ** (jnp.asarray(count, jnp.float32) + 1.0))

    def _transform(self, learning_rate, eps):
        if self.amsgrad:
            return optax.amsgrad(learning_rate, self.beta_1, self.beta_2, eps)
        return _keras_adam(learning_rate, self.beta_1, self.beta_2, self.epsilon)


def _keras_adam(learning_rate: jax.Array, beta_1: float, beta_2: float,
                epsilon: float) -> optax.GradientTransformation:
    """Keras's Adam step with ``optax.adam``'s state, ``(ScaleByAdamState, EmptyState)``."""

    def init(params):
        return optax.adam(learning_rate, beta_1, beta_2).init(params)

    def update(grads, state, params=None):
        del params
        adam, empty = state
        count = optax.safe_increment(adam.count)
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), adam.mu, grads)
        nu = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - beta_2), adam.nu, grads)
        alpha = learning_rate * jnp.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        updates = jax.tree.map(lambda m, v: (-alpha * m / (jnp.sqrt(v) + epsilon)).astype(m.dtype), mu, nu)
        return updates, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), empty)

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True, repr=False, init=False)
class AdamW(Adam):
    """Adam with Keras's decoupled weight decay (required, second argument, 0.004)."""

    weight_decay: float | None = 0.004

    def __init__(self, learning_rate: LearningRate = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None) -> None:
        for name, value in dict(locals()).items():
            if name not in ("self", "__class__"):
                object.__setattr__(self, name, value)
        self.__post_init__()


@dataclasses.dataclass(frozen=True, repr=False)
class RMSprop(Optimizer):
    """RMSprop: ``optax.rmsprop(eps_in_sqrt=True)``: Keras's ``lr * g / sqrt(v + epsilon)``."""

    learning_rate: LearningRate = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    centered: bool = False

    def _transform(self, learning_rate, eps):
        return optax.rmsprop(learning_rate, decay=self.rho, eps=self.epsilon, eps_in_sqrt=True,
                             centered=self.centered, momentum=self.momentum or None)


@dataclasses.dataclass(frozen=True, repr=False)
class Adagrad(Optimizer):
    """Adagrad: ``optax.adagrad``, Keras's ``lr * g / sqrt(a + epsilon)``. Exact."""

    learning_rate: LearningRate = 0.001
    initial_accumulator_value: float = 0.1
    epsilon: float = 1e-7

    def _transform(self, learning_rate, eps):
        return optax.adagrad(learning_rate, self.initial_accumulator_value, self.epsilon)


@dataclasses.dataclass(frozen=True, repr=False)
class Adadelta(Optimizer):
    """Adadelta: ``optax.adadelta``, Keras's rule (scaled by ``learning_rate``). Exact."""

    learning_rate: LearningRate = 0.001
    rho: float = 0.95
    epsilon: float = 1e-7

    def _transform(self, learning_rate, eps):
        return optax.adadelta(learning_rate, self.rho, self.epsilon)


@dataclasses.dataclass(frozen=True, repr=False)
class Adamax(Optimizer):
    """Adamax: ``optax.adamax``. Keras divides by ``max(beta_2 * u, |g|) + epsilon``, optax by
    ``u = max(beta_2 * u, |g| + epsilon)``: a relative difference of order ``epsilon / |g|``."""

    learning_rate: LearningRate = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def _transform(self, learning_rate, eps):
        return optax.adamax(learning_rate, self.beta_1, self.beta_2, self.epsilon)


@dataclasses.dataclass(frozen=True, repr=False)
class Nadam(Optimizer):
    """Nadam: ``optax.nadam``. Keras's formula with a constant momentum ``mu_t = beta_1``:
    Keras warms it up as ``beta_1 * (1 - 0.5 * 0.96**t)`` (0.47 at t=1 for 0.9, within 2%
    of ``beta_1`` after ~100 steps), so early steps differ."""

    learning_rate: LearningRate = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def _transform(self, learning_rate, eps):
        return optax.nadam(learning_rate, self.beta_1, self.beta_2, self.epsilon)


@dataclasses.dataclass(frozen=True, repr=False)
class Lion(Optimizer):
    """Lion: ``optax.lion`` (its own decay off; kerax adds Keras's ``weight_decay``). Exact."""

    learning_rate: LearningRate = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.99

    def _transform(self, learning_rate, eps):
        return optax.lion(learning_rate, self.beta_1, self.beta_2, weight_decay=0.0)


@dataclasses.dataclass(frozen=True, repr=False)
class Lamb(Optimizer):
    """LAMB: ``optax.lamb``. Exact without ``weight_decay``; with it, Keras's trust ratio uses
    ``|w|`` after the decay, kerax's before (a relative ``lr * weight_decay``)."""

    learning_rate: LearningRate = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-6

    def _transform(self, learning_rate, eps):
        return optax.lamb(learning_rate, self.beta_1, self.beta_2, self.epsilon)


# Name -> class: snake_case names, then the class names themselves.
_SNAKE_NAMES: types.MappingProxyType[str, type[Optimizer]] = types.MappingProxyType({
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
    "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam, "lion": Lion, "lamb": Lamb,
})
_BY_NAME: types.MappingProxyType[str, type[Optimizer]] = types.MappingProxyType({
    **_SNAKE_NAMES, **{cls.__name__: cls for cls in _SNAKE_NAMES.values()},
})
_DICT_KEYS = frozenset({"class_name", "config", "module", "registered_name"})


def names() -> tuple[str, ...]:
    """Returns the snake_case optimizer names (class names are accepted too), sorted."""
    return tuple(sorted(_SNAKE_NAMES))


def get(identifier: Any) -> Any:
    """Resolves an optimizer identifier.

    Args:
      identifier: a name (``"adam"`` or ``"Adam"``: Keras's defaults); an ``Optimizer`` or
        any optax transformation (an object with ``init`` and ``update``), returned as it
        is; an ``Optimizer`` class; or a config dict as ``serialize`` or Keras writes it
        (classes resolve only through this module's table).

    Raises:
      UnknownNameError: an unknown name or ``class_name``; the message lists valid names.
      ConfigError: a malformed dict or config, or a value of another type.
    """
    if isinstance(identifier, str):
        return _lookup(identifier)()
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, Mapping):
        extra = sorted(set(identifier) - _DICT_KEYS)
        if extra or not isinstance(identifier.get("class_name"), str):
            raise errors.ConfigError("Expected an optimizer config {'class_name': str, "
                                     f"'config': dict}}; received {dict(identifier)!r}.")
        name = identifier["class_name"]
        cls = LossScaleOptimizer if name == "LossScaleOptimizer" else _lookup(name)
        return cls.from_config(identifier.get("config") or {})
    if hasattr(identifier, "init") and hasattr(identifier, "update"):
        return identifier
    raise errors.ConfigError(
        "Expected an optimizer: a name such as 'adam', an optax GradientTransformation, a "
        f"kerax Optimizer or a config dict; received optimizer={identifier!r} of type "
        f"{type(identifier).__name__}.")


def _lookup(name: str) -> type[Optimizer]:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise errors.unknown_name("optimizer", name, _SNAKE_NAMES) from None


def serialize(optimizer: Any) -> dict[str, Any]:
    """Returns ``{"class_name": "Adam", "config": {...}}`` (or a LossScaleOptimizer's), which ``get`` rebuilds.

    Raises:
      ConfigError: ``optimizer`` is a raw optax transformation (it has no config), or its
        learning rate is a plain callable.
    """
    optimizer = get(optimizer)
    if isinstance(optimizer, (Optimizer, LossScaleOptimizer)):
        return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
    raise errors.ConfigError(
        f"Cannot serialize optimizer={optimizer!r}: a raw optax transformation has no config. "
        f"Use a kerax optimizer ({', '.join(names())}) to save it.")


def has_config(optimizer: Any) -> bool:
    """Whether ``serialize`` can write ``optimizer``: a kerax optimizer, bare or in a ``LossScaleOptimizer``."""
    inner = optimizer.inner_optimizer if isinstance(optimizer, LossScaleOptimizer) else optimizer
    return isinstance(inner, Optimizer)


def _lr_states(opt_state: Any) -> list[Any]:
    """Every InjectHyperparamsState inside ``opt_state`` that holds a learning rate."""
    leaves = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, _INJECT_STATES))
    found = [s for s in leaves
             if isinstance(s, _INJECT_STATES) and "learning_rate" in s.hyperparams]
    if len(found) != 1:
        what = "no injectable learning rate" if not found else f"{len(found)} learning rates"
        raise errors.ConfigError(
            f"The optimizer state has {what}; expected exactly one "
            "optax.inject_hyperparams state with hyperparams['learning_rate']. Build the "
            "optimizer with kerax.optimizers (e.g. kerax.optimizers.Adam(1e-3)) or "
            "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3).")
    return found


def get_learning_rate(opt_state: Any) -> jax.Array:
    """Returns the learning rate held in ``opt_state`` (found in any chain or wrapper); with
    a schedule, the rate of the most recent update (after ``init``: of the first one).

    Raises:
      ConfigError: the state holds no ``inject_hyperparams`` learning rate (e.g. a raw
        ``optax.adam`` state), or several.
    """
    return _lr_states(opt_state)[0].hyperparams["learning_rate"]


def set_learning_rate(opt_state: Any, value: jax.typing.ArrayLike) -> Any:
    """Returns ``opt_state`` with its learning rate replaced by ``value`` (jit-safe).

    Raises:
      ConfigError: the state holds no injectable learning rate, or several; the rate
        follows a schedule; or ``value`` is a negative or non-finite number.
    """
    (target,) = _lr_states(opt_state)
    if "learning_rate" in getattr(target, "hyperparams_states", {}):
        raise errors.ConfigError(
            "Cannot set the learning rate: it follows a schedule, which sets it at every step. "
            "Build the optimizer with a float learning_rate to change it during training.")
    if isinstance(value, numbers.Real) and not (math.isfinite(value) and value >= 0):
        raise errors.ConfigError("set_learning_rate expected a finite learning rate >= 0; "
                                 f"received value={value!r}.")
    old = target.hyperparams["learning_rate"]
    new = target._replace(hyperparams={**target.hyperparams,
                                       "learning_rate": jnp.asarray(value, jnp.result_type(old))})
    return jax.tree.map(lambda s: new if s is target else s, opt_state,
                        is_leaf=lambda x: isinstance(x, _INJECT_STATES))
