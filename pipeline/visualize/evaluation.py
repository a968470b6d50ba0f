"""The test split's figures of one training: its confusion matrix and, for a task of two classes,
the ROC and precision-recall curves (scikit-learn's displays), which evaluate logs into the run."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

from pipeline.atomic import replacing_file  # noqa: E402

DPI = 100


def save(figure, path: Path) -> Path:
    figure.tight_layout()
    with replacing_file(path) as partial:
        figure.savefig(partial, dpi=DPI, format=path.suffix.lstrip("."))
    plt.close(figure)
    return path


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    size = 3 + 0.5 * len(classes)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(title)
    threshold = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=8)
    return save(figure, path)


def plot_binary_curves(labels: np.ndarray, scores: np.ndarray, positive: str, title: str,
                       folder: Path) -> list[Path]:
    """roc.png and precision_recall.png of the scores given to the class `positive` (label 1)."""
    drawn = []
    for display, name in ((RocCurveDisplay, "roc"), (PrecisionRecallDisplay, "precision_recall")):
        figure, axes = plt.subplots(figsize=(4.5, 4.5))
        display.from_predictions(labels, scores, pos_label=1, name=f"{positive} (test)", ax=axes,
                                 plot_chance_level=True)
        axes.set_title(title)
        drawn.append(save(figure, folder / f"{name}.png"))
    return drawn
