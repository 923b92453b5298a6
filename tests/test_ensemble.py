"""fit(ensemble=N), hyperparameter sweeps and kx.vmap_train_step, checked against the same
models trained alone (plain fit, a Python loop of single steps) and NumPy reductions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers

SEED = 7
MEMBERS = 3
FIT = dict(batch_size=16, epochs=2, validation_split=0.25, verbose=0)


def _data(n: int = 96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
    return x, y


def _model(lr: float = 0.01) -> kx.Sequential:
    model = kx.Sequential([layers.Dense(16, activation="relu"), layers.Dropout(0.3), layers.Dense(3)])
    model.compile(optimizer=kx.optimizers.Adam(lr), metrics=["accuracy"],
                  loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def trained():
    x, y = _data()
    model = _model()
    history = model.fit(x, y, seed=SEED, ensemble=MEMBERS, **FIT)
    return model, history, x, y


@pytest.fixture(scope="module")
def singles():
    """Member i's reference: a fresh model trained alone by fit(seed=SEED + i)."""
    x, y = _data()
    out = []
    for i in range(MEMBERS):
        model = _model()
        out.append((model, model.fit(x, y, seed=SEED + i, **FIT)))
    return out


# -- members are the models trained alone -------------------------------------------------------


def test_each_member_equals_a_plain_fit_with_its_seed(trained, singles):
    model, history, _, _ = trained
    kernels = []
    for i, (single, single_history) in enumerate(singles):
        member = model.ensemble_member(i)
        _assert_trees_close(member.params, single.params)
        kernels.append(np.asarray(member.params["dense"]["kernel"]))
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(history.history[f"{key}_member_{i}"], single_history.history[key],
                                       rtol=1e-5, atol=1e-6)
    assert not np.allclose(kernels[0], kernels[1])  # different seeds: different members
    # Member 0 is also the model's own weights (== fit(seed=SEED)).
    _assert_trees_close(model.params, singles[0][0].params)


def test_history_holds_members_and_their_means(trained):
    _, history, _, _ = trained
    names = ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert set(history.history) == set(names) | {f"{k}_member_{i}" for k in names for i in range(MEMBERS)}
    for k in names:
        per_member = np.array([history.members[i][k] for i in range(MEMBERS)])
        assert per_member.shape == (MEMBERS, FIT["epochs"])
        np.testing.assert_allclose(history.history[k], per_member.mean(0), rtol=1e-6)
    assert history.seeds == [SEED + i for i in range(MEMBERS)]


def test_second_ensemble_fit_continues_like_a_second_plain_fit():
    x, y = _data()
    fit = dict(batch_size=32, epochs=1, verbose=0)
    model = _model()
    for _ in range(2):
        model.fit(x, y, seed=SEED, ensemble=2, **fit)
    single = _model()
    for _ in range(2):
        single.fit(x, y, seed=SEED + 1, **fit)
    _assert_trees_close(model.ensemble_member(1).params, single.params)


# -- predict, evaluate, members ------------------------------------------------------------------


def test_predict_all_and_mean_match_the_members(trained):
    model, _, x, _ = trained
    every = model.predict(x, batch_size=10, ensemble="all")  # 96 rows: a padded last batch
    assert every.shape == (MEMBERS, len(x), 3)
    for i in range(MEMBERS):
        member = model.ensemble_member(i)
        want = np.asarray(member.apply(member.params, member.state, x)[0])
        np.testing.assert_allclose(every[i], want, rtol=1e-5, atol=1e-6)
    mean = model.predict(x, ensemble="mean")
    np.testing.assert_allclose(mean, every.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x), mean, rtol=1e-6)  # the default after fit(ensemble=N)


def test_evaluate_reports_each_member_and_the_mean(trained):
    model, _, x, y = trained
    logs = model.evaluate(x, y, batch_size=20, verbose=0, return_dict=True)
    for i in range(MEMBERS):
        member = model.ensemble_member(i)
        logits = np.asarray(member.apply(member.params, member.state, x)[0], np.float64)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        np.testing.assert_allclose(logs[f"loss_member_{i}"], -logp[np.arange(len(y)), y].mean(), rtol=1e-5)
        np.testing.assert_allclose(logs[f"accuracy_member_{i}"], (logits.argmax(1) == y).mean(), rtol=1e-6)
    assert logs["loss"] == pytest.approx(np.mean([logs[f"loss_member_{i}"] for i in range(MEMBERS)]), rel=1e-6)
    assert model.evaluate(x, y, verbose=0) == pytest.approx([logs["loss"], logs["accuracy"]])


