"""kerax.optimizers and kerax.schedules against NumPy transcriptions of Keras 3's rules.

Each reference below is written from Keras 3's published update rules (``update_step`` of
``keras/src/optimizers/*.py``, and ``BaseOptimizer``: clip the gradients, then
``w -= w * weight_decay * lr``, then the update step; ``t`` is the 0-based iteration) and
runs in float64; kerax runs in float32.
"""

import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kerax import errors, optimizers as O, schedules as S

A = {"w": np.array([1.0, 2.0, 0.5]), "b": np.array([[3.0, 0.2], [1.0, 4.0]])}
C = {"w": np.array([0.3, -1.0, 2.0]), "b": np.array([[1.0, -0.5], [0.0, 2.0]])}
X0 = {"w": np.array([1.5, 0.5, -1.0]), "b": np.array([[-1.0, 1.0], [2.0, -0.5]])}
STEPS = 5


def quadratic_grad(x, scale=1.0, sign=1.0):
    """Gradient of ``sign * scale * 0.5 * sum(A * (x - C)**2)``."""
    return {k: sign * scale * A[k] * (x[k] - C[k]) for k in x}


# -- NumPy references of Keras 3's update_step(g, x, lr, slots, t) -----------------------
def keras_sgd(momentum=0.0, nesterov=False):
    def step(g, x, lr, s, t):
        if momentum == 0:
            return x - lr * g
        s["m"] = s.get("m", 0.0) * momentum - lr * g
        return x + (momentum * s["m"] - lr * g if nesterov else s["m"])
    return step


def keras_adam(b1=0.9, b2=0.999, eps=1e-7, amsgrad=False, max_of_corrected=False):
    # max_of_corrected: optax's AMSGrad (max of v / (1 - b2**t)), documented in Adam.
    def step(g, x, lr, s, t):
        t1 = t + 1
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = v = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        if amsgrad and max_of_corrected:
            s["vh"] = np.maximum(s.get("vh", 0.0), v / (1 - b2 ** t1))
            v = s["vh"] * (1 - b2 ** t1)
        elif amsgrad:
            s["vh"] = v = np.maximum(s.get("vh", 0.0), v)
        alpha = lr * np.sqrt(1 - b2 ** t1) / (1 - b1 ** t1)
        return x - alpha * s["m"] / (np.sqrt(v) + eps)
    return step


def keras_rmsprop(rho=0.9, momentum=0.0, eps=1e-7, centered=False):
    def step(g, x, lr, s, t):
        s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
        denominator = s["v"] + eps
        if centered:
            s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g
            denominator = s["v"] - s["a"] ** 2 + eps
        increment = lr * g / np.sqrt(denominator)
        if momentum > 0:
            s["m"] = momentum * s.get("m", 0.0) + increment
            return x - s["m"]
        return x - increment
    return step


def keras_adagrad(initial=0.1, eps=1e-7):
    def step(g, x, lr, s, t):
        s["acc"] = s.get("acc", initial) + g * g
        return x - lr * g / np.sqrt(s["acc"] + eps)
    return step


def keras_adadelta(rho=0.95, eps=1e-7):
    def step(g, x, lr, s, t):
        s["ag"] = rho * s.get("ag", 0.0) + (1 - rho) * g * g
        delta = -np.sqrt(s.get("ad", 0.0) + eps) * g / np.sqrt(s["ag"] + eps)
        s["ad"] = rho * s.get("ad", 0.0) + (1 - rho) * delta * delta
        return x + lr * delta
    return step


def keras_adamax(b1=0.9, b2=0.999, eps=1e-7):
    def step(g, x, lr, s, t):
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g))
        return x - lr * s["m"] / ((1 - b1 ** (t + 1)) * (s["u"] + eps))
    return step


def keras_nadam(b1=0.9, b2=0.999, eps=1e-7, momentum_schedule=True):
    # momentum_schedule=False: mu_t = beta_1, optax's rule (documented in Nadam).
    def u(k):
        return b1 * (1 - 0.5 * 0.96 ** k) if momentum_schedule else b1

    def step(g, x, lr, s, t):
        t1 = t + 1
        s["prod"] = u_prod = s.get("prod", 1.0) * u(t1)
        u_prod_next = u_prod * u(t1 + 1)
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        m_hat = u(t1 + 1) * s["m"] / (1 - u_prod_next) + (1 - u(t1)) * g / (1 - u_prod)
        v_hat = s["v"] / (1 - b2 ** t1)
        return x - m_hat * lr / (np.sqrt(v_hat) + eps)
    return step


