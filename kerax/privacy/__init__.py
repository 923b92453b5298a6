"""Differential privacy: per-example gradients, DP-SGD and its privacy accounting.

::

    model.compile(optimizer=optax.sgd(0.1), loss="sparse_categorical_crossentropy",
                  dp=kx.privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.1))
    history = model.fit(x, y, batch_size=64, epochs=5)
    print(history.privacy)                       # (epsilon, delta) spent

Pure core side: this package never imports the Keras shell (the train step imports it).
See ``docs/privacy.md``.
"""

from kerax.privacy.accountant import PrivacySpent, compute_epsilon, privacy_spent
from kerax.privacy.dpsgd import DPSGD
from kerax.privacy.per_example import clip_and_aggregate, clip_per_example, global_norms, per_example_grads

__all__ = [
    "DPSGD",
    "PrivacySpent",
    "clip_and_aggregate",
    "clip_per_example",
    "compute_epsilon",
    "global_norms",
    "per_example_grads",
    "privacy_spent",
]
