"""Stage report: the study's results table, rebuilt from the metrics files beside the report's own numbers.

Its first table (the summary, which README.md shows between its `results` markers) gives one
number per model: the test accuracy of a record made with today's code and params. A model
whose record `dvc status` finds out of date (its train@ or evaluate@ stage ran with other
code or params) shows as such, never with its old number.
"""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.config import Config
from pipeline.atomic import write_text_atomically
from pipeline.errors import PipelineError
from pipeline.registry import REGISTRY, replicate_stage

RESULTS = paths.REPORTS_DIR / "results.md"
README = Path("README.md")
# Trainings of the recorded code and params on other CPU kinds, one row each, with the commit they ran at.
OTHER_CPUS = paths.METRICS_DIR / "other_cpus.csv"
OTHER_CPU_COLUMNS = ["model", "seed", "cpu", "commit", "val_accuracy", "test_accuracy", "train_wall_time_s"]
COMPARE_DIR = paths.REPORTS_DIR / "compare"
LABEL_STEPS = 500  # moves of the point names in the accuracy figure
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


SUMMARY_TITLE = "## Summary"
VERDICTS_TITLE = "## What the study asked"
PER_SEED_TITLE = "## Seed by seed"
OTHER_CPUS_TITLE = "## On other CPU kinds"
README_TABLES = {"results": SUMMARY_TITLE, "verdicts": VERDICTS_TITLE, "other-cpus": OTHER_CPUS_TITLE}
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
CURRENT, STALE, NOT_RUN = "current", "stale", "not run"


def seed_key(name: str, seed: int) -> str:
    """How `record_states` names a further seed's record."""
    return f"{name}-{seed}"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def record_states(names: list[str], seeds: list[int] = ()) -> dict[str, str]:
    """Per model: CURRENT if dvc.lock holds its train@ and evaluate@ stages as run with today's
    code, params and inputs, STALE if either changed since, NOT_RUN if either never ran. With
    `seeds`, the same per further seed, keyed "<model>-<seed>" (its replicate_ stage).

    Inputs that are missing here (data, models: a fresh clone has only what git holds) cannot
    be compared and do not count. Outside a DVC project, every record with metrics counts as current.
    """
    records = {name: ([f"train@{name}", f"evaluate@{name}"], paths.eval_metrics(name)) for name in names}
    for name in names:
        if not REGISTRY[name].uses_vgg16:
            for seed in seeds:
                records[seed_key(name, seed)] = ([replicate_stage(name, seed)], paths.replicate_metrics(name, seed))
    lock = read_yaml(Path("dvc.lock"))
    if lock is None or not Path(".dvc").is_dir():
        return {key: CURRENT if metrics.exists() else NOT_RUN for key, (_, metrics) in records.items()}
    from dvc.repo import Repo

    repo, ran = Repo("."), lock.get("stages", {})
    return {key: stage_state(repo, ran, stages, metrics) for key, (stages, metrics) in records.items()}


def stage_state(repo, ran: dict, stages: list[str], metrics: Path) -> str:
    from dvc.stage.exceptions import StageNotFound

    if not all(stage in ran for stage in stages) or not metrics.exists():
        return NOT_RUN
    try:
        status = repo.status(targets=stages)
    except StageNotFound:  # in dvc.lock, but no longer in dvc.yaml
        return NOT_RUN
    changes = [change for stage_changes in status.values() for change in stage_changes]
    return STALE if any(map(is_a_real_change, changes)) else CURRENT


def read_yaml(path: Path) -> dict | None:
    import yaml

    return yaml.safe_load(path.read_text()) if path.exists() else None


def recorded(name: str, state: str) -> tuple[dict | None, dict | None]:
    """The training summary and metrics of a record made with today's code and params; none for any other."""
    if state != CURRENT:
        return None, None
    return read_json(paths.train_summary(name)), read_json(paths.eval_metrics(name))


def is_a_real_change(change: str | dict) -> bool:
    """A changed command, param, or input file; not an input that is merely absent here."""
    if not isinstance(change, dict):
        return True  # 'changed command', 'always changed'
    deps = change.get("changed deps", {})
    return any(isinstance(state, dict) or state != "deleted" for state in deps.values())