def keras_lion(b1=0.9, b2=0.99):
    def step(g, x, lr, s, t):
        m = s.get("m", 0.0)
        x = x - lr * np.sign(m * b1 + g * (1 - b1))
        s["m"] = m * b2 + g * (1 - b2)
        return x
    return step


def keras_lamb(b1=0.9, b2=0.999, eps=1e-6):
    def step(g, x, lr, s, t):
        t1 = t + 1
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        update = (s["m"] / (1 - b1 ** t1)) / (np.sqrt(s["v"] / (1 - b2 ** t1)) + eps)
        w_norm, g_norm = np.linalg.norm(x), np.linalg.norm(update)
        ratio = w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        return x - ratio * lr * update
    return step


def keras_run(update_step, lr, grad_fn=quadratic_grad, weight_decay=None, steps=STEPS):
    x = {k: v.copy() for k, v in X0.items()}
    slots = {k: {} for k in x}
    for t in range(steps):
        g = grad_fn(x)
        if weight_decay:
            x = {k: v - v * weight_decay * lr for k, v in x.items()}
        x = {k: update_step(g[k], x[k], lr, slots[k], t) for k in x}
    return x


def kerax_run(opt, grad_fn=quadratic_grad, steps=STEPS):
    x = {k: jnp.asarray(v, jnp.float32) for k, v in X0.items()}
    state = opt.init(x)
    for _ in range(steps):
        updates, state = opt.update(grad_fn(x), state, x)
        x = optax.apply_updates(x, updates)
    return x


def assert_close(got, want, rtol=2e-5, atol=2e-6):
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=rtol, atol=atol, err_msg=k)


CASES = [
    (O.SGD(0.1), keras_sgd(), None),
    (O.SGD(0.1, momentum=0.9), keras_sgd(0.9), None),
    (O.SGD(0.1, momentum=0.8, nesterov=True, weight_decay=0.1), keras_sgd(0.8, True), 0.1),
    (O.Adam(0.05), keras_adam(), None),
    (O.Adam(0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-3), keras_adam(0.8, 0.99, 1e-3), None),
    (O.Adam(0.05, amsgrad=True), keras_adam(amsgrad=True, max_of_corrected=True), None),
    (O.AdamW(0.05), keras_adam(), 0.004),
    (O.AdamW(0.05, weight_decay=0.5, amsgrad=True),
     keras_adam(amsgrad=True, max_of_corrected=True), 0.5),
    (O.RMSprop(0.01), keras_rmsprop(), None),
    (O.RMSprop(0.01, rho=0.8, momentum=0.9, epsilon=1e-3, weight_decay=0.2),
     keras_rmsprop(0.8, 0.9, 1e-3), 0.2),
    (O.RMSprop(0.01, centered=True), keras_rmsprop(centered=True), None),
    (O.Adagrad(0.1), keras_adagrad(), None),
    (O.Adagrad(0.1, initial_accumulator_value=1.0, epsilon=1e-3), keras_adagrad(1.0, 1e-3), None),
    (O.Adadelta(1.0), keras_adadelta(), None),
    (O.Adadelta(1.0, rho=0.9, epsilon=1e-4), keras_adadelta(0.9, 1e-4), None),
    (O.Adamax(0.05), keras_adamax(), None),
    (O.Nadam(0.05), keras_nadam(momentum_schedule=False), None),
    (O.Lion(0.01), keras_lion(), None),
    (O.Lion(0.01, beta_1=0.5, beta_2=0.9, weight_decay=0.3), keras_lion(0.5, 0.9), 0.3),
    (O.Lamb(0.05), keras_lamb(), None),
]


@pytest.mark.parametrize("opt, reference, weight_decay", CASES,
                         ids=[repr(case[0]) for case in CASES])
def test_matches_keras_rule(opt, reference, weight_decay):
    want = keras_run(reference, opt.learning_rate, weight_decay=weight_decay)
    assert_close(kerax_run(opt), want)


def test_amsgrad_matches_keras_while_v_grows():
    # On a concave quadratic |g| grows, so both maxima are the current v and agree.
    def grad_fn(x):
        return quadratic_grad(x, sign=-1.0)
    want = keras_run(keras_adam(amsgrad=True), 0.05, grad_fn)
    assert_close(kerax_run(O.Adam(0.05, amsgrad=True), grad_fn), want)


