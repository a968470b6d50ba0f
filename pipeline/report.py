"""Stage report: the study's results table, rebuilt from the metrics files beside the report's own numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import layout
from pipeline.config import Config
from pipeline.models import REGISTRY

RESULTS = layout.REPORTS_DIR / "results.md"
# The report's own results (lowest validation loss, best test accuracy, epochs, learning rate).
REPORTED = {
    "cats_dogs_naive": (0.694, 0.503, 10, 0.00085),
    "cats_dogs_vgg16_frozen": (0.258, 0.955, 10, 0.0008),
    "cats_dogs_vgg16_finetune": (0.318, 0.933, 10, 0.0008),
    "cats_dogs_vgg16_finetune_aug": (0.685, 0.926, 10, 0.0008),
    "cifar10_naive": (1.137, 0.601, 7, 0.00085),
    "cifar10_inception": (1.18, 0.672, 12, 0.001),
    "cifar10_residual": None,  # trained in the report, but no result given
}
TASK_TITLES = {"cats_dogs": "Binary: cats vs dogs", "cifar10": "Multi-class: CIFAR-10"}


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def result_row(name: str) -> str:
    trained, tested = read_json(layout.train_metrics(name)), read_json(layout.eval_metrics(name))
    reported = REPORTED[name]
    ours = "– | – | –"
    if trained and tested:
        hp = trained["hyperparameters"]
        ours = (f"{trained['best']['val_loss']:.3f} | **{tested['test_accuracy']:.3f}** | "
                f"{hp['epochs']} / {hp['learning_rate']:g} / {hp['batch_size']}")
    theirs = f"{reported[0]:.3f} | {reported[1]:.3f} | {reported[2]} / {reported[3]:g}" if reported else "– | – | –"
    figures = layout.figures_dir(name)
    link = f"[figures]({figures.relative_to(layout.REPORTS_DIR).as_posix()}/)" if figures.exists() else ""
    weights = (trained or {}).get("vgg16_weights", "imagenet")
    label = f"`{name}`" if weights == "imagenet" else f"`{name}` (VGG16 {weights})"
    return f"| {label} | {ours} | {theirs} | {link} |"


def task_section(task: str, names: list[str]) -> list[str]:
    lines = [f"## {TASK_TITLES[task]}", "",
             "| model | lowest val loss | test accuracy | epochs / lr / batch | report: val loss | report: accuracy "
             "| report: epochs / lr | |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [result_row(name) for name in names]
    comparison = compare_figure(task, names)
    if comparison:
        lines += ["", f"![{task} validation curves]({comparison.relative_to(layout.REPORTS_DIR).as_posix()})"]
    return lines + [""]


def compare_figure(task: str, names: list[str]) -> Path | None:
    from pipeline.visualize.curves import compare_models

    histories = {name: pd.read_csv(layout.history_file(name)) for name in names
                 if layout.history_file(name).exists()}
    if not histories:
        return None
    path = layout.REPORTS_DIR / "figures" / f"compare_{task}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    compare_models(histories, path)
    return path


def run(config: Config) -> None:
    subset = config.data.subset_per_class
    lines = ["# Results", "",
             "Rebuilt by `dvc repro report` from `metrics/` (ours) beside the numbers of the original report.",
             f"Data: {'the full study' if subset is None else f'subset profile, {subset} images per class'}; "
             f"seed {config.seed}.", ""]
    for task in ("cats_dogs", "cifar10"):
        lines += task_section(task, [name for name, spec in REGISTRY.items() if spec.task == task])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")
