"""Learning curves: one panel per quantity (loss, each metric), training and validation."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

PANEL_INCHES = (4.5, 3.5)
DPI = 100


def panels(history: Mapping[str, Sequence[float]]) -> list[str]:
    """The quantities to draw: every history key without the ``val_`` prefix, loss first."""
    names = sorted({k[4:] if k.startswith("val_") else k for k in history} - {"learning_rate", "lr"})
    return sorted(names, key=lambda k: (k != "loss", k))


def plot_history(history: Mapping[str, Sequence[float]], path: str | os.PathLike,
                 title: str | None = None) -> tuple[int, int]:
    """Draws ``history`` (``{"loss": [...], "val_loss": [...], ...}``, one value per epoch)
    to a PNG at ``path``; returns its size in pixels ``(width, height)``: 450 x 350 per panel."""
    # the object API renders without pyplot: no global backend state, no display needed
    from matplotlib.figure import Figure

    names = panels(history)
    fig = Figure(figsize=(PANEL_INCHES[0] * max(1, len(names)), PANEL_INCHES[1]), dpi=DPI)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, max(1, len(names)), i + 1)
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            values = history.get(key)
            if values:
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, [float(v) for v in values], marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=DPI)
    w, h = fig.get_size_inches() * DPI
    return int(round(w)), int(round(h))
