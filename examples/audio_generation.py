"""WaveNet-style audio generation: a causal dilated Conv1D stack learns to continue tones.

The training data are synthetic tones, each a sum of a few sines whose frequencies are
drawn from a small scale, with random phases and amplitudes. The model sees a waveform
and predicts the next sample at every time step (a regression, mean squared error);
``padding="causal"`` guarantees that output ``t`` only sees inputs ``<= t``, and the
doubling ``dilation_rate`` gives a receptive field of ``2 ** depth`` samples.

After training, a jit-compiled ``lax.scan`` generates a continuation autoregressively
from a prompt of a tone the model has never seen: each step runs the model on the last
``receptive_field`` samples and appends its prediction. The prompt and the continuation
are written as a 16-bit mono ``.wav`` with the standard library ``wave`` module.

Run: python examples/audio_generation.py   (writes generated.wav)
"""

from __future__ import annotations

import time
from typing import Callable
import wave

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers

SAMPLE_RATE = 8000
# C4 to G6 (Hz), at least 260 Hz apart: a window of 64 samples (8 ms) resolves about
# 125 Hz, so the model can tell the notes apart; closer notes make the task ill-conditioned
# and the generated tone drifts off within a few periods.
SCALE = (262.0, 523.0, 784.0, 1046.0, 1318.0, 1568.0)


def tones(n: int, length: int, seed: int, partials: int = 3) -> np.ndarray:
    """``n`` tones of ``length`` samples, each a sum of ``partials`` sines: ``(n, length)``.

    Frequencies come from ``SCALE``; the amplitudes sum to 0.9, so ``|x| < 1``.
    """
    rng = np.random.default_rng(seed)
    freqs = rng.choice(SCALE, size=(n, partials))
    phases = rng.uniform(0, 2 * np.pi, (n, partials))
    amps = rng.uniform(0.3, 1.0, (n, partials))
    amps = 0.9 * amps / amps.sum(1, keepdims=True)
    t = np.arange(length) / SAMPLE_RATE
    waves = amps[..., None] * np.sin(2 * np.pi * freqs[..., None] * t + phases[..., None])
    return waves.sum(1).astype(np.float32)


def build(depth: int = 6, channels: int = 32) -> kx.Model:
    """Gated residual blocks with dilations 1, 2, ..., 2**(depth-1) (kernel 2).

    Input shape: ``(batch, steps, 1)``. Output shape: ``(batch, steps, 1)``: the predicted
    next sample at every step.
    """
    inputs = kx.Input(shape=(None, 1))
    h = layers.Conv1D(channels, 1)(inputs)
    skips = []
    for i in range(depth):
        conv = layers.Conv1D(2 * channels, 2, padding="causal", dilation_rate=2 ** i)(h)
        # WaveNet's gate: tanh(filter) * sigmoid(gate), the two halves of one convolution.
        filt = layers.Lambda(lambda z: jnp.tanh(z[..., :channels]))(conv)
        gate = layers.Lambda(lambda z: jax.nn.sigmoid(z[..., channels:]))(conv)
        z = layers.Multiply()([filt, gate])
        skips.append(layers.Conv1D(channels, 1)(z))
        h = layers.Add()([h, layers.Conv1D(channels, 1)(z)])
    out = layers.Activation("relu")(layers.Add()(skips))
    out = layers.Conv1D(channels, 1, activation="relu")(out)
    return kx.Model(inputs, layers.Conv1D(1, 1)(out))


def make_generator(model: kx.Model, window: int, steps: int) -> Callable:
    """A jitted ``generate(params, prompt (window,)) -> (steps,)`` continuation."""

    @jax.jit
    def generate(params, prompt):
        def step(buf, _):
            y, _ = model.apply(params, {}, buf[None, :, None])
            nxt = jnp.clip(y[0, -1, 0], -1.0, 1.0)
            return jnp.concatenate([buf[1:], nxt[None]]), nxt

        _, out = jax.lax.scan(step, prompt, None, length=steps)
        return out

    return generate


def write_wav(path: str, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Writes ``samples`` in [-1, 1] as 16-bit mono PCM."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def main(out: str = "generated.wav", steps: int = 1000, n_train: int = 2048, length: int = 256,
         batch_size: int = 32, depth: int = 6, channels: int = 32, generate: int = 4000,
         n_test: int = 4, compare: int = 400, noise: float = 0.005) -> dict:
    """Trains, generates ``generate`` samples after a prompt for ``n_test`` unseen tones,
    and writes the first one (prompt + continuation) to ``out``."""
    window = 2 ** depth  # the receptive field
    data = tones(n_train, length, seed=0)
    model = build(depth, channels)
    params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, length - 1, 1), jnp.float32))
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.05))
    ts = kx.TrainState.create(model, params, state, tx, rng=jax.random.key(1))
    train_step = kx.make_train_step(model, loss="mse")

    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    losses = []
    for i in range(steps):
        batch = data[rng.integers(0, n_train, batch_size)]
        # Input: samples 0..T-2; target: samples 1..T-1 (the next sample at every step).
        # Noisy inputs, clean targets: the model learns to pull a slightly-off waveform back
        # onto a clean tone, so its own small errors do not pile up when it generates.
        noisy = batch + noise * rng.standard_normal(batch.shape, dtype=np.float32)
        ts, logs = train_step(ts, (noisy[:, :-1, None], batch[:, 1:, None]))
        if i % 50 == 0 or i == steps - 1:
            losses.append(float(logs["loss"]))
    train_time = time.perf_counter() - t0

    test = tones(n_test, window + generate, seed=123)
    prompts, truth = test[:, :window], test[:, window:]
    t0 = time.perf_counter()
    generator = jax.vmap(make_generator(model, window, generate), in_axes=(None, 0))
    gen = np.asarray(generator(ts.params, prompts))
    gen_time = time.perf_counter() - t0
    write_wav(out, np.concatenate([prompts[0], gen[0]]))

    err = float(np.mean((gen[:, :compare] - truth[:, :compare]) ** 2))
    zero_err = float(np.mean(truth[:, :compare] ** 2))  # the silent (zero/mean) predictor
    result = {
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "generation_mse": err,
        "zero_predictor_mse": zero_err,
        "generated": gen,
        "true_continuation": truth,
        "frames": window + generate,
        "sample_rate": SAMPLE_RATE,
        "out": str(out),
        "train_seconds": train_time,
        "generate_seconds": gen_time,
    }
    for k in ("first_loss", "final_loss", "generation_mse", "zero_predictor_mse", "train_seconds",
              "generate_seconds"):
        print(f"{k}: {result[k]:.5g}")
    print(f"wrote {out}: {window + generate} frames at {SAMPLE_RATE} Hz")
    return result


if __name__ == "__main__":
    main()
