"""The ``fit`` loop: epochs of compiled steps, callbacks, validation, progress.

Per execution (``steps_per_execution`` optimizer steps) the loop sends nothing for
in-memory data, which lives on the device (unshuffled: cut into its executions once;
shuffled: gathered by the epoch's index table), or the next batches (iterables), and keeps a
bounded number of executions in flight (:class:`InFlight`): it waits for an older one's
small token before going on, once per ``depth`` executions (for data on the device, about
once per 0.1 s of device work). Metrics stay on
the device; they are copied to the host only when the progress bar refreshes, when a
callback asks for per-batch logs, and at the end of each epoch.
"""

from __future__ import annotations

import collections
import math
import time
import warnings
from typing import Any

import jax
import numpy as np

from kerax import errors
from kerax.data import ArrayData, IterableData, epoch_order
from kerax.training import setup
from kerax.training.callbacks import CallbackList, History, TerminateOnNaN
from kerax.training.callbacks.progress import Progress, resolve_verbose
from kerax.training.evaluation import EvalCut
from kerax.training.memory import broken, data_hints
from kerax.training.objectives import NAN_KEY
from kerax.training.packed import Packed
from kerax.training.steps import debugging, release_free_heap
from kerax.training.train_state import copy_tree, fresh
from kerax.utils import default_seed


def _copy(tree: Any) -> Any:
    return copy_tree(tree)


# An adapting queue (data already on the device) lets the host wake about once per this
# much device work, within [MIN_DEPTH, MAX_DEPTH] executions of the older half.
WAKE_PERIOD_S = 0.1
MIN_DEPTH, MAX_DEPTH = 2, 128


def in_flight_depth(distributed: bool = False, streamed: bool = False) -> int:
    """How many executions ``fit`` waits on at once (:class:`InFlight`): between ``depth``
    and ``2 * depth`` are in flight, and the host wakes once per ``depth``.

    2 when each execution brings its own batch (``streamed``: iterables, data-parallel
    host batches), which the bound keeps few in memory, and for data parallelism, whose
    simulated devices must not stall each other in collectives. For data already on the
    device, 4 is only where an adapting queue starts (:func:`wake_period`): its first wait,
    after 8 executions, times them and sets the depth."""
    return 2 if distributed or streamed else 4


def wake_period(distributed: bool = False, streamed: bool = False) -> float | None:
    """``InFlight``'s ``period`` for a source: :data:`WAKE_PERIOD_S` for data already on
    one device (the depth adapts to the step time), None (a fixed depth) otherwise.

    A fixed depth suits no step time: 16 executions of a CNN on CPU (0.16 s each) let the
    host run seconds ahead of training, while a 0.6 ms step would wake the host every
    10 ms (docs/performance.md)."""
    return None if distributed or streamed else WAKE_PERIOD_S


class InFlight:
    """The tokens of queued executions, oldest first: :meth:`push` waits for the older half
    at once when ``2 * depth`` are queued, so the host wakes once per ``depth`` executions.

    With ``period`` (seconds), each wait also measures how long the executions it waited
    through took (since the previous wait returned, or since the first push after
    :meth:`restart`) and sets ``depth`` to the number that take ``period`` (within
    ``MIN_DEPTH`` and ``MAX_DEPTH``): the host then wakes about once per ``period`` of
    device work, and stays at most about ``2 * period`` ahead. ``clock`` is for tests."""

    def __init__(self, depth: int, period: float | None = None, clock: Any = time.perf_counter) -> None:
        self.depth, self.period, self.clock = depth, period, clock
        self.tokens: collections.deque = collections.deque()
        self.since: float | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def restart(self, depth: int, period: float | None = None) -> None:
        """A new run of executions (an epoch), after the previous ones finished: an adapting
        queue keeps the depth it learned, unless ``period`` changes."""
        if period is None or period != self.period:
            self.depth = depth
        self.period, self.since = period, None
        self.tokens.clear()

    def push(self, token: Any) -> None:
        self.tokens.append(token)
        if self.since is None and self.period is not None:  # the device has work from now on
            self.since = self.clock()
        if len(self.tokens) < 2 * self.depth:
            return
        done = self.depth
        for _ in range(done - 1):  # executions finish in order: the newest of them suffices
            self.tokens.popleft()
        self.tokens.popleft().block_until_ready()
        if self.period is None:
            return
        now = self.clock()  # ``done`` executions ran, back to back, since ``since``
        each = max((now - self.since) / done, 1e-9)
        self.depth = min(max(int(self.period / each), MIN_DEPTH), MAX_DEPTH)
        self.since = now


