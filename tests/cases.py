"""The descriptor table of every public layer, run through one battery (test_layer_battery).

Each family adds its cases in its own module ``tests/cases_<family>.py`` as a list named
``CASES``; this module gathers them. A case builds a fresh layer and says what input it
takes: ``shape`` (batch axis first; a list of shapes for multi-input layers), ``dtype``,
and for integer inputs ``int_high`` (values drawn from ``[0, int_high)``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Any]
    shape: Any
    dtype: str = "float32"
    int_high: int | None = None
    training: bool = False  # also run apply with training=True (needs rng)
    grad: bool = True  # check jax.grad w.r.t. params (False for integer-only paths)
    exact_init: bool = True  # init under jit bitwise equal to eager (not for foreign code)
    custom_objects: Callable[[Any], dict] | None = None  # layer -> custom_objects for from_config

    def inputs(self, seed: int = 0) -> Any:
        rng = np.random.default_rng(seed)

        def one(shape):
            if self.int_high is not None:
                return rng.integers(0, self.int_high, size=shape).astype(self.dtype)
            return rng.normal(size=shape).astype(self.dtype)

        if isinstance(self.shape, list):
            return [one(tuple(s)) for s in self.shape]
        return one(tuple(self.shape))


def all_cases() -> list[Case]:
    cases: list[Case] = []
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("cases_"):
            cases.extend(importlib.import_module(info.name).CASES)
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"duplicate case names: {dupes}"
    return cases