def test_adam_epsilon_is_keras_epsilon_hat():
    # Gradients near epsilon: optax.adam's plain eps would be visibly off from Keras.
    def grad_fn(x):
        return quadratic_grad(x, scale=1e-6)
    want = keras_run(keras_adam(), 0.01, grad_fn)
    assert_close(kerax_run(O.Adam(0.01), grad_fn), want)
    plain = kerax_run(optax.inject_hyperparams(optax.adam)(learning_rate=0.01, eps=1e-7), grad_fn)
    assert not np.allclose(np.asarray(plain["w"]), want["w"], rtol=1e-4, atol=1e-6)


def test_nadam_momentum_schedule_is_the_documented_difference():
    keras = keras_run(keras_nadam(), 0.05)
    assert not np.allclose(np.asarray(kerax_run(O.Nadam(0.05))["w"]), keras["w"], rtol=1e-3)


GRADS = {"a": np.array([3.0, 4.0]), "b": np.array([0.3, -0.4])}  # norms 5 and 0.5


@pytest.mark.parametrize("kwargs, want", [
    ({"clipnorm": 1.0}, {"a": [0.6, 0.8], "b": [0.3, -0.4]}),
    ({"global_clipnorm": 1.0}, {k: v / np.sqrt(25.25) for k, v in GRADS.items()}),
    ({"clipvalue": 0.35}, {"a": [0.35, 0.35], "b": [0.3, -0.35]}),
    ({}, GRADS),
])
def test_gradient_clipping(kwargs, want):
    opt = O.SGD(1.0, **kwargs)
    grads = {k: jnp.asarray(v, jnp.float32) for k, v in GRADS.items()}
    updates, _ = opt.update(grads, opt.init(grads))
    assert_close({k: -u for k, u in updates.items()}, {k: np.asarray(v) for k, v in want.items()})


# -- schedules ---------------------------------------------------------------------------
def piecewise_ref(step, boundaries, values):
    for b, v in zip(boundaries, values):
        if step <= b:
            return v
    return values[-1]


def cosine_ref(step, init, decay_steps, alpha=0.0, target=None, warmup=0):
    def decay(s, peak):
        return peak * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)) + alpha)
    if target is None:
        return decay(min(step, decay_steps), init)
    step = min(step, decay_steps + warmup)
    return init + (target - init) * step / warmup if step < warmup else decay(step - warmup, target)


def restarts_ref(step, init, first, t_mul=2.0, m_mul=1.0, alpha=0.0):
    fraction = step / first
    if t_mul == 1.0:
        i = np.floor(fraction)
        fraction -= i
    else:
        i = np.floor(np.log(1 - fraction * (1 - t_mul)) / np.log(t_mul))
        fraction = (fraction - (1 - t_mul ** i) / (1 - t_mul)) / t_mul ** i
    return init * ((1 - alpha) * 0.5 * m_mul ** i * (1 + np.cos(np.pi * fraction)) + alpha)


def poly_ref(step, init, decay_steps, end, power, cycle):
    if cycle:
        decay_steps = decay_steps * (1 if step == 0 else np.ceil(step / decay_steps))
    else:
        step = min(step, decay_steps)
    return (init - end) * (1 - step / decay_steps) ** power + end


