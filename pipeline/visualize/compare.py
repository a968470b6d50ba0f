"""The README's figures: models side by side, drawn by the report from every recorded run.

reports/compare/ receives at most three figures, kept in git: cifar10_accuracy.png (mean test
accuracy against size and training time), cifar10_curves.png and cats_dogs_curves.png (the
validation curves of the default seed's run of each model measured).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from adjustText import adjust_text

from pipeline import paths
from pipeline.registry import REGISTRY
from pipeline.visualize.curves import compare_models, save_figure  # sets the Agg backend before pyplot
import matplotlib.pyplot as plt  # after the backend is set

COMPARE_DIR = paths.REPORTS_DIR / "compare"
LABEL_STEPS = 500  # moves of the point names in the accuracy figure


def draw(runs: pd.DataFrame, default_seed: int, original: dict[str, float | None],
         task_names: dict[str, str]) -> dict[Path, str]:
    """The figures of these measured runs, each with its caption; `original`: the original
    study's test accuracy per model, `task_names`: each task as the captions say it."""
    shutil.rmtree(COMPARE_DIR, ignore_errors=True)  # a figure of runs no longer recorded goes too
    figures = {}
    cifar10 = runs[runs["model"].map(lambda model: REGISTRY[model].task) == "cifar10"]
    if not cifar10.empty:
        caption = "CIFAR-10: test accuracy against parameters and against training time"
        figures[save_figure(draw_accuracy(model_points(cifar10, original), cpu_label(cifar10)),
                            COMPARE_DIR / "cifar10_accuracy.png")] = caption
    for task, name in task_names.items():
        histories = default_histories(runs, task, default_seed)
        if histories:
            caption = f"{name}: validation per epoch of seed {default_seed}'s runs, as each network trained"
            figures[compare_models(histories, COMPARE_DIR / f"{task}_curves.png", caption)] = caption
    return figures


def default_histories(runs: pd.DataFrame, task: str, seed: int) -> dict[str, Path]:
    """The history file of each model of the task that has a run under `seed`."""
    models = [model for model in runs.loc[runs["seed"] == seed, "model"] if REGISTRY[model].task == task]
    return {model: paths.history_file(model, seed) for model in models if paths.history_file(model, seed).exists()}


def model_points(runs: pd.DataFrame, original: dict[str, float | None]) -> pd.DataFrame:
    """One point per model: its size, mean test accuracy and standard deviation over its seeds
    (none for one seed), mean training time, and the original study's accuracy where it gave one."""
    points = runs.groupby("model", sort=False).agg(
        parameters=("parameters", "first"), test_accuracy=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"), wall_time_s=("wall_time_s", "mean")).reset_index()
    points["in_study"] = points["model"].map(lambda model: REGISTRY[model].in_study)
    points["original"] = points["model"].map(lambda model: original.get(model)).astype(float)
    return points


def cpu_label(runs: pd.DataFrame) -> str:
    """The CPU kinds the times were measured on: a time means little without its CPU."""
    return " / ".join(sorted(set(runs["cpu_kind"])))


def draw_accuracy(points: pd.DataFrame, cpu: str):
    """Mean test accuracy (bars: one standard deviation over the seeds) against parameter count
    and against training time; the original study's numbers are marked at the size of the same
    network here, on a broken axis below, so that the spreads over seeds stay readable."""
    fig = plt.figure(figsize=(12, 5))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1])
    by_size, by_time = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[:, 1])
    original_axis = fig.add_subplot(grid[1, 0], sharex=by_size)
    accuracy_axis(by_size, points, "parameters", "")
    accuracy_axis(by_time, points, "wall_time_s", f"training wall time (s), {cpu}")
    original_results(original_axis, points.dropna(subset=["original"]))
    break_between(by_size, original_axis)
    by_size.legend(fontsize=8, loc="upper right")
    original_axis.xaxis.set_major_formatter(
        lambda value, _: f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k")
    fig.suptitle("CIFAR-10: test accuracy against size and training time")
    return fig


def original_results(ax, points: pd.DataFrame) -> None:
    """The original study's accuracies, far below ours, on their own stretch of the accuracy axis."""
    ax.scatter(points["parameters"], points["original"], color="tab:red", marker="x", zorder=3)
    ax.margins(y=0.4)
    ax.set_xlabel("parameters")
    ax.set_ylabel("original study")
    ax.grid(alpha=0.3)
    label_points(ax, [(row.parameters, row.original, f"original study: {short_name(row.model)}", "tab:red")
                      for row in points.itertuples()])


def break_between(upper, lower) -> None:
    """Draw one accuracy axis cut in two: no spine or ticks where they meet, slanted marks at the cut."""
    upper.spines.bottom.set_visible(False)
    lower.spines.top.set_visible(False)
    upper.tick_params(axis="x", bottom=False, labelbottom=False)
    marks = {"marker": [(-1, -0.5), (1, 0.5)], "markersize": 8, "linestyle": "none", "color": "k", "clip_on": False}
    upper.plot([0, 1], [0, 0], transform=upper.transAxes, **marks)
    lower.plot([0, 1], [1, 1], transform=lower.transAxes, **marks)


def accuracy_axis(ax, points: pd.DataFrame, column: str, xlabel: str) -> None:
    """Mean test accuracy against one column, the study's models and the others in two colours, each named."""
    for in_study, colour, group in ((True, "tab:blue", "the study's models"), (False, "tab:green", "beyond the study")):
        part = points[points["in_study"] == in_study]
        ax.errorbar(part[column], part["test_accuracy"], yerr=part["test_accuracy_std"].fillna(0).to_numpy(),
                    fmt="o", color=colour, capsize=3, label=group, zorder=3)
    ax.margins(y=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    label_points(ax, [(row[column], row["test_accuracy"], short_name(row["model"]), "black")
                      for _, row in points.iterrows()])


def short_name(model: str) -> str:
    return model.removeprefix("cifar10_")


def label_points(ax, labels: list[tuple]) -> None:
    """Name each point, moving names apart where points lie close (networks of nearly one size)."""
    if not labels:
        return
    texts = [ax.text(x, y, name, fontsize=8, color=colour) for x, y, name, colour in labels]
    # A fixed number of steps, not adjustText's default of one second: the same runs draw the same PNG.
    adjust_text(texts, x=[x for x, *_ in labels], y=[y for _, y, *_ in labels], ax=ax, iter_lim=LABEL_STEPS,
                arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
