"""Learning curves: loss and accuracy per epoch, for one model or several side by side."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.atomic import replacing_file  # noqa: E402

DPI = 100

History = pd.DataFrame | dict | str | Path


def read_history(history: History) -> pd.DataFrame:
    """A history CSV (epoch, loss, accuracy, val_loss, val_accuracy[, phase]) as a frame."""
    if isinstance(history, (str, Path)):
        frame = pd.read_csv(history)
    else:
        frame = pd.DataFrame(history)
    if "epoch" not in frame:
        frame["epoch"] = range(1, len(frame) + 1)
    return frame


def phase_starts(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """(x position, phase name) where a new training phase begins, e.g. fine-tuning."""
    if "phase" not in frame:
        return []
    changed = frame["phase"].ne(frame["phase"].shift()) & (frame.index > frame.index[0])
    return [(epoch - 0.5, str(phase)) for epoch, phase in zip(frame["epoch"][changed], frame["phase"][changed])]


def label_axes(ax, metric: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def save_figure(fig, out_png: Path) -> Path:
    """Drawn beside `out_png` and renamed into place: a reader never sees half a PNG."""
    fig.tight_layout()
    out_png = Path(out_png)
    with replacing_file(out_png) as partial:
        fig.savefig(partial, dpi=DPI)
    plt.close(fig)
    return out_png


def plot_history(history: History, out_png: Path, title: str | None = None) -> Path:
    """Two panels, loss and accuracy, train and validation; phase changes marked."""
    frame = read_history(history).reset_index(drop=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=DPI)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(frame["epoch"], frame[metric], "o-", markersize=3, label="train")
        ax.plot(frame["epoch"], frame[f"val_{metric}"], "s-", markersize=3, label="validation")
        for x, phase in phase_starts(frame):
            # Labelled through the legend, which keeps clear of the lines and of other text.
            ax.axvline(x, color="grey", linestyle="--", linewidth=1, label=f"{phase.replace('_', '-')} starts")
        label_axes(ax, metric)
        ax.legend()
    fig.suptitle(title or "learning curves")
    return save_figure(fig, out_png)


def compare_models(histories: dict[str, History], out_png: Path, title: str | None = None) -> Path:
    """Validation accuracy and loss of several models on one figure, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=DPI)
    for name, history in histories.items():
        frame = read_history(history)
        for ax, metric in zip(axes, ("val_accuracy", "val_loss")):
            ax.plot(frame["epoch"], frame[metric], "o-", markersize=3, label=name)
    for ax, metric in zip(axes, ("validation accuracy", "validation loss")):
        label_axes(ax, metric)
        ax.legend(fontsize=8)
    fig.suptitle(title or "models compared")
    return save_figure(fig, out_png)
