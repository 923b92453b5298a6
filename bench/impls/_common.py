"""Timing shared by the implementations: a step loop over device-resident batches, and the
per-step times of a Keras-style ``fit`` derived from its epoch times.

Every implementation returns a result dict::

    {"setup_s": float,           # model construction, the initial weights, data to the device
     "first_step_s": float,      # the first call: trace + compile + one execution
     "step_times_s": [float],    # one per timed epoch: epoch time / optimizer steps
     "epoch_losses": [float],    # mean training loss of every epoch, the warm-up one first
     "losses": [float] | None,   # every step's loss, where the loop sees them
     "steps_per_call": int,      # optimizer steps per compiled call
     "notes": [str]}
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from typing import Any, Callable, Iterator

import numpy as np

# ``call(carry, feed) -> (carry, loss)``: loss is a scalar, or (k,) for k steps per call.
Call = Callable[[Any, Any], tuple[Any, Any]]


def settle() -> None:
    """Collects the garbage of set-up and compilation before the first timed epoch.

    A cyclic-GC pass over a process holding JAX takes 45-90 ms here; whichever
    implementation's set-up happened to leave the collector near its threshold paid it
    inside its first timed epoch (W5 times 16 steps: kerax's pure loop read 10 ms a step
    instead of 5 in two runs). Every implementation settles at the same point, after its
    warm-up epoch; garbage made while timed still counts. Quick runs time nothing and skip
    it (``skip_settling``): in a test process holding hundreds of tests' objects, a pass
    took 0.4-2 s, most of the quick mode's time in the test suite."""
    if _SETTLING[0]:
        gc.collect()


_SETTLING = [True]


@contextlib.contextmanager
def skip_settling(skip: bool = True) -> Iterator[None]:
    """Within it, ``settle`` does nothing (when ``skip``): for runs whose times nobody reads."""
    old = _SETTLING[0]
    _SETTLING[0] = not skip and old
    try:
        yield
    finally:
        _SETTLING[0] = old


class EpochClock:
    """Mixin for a framework's callback class: wall time of every epoch (from
    ``on_epoch_begin`` to ``on_epoch_end``) in ``self.times``; the heap is settled before
    the first timed epoch (the second)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        if len(self.times) == 1:
            settle()
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


class Unsupported(Exception):
    """This implementation cannot run this workload (the message says why)."""


def require_peer_support(w: Any) -> None:
    """Raises ``Unsupported`` for the workloads written for kerax and hand-written JAX only
    (``Workload.peers_run``); a peer framework calls it first."""
    if not w.peers_run:
        raise Unsupported(f"{w.name} is written for kerax and hand-written JAX only")


def timed_epochs(call: Call, carry: Any, feeds: list, epochs: int, steps_per_call: int = 1,
                 losses: list | None = None) -> tuple[Any, list[float]]:
    """``(carry, seconds per step of each epoch)``: ``epochs`` passes of ``call`` over
    ``feeds``, each timed up to its last loss being ready; the losses, still on the
    device, are appended to ``losses`` when given."""
    import jax

    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for feed in feeds:
            carry, loss = call(carry, feed)
            if losses is not None:
                losses.append(loss)
        jax.block_until_ready(loss)
        times.append((time.perf_counter() - t) / (len(feeds) * steps_per_call))
    return carry, times


def loop_run(call: Call, carry: Any, feeds: list, epochs: int, started: float, steps_per_call: int = 1) -> dict:
    """Runs one warm-up epoch and ``epochs`` timed epochs of ``call`` over ``feeds``.

    ``feeds`` are one epoch's inputs, already on the device, one per call; ``started`` is
    the ``time.perf_counter()`` at which the set-up began. The first call is timed on its
    own (compile included); the rest of the warm-up epoch is not timed. Losses stay on the
    device until the end, so timing never waits on a host copy.
    """
    import jax

    block = jax.block_until_ready
    losses: list = []
    t = time.perf_counter()
    setup = t - started
    carry, loss = call(carry, feeds[0])
    block(loss)
    first = time.perf_counter() - t
    losses.append(loss)
    for feed in feeds[1:]:
        carry, loss = call(carry, feed)
        losses.append(loss)
    block(loss)
    steps = len(feeds) * steps_per_call
    settle()
    carry, times = timed_epochs(call, carry, feeds, epochs, steps_per_call, losses)
    per_step = np.concatenate([np.atleast_1d(np.asarray(v, np.float64)) for v in losses])
    return {"setup_s": setup, "first_step_s": first, "step_times_s": times,
            "epoch_losses": per_step.reshape(epochs + 1, steps).mean(axis=1).tolist(),
            "losses": per_step.tolist(), "steps_per_call": steps_per_call, "notes": []}


def fit_result(setup_s: float, epoch_times: list[float], epoch_losses: list[float], steps: int,
               steps_per_call: int) -> dict:
    """The result of a ``fit`` over ``len(epoch_times)`` epochs of ``steps`` steps, after
    ``setup_s`` seconds of building the model and ``compile``.

    Steady state: each timed epoch's time / ``steps``. First step: the warm-up epoch's time
    less the steady time of its other calls, i.e. fit's set-up, the data transfer,
    compilation and the first call.
    """
    times = [t / steps for t in epoch_times[1:]]
    calls = steps // steps_per_call
    per_call = statistics.median(times) * steps_per_call
    first = max(epoch_times[0] - (calls - 1) * per_call, 0.0)
    return {"setup_s": setup_s, "first_step_s": first, "step_times_s": times,
            "epoch_losses": [float(v) for v in epoch_losses],
            "losses": None, "steps_per_call": steps_per_call,
            "notes": ["first step derived: warm-up epoch time minus its other calls at the steady rate"]}


def stacked(batches: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Groups of ``k`` consecutive batches stacked on a new leading axis."""
    return [(np.stack([b[0] for b in batches[i:i + k]]), np.stack([b[1] for b in batches[i:i + k]]))
            for i in range(0, len(batches), k)]
