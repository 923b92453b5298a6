"""The layout's promises: the pure core never imports the shell and holds no mutable
module-level state; the public API is curated and pinned."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import kerax

ROOT = Path(kerax.__file__).parent
SHELL = ("kerax.models", "kerax.training", "kerax.saving", "kerax.cli", "kerax.distribute", "kerax.utils")
CORE_FILES = [*(ROOT / "core").glob("*.py"), *(ROOT / "layers").glob("*.py"), *(ROOT / "privacy").glob("*.py"),
              *(ROOT / name for name in ("activations.py", "initializers.py", "losses.py",
                                         "_loss_utils.py", "metrics.py", "_confusion_metrics.py", "_accuracy_metrics.py",
                                         "regularizers.py", "mixed_precision.py", "loss_scale.py"))]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_core_never_imports_the_shell():
    offenders = {
        str(path.relative_to(ROOT.parent)): sorted(i for i in _imports(path) if i.startswith(SHELL))
        for path in CORE_FILES
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_import_checker_would_catch_a_shell_import(tmp_path):
    bad = ROOT / "core" / "_probe_tmp.py"
    try:
        bad.write_text("from kerax.models import Sequential\nfrom ..training import fit\n")
        found = {i for i in _imports(bad) if i.startswith(SHELL)}
        assert "kerax.models" in found and "kerax.training" in found
    finally:
        bad.unlink()


MUTABLE = (dict, list, set, bytearray)


def test_core_holds_no_module_level_mutable_state():
    found = []
    for path in CORE_FILES:
        module = importlib.import_module(_module_name(path))
        for name, value in vars(module).items():
            if name.startswith("__"):
                continue
            if isinstance(value, MUTABLE) and not isinstance(value, type):
                found.append(f"{module.__name__}.{name}: {type(value).__name__}")
    assert found == []


def test_every_kerax_module_imports():
    for info in pkgutil.walk_packages([str(ROOT)], prefix="kerax."):
        importlib.import_module(info.name)


PUBLIC = [
    "Chain", "Graph", "Input", "Layer", "Model", "Sequential", "SymbolicTensor", "TrainState",
    "__version__", "activations", "callbacks", "checkpoint", "data", "datasets", "distribute", "errors", "initializers", "layers", "load_model", "losses",
    "make_eval_step", "make_predict_step", "make_train_step", "metrics", "mixed_precision", "optimizers", "privacy", "quantize",
    "register_layer", "regularizers", "schedules", "utils", "vmap_train_step",
]


def test_public_api_is_pinned():
    assert sorted(kerax.__all__) == sorted(PUBLIC)
    for name in kerax.__all__:
        assert hasattr(kerax, name), name


def test_every_public_layer_is_in_the_battery():
    from cases import all_cases

    covered = {type(c.make()).__name__ for c in all_cases()}
    public = {
        name for name in kerax.layers.__all__
        if isinstance(getattr(kerax.layers, name), type)
        and issubclass(getattr(kerax.layers, name), kerax.Layer)
        and getattr(kerax.layers, name).__name__ == name  # aliases share their class's case
    }
    assert public - covered - {"InputLayer"} == set()
