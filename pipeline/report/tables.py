"""The markdown of reports/results.md, and the copy of its summary and verdicts into README.md.

Every number comes from the runs `collect` read; the original study's own numbers sit beside ours.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.registry import REGISTRY
from pipeline.report.collect import measured, of_model
from pipeline.report.stats import LEVEL, Verdict, spread, verdict

# The original study's best test accuracy per model (cifar10_residual: trained there, no result given).
ORIGINAL_STUDY = {
    "cats_dogs_naive": 0.503,
    "cats_dogs_vgg16_frozen": 0.955,
    "cats_dogs_vgg16_finetune": 0.933,
    "cats_dogs_vgg16_finetune_aug": 0.926,
    "cifar10_naive": 0.601,
    "cifar10_inception": 0.672,
    "cifar10_residual": None,
}
TASK_NAMES = {"cats_dogs": "cats vs dogs", "cifar10": "CIFAR-10"}
# What a verified checksum says about the data behind a result.
KNOWN_DATA = {
    "sha256:b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9":
        "Microsoft's kagglecatsanddogs_5340.zip (12,500 photos per class)",
    "sha256:5b997ebc3fd27237b413f30d1a7439c077bc0a217b6b5c2981fb796915b7d784":
        "the 4000-image mirror of Kaggle's first 2000 cats and 2000 dogs (its SHA256SUMS list); "
        "Microsoft's zip gives another seeded sample",
    "md5:c58f30108f718f92721af3b95e74349a": "the upstream CIFAR-10 archive",
    "sha256:badcc23cde684a88fde3ff3d591e9bafef7c1afdc57f11ff32a65942de174760":
        "CIFAR-10 rebuilt from its JPEG copies (`build_python_archive.py`): the pixels differ slightly "
        "from the upstream archive's",
}
# The study's questions, each a CIFAR-10 model against the network it changes.
COMPARISONS = [
    ("cifar10_inception", "cifar10_naive", "Does a naive Inception block help?"),
    ("cifar10_residual", "cifar10_naive", "Does a residual block (after the stem) help?"),
    ("cifar10_inception_reduced", "cifar10_inception", "Does dimension reduction help the Inception block?"),
    ("cifar10_inception_reduced", "cifar10_naive", "Does an Inception block with dimension reduction help?"),
    ("cifar10_inception_reduced_x2", "cifar10_inception_reduced", "Does a second reduced Inception block help?"),
    ("cifar10_residual_8x8", "cifar10_naive", "Does a skip around conv3 (8x8) help?"),
    ("cifar10_residual_4x4", "cifar10_naive", "Does a skip around conv4 (4x4) help?"),
]
README = Path("README.md")
README_TABLES = ("results", "verdicts")  # README.md's markers, around the summary and the verdicts


def row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def table(header: list[str], rows: list[str]) -> str:
    return "\n".join([row(*header), "|---" * len(header) + "|", *rows])


def intro(config: Config) -> list[str]:
    return ["# Results", "",
            "Rebuilt by `dvc repro report` from every run's files (`metrics/<model>-<seed>.json`, "
            "`reports/training/<model>-<seed>.json`), beside the test accuracies of the original study. "
            f"Each model trains once per seed of params.yaml's `seeds` ({', '.join(map(str, config.seeds))}); "
            "a run not yet recorded is left out. Val and test accuracy are the saved model's (the last "
            "epoch's), as `evaluate` measures it.", ""]


def data_lines(config: Config, splits: dict[str, dict]) -> list[str]:
    """Which images each task's numbers were measured on, named by their verified checksum."""
    if not splits:
        return []
    subset = config.data.subset_per_class
    profile = "the full study" if subset is None else f"subset profile, {subset} images per class"
    lines = [f"Data ({profile}; split seed {config.split.seed}):", ""]
    for task, split in splits.items():
        source = split.get("source") or {}
        checksum = source.get("checksum") or "unverified"
        totals = " / ".join(str(split["totals"][part]) for part in ("train", "val", "test"))
        known = KNOWN_DATA.get(checksum, "a source this project does not know")
        lines.append(f"- {task}: train / val / test {totals}, from `{source.get('origin')}` "
                     f"(`{checksum[:23]}…`): {known}.")
    return lines + [""]


def spread_text(accuracies: list[float]) -> str:
    found = spread(accuracies)
    deviation = "" if found.std is None else f" ± {found.std:.4f}"
    return f"**{found.mean:.4f}**{deviation} (n={found.n})"


