"""Privacy accounting for DP-SGD: the epsilon spent, by Renyi DP (``dp-accounting``).

Each DP-SGD step is a Poisson-subsampled Gaussian mechanism (sample rate ``q = batch /
n``, noise multiplier ``sigma``); ``compute_epsilon`` composes ``steps`` of them with the
RDP accountant of Google's ``dp-accounting`` package (Mironov 2017; Mironov, Talwar & Zhang
2019) and converts to ``(epsilon, delta)``-DP. The package is imported only when asked::

    pip install "kerax[privacy]"        # or: pip install dp-accounting

``fit`` with ``compile(dp=...)`` records what it ran in ``model``'s privacy ledger;
:func:`privacy_spent` turns the ledger into ``(epsilon, delta)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Sequence

from kerax import errors

INSTALL_HINT = 'pip install "kerax[privacy]"'


def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as e:
        raise ImportError(
            "privacy accounting needs the dp-accounting package, which is not installed; "
            f"install it with: {INSTALL_HINT}") from e
    return dp_accounting


@dataclasses.dataclass(frozen=True)
class Segment:
    """``steps`` DP-SGD steps at one sample rate and (effective) noise multiplier.

    ``sample_rate`` is None when the data set's size was unknown (an iterable)."""

    steps: int
    noise_multiplier: float
    sample_rate: float | None


def _check(steps: Any, noise_multiplier: Any, sample_rate: Any, delta: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise errors.ConfigError(f"compute_epsilon: steps must be an int >= 0; received {steps!r}")
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, numbers.Real) \
            or not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise errors.ConfigError(
            f"compute_epsilon: noise_multiplier must be a finite number >= 0; received {noise_multiplier!r}")
    if not isinstance(sample_rate, numbers.Real) or not 0 < sample_rate <= 1:
        raise errors.ConfigError(f"compute_epsilon: sample_rate must be in (0, 1]; received {sample_rate!r}")
    if not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise errors.ConfigError(f"compute_epsilon: delta must be in (0, 1); received {delta!r}")


def delta_warning(delta: Any, n: int | None) -> str | None:
    """The warning for a ``delta`` that is not below ``1 / n``, or None.

    A mechanism that publishes each of ``n`` examples with probability ``delta`` is
    ``(0, delta)``-DP; with ``delta >= 1 / n`` it may publish a whole example, so such an
    ``(epsilon, delta)`` promises little, whatever epsilon is."""
    if not n or not isinstance(delta, numbers.Real) or delta < 1.0 / n:
        return None
    return (f"DP-SGD: delta={delta:g} is not below 1/n = {1.0 / n:g} (n={n} training examples); such a "
            "delta allows leaking whole examples whatever epsilon is; pick delta < 1/n, e.g. "
            f"DPSGD(..., delta={_below(n):g})")


def _below(n: int) -> float:
    """A round delta below ``1 / n``: the power of ten under it."""
    return 10.0 ** math.floor(math.log10(1.0 / n) - 1e-9) if n > 1 else 0.1


def compose_epsilon(segments: Sequence[Segment], delta: float) -> float:
    """The epsilon at ``delta`` of running every segment in turn (RDP composition).

    Raises:
      ConfigError: a segment with an unknown sample rate, or values out of range.
      ImportError: ``dp-accounting`` is not installed.
    """
    for s in segments:
        if s.sample_rate is None:
            raise errors.ConfigError(
                f"the privacy ledger holds {s.steps} steps on a data set of unknown size (an "
                "iterable); compute epsilon with kx.privacy.compute_epsilon(steps, "
                "noise_multiplier, batch_size / n, delta)")
        _check(s.steps, s.noise_multiplier, s.sample_rate, delta)
    segments = [s for s in segments if s.steps > 0]
    if not segments:
        return 0.0
    if any(s.noise_multiplier == 0 for s in segments):
        return math.inf
    dpa = _dp_accounting()
    accountant = dpa.rdp.RdpAccountant()
    for s in segments:
        event = dpa.PoissonSampledDpEvent(s.sample_rate, dpa.GaussianDpEvent(s.noise_multiplier))
        accountant.compose(event, int(s.steps))
    return float(accountant.get_epsilon(delta))


def compute_epsilon(steps: int, noise_multiplier: float, sample_rate: float, delta: float) -> float:
    """The epsilon of ``steps`` Poisson-subsampled Gaussian steps, at ``delta``.

    Args:
      steps: number of DP-SGD steps (``epochs * ceil(n / batch_size)``).
      noise_multiplier: noise std divided by the sensitivity (``sigma``; for microbatches
        of several examples use ``sigma / 2``, see ``DPSGD.effective_noise``).
      sample_rate: ``batch_size / n``.
      delta: the target delta, in (0, 1); usually below ``1 / n``.

    Returns:
      epsilon (0 for no steps, ``inf`` without noise).

    Raises:
      ConfigError: a value out of range. ImportError: ``dp-accounting`` is missing.

    Example (TensorFlow Privacy's MNIST tutorial setting)::

        kx.privacy.compute_epsilon(14063, 1.1, 256 / 60000, 1e-5)
    """
    _check(steps, noise_multiplier, sample_rate, delta)
    return compose_epsilon([Segment(int(steps), float(noise_multiplier), float(sample_rate))], delta)