def index_groups(order: np.ndarray, batch_size: int, k: int, steps: int | None) -> list[np.ndarray]:
    """Rows of an epoch grouped as executions: arrays of shape (k', batch) (k' <= k),
    full batches first, then the last partial batch on its own."""
    n = len(order)
    full = n // batch_size
    batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(full)]
    if n % batch_size:
        batches.append(order[full * batch_size:])
    if steps is not None:
        batches = batches[:steps]
    groups, i = [], 0
    while i < len(batches):
        same = [b for b in batches[i:i + k] if len(b) == len(batches[i])]
        groups.append(np.stack(same))
        i += len(same)
    return groups


def index_tables(order: np.ndarray, batch_size: int, k: int, steps: int | None) -> list[np.ndarray]:
    """The executions of :func:`index_groups` as few tables (G, k', batch'): the runs of
    equally shaped executions stacked, so an epoch's indices go to the device at once."""
    n = len(order)
    full = n // batch_size
    used = full if steps is None else min(full, steps)
    main = order[:used * batch_size].reshape(used, batch_size)
    g = used // k
    tables = [main[:g * k].reshape(g, k, batch_size)] if g else []
    if used % k:
        tables.append(main[g * k:][None])
    if n % batch_size and (steps is None or steps > full):
        tables.append(order[full * batch_size:][None, None])
    return tables


class _Cut:
    """Unshuffled in-memory data, cut into the epoch's executions once: ``(k', batch, ...)``
    stacks on the device, fed as they are every epoch, so the step gathers no rows. On
    XLA:CPU the row gather of W1's (128, 784) batch out of the whole array cost about 60 us
    of a 1.5 ms step; shuffled data still needs it (its index tables, below)."""

    def __init__(self, data: ArrayData, batch_size: int, k: int, steps: int | None) -> None:
        self.data, self._tables_source = data, None
        self.tables = index_tables(np.arange(data.n), batch_size, k, steps)
        sw = data.sample_weight
        host = (data.x, data.y, None if sw is None else np.asarray(sw, np.float32))
        cuts = []
        for table in self.tables:
            for rows in table:  # (k', batch') consecutive rows
                start, end = int(rows[0, 0]), int(rows[0, 0]) + rows.size
                cuts.append(jax.tree.map(lambda a: a[start:end].reshape(rows.shape + a.shape[1:]), host))
        with data_hints("the training data", setup.nbytes(data)):
            self.executions = jax.device_put(cuts)

    def feed(self):
        for data in self.executions:
            yield data, None, jax.tree.leaves(data)[0].shape[0], None

    def tables_source(self) -> tuple:
        """The whole arrays on the device, for an epoch resumed part-way (fed by tables)."""
        if self._tables_source is None:
            self._tables_source = (setup.to_device(self.data), self.data.n)
        return self._tables_source