SCHEDULES = [
    (S.ExponentialDecay(0.1, 10, 0.5), lambda s: 0.1 * 0.5 ** (s / 10)),
    (S.ExponentialDecay(0.1, 4, 0.9, staircase=True), lambda s: 0.1 * 0.9 ** np.floor(s / 4)),
    (S.InverseTimeDecay(0.1, 5, 0.5), lambda s: 0.1 / (1 + 0.5 * s / 5)),
    (S.InverseTimeDecay(0.1, 5, 0.5, True), lambda s: 0.1 / (1 + 0.5 * np.floor(s / 5))),
    (S.PolynomialDecay(0.1, 10), lambda s: poly_ref(s, 0.1, 10, 1e-4, 1.0, False)),
    (S.PolynomialDecay(0.1, 10, 0.01, 2.0, cycle=True),
     lambda s: poly_ref(s, 0.1, 10, 0.01, 2.0, True)),
    (S.PiecewiseConstantDecay([3, 10], [1.0, 0.5, 0.1]),
     lambda s: piecewise_ref(s, [3, 10], [1.0, 0.5, 0.1])),
    (S.CosineDecay(0.1, 20), lambda s: cosine_ref(s, 0.1, 20)),
    (S.CosineDecay(0.1, 20, alpha=0.1), lambda s: cosine_ref(s, 0.1, 20, 0.1)),
    (S.CosineDecay(0.0, 20, alpha=0.1, warmup_target=0.2, warmup_steps=5),
     lambda s: cosine_ref(s, 0.0, 20, 0.1, 0.2, 5)),
    (S.CosineDecay(0.05, 20, warmup_target=0.2), lambda s: cosine_ref(s, 0.05, 20, 0.0, 0.2)),
    (S.CosineDecayRestarts(0.1, 10), lambda s: restarts_ref(s, 0.1, 10)),
    (S.CosineDecayRestarts(0.1, 7, t_mul=1.0, m_mul=0.5, alpha=0.1),
     lambda s: restarts_ref(s, 0.1, 7, 1.0, 0.5, 0.1)),
    (S.CosineDecayRestarts(0.1, 4, t_mul=1.5, m_mul=0.8),
     lambda s: restarts_ref(s, 0.1, 4, 1.5, 0.8)),
]
SCHEDULE_STEPS = [0, 1, 3, 4, 5, 7, 10, 11, 15, 24, 31, 100]


@pytest.mark.parametrize("sched, reference", SCHEDULES,
                         ids=[repr(case[0]) for case in SCHEDULES])
def test_schedule_formula(sched, reference):
    got = jax.jit(jax.vmap(sched))(jnp.asarray(SCHEDULE_STEPS, jnp.int32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), [reference(s) for s in SCHEDULE_STEPS],
                               rtol=1e-5, atol=1e-7)
    assert float(sched(3)) == pytest.approx(reference(3), rel=1e-5)
    assert S.get(json.loads(json.dumps(S.serialize(sched)))) == sched


def test_schedule_drives_optimizer_steps_and_get_learning_rate():
    opt = O.SGD(S.PiecewiseConstantDecay([1], [0.1, 0.01]))
    x = {"w": jnp.zeros(2)}
    state, sizes, rates = opt.init(x), [], []
    for _ in range(3):
        updates, state = opt.update({"w": jnp.ones(2)}, state, x)
        sizes.append(-float(updates["w"][0]))
        rates.append(float(O.get_learning_rate(state)))
    np.testing.assert_allclose(sizes, [0.1, 0.1, 0.01], rtol=1e-6)  # step t uses sched(t)
    np.testing.assert_allclose(rates, sizes, rtol=1e-6)
    with pytest.raises(errors.ConfigError, match="follows a schedule"):
        O.set_learning_rate(state, 0.5)


def test_optax_schedule_is_accepted_but_not_serializable():
    opt = O.Adam(learning_rate=optax.cosine_decay_schedule(0.1, 10))
    assert O.get_learning_rate(opt.init({"w": jnp.zeros(2)})) == pytest.approx(0.1)
    assert S.get(optax.linear_schedule(0.1, 0.0, 5))(5) == 0.0
    with pytest.raises(errors.ConfigError, match="plain callable has no config"):
        O.serialize(opt)


# -- learning rate in the state ------------------------------------------------------------
def test_set_learning_rate_changes_the_sgd_step():
    opt = O.SGD(0.1)
    x = {"w": jnp.ones(3)}
    state = opt.init(x)
    assert float(O.get_learning_rate(state)) == pytest.approx(0.1)
    state = jax.jit(O.set_learning_rate)(state, 0.02)
    updates, state = opt.update({"w": jnp.full(3, 2.0)}, state, x)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.04, rtol=1e-6)
    assert float(O.get_learning_rate(state)) == pytest.approx(0.02)


def test_learning_rate_is_found_inside_wrappers():
    tx = optax.chain(optax.clip(1.0), O.Adam(0.003))
    state = O.set_learning_rate(tx.init({"w": jnp.zeros(2)}), 0.001)
    assert float(O.get_learning_rate(state)) == pytest.approx(0.001)
    state = optax.inject_hyperparams(optax.sgd)(learning_rate=0.2).init(jnp.zeros(2))
    assert float(O.get_learning_rate(state)) == pytest.approx(0.2)