@dataclasses.dataclass(frozen=True)
class PrivacySpent:
    """``(epsilon, delta)`` after ``steps`` DP-SGD steps (``fit`` puts one in ``history.privacy``)."""

    epsilon: float
    delta: float
    steps: int

    def __str__(self) -> str:
        return f"DP-SGD: (epsilon = {self.epsilon:.4g}, delta = {self.delta:g}) after {self.steps} steps"


def ledger_of(model: Any) -> tuple[Segment, ...]:
    """The DP-SGD steps behind ``model``'s weights: those of its finished ``fit`` calls
    and, during a DP ``fit``, that fit's steps so far (what ``save``, backups and a
    callback's ``privacy_spent`` see). Saved with the model and in backups."""
    ledger = tuple(getattr(model, "_privacy_ledger", ()))
    running = getattr(model, "_dp_running", None)  # set by fit: () -> (noise, rate, n)
    steps = getattr(model, "_steps_executed", 0) - getattr(model, "_fit_steps_base", 0)
    if running is not None and steps > 0:
        noise, rate, _ = running()
        ledger = extend(ledger, Segment(steps, noise, rate))
    return ledger


def extend(ledger: tuple[Segment, ...], segment: Segment) -> tuple[Segment, ...]:
    """``ledger`` with ``segment`` appended, merged into the last segment when both have
    the same noise and sample rate (composing a and b such steps is composing a + b)."""
    if ledger and (ledger[-1].noise_multiplier, ledger[-1].sample_rate) == (segment.noise_multiplier,
                                                                           segment.sample_rate):
        return ledger[:-1] + (Segment(ledger[-1].steps + segment.steps, segment.noise_multiplier,
                                      segment.sample_rate),)
    return ledger + (segment,)


def ledger_to_json(ledger: Sequence[Segment]) -> list[list]:
    """``[[steps, noise_multiplier, sample_rate | None], ...]``: the ledger as JSON values."""
    return [[int(s.steps), float(s.noise_multiplier), None if s.sample_rate is None else float(s.sample_rate)]
            for s in ledger]


def ledger_from_json(value: Any) -> tuple[Segment, ...]:
    """The ledger ``ledger_to_json`` wrote; ``ConfigError`` naming the bad entry otherwise."""
    def real(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(value, list):
        raise errors.ConfigError(f"privacy ledger: expected a list of [steps, noise_multiplier, sample_rate]; "
                                 f"received {type(value).__name__}")
    out = []
    for i, entry in enumerate(value):
        ok = isinstance(entry, list) and len(entry) == 3
        steps, noise, rate = entry if ok else (None, None, None)
        ok = ok and isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0
        ok = ok and real(noise) and noise >= 0 and (rate is None or (real(rate) and 0 < rate <= 1))
        if not ok:
            raise errors.ConfigError(f"privacy ledger entry {i}: expected [steps >= 0, noise_multiplier >= 0, "
                                     f"sample_rate in (0, 1] or null]; received {entry!r}")
        out.append(Segment(steps, float(noise), None if rate is None else float(rate)))
    return tuple(out)


def privacy_spent(model: Any, delta: float | None = None) -> PrivacySpent:
    """The ``(epsilon, delta)`` of every DP-SGD ``fit`` of ``model`` so far, composed.

    ``delta`` defaults to the compiled ``DPSGD``'s ``delta`` (for ``load_model(...,
    compile=False)``, the saved one's; else 1e-5). The ledger counts
    the DP-SGD steps that led to the model's weights: ``save`` / ``load_model`` carry it,
    and a ``fit`` resumed by ``BackupAndRestore`` counts the steps before the backup (not
    those of the interrupted attempt after it, whose weights were dropped). ``set_weights``
    or ``load_weights`` from elsewhere do not.

    Raises:
      ConfigError: a fit on a data set of unknown size. ImportError: no ``dp-accounting``.
    """
    if delta is None:  # the compiled DPSGD's, or that of the file an uncompiled model came from
        dp = getattr(getattr(model, "_compiled", None), "dp", None)
        delta = dp.delta if dp is not None else getattr(model, "_privacy_delta", 1e-5)
    ledger = ledger_of(model)
    return PrivacySpent(compose_epsilon(ledger, delta), float(delta), sum(s.steps for s in ledger))