class _Trainer:
    """One ``fit`` call's state: the train step, data on device, callbacks."""

    def __init__(self, model: Any, step: Any, callbacks: CallbackList, verbose: int, max_bad: int) -> None:
        self.model, self.step, self.callbacks = model, step, callbacks
        self.verbose, self.max_bad = verbose, max_bad
        self.dp = step.distribute
        self.batch_logs = callbacks.wants("on_train_batch_end")
        self.batch_begin = callbacks.wants("on_train_batch_begin")
        self.pending = InFlight(in_flight_depth())  # restarted per epoch for its source (epoch)
        self.compiling: Any = None  # the thread compiling the first execution (TrainStep.precompile)
        # on_nan="skip": the run of non-finite steps the last epoch ended with (the metric
        # state, where the step counts them, starts afresh each epoch)
        self.carried_bad, self.epoch_start = 0.0, 0

    def execute(self, mstate: dict, data: Any, idx: Any, k: int, mask: Any = None) -> dict:
        if self.batch_begin:
            self.callbacks.on_train_batch_begin(self.batch, None)
        if self.dp is None and self.model._weights_version != self.version:  # a callback set them
            self.ts = self.ts.replace(params=_copy(self.model._params), state=_copy(self.model._state))
            self.version = self.model._weights_version
        self.join_compile()
        ts, mstate, token = self.step.run(self.ts, mstate, data, idx, mask)
        self.ts, self.token = ts, token
        # Counted on the host as soon as the execution is dispatched: the privacy ledger
        # must count these steps even if fit stops before the train state can be read.
        self.model._steps_executed = getattr(self.model, "_steps_executed", 0) + k
        if token is None:  # the packed metric state, not donated, is the small output to wait on
            token = mstate.vectors[0]
        if self.dp is None:
            self.model._ts, self.model._live = ts, True  # callbacks may read the weights between steps
        self.pending.push(token)
        if self.batch_logs:
            self.callbacks.on_train_batch_end(self.batch, setup.host_logs(self.step.compute(mstate)))
        self.batch += k
        return mstate

    def keep_train_state(self) -> None:
        """After an error mid-epoch under ``distribute``: the model takes the newest train
        state, as it does after every execution without ``distribute``. The one it held since
        the epoch began was donated to the first step (its arrays are deleted)."""
        ts = getattr(self, "ts", None)
        if self.dp is None or ts is None:
            return
        if any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(ts)):
            return  # the error came from a step that had taken it: nothing newer is left
        self.model._ts = self.dp.unreplicate(ts)
        self.model._live = True

    def join_compile(self) -> None:
        """Waits for the precompile thread, if any: before the first step, and when ``fit``
        ends (a daemon thread still inside XLA at interpreter exit aborts the process)."""
        if self.compiling is not None:
            self.compiling.join()
            self.compiling = None
            # The compile's scratch lies freed in that thread's malloc arena, which the main
            # thread never reuses: handed back, W1's peak RSS fell by about 13 MB (8 runs).
            release_free_heap()

    def _table_feed(self, device_data: Any, tables: list[np.ndarray]):
        """(data, (table, pos), k, None) per execution: one transfer for the epoch's
        indices; each execution returns the next position, so nothing is sent per step."""
        on_device = jax.device_put([(t.astype(np.int32), np.int32(0)) for t in tables])
        for t, (table, pos) in zip(tables, on_device):
            for _ in range(t.shape[0]):
                yield device_data, (table, pos), t.shape[1], None
                pos = self.token

    def check_nan(self, mstate: dict) -> bool:
        """True when training must stop; raises after too many consecutive bad steps (a run
        that began in an earlier epoch included)."""
        counts = mstate.host()[NAN_KEY].reshape(-1, 2)[0]  # same on every device
        total, consecutive = float(counts[0]), float(counts[1])
        if consecutive >= self.batch - self.epoch_start:  # every step of this epoch so far was bad
            consecutive += self.carried_bad
        self.consecutive = consecutive
        if self.step.on_nan == "skip" and consecutive >= self.max_bad:
            raise errors.NonFiniteLossError(
                f"{int(consecutive)} consecutive steps had a non-finite loss or gradient "
                f"(limit max_consecutive_nonfinite={self.max_bad}); none of them was applied"
            )
        return self.step.on_nan == "stop" and total > 0

    def epoch(self, epoch: int, epochs: int, source: Any, steps: int | None, batch_size: int,
              shuffle: bool, seed: int) -> tuple[dict, bool]:
        mstate = self.step.init_metrics()
        self.ts = self.model._ts if self.dp is None else self.dp.replicate(self.model._ts)
        self.version = self.model._weights_version
        if self.dp is not None:
            mstate = self.dp.replicate(mstate)
        # A mid-epoch resume (BackupAndRestore(save_freq=N)) skips the batches already done.
        skip, self.model._resume_batch = getattr(self.model, "_resume_batch", None) or 0, None
        if isinstance(source, _Cut) and skip:
            source = source.tables_source()
        if skip and not isinstance(source, (ArrayData, tuple, _Cut)):
            raise errors.ConfigError("resuming in the middle of an epoch needs in-memory arrays; "
                                     "use BackupAndRestore(save_freq='epoch') with an iterable")
        if skip and steps is not None:
            steps = max(steps - skip, 0)
        self.batch = self.epoch_start = skip
        total = None
        if isinstance(source, ArrayData):  # data parallel: host batches split over devices
            groups = index_groups(epoch_order(source.n, shuffle, seed, epoch)[skip * batch_size:], batch_size, self.step.k, steps)
            total = sum(len(g) for g in groups)
            feed = (self.dp.shard_batch(jax.tree.map(lambda a: a[g], (source.x, source.y, source.sample_weight)),
                                        stacked=True) + (len(g),) for g in groups)
            feed = ((data, None, k, mask) for data, mask, k in feed)
        elif isinstance(source, _Cut):  # unshuffled in-memory data, already cut
            total = sum(t.shape[0] * t.shape[1] for t in source.tables)
            feed = source.feed()
        elif isinstance(source, tuple):  # in-memory data on the device
            device_data, n = source
            tables = index_tables(epoch_order(n, shuffle, seed, epoch)[skip * batch_size:], batch_size, self.step.k, steps)
            total = sum(t.shape[0] * t.shape[1] for t in tables)
            feed = self._table_feed(device_data, tables)
        else:
            total = steps
            feed = _iterable_feed(source, steps, self.step.k, self.dp)
        kind = (self.dp is not None, not isinstance(source, (tuple, _Cut)))
        self.pending.restart(in_flight_depth(*kind), wake_period(*kind))
        progress = Progress(self.verbose, total, f"Epoch {epoch + 1}/{epochs}")
        halted = False
        for data, idx, k, mask in feed:
            mstate = self.execute(mstate, data, idx, k, mask)
            progress.update(k, lambda: self.step.compute(mstate))
            if self.step.on_nan != "warn" and self.check_nan(mstate):
                halted = True
                break
        logs = self.step.compute(mstate)
        values, vectors = jax.device_get((list(logs.values()), mstate.vectors))  # one transfer
        counts = Packed(vectors, mstate.layout)[NAN_KEY]
        logs = setup.host_logs(dict(zip(logs, values)))  # Keras's order (pytrees sort dict keys)
        self.model._ts = self.ts if self.dp is None else self.dp.unreplicate(self.ts)
        halted = (halted or self.check_nan(mstate)) if self.step.on_nan != "warn" else False
        if self.step.on_nan != "warn":
            self.carried_bad = self.consecutive
        if halted or (self.step.on_nan == "skip" and self.batch > self.epoch_start
                      and self.consecutive >= self.batch - self.epoch_start):
            # The epoch met a non-finite loss and stopped, or skipped every step: its loss is
            # not the mean of good steps (none, or the ones before the stop).
            logs["loss"] = float("nan")
        bad = float(np.asarray(counts).reshape(-1, 2)[0, 0])
        if bad and self.step.on_nan == "warn":
            warnings.warn(f"epoch {epoch + 1}: {int(bad)} step(s) had a non-finite loss or gradient", stacklevel=4)
        if self.step.on_nan == "skip":  # every epoch, 0 included: History's lists stay aligned
            logs["skipped_steps"] = bad
        self.progress = progress
        return logs, halted


