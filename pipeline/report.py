"""Stage report: the study's results table, rebuilt from the metrics files beside the report's own numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import layout
from pipeline.config import Config
from pipeline.files import write_text_atomically
from pipeline.models import REGISTRY

RESULTS = layout.REPORTS_DIR / "results.md"
COMPARE_DIR = layout.REPORTS_DIR / "compare"
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


def figures_link(name: str) -> str:
    figures = layout.figures_dir(name)
    return f"[figures]({figures.relative_to(layout.REPORTS_DIR).as_posix()}/)" if figures.exists() else ""


def result_row(name: str) -> str:
    trained, tested = read_json(layout.train_metrics(name)), read_json(layout.eval_metrics(name))
    reported = REPORTED[name]
    ours = "– | – | –"
    if trained and tested:
        hp = trained["hyperparameters"]
        ours = (f"{trained['best']['val_loss']:.3f} | **{tested['test_accuracy']:.3f}** | "
                f"{hp['epochs']} / {hp['learning_rate']:g} / {hp['batch_size']}")
    theirs = f"{reported[0]:.3f} | {reported[1]:.3f} | {reported[2]} / {reported[3]:g}" if reported else "– | – | –"
    weights = (trained or {}).get("vgg16_weights", "imagenet")
    label = f"`{name}`" if weights == "imagenet" else f"`{name}` (VGG16 {weights})"
    return f"| {label} | {ours} | {theirs} | {figures_link(name)} |"


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
    return compare_models(histories, COMPARE_DIR / f"{task}_curves.png")


def cifar10_results(config: Config) -> pd.DataFrame:
    """One row per CIFAR-10 model: its size, whether the study had it, and what it measured."""
    from pipeline.models import build_model

    rows = []
    for name, spec in REGISTRY.items():
        if spec.task != "cifar10":
            continue
        trained, tested = read_json(layout.train_metrics(name)), read_json(layout.eval_metrics(name))
        reported = REPORTED.get(name)
        rows.append({
            "model": name, "in_study": spec.in_study,
            "parameters": build_model(name, config.model(name)).count_params(),
            "best_val_accuracy": trained["best"]["val_accuracy"] if trained else None,
            "test_accuracy": tested["test_accuracy"] if tested else None,
            "wall_time_s": trained["wall_time_s"] if trained else None,
            "report_accuracy": reported[1] if reported else None,
        })
    return pd.DataFrame(rows)


def beyond_the_study(results: pd.DataFrame) -> list[str]:
    """The report's next step (other Inception modules, skips elsewhere) beside its own models."""
    def number(value, form, unit=""):
        return "–" if pd.isna(value) else format(value, form) + unit

    lines = ["## Beyond the study: other Inception modules, residual connections elsewhere", "",
             "The report's closing question, answered on CIFAR-10 with the same recipe as `cifar10_naive`.", "",
             "| model | in the study | parameters | best val accuracy | test accuracy | training wall time "
             "| report: accuracy |",
             "|---|---|---|---|---|---|---|"]
    for row in results.itertuples():
        lines.append(f"| `{row.model}` | {'yes' if row.in_study else 'no'} | {row.parameters:,} "
                     f"| {number(row.best_val_accuracy, '.3f')} | **{number(row.test_accuracy, '.3f')}** "
                     f"| {number(row.wall_time_s, '.0f', ' s')} | {number(row.report_accuracy, '.3f')} |")
    figure = accuracy_figure(results)
    if figure:
        lines += ["", f"![CIFAR-10: test accuracy against size and training time]"
                      f"({figure.relative_to(layout.REPORTS_DIR).as_posix()})"]
    return lines + [""]


def accuracy_figure(results: pd.DataFrame) -> Path | None:
    """Test accuracy against parameter count and against training time; the report's numbers
    are marked at the size of the same network here (the report gives only the naive CNN's)."""
    from pipeline.visualize.curves import save_figure  # sets the Agg backend first
    import matplotlib.pyplot as plt

    measured = results.dropna(subset=["test_accuracy"])
    if measured.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, column, label in ((axes[0], "parameters", "parameters"), (axes[1], "wall_time_s", "training wall time (s)")):
        for in_study, colour, group in ((True, "tab:blue", "the study's models"), (False, "tab:green", "beyond the study")):
            part = measured[measured["in_study"] == in_study]
            ax.scatter(part[column], part["test_accuracy"], color=colour, label=group, zorder=3)
            for row in part.itertuples():
                ax.annotate(row.model.removeprefix("cifar10_"), (getattr(row, column), row.test_accuracy),
                            textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    reported = results.dropna(subset=["report_accuracy"])
    axes[0].scatter(reported["parameters"], reported["report_accuracy"], color="tab:red", marker="x",
                    label="the report's result", zorder=3)
    for row in reported.itertuples():
        axes[0].annotate(f"report: {row.model.removeprefix('cifar10_')}", (row.parameters, row.report_accuracy),
                         textcoords="offset points", xytext=(5, 4), fontsize=8, color="tab:red")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].xaxis.set_major_formatter(lambda value, _: f"{value / 1000:,.0f}k")
    fig.suptitle("CIFAR-10: test accuracy against size and training time")
    return save_figure(fig, COMPARE_DIR / "cifar10_accuracy.png")


def run(config: Config) -> None:
    subset = config.data.subset_per_class
    lines = ["# Results", "",
             "Rebuilt by `dvc repro report` from `metrics/` (ours) beside the numbers of the original report.",
             f"Data: {'the full study' if subset is None else f'subset profile, {subset} images per class'}; "
             f"seed {config.seed}.", ""]
    for task in ("cats_dogs", "cifar10"):
        lines += task_section(task, [name for name, spec in REGISTRY.items() if spec.task == task and spec.in_study])
    lines += beyond_the_study(cifar10_results(config))
    write_text_atomically(RESULTS, "\n".join(lines))
    print(f"wrote {RESULTS}")