def test_best_member_is_a_plain_model_that_saves_and_loads(trained, tmp_path):
    model, history, x, _ = trained
    last = [history.history[f"val_loss_member_{i}"][-1] for i in range(MEMBERS)]
    index = history.best_member_index("val_loss")
    assert index == int(np.argmin(last))
    assert history.best_member_index("val_accuracy") == int(np.argmax(
        [history.history[f"val_accuracy_member_{i}"][-1] for i in range(MEMBERS)]))
    best = history.best_member("val_loss")
    assert best.ensemble_size is None and model.ensemble_size == MEMBERS
    want = model.predict(x, ensemble="all")[index]
    np.testing.assert_allclose(best.predict(x), want, rtol=1e-5, atol=1e-6)
    best.save(tmp_path / "best.kerax")
    loaded = kx.load_model(tmp_path / "best.kerax")
    np.testing.assert_allclose(loaded.predict(x), want, rtol=1e-5, atol=1e-6)


def test_plain_fit_or_new_weights_drop_the_ensemble():
    x, y = _data(48)
    fit = dict(batch_size=16, epochs=1, verbose=0)
    model = _model()
    model.fit(x, y, seed=1, ensemble=2, **fit)
    assert model.ensemble_size == 2
    model.set_weights(model.get_weights())
    assert model.ensemble_size is None
    np.testing.assert_allclose(model.predict(x), model.apply(model.params, model.state, x)[0], rtol=1e-6)
    model.fit(x, y, seed=1, ensemble=2, **fit)
    model.fit(x, y, seed=1, **fit)
    assert model.ensemble_size is None


# -- hyperparameter sweeps -----------------------------------------------------------------------


def test_learning_rate_sweep_picks_the_sensible_rate_and_equals_a_single_fit():
    x, y = _data(160)
    rates = [1e-6, 3e-2, 50.0, 1e-5]  # far too small, sensible, far too large, too small
    fit = dict(batch_size=32, epochs=3, validation_split=0.25, verbose=0)
    model = _model()
    with np.errstate(all="ignore"):
        history = model.fit(x, y, seed=SEED, ensemble=4, ensemble_hyperparams={"learning_rate": rates}, **fit)
    best = history.best_member_index("val_loss")
    assert best == 1
    single = _model(rates[1])
    single.fit(x, y, seed=SEED + 1, **fit)
    chosen = history.best_member()
    _assert_trees_close(chosen.params, single.params, rtol=1e-4, atol=1e-6)
    assert float(chosen.optimizer.learning_rate) == pytest.approx(rates[1])  # it keeps its own rate
    lrs = kx.optimizers.get_learning_rate(model._ensemble.ts.opt_state)
    np.testing.assert_allclose(np.asarray(lrs), rates, rtol=1e-6)


def test_sweep_of_an_injected_optax_hyperparameter():
    x, y = _data(48)
    model = kx.Sequential([layers.Dense(3)])
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.0)
    model.compile(optimizer=tx, loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=48, epochs=1, verbose=0, seed=0, shuffle=False, ensemble=2,
              ensemble_hyperparams={"learning_rate": [0.0, 0.5]})
    init = jax.jit(model.init)(jax.random.key(1), x)[0]  # member 1's seed: 0 + 1
    # One full-batch SGD step by hand: W1 = W0 - 0.5 * dL/dW0.
    def loss(p):
        logits = x @ p["dense"]["kernel"] + p["dense"]["bias"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])
    want = jax.tree.map(lambda w, g: w - 0.5 * g, init, jax.grad(loss)(init))
    _assert_trees_close(model.ensemble_member(1).params, want, rtol=1e-5, atol=1e-6)
    member0 = jax.jit(model.init)(jax.random.key(0), x)[0]  # learning rate 0: unchanged
    _assert_trees_close(model.ensemble_member(0).params, member0)


# -- the pure level: kx.vmap_train_step ----------------------------------------------------------


@pytest.mark.parametrize("shared_batch", [True, False])
@pytest.mark.parametrize("unroll", [False, True])
def test_vmap_train_step_equals_a_loop_of_single_steps(shared_batch, unroll):
    x, y = _data(64)
    model = kx.Sequential([layers.Dense(8, activation="relu"), layers.Dropout(0.2), layers.Dense(3)])
    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
    step = kx.make_train_step(model, loss=loss, metrics=["accuracy"])
    tx = optax.adam(1e-2)

    def create(key):
        params, state = model.init(key, x[:1])  # a fresh dropout key: the steps donate the state
        return kx.TrainState.create(model, params, state, tx, rng=jax.random.fold_in(key, 1))

    keys = jax.random.split(jax.random.key(0), 3)
    ensemble_step = kx.vmap_train_step(step, shared_batch=shared_batch, unroll=unroll)
    ts = jax.vmap(create)(keys)
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, len(x), (3, 16)) for _ in range(3)]
    for idx in batches:
        batch = (x[idx[0]], y[idx[0]]) if shared_batch else (x[idx], y[idx])
        ts, logs = ensemble_step(ts, batch)
    assert list(logs) == ["loss", "accuracy"] and logs["loss"].shape == (3,)
    for m in range(3):
        single = create(keys[m])
        for idx in batches:
            rows = idx[0] if shared_batch else idx[m]
            single, single_logs = step(single, (x[rows], y[rows]))
        _assert_trees_close(jax.tree.map(lambda a: a[m], ts.params), single.params)
        np.testing.assert_allclose(logs["loss"][m], single_logs["loss"], rtol=1e-5)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [0, -2, 2.5, "3", True])