def _iterable_feed(source: IterableData, steps: int | None, k: int, dp: Any = None):
    """(stacked batches, None, count, mask) groups of up to k batches of equal shape."""
    group: list[ArrayData] = []

    def flush():
        xs = [(b.x, b.y, b.sample_weight) for b in group]
        stacked = jax.tree.map(lambda *a: np.stack(a), *xs)
        if dp is not None:
            data, mask = dp.shard_batch(stacked, stacked=True)
            return data, None, len(group), mask
        return jax.device_put(stacked), None, len(group), None

    for batch in source.epoch(steps):
        if group and (batch.n != group[0].n or len(group) == k):
            yield flush()
            group = []
        group.append(batch)
    if group:
        yield flush()


def fit(model: Any, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
        verbose: Any = "auto", callbacks: list | None = None, validation_split: float = 0.0,
        validation_data: Any = None, shuffle: bool = True, class_weight: dict | None = None,
        sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
        validation_steps: int | None = None, validation_batch_size: int | None = None,
        validation_freq: int = 1, seed: int | None = None, check_finite_inputs: bool = False) -> History:
    """Keras's ``fit``; see ``Model.fit``."""
    compiled = setup.require_compiled(model, "fit")
    batch_size = setup.check_fit_args(batch_size, epochs, initial_epoch, steps_per_epoch, validation_steps,
                                      validation_freq, seed, shuffle)
    seed = default_seed() if seed is None else int(seed)
    data = setup.prepare(model, x, y, sample_weight, class_weight, "x")
    val = None
    if validation_split:
        if not isinstance(data, ArrayData):
            raise errors.DataError("validation_split needs in-memory arrays; pass validation_data for an iterable")
        data, val = data.split(validation_split)
    if validation_data is not None:
        val = _validation(model, validation_data)
    if isinstance(data, ArrayData) and check_finite_inputs:
        data.check_finite()

    first = data if isinstance(data, ArrayData) else data.peek()
    setup.build_if_needed(model, first.x, seed)
    objectives = setup.objectives_for(model, compiled, first.x)
    setup.check_targets(objectives, model, first)
    if isinstance(data, ArrayData) and val is not None and isinstance(val, ArrayData):
        setup.check_targets(objectives, model, val)

    user_callbacks = list(callbacks or [])
    on_nan = "stop" if any(isinstance(c, TerminateOnNaN) for c in user_callbacks) else compiled.on_nan
    step = setup.train_step_for(model, compiled, objectives, on_nan)

    history = History()
    verbose = resolve_verbose(verbose) if jax.process_index() == 0 else 0  # one process prints
    steps = steps_per_epoch
    dp = compiled.distribute
    if dp is not None:
        _check_distributed(dp, data, batch_size)
        batch_size = batch_size // (jax.process_count() if dp.multi_process else 1)
        dp.check_batch_size(batch_size)
    if isinstance(data, ArrayData) and dp is not None:
        source = data
        steps_total = math.ceil(data.n / batch_size) if steps is None else min(steps, math.ceil(data.n / batch_size))
    elif isinstance(data, ArrayData):
        source = (setup.to_device(data), data.n) if shuffle else _Cut(data, batch_size, step.k, steps)
        steps_total = math.ceil(data.n / batch_size) if steps is None else min(steps, math.ceil(data.n / batch_size))
    else:
        source, steps_total = data, steps
    cbs = CallbackList(user_callbacks + [history], model, {"epochs": epochs, "steps": steps_total, "verbose": verbose})
    trainer = _Trainer(model, step, cbs, verbose, compiled.max_consecutive_nonfinite)
    if isinstance(source, (tuple, _Cut)) and epochs > initial_epoch:  # compile the first step while the rest is set up
        abstract_ts = lambda: jax.eval_shape(  # noqa: E731
            lambda p, s: fresh(p, s, compiled.optimizer, seed, (1,)), model._params, model._state)
        if isinstance(source, _Cut):
            trainer.compiling = step.precompile(abstract_ts, source.executions[0], None)
        else:
            table = index_tables(np.arange(data.n), batch_size, step.k, steps)[0]
            trainer.compiling = step.precompile(abstract_ts, source[0], table.shape)
    try:
        _ensure_train_state(model, compiled, seed)
        model.stop_training = False
        model._resume_epoch = model._resume_batch = None
        cbs.on_train_begin(None)
        if model._resume_epoch is not None:  # a callback (BackupAndRestore) restored a train state
            initial_epoch = int(model._resume_epoch)
            model._params, model._state = _copy(model._ts.params), _copy(model._ts.state)
        logs: dict = {}
        for epoch in range(initial_epoch, epochs):
            model._live = True  # the held weights follow the train state (copied when read)
            cbs.on_epoch_begin(epoch, None)
            logs, halted = trainer.epoch(epoch, epochs, source, steps, batch_size, shuffle, seed)
            model._live = True
            if val is not None and (epoch + 1) % validation_freq == 0 and not halted:
                if isinstance(val, ArrayData) and dp is None:  # cut on the device once, for every epoch
                    val = EvalCut(val, validation_batch_size or batch_size, validation_steps, "the validation data")
                val_logs = _evaluate_logs(model, objectives, val, validation_batch_size or batch_size, validation_steps)
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            trainer.progress.close(logs)
            version = model._weights_version
            cbs.on_epoch_end(epoch, logs)
            if model._weights_version != version:  # a callback set them
                model._ts = model._ts.replace(params=_copy(model._params), state=_copy(model._state))
            if halted:
                print(f"Epoch {epoch + 1}: non-finite loss; " + (
                    "stopped; the update was applied (jax_debug_nans/infs run every on_nan mode as warn)"
                    if debugging() else "stopped before applying that update"))
                model.stop_training = True
            if model.stop_training:
                break
        cbs.on_train_end(logs)
        return history
    except BaseException:
        trainer.keep_train_state()
        raise
    finally:
        trainer.join_compile()