def test_learning_rate_errors():
    with pytest.raises(errors.ConfigError, match="no injectable learning rate"):
        O.get_learning_rate(optax.adam(1e-3).init({"w": jnp.zeros(2)}))
    two = optax.chain(O.SGD(), O.Adam()).init(jnp.zeros(2))
    with pytest.raises(errors.ConfigError, match="2 learning rates"):
        O.set_learning_rate(two, 0.1)
    with pytest.raises(errors.ConfigError, match="received value=-1.0"):
        O.set_learning_rate(O.SGD().init(jnp.zeros(2)), -1.0)


# -- get / serialize / config ------------------------------------------------------------
@pytest.mark.parametrize("name", O.names())
def test_get_serialize_round_trip(name):
    opt = O.get(name)
    assert O.get(type(opt).__name__) == opt == O.get(type(opt))
    assert O.get(opt) is opt
    config = json.loads(json.dumps(O.serialize(opt)))
    assert O.get(config) == opt and hash(O.get(config)) == hash(opt)
    assert pickle.loads(pickle.dumps(opt)) == opt
    assert repr(opt) == f"{type(opt).__name__}(learning_rate={opt.learning_rate!r})"


def test_keras_defaults_and_non_default_round_trip():
    assert O.SGD().learning_rate == 0.01 and O.Lamb().epsilon == 1e-6 and O.Lion().beta_2 == 0.99
    assert O.AdamW().weight_decay == 0.004 and O.Adadelta().rho == 0.95
    assert O.Adagrad().initial_accumulator_value == 0.1 and O.Adam().epsilon == 1e-7
    opt = O.RMSprop(S.ExponentialDecay(0.1, 100, 0.9), momentum=0.5, global_clipnorm=2.0)
    assert repr(opt) == ("RMSprop(learning_rate=ExponentialDecay(initial_learning_rate=0.1, "
                         "decay_steps=100, decay_rate=0.9, staircase=False), momentum=0.5, "
                         "global_clipnorm=2.0)")
    assert O.get(json.loads(json.dumps(O.serialize(opt)))) == opt
    assert O.AdamW(0.01, 0.1).weight_decay == 0.1  # Keras's positional order