def seed_records(name: str, seeds: list[int], states: dict[str, str]) -> list[dict | None]:
    """The metrics of `name`'s records, the default seed's then each further seed's: none for
    a record that is not current."""
    files = [(name, paths.eval_metrics(name))] + [(seed_key(name, seed), paths.replicate_metrics(name, seed))
                                                  for seed in seeds]
    return [read_json(path) if states.get(key) == CURRENT else None for key, path in files]


def seed_metrics(name: str, seeds: list[int], states: dict[str, str]) -> list[dict]:
    """The metrics of the current records of `name`: the default seed's, then the further seeds'."""
    return [metrics for metrics in seed_records(name, seeds, states) if metrics]


def accuracies_of(records: list[dict | None]) -> list[float]:
    """The test accuracies of the records there are."""
    return [metrics["test_accuracy"] for metrics in records if metrics]


def seed_accuracies(name: str, seeds: list[int], states: dict[str, str]) -> list[float]:
    return accuracies_of(seed_records(name, seeds, states))


def spread(accuracies: list[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (none for one seed) and n."""
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else None
    return statistics.mean(accuracies), std, len(accuracies)


def spread_text(accuracies: list[float]) -> str:
    if not accuracies:
        return "–"
    mean, std, n = spread(accuracies)
    return f"{mean:.4f} ± {std:.4f} (n={n})" if std is not None else f"{mean:.4f} (n=1)"


def summary_row(name: str, states: dict[str, str], seeds: list[int]) -> str:
    spec, reported, state = REGISTRY[name], REPORTED.get(name), states[name]
    trained, tested = recorded(name, state)
    weights = (trained or {}).get("vgg16_weights", "imagenet")
    over_seeds = "–"
    if state == NOT_RUN:
        ours = "not recorded" + (" (needs the ImageNet weights)" if spec.uses_vgg16 else "")
    elif state == STALE:
        ours = f"not recorded with the current code and params (`dvc repro evaluate@{name}`)"
    elif weights != "imagenet":
        ours = f"VGG16 {weights}: no accuracy claimed"
    else:
        ours = f"**{tested['test_accuracy']:.4f}**"
        over_seeds = spread_text(seed_accuracies(name, seeds, states))
    theirs = f"{reported[1]:.3f}" if reported else "–"
    where = TASK_TITLES[spec.task].split(": ", 1)[1] + ("" if spec.in_study else ", beyond the study")
    return f"| `{name}` | {where} | {ours} | {over_seeds} | {theirs} |"


def summary_section(states: dict[str, str], seeds: list[int]) -> list[str]:
    """One line per model: our test accuracy (default seed, and over the seeds) beside the
    report's. README.md shows this table."""
    return [SUMMARY_TITLE, "", "| model | task | test accuracy | over seeds: mean ± std | report: accuracy |",
            "|---|---|---|---|---|", *(summary_row(name, states, seeds) for name in REGISTRY), ""]


def verdict(model: list[float], baseline: list[float], words: tuple[str, str] = ("better", "worse")) \
        -> tuple[str, str, str]:
    """The difference of the mean test accuracies, twice its standard error
    sqrt(s1²/n1 + s2²/n2), and what they say: better or worse only beyond two standard errors."""
    if len(model) < 2 or len(baseline) < 2:
        return "–", "–", "not measured (two seeds or more of each)"
    (mean, std, n), (base_mean, base_std, base_n) = spread(model), spread(baseline)
    difference, error = mean - base_mean, (std ** 2 / n + base_std ** 2 / base_n) ** 0.5
    said = "no measurable difference"
    if abs(difference) > 2 * error:
        said = words[0] if difference > 0 else words[1]
    return f"{difference * 100:+.2f} points", f"{2 * error * 100:.2f} points", said


def verdict_section(states: dict[str, str], seeds: list[int]) -> list[str]:
    lines = [VERDICTS_TITLE, "",
             "Each question compares two CIFAR-10 models' test accuracies over their seeds. \"better\" or "
             "\"worse\" only where the difference of the means exceeds twice its standard error, "
             "sqrt(s1²/n1 + s2²/n2); otherwise \"no measurable difference\".", "",
             "| question | model | against | difference of means | 2 × standard error | answer |",
             "|---|---|---|---|---|---|"]
    for model, baseline, question in COMPARISONS:
        difference, error, said = verdict(seed_accuracies(model, seeds, states),
                                          seed_accuracies(baseline, seeds, states))
        lines.append(f"| {question} | `{model}` | `{baseline}` | {difference} | {error} | **{said}** |")
    return lines + [""]


def per_seed_section(config: Config, states: dict[str, str]) -> list[str]:
    """Every from-scratch model's records seed by seed: what the spreads and verdicts are made of."""
    seeds = config.replicate.seeds
    lines = [PER_SEED_TITLE, "",
             "Val and test accuracy of each seed's saved model as used (mirror average included).", "",
             "| model | " + " | ".join(f"seed {seed}: val / test" for seed in [config.seed, *seeds])
             + " | test: mean ± std |", "|---" * (len(seeds) + 3) + "|"]
    for name, spec in REGISTRY.items():
        if spec.uses_vgg16:
            continue
        records = seed_records(name, seeds, states)
        cells = [f"{m['val_accuracy']:.4f} / {m['test_accuracy']:.4f}" if m else "–" for m in records]
        spread_cell = spread_text(accuracies_of(records))
        lines.append(f"| `{name}` | {' | '.join(cells)} | {spread_cell} |")
    return lines + [""]


def other_cpu_runs() -> pd.DataFrame:
    """The trainings on other CPU kinds, in the registry's order of models; none without the file."""
    if not OTHER_CPUS.exists():
        return pd.DataFrame(columns=OTHER_CPU_COLUMNS)
    try:
        runs = pd.read_csv(OTHER_CPUS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise PipelineError(f"{OTHER_CPUS} is no CSV table: {error}") from None
    missing = [column for column in OTHER_CPU_COLUMNS if column not in runs.columns]
    if missing:
        raise PipelineError(f"{OTHER_CPUS} lacks the columns {', '.join(missing)}")
    unknown = sorted(set(runs["model"]) - set(REGISTRY))
    if unknown:
        raise PipelineError(f"{OTHER_CPUS} names models the pipeline does not have: {', '.join(unknown)}")
    if not pd.api.types.is_numeric_dtype(runs["test_accuracy"]) or runs["test_accuracy"].isna().any():
        raise PipelineError(f"{OTHER_CPUS}: every row needs a test_accuracy number")
    twice = runs[runs.duplicated(["model", "seed", "cpu"])]
    if not twice.empty:
        row = twice.iloc[0]
        raise PipelineError(f"{OTHER_CPUS} holds {row['model']} seed {row['seed']} on {row['cpu']} twice")
    return runs.iloc[runs["model"].map(list(REGISTRY).index).argsort(kind="stable")]


def distance_in_deviations(accuracy: float | None, accuracies: list[float]) -> str:
    """How far one training lies from the mean of these seeds, in their standard deviations."""
    if accuracy is None or len(accuracies) < 2:
        return "–"
    mean, std, _ = spread(accuracies)
    return f"{(accuracy - mean) / std:+.1f} sd"


def other_cpu_section(runs: pd.DataFrame, config: Config, states: dict[str, str], recorded_cpu: str) -> list[str]:
    """The recorded code and params trained on other CPU kinds, against the record's seeds: another
    CPU kind rounds differently and so trains another model, as another seed does."""
    if runs.empty:
        return []
    lines = [OTHER_CPUS_TITLE, "",
             f"The same code and params trained on another CPU kind ([`{OTHER_CPUS.as_posix()}`]"
             f"(../{OTHER_CPUS.as_posix()}), each with the commit it ran at), against the record's seeds "
             f"({recorded_cpu}). \"higher\" or \"lower\" only beyond twice the standard error of the "
             "difference of the means.", "",
             f"| model | CPU | seed {config.seed}: test | seed {config.seed} from the record's mean "
             "| seeds: mean ± std | the record: mean ± std | difference of means | 2 × standard error | answer |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, cpu), group in runs.groupby(["model", "cpu"], sort=False):
        theirs, ours = list(group["test_accuracy"]), seed_accuracies(name, config.replicate.seeds, states)
        at_default_seed = group.loc[group["seed"] == config.seed, "test_accuracy"]
        default = float(at_default_seed.iloc[0]) if len(at_default_seed) else None
        difference, error, said = verdict(theirs, ours, ("higher", "lower"))
        lines.append(f"| `{name}` | {cpu} | {'–' if default is None else f'{default:.4f}'} "
                     f"| {distance_in_deviations(default, ours)} | {spread_text(theirs)} | {spread_text(ours)} "
                     f"| {difference} | {error} | **{said}** |")
    return lines + [""]


def section_table(results_text: str, title: str) -> str:
    """The table under a heading of a results.md, as README.md shows it; none where the section is not."""
    if title + "\n" not in results_text:
        return ""
    part = results_text.split(title + "\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in part.strip().splitlines() if line.startswith("|"))


def readme_markers(table: str) -> tuple[str, str]:
    return f"<!-- {table}:start -->", f"<!-- {table}:end -->"


def around_table(readme_text: str, table: str) -> tuple[str, str, str]:
    """README.md's text before a table's start marker (included), the table, and from its end marker on."""
    start, end = readme_markers(table)
    before, found, rest = readme_text.partition(start)
    shown, found_end, after = rest.partition(end)
    if not found or not found_end:
        raise PipelineError(f"{README} lacks the markers {start} and {end} after it")
    return before + start, shown.strip(), end + after


def with_results_tables(readme_text: str, results_text: str) -> str:
    """README.md's text with results.md's tables between its markers."""
    for table, title in README_TABLES.items():
        before, _, after = around_table(readme_text, table)
        readme_text = f"{before}\n{section_table(results_text, title)}\n{after}"
    return readme_text


def update_readme() -> None:
    """Copy results.md's summary, verdicts and other CPU kinds into README.md, so that it never shows stale figures."""
    for path in (RESULTS, README):
        if not path.exists():
            raise PipelineError(f"{path} is missing (run it in the project's root, after `dvc repro report`)")
    write_text_atomically(README, with_results_tables(README.read_text(), RESULTS.read_text()))
    print(f"copied the tables of {RESULTS} into {README}")


def figures_link(name: str) -> str:
    figures = paths.figures_dir(name)
    return f"[figures]({figures.relative_to(paths.REPORTS_DIR).as_posix()}/)" if figures.exists() else ""


def result_row(name: str, state: str) -> str:
    trained, tested = recorded(name, state)
    reported = REPORTED[name]
    ours = "– | – | – | – | – | –"
    if trained and tested:
        hp, best = trained["hyperparameters"], trained["best"]
        ours = (f"{tested['val_accuracy']:.4f} | {best['val_accuracy']:.4f} ({best['val_accuracy_epoch']}) | "
                f"**{tested['test_accuracy']:.4f}** | {tested['test_loss']:.3f} | "
                f"{hp['epochs']} / {hp['learning_rate']:g} / {hp['batch_size']} | "
                f"{trained['wall_time_s'] / 60:.1f} min")
    theirs = f"{reported[0]:.3f} | {reported[1]:.3f} | {reported[2]} / {reported[3]:g}" if reported else "– | – | –"
    weights = (trained or {}).get("vgg16_weights", "imagenet")
    label = f"`{name}`" if weights == "imagenet" else f"`{name}` (VGG16 {weights}: no accuracy claimed)"
    return f"| {label} | {ours} | {theirs} | {figures_link(name)} |"


def task_section(task: str, names: list[str], states: dict[str, str]) -> list[str]:
    lines = [f"## {TASK_TITLES[task]}", "",
             "| model | val accuracy | best val accuracy (epoch) | test accuracy | test loss | epochs / lr / batch "
             "| training time | report: val loss | report: accuracy | report: epochs / lr | |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [result_row(name, states[name]) for name in names]
    comparison = compare_figure(task, [name for name in names if states[name] == CURRENT], f"{task}_curves.png")
    if comparison:
        lines += ["", f"![{task} validation curves]({comparison.relative_to(paths.REPORTS_DIR).as_posix()})"]
    return lines + [""]


def compare_figure(task: str, names: list[str], file_name: str, heading: str | None = None) -> Path | None:
    """The validation curves of these models of one task, in `reports/compare/<file_name>`."""
    from pipeline.visualize.curves import compare_models

    histories = {name: pd.read_csv(paths.history_file(name)) for name in names
                 if paths.history_file(name).exists()}
    if not histories:
        return None
    # The curves are the training network's, per epoch: no mirror average, so below the metrics.
    heading = heading or TASK_TITLES[task].split(": ", 1)[1]
    title = f"{heading}: validation per epoch, as the network trained (no mirror average)"
    return compare_models(histories, COMPARE_DIR / file_name, title)


def cifar10_results(config: Config, states: dict[str, str]) -> pd.DataFrame:
    """One row per CIFAR-10 model: its size, whether the study had it, and what it measured
    (test accuracy and training time over its seeds)."""
    from pipeline.models import build_model

    rows = []
    for name, spec in REGISTRY.items():
        if spec.task != "cifar10":
            continue
        trained, _ = recorded(name, states[name])
        seeds = seed_metrics(name, config.replicate.seeds, states) if trained else []
        mean, std, n = spread([m["test_accuracy"] for m in seeds]) if seeds else (None, None, 0)
        times = [m["train_wall_time_s"] for m in seeds if m.get("train_wall_time_s") is not None] \
            or ([trained["wall_time_s"]] if trained else [])
        reported = REPORTED.get(name)
        rows.append({
            "model": name, "in_study": spec.in_study,
            "parameters": build_model(name, config.model(name)).count_params(),
            "best_val_accuracy": trained["best"]["val_accuracy"] if trained else None,
            "test_accuracy": mean, "test_accuracy_std": std, "seeds": n,
            "wall_time_s": sum(times) / len(times) if times else None,
            "report_accuracy": reported[1] if reported else None,
        })
    return pd.DataFrame(rows)


def beyond_the_study(results: pd.DataFrame, cpu: str) -> list[str]:
    """The report's next step (other Inception modules, skips elsewhere) beside its own models."""
    def number(value, form, unit=""):
        return "–" if pd.isna(value) else format(value, form) + unit

    lines = ["## Beyond the study: other Inception modules, residual connections elsewhere", "",
             "The report's closing question, answered on CIFAR-10 with the same recipe as `cifar10_naive`. "
             f"Test accuracy and training time are means over the seeds recorded; times on {cpu}.", "",
             "| model | in the study | parameters | best val accuracy (seed 42) | test accuracy: mean | std (n) "
             "| training wall time | report: accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results.itertuples():
        deviation = f"{number(row.test_accuracy_std, '.3f')} ({row.seeds})" if row.seeds else "–"
        lines.append(f"| `{row.model}` | {'yes' if row.in_study else 'no'} | {row.parameters:,} "
                     f"| {number(row.best_val_accuracy, '.3f')} | **{number(row.test_accuracy, '.3f')}** "
                     f"| {deviation} | {number(row.wall_time_s, '.0f', ' s')} | {number(row.report_accuracy, '.3f')} |")
    measured = results.dropna(subset=["test_accuracy"])
    if not measured.empty:
        figure = accuracy_figure(measured, results.dropna(subset=["report_accuracy"]), cpu)
        lines += ["", f"![CIFAR-10: test accuracy against size and training time]"
                      f"({figure.relative_to(paths.REPORTS_DIR).as_posix()})"]
    curves = beyond_curves(measured)
    if curves:
        lines += ["", f"![validation curves of the CIFAR-10 models beyond the study, beside cifar10_naive]"
                      f"({curves.relative_to(paths.REPORTS_DIR).as_posix()})"]
    return lines + [""]


def beyond_curves(measured: pd.DataFrame) -> Path | None:
    """The measured models beyond the study, their curves beside the naive CNN's, the network each changes."""
    beyond = list(measured[~measured["in_study"]]["model"])
    if not beyond:
        return None
    baseline = [name for name in measured["model"] if name == "cifar10_naive"]
    return compare_figure("cifar10", baseline + beyond, "cifar10_beyond_curves.png", "CIFAR-10 beyond the study")


def accuracy_figure(measured: pd.DataFrame, reported: pd.DataFrame, cpu: str) -> Path:
    """The accuracy figure of the CIFAR-10 models, saved."""
    from pipeline.visualize.curves import save_figure  # sets the Agg backend first

    return save_figure(draw_accuracy(measured, reported, cpu), COMPARE_DIR / "cifar10_accuracy.png")


def draw_accuracy(measured: pd.DataFrame, reported: pd.DataFrame, cpu: str):
    """Mean test accuracy (bars: one standard deviation over the seeds) against parameter count
    and against training time; the report's numbers are marked at the size of the same network
    here (the report gives only the naive CNN's), on a broken axis below, so that the spreads
    over seeds stay readable."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 5))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1])
    by_size, by_time = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[:, 1])
    report_axis = fig.add_subplot(grid[1, 0], sharex=by_size)
    accuracy_axis(by_size, measured, "parameters", "")
    accuracy_axis(by_time, measured, "wall_time_s", f"training wall time (s), {cpu}")
    report_results(report_axis, reported)
    break_between(by_size, report_axis)
    by_size.legend(fontsize=8, loc="upper right")
    report_axis.xaxis.set_major_formatter(lambda value, _: f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k")
    fig.suptitle("CIFAR-10: test accuracy against size and training time")
    return fig


def report_results(ax, reported: pd.DataFrame) -> None:
    """The report's accuracies, far below ours, on their own stretch of the accuracy axis."""
    ax.scatter(reported["parameters"], reported["report_accuracy"], color="tab:red", marker="x", zorder=3)
    ax.margins(y=0.4)
    ax.set_xlabel("parameters")
    ax.set_ylabel("the report")
    ax.grid(alpha=0.3)
    label_points(ax, [(row.parameters, row.report_accuracy, f"report: {short_name(row.model)}", "tab:red")
                      for row in reported.itertuples()])


def break_between(upper, lower) -> None:
    """Draw one accuracy axis cut in two: no spine or ticks where they meet, slanted marks at the cut."""
    upper.spines.bottom.set_visible(False)
    lower.spines.top.set_visible(False)
    upper.tick_params(axis="x", bottom=False, labelbottom=False)
    marks = {"marker": [(-1, -0.5), (1, 0.5)], "markersize": 8, "linestyle": "none", "color": "k", "clip_on": False}
    upper.plot([0, 1], [0, 0], transform=upper.transAxes, **marks)
    lower.plot([0, 1], [1, 1], transform=lower.transAxes, **marks)


def accuracy_axis(ax, measured: pd.DataFrame, column: str, xlabel: str) -> None:
    """Mean test accuracy against one column, the study's models and the others in two colours, each named."""
    measured = measured.dropna(subset=[column])
    for in_study, colour, group in ((True, "tab:blue", "the study's models"), (False, "tab:green", "beyond the study")):
        part = measured[measured["in_study"] == in_study]
        ax.errorbar(part[column], part["test_accuracy"], yerr=part["test_accuracy_std"].fillna(0).to_numpy(),
                    fmt="o", color=colour, capsize=3, label=group, zorder=3)
    ax.margins(y=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    labels = [(row[column], row["test_accuracy"], short_name(row["model"]), "black") for _, row in measured.iterrows()]
    label_points(ax, labels)


def short_name(model: str) -> str:
    return model.removeprefix("cifar10_")


def label_points(ax, labels: list[tuple]) -> None:
    """Name each point, moving names apart where points lie close (networks of nearly one size)."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, name, fontsize=8, color=colour) for x, y, name, colour in labels]
    # A fixed number of steps, not adjustText's default of one second: the same metrics draw the same PNG.
    adjust_text(texts, x=[x for x, *_ in labels], y=[y for _, y, *_ in labels], ax=ax, iter_lim=LABEL_STEPS,
                arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})


def data_lines(config: Config) -> list[str]:
    """Which images each task's numbers were measured on, named by their verified checksum."""
    subset = config.data.subset_per_class
    lines = [f"Data ({'the full study' if subset is None else f'subset profile, {subset} images per class'}; "
             f"seed {config.seed}):", ""]
    for task in TASK_TITLES:
        split = read_json(paths.split_summary(task))
        if split is None:
            continue
        source = split.get("source") or {}
        checksum = source.get("checksum") or "unverified"
        totals = " / ".join(str(split["totals"][part]) for part in ("train", "val", "test"))
        known = KNOWN_DATA.get(checksum, "a source this report does not know")
        lines.append(f"- {task}: train / val / test {totals}, from `{source.get('origin')}` "
                     f"(`{checksum[:23]}…`): {known}.")
    return lines + [""]


def training_summaries(names: list[str], seeds: list[int], states: dict[str, str]) -> list[Path]:
    """The training summaries of the current records of `names`, every seed's."""
    files = [(name, paths.train_summary(name)) for name in names]
    files += [(seed_key(name, seed), paths.replicate_summary(name, seed)) for name in names for seed in seeds]
    return [path for key, path in files if states.get(key) == CURRENT]


def machines(summaries: list[Path]) -> list[dict]:
    """The distinct machines (and arithmetic) these training summaries came from."""
    seen = {json.dumps({**summary["machine"], "precision": summary.get("precision", "float32")}, sort_keys=True)
            for summary in map(read_json, summaries) if summary and summary.get("machine")}
    return [json.loads(machine) for machine in sorted(seen)]


def cpu_kind(machine: dict) -> str:
    """The CPU and the vector instructions its kernels use, and any GPU: what decides the last digits."""
    return machine["cpu"] + (f" ({machine['isa']})" if machine.get("isa") else "") \
        + "".join(f", {gpu}" for gpu in machine.get("gpus", []))


def cpu_kinds(seen: list[dict]) -> list[str]:
    """The distinct CPU kinds among these machines: what one record must not mix."""
    return sorted({cpu_kind(machine) for machine in seen})


def cpu_label(summaries: list[Path]) -> str:
    kinds = cpu_kinds(machines(summaries))
    return kinds[0] if len(kinds) == 1 else "mixed CPUs" if kinds else "no CPU recorded"


def machine_lines(summaries: list[Path]) -> list[str]:
    """The CPUs the numbers came from, and the arithmetic: oneDNN's kernels follow the CPU, and
    so do the last digits."""
    seen = machines(summaries)
    described = [cpu_kind(m) + f", {m['cores']} cores, TensorFlow {m['tensorflow']}, computing in {m['precision']}"
                 for m in seen]
    if not described:
        return []
    lines = [f"Trained on: {'; '.join(described)}. The same params on the same CPU give the same digits.", ""]
    kinds = cpu_kinds(seen)
    if len(kinds) > 1:  # the spreads and verdicts then mix two effects
        lines += [f"**Warning: these records come from {len(kinds)} CPU kinds** ({'; '.join(kinds)}). "
                  "Another CPU kind trains another model, as another seed does, so the spreads over seeds and "
                  "the verdicts below mix the two.", ""]
    return lines


def run(config: Config) -> None:
    other_cpus = other_cpu_runs()  # a bad file stops the stage before it changes anything
    shutil.rmtree(COMPARE_DIR, ignore_errors=True)  # figures of records no longer current go too
    seeds = config.replicate.seeds
    lines = ["# Results", "",
             "Rebuilt by `dvc repro report` from `metrics/` and `reports/training/` beside the numbers of the "
             "original report. The saved model is the last epoch's: val and test accuracy are measured on it "
             f"by `evaluate`; the best val accuracy, and its epoch, are for comparison. Test accuracy is the "
             f"default seed's ({config.seed}); \"over seeds\" adds the further seeds {seeds} where recorded.", ""]
    states = record_states(list(REGISTRY), seeds)
    current = [name for name in REGISTRY if states[name] == CURRENT]
    summaries = training_summaries(current, seeds, states)
    lines += data_lines(config) + machine_lines(summaries)
    lines += summary_section(states, seeds)
    lines += verdict_section(states, seeds)
    lines += per_seed_section(config, states)
    lines += other_cpu_section(other_cpus, config, states, cpu_label(summaries))
    for task in ("cats_dogs", "cifar10"):
        names = [name for name, spec in REGISTRY.items() if spec.task == task and spec.in_study]
        lines += task_section(task, names, states)
    cifar10 = [name for name in current if REGISTRY[name].task == "cifar10"]
    lines += beyond_the_study(cifar10_results(config, states), cpu_label(training_summaries(cifar10, seeds, states)))
    write_text_atomically(RESULTS, "\n".join(lines))
    print(f"wrote {RESULTS}")