def _check_distributed(dp: Any, data: Any, batch_size: int) -> None:
    """Multi-process: batch_size is global; every process must feed the same number of rows."""
    from kerax.distribute.multiprocess import check_collectives, check_equal_local_sizes

    if not dp.multi_process:
        return
    check_collectives()
    procs = jax.process_count()
    if batch_size % procs:
        raise errors.ConfigError(
            f"batch_size={batch_size} is the global batch and must split over {procs} processes"
        )
    if not isinstance(data, ArrayData):
        raise errors.DataError("multi-process fit needs in-memory arrays (each process its own share)")
    check_equal_local_sizes(data.n)


def _ensure_train_state(model: Any, compiled: setup.CompileConfig, seed: int) -> None:
    ts = getattr(model, "_ts", None)
    if ts is not None and model._live and ts.tx is compiled.optimizer:
        return  # the held weights are still the train state's: nothing was assigned since
    reusable = (ts is not None and ts.tx is compiled.optimizer
                and jax.tree.structure(ts.params) == jax.tree.structure(model._params))
    if reusable and not broken(ts.opt_state):  # a step that ran out of memory took it: start afresh
        model._ts = ts.replace(params=_copy(model._params), state=_copy(model._state))
        return
    # The key is fold_in(key(seed), 1): the init used the seed's own key.
    model._ts = fresh(model._params, model._state, compiled.optimizer, seed, (1,))


def _validation(model: Any, validation_data: Any) -> Any:
    from kerax.data import as_data

    if isinstance(validation_data, (tuple, list)) and 2 <= len(validation_data) <= 3:
        vx, vy, vsw = (list(validation_data) + [None])[:3]
        setup.check_strict_dtypes(model, vx, "validation_data[0]")
        return as_data(vx, vy, vsw, name="validation_data", expand=setup.expand_rank1(model))
    return setup.prepare(model, validation_data, None, None, None, "validation_data")


def _evaluate_logs(model: Any, objectives: Any, data: Any, batch_size: int, steps: int | None) -> dict:
    from kerax.training.evaluation import run_eval

    return run_eval(model, objectives, data, batch_size, steps, verbose=0)