def test_keras_3_config_is_accepted():
    config = {"module": "keras.optimizers", "class_name": "Adam", "registered_name": None,
              "config": {"name": "adam", "learning_rate": 0.01, "weight_decay": None,
                         "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
                         "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                         "loss_scale_factor": None, "gradient_accumulation_steps": None,
                         "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False}}
    assert O.get(config) == O.Adam(0.01)
    config["config"]["learning_rate"] = {
        "module": "keras.optimizers.schedules", "class_name": "CosineDecay",
        "config": {"initial_learning_rate": 0.1, "decay_steps": 10, "alpha": 0.0,
                   "name": "CosineDecay", "warmup_target": None, "warmup_steps": 0},
        "registered_name": None}
    assert O.get(config).learning_rate == S.CosineDecay(0.1, 10)
    config["config"]["use_ema"] = True
    with pytest.raises(errors.ConfigError, match="use_ema=True, a Keras option"):
        O.get(config)


def test_raw_optax_passes_through_and_optimizer_is_a_transformation():
    tx = optax.adam(1e-3)
    assert O.get(tx) is tx
    with pytest.raises(errors.ConfigError, match="raw optax transformation has no config"):
        O.serialize(tx)
    opt = O.Adam(0.1)
    step = jax.jit(lambda o, g, s, p: o.update(g, s, p), static_argnums=0)
    x = {"w": jnp.ones(2)}
    updates, _ = step(O.Adam(0.1), x, opt.init(x), x)  # an equal optimizer: static, hashable
    assert np.all(np.asarray(updates["w"]) < 0)


@pytest.mark.parametrize("make, match", [
    (lambda: O.SGD(learning_rate=0.0), r"SGD expected learning_rate to be a float > 0 .*"
                                       r"received learning_rate=0.0"),
    (lambda: O.Adam(learning_rate="fast"), "Adam: Expected a learning rate"),
    (lambda: O.SGD(momentum=1.0), r"SGD expected momentum to be a number in \[0, 1\); "
                                  r"received momentum=1.0"),
    (lambda: O.RMSprop(momentum=-0.1), r"RMSprop expected momentum .* received momentum=-0.1"),
    (lambda: O.Adam(beta_2=1.5), "Adam expected beta_2 .* received beta_2=1.5"),
    (lambda: O.Adam(clipnorm=1.0, global_clipnorm=1.0),
     "Adam expected at most one of clipnorm, clipvalue and global_clipnorm"),
    (lambda: O.Lion(clipvalue=0.0), "Lion expected clipvalue to be a finite number > 0"),
    (lambda: O.Adam(amsgrad="yes"), "Adam expected amsgrad to be a bool; received amsgrad='yes'"),
    (lambda: O.AdamW(weight_decay=None), "AdamW expected weight_decay .* weight_decay=None"),
    (lambda: O.Adam.from_config({"beta_3": 0.5}), r"unknown key\(s\) \['beta_3'\]"),
    (lambda: O.Adam.from_config([1]), "Adam.from_config expected a dict"),
    (lambda: O.get(3), "Expected an optimizer: a name such as 'adam'"),
    (lambda: O.get({"class_name": "Adam", "bogus": 1}), "Expected an optimizer config"),
    (lambda: S.ExponentialDecay(0.1, 0, 0.5), "ExponentialDecay expected decay_steps > 0"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.0), "expected decay_rate > 0"),
    (lambda: S.InverseTimeDecay(0.1, 10, "x"), "expected decay_rate to be a finite number"),
    (lambda: S.PolynomialDecay(0.1, 10, cycle=1), "expected cycle to be a bool"),
    (lambda: S.PiecewiseConstantDecay([1, 2], [1.0]), r"len\(boundaries\) == len\(values\) - 1"),
    (lambda: S.PiecewiseConstantDecay([2, 1], [1.0, 0.5, 0.1]), "strictly increasing"),
    (lambda: S.PiecewiseConstantDecay(3, [1.0]), "lists of numbers"),
    (lambda: S.CosineDecay(0.1, 10, warmup_steps=-1), "warmup_steps >= 0"),
    (lambda: S.CosineDecayRestarts(0.1, 10, t_mul=0.0), "t_mul > 0"),
    (lambda: S.CosineDecay.from_config({"decay": 1}), r"unknown key\(s\) \['decay'\]"),
    (lambda: S.CosineDecay.from_config(None), "CosineDecay.from_config expected a dict"),
    (lambda: S.get("fast"), "Expected a learning rate"),
    (lambda: S.get(True), "Expected a learning rate"),
    (lambda: S.get({"config": {}}), "Expected a schedule config"),
])
def test_config_errors(make, match):
    with pytest.raises(errors.ConfigError, match=match):
        make()


def test_unknown_names():
    with pytest.raises(errors.UnknownNameError, match="Unknown optimizer 'adamm'. Did you mean"):
        O.get("adamm")
    with pytest.raises(errors.UnknownNameError, match="Unknown optimizer 'Ftrl'"):
        O.get({"class_name": "Ftrl", "config": {}})
    with pytest.raises(errors.UnknownNameError, match="Unknown learning rate schedule 'Cosine'"):
        S.get({"class_name": "Cosine", "config": {}})
    with pytest.raises(errors.ConfigError, match="plain callable has no config"):
        S.serialize(lambda step: 0.1)
    assert S.serialize(0.5) == 0.5 and S.names()[0] == "CosineDecay"


def test_adam_state_has_optax_adams_layout():
    # Model files hold the optimizer state by its tree paths: Keras's own Adam step keeps
    # optax.adam's inner state. Only AMSGrad schedules epsilon (a hyperparameter with a
    # count, updated every step); plain Adam's only hyperparameter is the learning rate.
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    ours = O.Adam(0.01).init(params)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=0.01).init(params)
    assert jax.tree.structure(ours.inner_state) == jax.tree.structure(ref.inner_state)
    assert set(ours.hyperparams) == {"learning_rate"} and not ours.hyperparams_states
    ams = O.Adam(0.01, amsgrad=True).init(params)
    assert set(ams.hyperparams) == {"learning_rate", "eps"} and set(ams.hyperparams_states) == {"eps"}
    updates, state = O.Adam(0.01).update(params, ours, params)
    assert jax.tree.structure(state) == jax.tree.structure(ours)
    assert isinstance(state.inner_state[0], optax.ScaleByAdamState) and int(state.inner_state[0].count) == 1
