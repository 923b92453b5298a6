"""A character-level LSTM language model, trained on the pure level, then sampled.

The corpus is ``kx.datasets.text.load_corpus()``: standard-library docstrings, present on
every machine. The model reads a window of characters and predicts, at every position,
the next one: ``Embedding -> LSTM(return_sequences=True) -> Dense(vocab)`` logits with
``sparse_categorical_crossentropy(from_logits=True)``.

The yardstick is the held-out text's unigram entropy: the cross-entropy (nats per
character) of the best model that ignores context. A model below it has learned to use
the preceding characters.

Sampling steps the LSTM's cell (``model.layers[1].cell``, a pure layer too) one character
at a time with its ``(h, c)`` state carried, inside one jit-compiled ``lax.scan``: a
prompt warms the state up, then each step draws the next character from
``softmax(logits / temperature)``. The same key gives the same text.

Run: python examples/char_rnn.py
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import datasets, layers


def build(vocab_size: int, embed_dim: int = 32, units: int = 128) -> kx.Sequential:
    """``(batch, steps)`` int32 ids -> ``(batch, steps, vocab_size)`` next-character logits."""
    return kx.Sequential([
        layers.Embedding(vocab_size, embed_dim, name="embed"),
        layers.LSTM(units, return_sequences=True, name="lstm"),
        layers.Dense(vocab_size, name="logits"),
    ])


def make_sampler(model: kx.Sequential, length: int) -> Callable:
    """A jitted ``sample(params, prompt (p,) int32, key, temperature) -> (length,)`` ids."""
    embed, lstm, head = model.layers
    cell = lstm.cell

    def advance(params, carry, token):
        x_t, _ = embed.apply(params["embed"], {}, token[None])  # (1, embed_dim)
        (h, new), _ = cell.apply(params["lstm"], {}, [x_t, *carry])
        logits, _ = head.apply(params["logits"], {}, h)
        return tuple(new), logits[0]

    @jax.jit
    def sample(params, prompt, key, temperature):
        units = params["lstm"]["recurrent_kernel"].shape[0]
        carry = (jnp.zeros((1, units)), jnp.zeros((1, units)))

        def warm(state, token):
            carry, _ = state
            return advance(params, carry, token), None

        (carry, logits), _ = jax.lax.scan(warm, (carry, jnp.zeros(head.units)), prompt)

        def draw(state, key):
            carry, logits = state
            token = jax.random.categorical(key, logits / temperature)
            return advance(params, carry, token), token

        _, tokens = jax.lax.scan(draw, (carry, logits), jax.random.split(key, length))
        return tokens

    return sample


def sequences(corpus: datasets.text.Corpus, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, seq_len)`` and targets ``(n, seq_len)``: the same text one character on."""
    x, _ = corpus.windows(seq_len + 1, stride=stride)
    return x[:, :-1], x[:, 1:]


def main(steps: int = 2000, batch_size: int = 32, seq_len: int = 64, units: int = 128,
         max_chars: int = 200_000, sample_length: int = 400, temperature: float = 0.7,
         prompt: str = "Return the ", seed: int = 0) -> dict:
    """Trains for ``steps`` batches of ``batch_size`` windows, evaluates, and samples."""
    corpus = datasets.text.load_corpus(max_chars=max_chars)
    # The held-out text is the corpus' last 10%: other modules' docs than the training text,
    # so its loss is a fair (and harder) test than a random slice would be.
    train, test = corpus.split(0.1)
    x_train, y_train = sequences(train, seq_len, stride=seq_len // 2)
    x_test, y_test = sequences(test, seq_len, stride=seq_len)

    model = build(corpus.vocab_size, units=units)
    params, state = model.init(jax.random.key(seed), jax.ShapeDtypeStruct((1, seq_len), jnp.int32))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, min(100, steps // 10 + 1), steps, 1e-3)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    ts = kx.TrainState.create(model, params, state, tx, rng=jax.random.key(seed + 1))
    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_step = kx.make_train_step(model, loss=loss)
    eval_step = kx.make_eval_step(model, loss=loss)

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    history = []  # (train loss, held-out loss) ten times during training
    for i in range(steps):
        idx = rng.integers(0, len(x_train), batch_size)
        ts, logs = train_step(ts, (x_train[idx], y_train[idx]))
        if (i + 1) % max(1, steps // 10) == 0:
            history.append((float(logs["loss"]), float(eval_step(ts, (x_test, y_test))["loss"])))
            print(f"step {i + 1}: loss {history[-1][0]:.3f} - held-out loss {history[-1][1]:.3f}")
    train_seconds = time.perf_counter() - t0
    test_loss = float(eval_step(ts, (x_test, y_test))["loss"])

    sample = make_sampler(model, sample_length)
    ids = sample(ts.params, jnp.asarray(corpus.encode(prompt)), jax.random.key(seed + 2), temperature)
    text = corpus.decode(np.asarray(ids))
    entropy = test.unigram_entropy()

    result = {
        "loss": test_loss,  # held-out cross-entropy, nats per character
        "train_loss": float(logs["loss"]),  # the last batch's
        "unigram_entropy": entropy,
        "bits_per_char": test_loss / float(np.log(2)),
        "sample": prompt + text,
        "vocab": corpus.vocab,
        "history": history,
        "train_seconds": train_seconds,
    }
    print(f"held-out loss {test_loss:.3f} nats/char vs unigram entropy {entropy:.3f} "
          f"({result['bits_per_char']:.2f} bits/char); trained in {train_seconds:.1f} s")
    print(f"--- sample (temperature {temperature}) ---\n{result['sample']}")
    return result


if __name__ == "__main__":
    main()