def test_ensemble_must_be_a_positive_int(members):
    x, y = _data(32)
    with pytest.raises(errors.ConfigError, match="ensemble must be a positive int"):
        _model().fit(x, y, ensemble=members, verbose=0)


@pytest.mark.parametrize("values, match", [
    ([1e-3, 1e-2], r"must hold 3 finite numbers .*received \[0.001, 0.01\]"),
    ([1e-3, float("nan"), 1e-2], "must hold 3 finite numbers"),
    ("abc", "must hold 3 finite numbers"),
])
def test_hyperparameter_vectors_need_one_finite_value_per_member(values, match):
    x, y = _data(32)
    with pytest.raises(errors.ConfigError, match=match):
        _model().fit(x, y, ensemble=3, ensemble_hyperparams={"learning_rate": values}, verbose=0)


def test_sweep_errors():
    x, y = _data(32)
    with pytest.raises(errors.ConfigError, match=r"available: \['learning_rate'\]\); received 'beta_1'"):
        _model().fit(x, y, ensemble=2, ensemble_hyperparams={"beta_1": [0.8, 0.9]}, verbose=0)
    with pytest.raises(errors.ConfigError, match="ensemble_hyperparams needs ensemble=N"):
        _model().fit(x, y, ensemble_hyperparams={"learning_rate": [0.1, 0.2]}, verbose=0)
    with pytest.raises(errors.ConfigError, match="must be a dict"):
        _model().fit(x, y, ensemble=2, ensemble_hyperparams=[0.1, 0.2], verbose=0)


def test_ensemble_refuses_distribute_dp_iterables_and_weight_callbacks():
    x, y = _data(32)
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  distribute=kx.distribute.DataParallel(mode="shard"))
    with pytest.raises(errors.ConfigError, match="runs on one device.*received distribute=DataParallel"):
        model.fit(x, y, ensemble=2, verbose=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  dp=kx.privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0))
    with pytest.raises(errors.ConfigError, match="received dp=DPSGD"):
        model.fit(x, y, ensemble=2, verbose=0)
    batches = ((x[i:i + 16], y[i:i + 16]) for i in (0, 16))
    with pytest.raises(errors.DataError, match="needs in-memory arrays .*received an iterable"):
        _model().fit(batches, ensemble=2, verbose=0)
    for callback, match in [(kx.callbacks.ReduceLROnPlateau(), "callback ReduceLROnPlateau"),
                            (kx.callbacks.EarlyStopping(restore_best_weights=True),
                             "EarlyStopping with restore_best_weights=True")]:
        with pytest.raises(errors.ConfigError, match=match):
            _model().fit(x, y, ensemble=2, callbacks=[callback], verbose=0)


def test_predict_member_and_history_errors(trained):
    model, history, x, _ = trained
    with pytest.raises(errors.ConfigError, match="ensemble must be 'mean' or 'all'; received ensemble='median'"):
        model.predict(x, ensemble="median")
    plain = _model()
    plain.build((None, 6))
    with pytest.raises(errors.ConfigError, match=r"predict\(ensemble='all'\) needs a model trained with fit\(ensemble=N\)"):
        plain.predict(x, ensemble="all")
    with pytest.raises(errors.ConfigError, match="ensemble_member needs a model trained with fit"):
        plain.ensemble_member(0)
    with pytest.raises(errors.ConfigError, match=r"index must be an int in \[0, 3\); received 3"):
        model.ensemble_member(3)
    with pytest.raises(errors.ConfigError, match="'val_auc' was not recorded per member"):
        history.best_member_index("val_auc")
    with pytest.raises(errors.ConfigError, match="mode must be 'auto', 'min' or 'max'; received 'up'"):
        history.best_member_index("val_loss", mode="up")


def test_vmap_train_step_errors():
    model = kx.Sequential([layers.Dense(2)])
    with pytest.raises(errors.ConfigError, match="expects a step from kx.make_train_step; received train_step=function"):
        kx.vmap_train_step(lambda ts, batch: (ts, {}))
    step = kx.make_train_step(model, loss="mse", distribute=kx.distribute.DataParallel(mode="shard"))
    with pytest.raises(errors.ConfigError, match="made without distribute=; received distribute=DataParallel"):
        kx.vmap_train_step(step)
