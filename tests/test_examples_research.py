"""The research-style examples do what they say, at reduced size, checked against
independent references (a Python loop, NumPy formulas, the model's full forward pass)."""

from __future__ import annotations

import importlib.util
import math
import wave
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import datasets

EXAMPLES = Path(__file__).parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- char_rnn --------------------------------------------------------------------------------


def test_char_rnn_beats_the_unigram_entropy_and_samples_from_the_vocabulary():
    result = _load("char_rnn").main(steps=150, units=64, max_chars=40_000, seq_len=32,
                                    sample_length=60, prompt="The ")
    # Held-out cross-entropy clearly below the best context-free model's.
    assert result["loss"] < result["unigram_entropy"] - 0.2
    assert result["sample"].startswith("The ") and len(result["sample"]) == 4 + 60
    assert set(result["sample"]) <= set(result["vocab"])


def test_char_rnn_sampler_steps_the_cell_like_the_full_lstm():
    """Greedy decoding (temperature -> 0) by the cell-stepping sampler equals greedy decoding
    by re-running the whole sequence through model.apply after every character."""
    mod = _load("char_rnn")
    model = mod.build(vocab_size=12, embed_dim=8, units=16)
    params, _ = model.init(jax.random.key(3), jax.ShapeDtypeStruct((1, 4), jnp.int32))
    prompt = np.array([1, 5, 7, 2], np.int32)
    ids = mod.make_sampler(model, 6)(params, jnp.asarray(prompt), jax.random.key(0), 1e-6)
    # The LSTM is causal, so zeros padded after the text do not change the logits before them.
    forward = jax.jit(lambda ids: model.apply(params, {}, ids[None])[0][0])
    seq = np.zeros(len(prompt) + 6, np.int32)
    seq[:len(prompt)] = prompt
    for t in range(len(prompt), len(seq)):
        seq[t] = int(jnp.argmax(forward(seq)[t - 1]))
    assert np.asarray(ids).tolist() == seq[len(prompt):].tolist()


# -- ensemble_vmap ---------------------------------------------------------------------------


def test_ensemble_members_equal_models_trained_alone():
    mod = _load("ensemble_vmap")
    steps = 4
    result = mod.main(members=3, max_steps=steps)
    (x, y), _ = datasets.load_digits()
    model = mod.build()
    tx = optax.adam(3e-3)
    step = kx.make_train_step(model, loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    for m in (0, 2):
        ts = mod.create(model, tx, result["keys"][m])
        for i, idx in enumerate(mod.batches(len(x), 64, 1, [m])):
            if i == steps:
                break
            ts, _ = step(ts, (x[idx[0]], y[idx[0]]))
        member = jax.tree.map(lambda a: a[m], result["ensemble"].params)
        for got, want in zip(jax.tree.leaves(member), jax.tree.leaves(ts.params)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # The members differ (their own keys): not one model copied three times.
    kernels = result["ensemble"].params["dense"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])


def test_ensemble_is_at_least_as_accurate_as_its_average_member():
    result = _load("ensemble_vmap").main(members=4, epochs=3)
    assert len(result["member_accuracy"]) == 4 and min(result["member_accuracy"]) > 0.85
    assert result["ensemble_accuracy"] >= result["mean_member_accuracy"] - 0.01


# -- per_example_grads -----------------------------------------------------------------------


def test_per_example_grads_equal_a_loop_and_clipping_bounds_the_norms():
    mod = _load("per_example_grads")
    x, y = mod.blobs(8, seed=3)
    model = mod.build()
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, x.shape[1]), jnp.float32))
    loss = mod.make_loss(model)
    batched = mod.per_example_grads(loss, params, x, y)
    one_grad = jax.jit(jax.grad(loss))
    loop = [one_grad(params, x[i:i + 1], y[i:i + 1]) for i in range(len(x))]
    for i, g in enumerate(loop):
        for got, want in zip(jax.tree.leaves(jax.tree.map(lambda a: a[i], batched)), jax.tree.leaves(g)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    # Norms and clipping against NumPy on the flattened loop gradients.
    flat = np.stack([np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)]) for g in loop])
    norms = np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(mod.grad_norms(batched), norms, rtol=1e-5)
    c = float(np.median(norms))  # half the examples get clipped, half not
    clipped = mod.clip(batched, c)
    np.testing.assert_allclose(mod.grad_norms(clipped), np.minimum(norms, c), rtol=1e-5)
    assert np.all(np.asarray(mod.grad_norms(clipped)) <= c * (1 + 1e-6))

    # Without noise, DP-SGD's gradient is the mean of the clipped gradients.
    want = (flat * np.minimum(1.0, c / norms)[:, None]).mean(0)
    got = mod.private_gradient(loss, params, x, y, jax.random.key(0), c, 0.0)
    np.testing.assert_allclose(np.concatenate([np.ravel(a) for a in jax.tree.leaves(got)]), want,
                               rtol=1e-5, atol=1e-7)


def test_dp_sgd_example_learns_with_clipped_noisy_gradients():
    result = _load("per_example_grads").main(steps=80, n_train=1024, n_test=512)
    assert np.all(result["clipped_norms"] <= 5.0 * (1 + 1e-6))
    assert 0 < result["fraction_clipped"] < 1
    assert result["initial_test_accuracy"] < 0.5 and result["test_accuracy"] > 0.85


