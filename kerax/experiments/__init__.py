"""Experiments from config files: reading and checking YAML configs, building the data,
model and training from them, and writing a run's records (what ``kerax train`` does)."""

from kerax.experiments.runner import Run, build_model, builtin_configs, read_config, train
from kerax.experiments.schema import apply_overrides, validate

__all__ = ["Run", "apply_overrides", "build_model", "builtin_configs", "read_config", "train", "validate"]