def accuracy_cell(model: str, runs: pd.DataFrame) -> str:
    """Our test accuracy over the model's seeds, or why there is none."""
    own = of_model(runs, model)
    if own.empty:
        return "not recorded" + (" (needs the ImageNet weights)" if REGISTRY[model].uses_vgg16 else "")
    claimed = measured(own)
    if claimed.empty:
        return "VGG16 stand-in weights: no accuracy claimed"
    return spread_text(list(claimed["test_accuracy"]))


def original_cell(model: str) -> str:
    if not REGISTRY[model].in_study:
        return "–"
    accuracy = ORIGINAL_STUDY[model]
    return "not given" if accuracy is None else f"{accuracy:.3f}"


def summary_table(runs: pd.DataFrame) -> str:
    """One row per model: test accuracy over its seeds, the CPU kinds they trained on, the original study's."""
    rows = []
    for model, spec in REGISTRY.items():
        task = TASK_NAMES[spec.task] + ("" if spec.in_study else ", beyond the study")
        cpus = "; ".join(sorted(set(of_model(runs, model)["cpu_kind"]))) or "–"
        rows.append(row(f"`{model}`", task, accuracy_cell(model, runs), cpus, original_cell(model)))
    return table(["model", "task", "test accuracy: mean ± std (n)", "CPU kinds", "original study"], rows)


def points(value: float) -> str:
    return f"{value * 100:+.2f}"


def verdict_cells(found: Verdict) -> list[str]:
    """Difference of means, its 95 % interval and p, in accuracy points; dashes where not measured."""
    if found.p is None:
        return ["–", "–", "–"]
    p = "< 0.001" if found.p < 0.001 else f"{found.p:.3f}"
    return [f"{points(found.difference)} points", f"{points(found.low)} to {points(found.high)} points", p]


def verdicts_table(runs: pd.DataFrame) -> str:
    """The study's questions, answered over the seeds by Welch's t-test."""
    def accuracies(model: str) -> list[float]:
        return list(of_model(measured(runs), model)["test_accuracy"])

    rows = []
    for model, baseline, question in COMPARISONS:
        found = verdict(accuracies(model), accuracies(baseline))
        rows.append(row(question, f"`{model}`", f"`{baseline}`", *verdict_cells(found), f"**{found.answer}**"))
    return table(["question", "model", "against", "difference of means", "95 % interval", "p", "answer"], rows)


def runs_table(runs: pd.DataFrame) -> str:
    """Each run's numbers and CPU kind: what the means and verdicts are made of."""
    rows = [row(f"`{run.model}`", run.seed, run.cpu_kind, f"{run.val_accuracy:.4f}", f"{run.test_accuracy:.4f}",
                f"{run.wall_time_s / 60:.1f} min") for run in measured(runs).itertuples()]
    return table(["model", "seed", "CPU kind", "val accuracy", "test accuracy", "training time"], rows)


def figure_lines(figures: dict[Path, str]) -> list[str]:
    """The comparison figures, linked from reports/ where results.md lies."""
    if not figures:
        return []
    return ["## Figures", "", *(f"![{caption}]({path.relative_to(paths.REPORTS_DIR).as_posix()})"
                                 for path, caption in figures.items()), ""]


def results(config: Config, runs: pd.DataFrame, splits: dict[str, dict], figures: dict[Path, str]) -> str:
    """The whole of reports/results.md."""
    welch = (f"Welch's t-test on the test accuracies over the seeds, two-sided at {LEVEL * 100:g} %: \"better\" "
             f"or \"worse\" only where p < {LEVEL:g}; the interval is the difference's 95 % confidence interval.")
    return "\n".join([
        *intro(config), *data_lines(config, splits),
        "## Summary", "", summary_table(runs), "",
        "## What the study asked", "", welch, "", verdicts_table(runs), "",
        "## Run by run", "", "Each run's CPU kind: another kind rounds differently, and so trains another "
        "model, as another seed does.", "", runs_table(runs), "",
        *figure_lines(figures)])


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def around_markers(readme_text: str, name: str) -> tuple[str, str, str]:
    """README.md's text up to a table's start marker (included), the table, and from its end marker on."""
    start, end = markers(name)
    before, found, rest = readme_text.partition(start)
    shown, found_end, after = rest.partition(end)
    if not found or not found_end:
        raise PipelineError(f"{README} lacks the markers {start} and {end} after it")
    return before + start, shown.strip(), end + after


def readme_with_tables(readme_text: str, runs: pd.DataFrame) -> str:
    """README.md's text with today's summary and verdicts between its markers, its own words kept."""
    for name, shown in zip(README_TABLES, (summary_table(runs), verdicts_table(runs))):
        before, _, after = around_markers(readme_text, name)
        readme_text = f"{before}\n{shown}\n{after}"
    return readme_text