# -- audio_generation ------------------------------------------------------------------------


def test_wavenet_stack_is_causal():
    model = _load("audio_generation").build(depth=3, channels=8)
    x = np.random.default_rng(0).normal(size=(1, 20, 1)).astype(np.float32)
    params, _ = model.init(jax.random.key(0), x)
    changed = x.copy()
    changed[:, 12:] += 1.0  # change the future from step 12 on
    a, _ = model.apply(params, {}, x)
    b, _ = model.apply(params, {}, changed)
    np.testing.assert_array_equal(a[:, :12], b[:, :12])
    assert not np.allclose(a[:, 12:], b[:, 12:])


def test_audio_generation_continues_a_tone_and_writes_a_wav(tmp_path):
    out = tmp_path / "gen.wav"
    result = _load("audio_generation").main(out=str(out), steps=120, n_train=256, length=128,
                                            batch_size=16, channels=16, generate=64, n_test=2,
                                            compare=32)
    assert result["final_loss"] < result["first_loss"] / 10
    # The continuation tracks the true tone far better than silence (the zero predictor).
    assert result["generation_mse"] < 0.1 * result["zero_predictor_mse"]
    with wave.open(str(out), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 8000)
        assert f.getnframes() == 64 + 64  # the prompt (receptive field) + the continuation
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    want = (np.clip(result["generated"][0], -1, 1) * 32767).astype("<i2")
    np.testing.assert_array_equal(pcm[64:], want)


# -- quantize_digits -------------------------------------------------------------------------


def test_quantize_digits_is_3_5x_smaller_within_one_percent_accuracy():
    result = _load("quantize_digits").main(epochs=3)
    assert result["ratio"] >= 3.5 and result["ratio"] == result["float_bytes"] / result["int8_bytes"]
    assert result["float_accuracy"] > 0.9
    assert abs(result["int8_accuracy"] - result["float_accuracy"]) <= 0.01
    assert abs(result["reloaded_accuracy"] - result["int8_accuracy"]) < 1e-6  # f32 vs f64 mean


# -- dp_sgd_digits ---------------------------------------------------------------------------


def test_dp_sgd_digits_learns_and_reports_a_plausible_epsilon():
    result = _load("dp_sgd_digits").main(epochs=4)
    assert result["dp_accuracy"] > 0.8  # chance is 0.1; clipping and noise cost a few points
    assert result["plain_accuracy"] > 0.85
    # 4 epochs of ceil(1437 / 64) = 23 steps; sample rate 64 / 1437, sigma 1.1, delta 1e-4.
    assert result["steps"] == 92 and result["delta"] == 1e-4
    assert math.isfinite(result["epsilon"]) and 1.0 < result["epsilon"] < 5.0
    assert result["epsilon"] == result["planned_epsilon"]


# -- mixed_precision -------------------------------------------------------------------------


def test_mixed_precision_example_matches_float32_accuracy():
    result = _load("mixed_precision").main(epochs=4)
    f32, mixed = result["float32"], result["mixed_bfloat16"]
    assert f32["test_accuracy"] > 0.9 and mixed["test_accuracy"] > 0.9
    assert abs(mixed["test_accuracy"] - f32["test_accuracy"]) <= 0.015
    assert mixed["param_dtypes"] == ["float32"] and mixed["output_dtype"] == "float32"


# -- ensemble_sweep --------------------------------------------------------------------------


def test_ensemble_sweep_picks_a_sensible_rate_and_its_member_reloads():
    result = _load("ensemble_sweep").main(epochs=6)
    losses = result["val_loss"]
    # The far too small (1e-4) and far too large (1.0) rates lose to the chosen one.
    assert result["best_index"] in (1, 2)
    assert losses[result["best_index"]] == min(losses)
    assert losses[0] > losses[result["best_index"]] + 0.2 and losses[3] > losses[result["best_index"]] + 0.5
    assert result["best_accuracy"] > 0.9 and min(result["member_accuracy"]) > 0.85


# -- federated_averaging ---------------------------------------------------------------------


def test_federated_averaging_reaches_central_accuracy_on_label_skewed_clients():
    mod = _load("federated_averaging")
    result = mod.main(rounds=150)
    (_, y_train), _ = datasets.load_digits()
    rows = np.concatenate(result["shards"])
    assert sorted(rows.tolist()) == list(range(len(y_train)))  # a partition of the training rows
    assert result["main_share"] > 0.85  # non-IID: shards dominated by 2-3 classes
    assert result["central_accuracy"] > 0.93
    assert result["central_accuracy"] - result["federated_accuracy"] <= 0.02


def test_federated_server_average_is_weighted_by_shard_size():
    mod = _load("federated_averaging")
    rng = np.random.default_rng(0)
    client_params = {"w": jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32)}
    sizes = np.array([10.0, 30.0, 60.0], np.float32)
    got = mod.weighted_average(client_params, jnp.asarray(sizes))
    want = (np.asarray(client_params["w"]) * sizes[:, None, None]).sum(0) / sizes.sum()
    np.testing.assert_allclose(got["w"], want, rtol=1e-6)
