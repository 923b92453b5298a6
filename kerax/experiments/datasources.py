"""The data sets a config's ``data`` section can name, with their options.

Each source returns a :class:`Split`: NumPy training and held-out test arrays plus facts
about them (``num_classes``, ``vocab_size``, ...) that the model section may reference as
``${data.num_classes}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from kerax import errors
from kerax.experiments.schema import INT_POS, Key, check_mapping, fraction, typed


@dataclasses.dataclass(frozen=True)
class Split:
    """Training and test arrays, and facts the model config may reference."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    info: dict


def _digits(o: dict) -> Split:
    from kerax.datasets import load_digits

    (x, y), (xt, yt) = load_digits(test_fraction=o["test_fraction"], seed=o["split_seed"])
    return Split(x, y, xt, yt, {"num_classes": 10, "input_shape": list(x.shape[1:])})


def _images(module: str) -> Callable[[dict], Split]:
    def load(o: dict) -> Split:
        import importlib

        loader = importlib.import_module(f"kerax.datasets.{module}")
        (x, y), (xt, yt) = loader.load_data(o["path"])
        if o["limit"]:
            x, y = x[:o["limit"]], y[:o["limit"]]

        def prep(a: np.ndarray) -> np.ndarray:
            a = a.astype(np.float32) / 255.0
            return a.reshape(len(a), -1) if o["flatten"] else a[..., None]
        x, xt = prep(x), prep(xt)
        return Split(x, y.astype(np.int32), xt, yt.astype(np.int32),
                     {"num_classes": 10, "input_shape": list(x.shape[1:])})
    return load


def _text(o: dict) -> Split:
    from kerax.datasets import text

    corpus = text.load_corpus(o["path"], max_chars=o["max_chars"])
    x, y = corpus.windows(o["seq_len"], stride=o["stride"])
    n_test = max(1, int(len(x) * o["test_fraction"]))
    # the held-out windows are the end of the text, not shuffled in: no overlap leaks
    cut = len(x) - n_test
    return Split(x[:cut - o["seq_len"]], y[:cut - o["seq_len"]], x[cut:], y[cut:],
                 {"vocab_size": corpus.vocab_size, "num_classes": corpus.vocab_size,
                  "unigram_entropy": corpus.unigram_entropy(), "seq_len": o["seq_len"]})


def _line(o: dict) -> Split:
    """The first Keras program's data: y = slope * x + intercept on a few points; the test
    points lie beyond the training range (extrapolation)."""
    x = np.arange(-1.0, -1.0 + o["n_train"], dtype=np.float32)[:, None]
    xt = np.arange(x[-1, 0] + 1, x[-1, 0] + 4, dtype=np.float32)[:, None]
    f = lambda v: (o["slope"] * v + o["intercept"]).astype(np.float32)
    return Split(x, f(x), xt, f(xt), {"input_shape": [1]})


_PATH = Key(typed(str, none=True))
SOURCES: dict[str, tuple[dict[str, Key], Callable[[dict], Split]]] = {
    "digits": ({"test_fraction": Key(typed(float, more=fraction), 0.2),
                "split_seed": Key(typed(int), 0)}, _digits),
    "mnist": ({"path": _PATH, "flatten": Key(typed(bool), False), "limit": Key(typed(int, none=True))},
              _images("mnist")),
    "fashion_mnist": ({"path": _PATH, "flatten": Key(typed(bool), False),
                       "limit": Key(typed(int, none=True))}, _images("fashion_mnist")),
    "text": ({"path": _PATH, "max_chars": Key(INT_POS, 200_000), "seq_len": Key(INT_POS, 32),
              "stride": Key(INT_POS, 3), "test_fraction": Key(typed(float, more=fraction), 0.1)}, _text),
    "line": ({"n_train": Key(INT_POS, 6), "slope": Key(typed(int, float), 2.0),
              "intercept": Key(typed(int, float), -1.0)}, _line),
}


def check(data: Mapping) -> dict:
    """Validates a ``data`` section against its source's options; fills in defaults."""
    name = data.get("name")
    if not isinstance(name, str):
        raise errors.ConfigError(f"data.name: expected the name of a data set "
                                 f"({', '.join(SOURCES)}); found {name!r}")
    if name not in SOURCES:
        raise errors.UnknownNameError(f"data.name: {errors.unknown_name('data set', name, SOURCES)}")
    spec = {"name": Key(typed(str)), **SOURCES[name][0]}
    return check_mapping("data", data, spec)


def load(data: Mapping) -> Split:
    """Loads the data set a (checked) ``data`` section names."""
    options = check(data)
    return SOURCES[options["name"]][1](options)


def substitute(config: Any, info: Mapping[str, Any], path: str = "model") -> Any:
    """Replaces each string ``"${data.KEY}"`` in ``config`` by ``info[KEY]``."""
    if isinstance(config, dict):
        return {k: substitute(v, info, f"{path}.{k}") for k, v in config.items()}
    if isinstance(config, list):
        return [substitute(v, info, f"{path}[{i}]") for i, v in enumerate(config)]
    if isinstance(config, str) and config.startswith("${data.") and config.endswith("}"):
        key = config[len("${data."):-1]
        if key not in info:
            raise errors.ConfigError(f"{path}: {config} is not known for this data set; "
                                     f"known: {', '.join(sorted(info)) or 'none'}")
        return info[key]
    return config
