"""Stage report: every run's files pooled per model, Welch's verdicts, the README's tables and figures."""
import json
import statistics

import pandas as pd
import pytest
from PIL import Image
from scipy import stats as scipy_stats

from pipeline import paths, report
from pipeline.config import load_config
from pipeline.registry import REGISTRY
from pipeline.report import collect, stats, tables
from tests.fixtures import HISTORY_STAND_IN

AMD = {"cpu": "AMD EPYC", "isa": "AVX-512", "cores": 2, "gpus": [], "tensorflow": "2.21.0"}
INTEL = {**AMD, "cpu": "Intel(R) Xeon(R) Processor", "isa": "AMX"}
README_TEXT = """# A project

<!-- results:start -->
| model | an old table |
<!-- results:end -->

Some words between.

<!-- verdicts:start -->
<!-- verdicts:end -->

## Set up and run
"""


@pytest.fixture
def study(project):
    """A scratch project with a README.md holding both pairs of markers."""
    tables.README.write_text(README_TEXT)
    return project


def write_run(model: str, seed: int, test_accuracy: float, wall_time_s: float = 600, machine: dict = AMD,
              parameters: int = 374_986, **summary: object) -> None:
    """The two files a run leaves: its metrics (evaluate) and its training summary (train)."""
    metrics = {"val_accuracy": test_accuracy - 0.02, "val_loss": 0.75, "test_accuracy": test_accuracy,
               "test_loss": 0.7, "train_wall_time_s": wall_time_s}
    trained = {"seed": seed, "parameters": parameters, "wall_time_s": wall_time_s, "machine": machine,
               "hyperparameters": {"epochs": 25, "learning_rate": 0.001, "batch_size": 64}, **summary}
    for path, content in ((paths.eval_metrics(model, seed), metrics), (paths.train_summary(model, seed), trained)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


def write_seeds(model: str, accuracies: list[float], **run: object) -> None:
    for seed, accuracy in zip(load_config().seeds, accuracies):
        write_run(model, seed, accuracy, **run)


def results() -> str:
    report.run(load_config())
    return report.RESULTS.read_text()


def section(text: str, title: str) -> str:
    return text.split(title + "\n", 1)[1].split("\n## ", 1)[0]


def rows(text: str, title: str) -> dict[str, str]:
    """The table rows under a heading, by the model they start with."""
    return {line.split("`")[1]: line for line in section(text, title).splitlines() if line.startswith("| `")}


def test_the_summary_pools_each_model_s_seeds_and_names_their_cpu_kinds(study):
    seeds = load_config().seeds
    write_run("cifar10_naive", seeds[0], 0.80, machine=AMD)
    write_run("cifar10_naive", seeds[1], 0.81, machine=INTEL)
    write_run("cifar10_naive", seeds[2], 0.82, machine=AMD)
    text = results()

    naive = rows(text, "## Summary")["cifar10_naive"]
    assert naive == ("| `cifar10_naive` | CIFAR-10 | **0.8100** ± 0.0100 (n=3) "
                     "| AMD EPYC (AVX-512); Intel(R) Xeon(R) Processor (AMX) | 0.601 |")
    by_run = [line for line in section(text, "## Run by run").splitlines() if line.startswith("| `")]
    assert by_run == [
        f"| `cifar10_naive` | {seeds[0]} | AMD EPYC (AVX-512) | 0.7800 | 0.8000 | 10.0 min |",
        f"| `cifar10_naive` | {seeds[1]} | Intel(R) Xeon(R) Processor (AMX) | 0.7900 | 0.8100 | 10.0 min |",
        f"| `cifar10_naive` | {seeds[2]} | AMD EPYC (AVX-512) | 0.8000 | 0.8200 | 10.0 min |"]


def test_one_seed_gives_a_mean_without_a_spread_and_a_model_beyond_the_study_has_no_original(study):
    write_run("cifar10_inception_reduced", load_config().seed, 0.85)
    row = rows(results(), "## Summary")["cifar10_inception_reduced"]
    assert row == ("| `cifar10_inception_reduced` | CIFAR-10, beyond the study | **0.8500** (n=1) "
                   "| AMD EPYC (AVX-512) | – |")


def test_models_without_runs_read_not_recorded(study):
    summary = rows(results(), "## Summary")
    assert "| not recorded | – | not given |" in summary["cifar10_residual"]
    assert "| not recorded (needs the ImageNet weights) | – | 0.955 |" in summary["cats_dogs_vgg16_frozen"]
    assert not report.RESULTS.read_text().count("| `cifar10_naive` | 42")  # no run, no row
    assert not (paths.REPORTS_DIR / "compare").exists()  # nothing measured, nothing drawn


def test_a_run_lacking_either_of_its_files_is_not_recorded(study):
    seed = load_config().seed
    write_run("cifar10_naive", seed, 0.80)
    write_run("cifar10_inception", seed, 0.84)
    paths.train_summary("cifar10_naive", seed).unlink()
    paths.eval_metrics("cifar10_inception", seed).unlink()
    assert collect.runs(load_config()).empty


def test_a_vgg16_run_on_stand_in_weights_claims_no_accuracy(study):
    write_run("cats_dogs_vgg16_frozen", load_config().seed, 0.52, vgg16_weights="stand-in")
    text = results()
    assert "| VGG16 stand-in weights: no accuracy claimed |" in rows(text, "## Summary")["cats_dogs_vgg16_frozen"]
    assert "cats_dogs_vgg16_frozen" not in section(text, "## Run by run")
    assert "0.52" not in text


# Three seeds each. Twice the standard error (0.0066) calls the first pair different (0.0097 apart);
# Welch's test, with about 2.6 degrees of freedom, finds p = 0.07 and does not.
CLOSE = ([0.850, 0.852, 0.860], [0.842, 0.845, 0.846])
APART = ([0.84, 0.85, 0.86], [0.80, 0.81, 0.82])


def test_a_difference_beyond_twice_the_standard_error_need_not_be_measurable():
    model, baseline = CLOSE
    standard_error = (statistics.variance(model) / 3 + statistics.variance(baseline) / 3) ** 0.5
    found = stats.verdict(model, baseline)
    assert abs(found.difference) > 2 * standard_error and found.p > 0.05
    assert found.answer == "no measurable difference"


@pytest.mark.parametrize("model, baseline, answer", [
    (*APART, "better"), (*reversed(APART), "worse"), (*CLOSE, "no measurable difference")])
def test_welch_s_verdict_its_p_and_interval_are_scipy_s(model, baseline, answer):
    found, expected = stats.verdict(model, baseline), scipy_stats.ttest_ind(model, baseline, equal_var=False)
    interval = expected.confidence_interval(0.95)
    assert found.answer == answer
    assert found.p == pytest.approx(expected.pvalue)
    assert (found.low, found.high) == pytest.approx((interval.low, interval.high))
    assert found.difference == pytest.approx(statistics.mean(model) - statistics.mean(baseline))
    assert found.low < found.difference < found.high


@pytest.mark.parametrize("model, baseline", [([0.8], [0.8, 0.81]), ([0.8, 0.81], []), ([], [])])
def test_fewer_than_two_runs_a_side_are_not_measured(model, baseline):
    assert stats.verdict(model, baseline) == stats.Verdict("not measured (two seeds or more of each)")


def test_the_verdicts_table_gives_welch_s_numbers(study):
    write_seeds("cifar10_naive", APART[1])
    write_seeds("cifar10_inception", APART[0])
    write_seeds("cifar10_residual", [0.83])
    text = results()
    assert "Welch's t-test" in text and "two-sided at 5 %" in text
    verdicts = {line.split("`")[1] + " " + line.split("`")[3]: line
                for line in section(text, "## What the study asked").splitlines() if line.startswith("| Does")}
    assert verdicts["cifar10_inception cifar10_naive"].endswith(
        "| +4.00 points | +1.73 to +6.27 points | 0.008 | **better** |")
    assert verdicts["cifar10_residual cifar10_naive"].endswith(
        "| – | – | – | **not measured (two seeds or more of each)** |")


def test_the_readme_gets_the_summary_and_verdicts_between_its_markers_only(study):
    write_seeds("cifar10_naive", [0.80, 0.81, 0.82])
    text = results()
    readme = tables.README.read_text()

    for name, title in zip(tables.README_TABLES, ("## Summary", "## What the study asked")):
        shown = tables.around_markers(readme, name)[1]
        assert shown.count("\n") >= 2 and shown in section(text, title)
    assert "| `cifar10_naive` | CIFAR-10 | **0.8100** ± 0.0100 (n=3) |" in readme and "an old table" not in readme
    assert readme.startswith("# A project\n\n<!-- results:start -->\n| model | task |")
    assert "\n<!-- results:end -->\n\nSome words between.\n\n<!-- verdicts:start -->\n| question |" in readme
    assert readme.endswith("|\n<!-- verdicts:end -->\n\n## Set up and run\n")
    assert results() and tables.README.read_text() == readme  # the same runs, the same README


def test_a_readme_without_its_markers_fails_in_one_line_and_changes_nothing(study, capsys):
    from pipeline.__main__ import main

    write_seeds("cifar10_naive", [0.80])
    without_verdicts = README_TEXT.replace("<!-- verdicts:end -->\n", "")
    tables.README.write_text(without_verdicts)
    assert main(["report"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: README.md lacks the markers <!-- verdicts:start --> and <!-- verdicts:end --> after it"]
    assert tables.README.read_text() == without_verdicts and not report.RESULTS.exists()


def test_parameter_counts_come_from_the_training_summaries(study):
    write_seeds("cifar10_naive", [0.80, 0.82], parameters=123_456)
    write_seeds("cifar10_residual", [0.83], parameters=654_321)
    from pipeline.visualize import compare

    points = compare.model_points(collect.runs(load_config()), tables.ORIGINAL_STUDY)
    assert dict(zip(points["model"], points["parameters"])) == {"cifar10_naive": 123_456, "cifar10_residual": 654_321}
    assert list(points["test_accuracy"]) == pytest.approx([0.81, 0.83])


def test_the_readme_s_figures_are_drawn_from_the_default_seed_s_histories(study, monkeypatch):
    from pipeline.visualize import compare

    drawn = {}
    draw = compare.compare_models

    def remember(histories, out_png, title=None):
        drawn[out_png.name] = histories
        return draw(histories, out_png, title)

    monkeypatch.setattr(compare, "compare_models", remember)
    config = load_config()
    for name in ("cifar10_naive", "cifar10_residual_4x4", "cats_dogs_naive"):
        write_seeds(name, [0.80, 0.81, 0.82])
        for seed in config.seeds:
            paths.history_file(name, seed).parent.mkdir(parents=True, exist_ok=True)
            paths.history_file(name, seed).write_text(HISTORY_STAND_IN)
    text = results()

    assert drawn == {"cats_dogs_curves.png": {"cats_dogs_naive": paths.history_file("cats_dogs_naive", config.seed)},
                     "cifar10_curves.png": {name: paths.history_file(name, config.seed)
                                            for name in ("cifar10_naive", "cifar10_residual_4x4")}}
    figures = sorted((paths.REPORTS_DIR / "compare").iterdir())
    assert [figure.name for figure in figures] == ["cats_dogs_curves.png", "cifar10_accuracy.png", "cifar10_curves.png"]
    for figure in figures:
        assert f"](compare/{figure.name})" in text
        assert figure.stat().st_size < 1_000_000 and Image.open(figure).size[0] > 600


def labelled_points(points: list[tuple]):
    """A figure of these points, each named by `compare.label_points`."""
    from pipeline.visualize import compare

    fig, ax = compare.plt.subplots(figsize=(6, 4.5))
    ax.scatter([x for x, *_ in points], [y for _, y, _ in points])
    compare.label_points(ax, [(x, y, name, "black") for x, y, name in points])
    return fig, ax


def test_names_of_points_of_nearly_one_size_do_not_overlap():
    """Three networks within 3% of one size, as naive, residual_8x8 and residual_4x4 are."""
    points = [(374_986, 0.846, "naive"), (383_000, 0.843, "residual_8x8"), (377_000, 0.840, "residual_4x4"),
              (1_100_000, 0.83, "residual"), (374_986, 0.60, "original study: naive")]
    fig, ax = labelled_points(points)
    from pipeline.visualize.compare import plt

    fig.canvas.draw()
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) == len(points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def label_positions(points: list[tuple]) -> list[tuple]:
    from pipeline.visualize.compare import plt

    fig, ax = labelled_points(points)
    positions = [text.get_position() for text in ax.texts]
    plt.close(fig)
    return positions


def test_a_slower_machine_draws_the_names_in_the_same_places(monkeypatch):
    """Nine names never settle; where they stop must not depend on the CPU's speed."""
    import itertools

    import adjustText

    points = [(374_986, 0.8465, "naive"), (383_000, 0.8435, "residual_8x8"), (377_000, 0.8460, "residual_4x4"),
              (589_306, 0.8454, "inception_reduced"), (680_000, 0.8423, "inception_reduced_x2"),
              (884_000, 0.8434, "inception"), (1_100_000, 0.8305, "residual"),
              (374_986, 0.60, "original study: naive"), (884_000, 0.672, "original study: inception")]
    on_this_machine = label_positions(points)
    clock = itertools.count()  # a second per step: a machine far slower than this one
    monkeypatch.setattr(adjustText, "timer", clock.__next__)
    assert label_positions(points) == on_this_machine


def test_the_original_study_s_far_lower_numbers_do_not_squash_the_spreads_over_seeds():
    """Ours near 0.84 with bars of a point or less, the original study's at 0.60 and 0.67: the
    axis with the bars spans ours alone, the original study's sit on a stretch of their own below."""
    from pipeline.visualize import compare

    points = pd.DataFrame([
        {"model": "cifar10_naive", "in_study": True, "parameters": 374_986, "test_accuracy": 0.8465,
         "test_accuracy_std": 0.0013, "wall_time_s": 3500.0, "original": 0.601},
        {"model": "cifar10_inception", "in_study": True, "parameters": 884_000, "test_accuracy": 0.8434,
         "test_accuracy_std": 0.0059, "wall_time_s": 4800.0, "original": 0.672},
        {"model": "cifar10_residual_4x4", "in_study": False, "parameters": 377_000, "test_accuracy": 0.8460,
         "test_accuracy_std": 0.0092, "wall_time_s": 2700.0, "original": None},
    ])
    fig = compare.draw_accuracy(points, "a CPU")
    by_size, by_time, original_axis = fig.axes
    for measured_axis in (by_size, by_time):
        low, high = measured_axis.get_ylim()
        assert 0.8 < low < 0.8460 - 0.0092 and 0.8460 + 0.0092 < high < 0.9
    low, high = original_axis.get_ylim()
    assert low < 0.601 and 0.672 < high < 0.8
    assert original_axis.get_shared_x_axes().joined(by_size, original_axis)
    assert [text.get_text() for text in original_axis.texts] == ["original study: naive", "original study: inception"]
    assert by_time.get_xlabel() == "training wall time (s), a CPU"
    compare.plt.close(fig)


def test_every_model_of_the_original_study_has_its_number_and_only_those():
    assert set(tables.ORIGINAL_STUDY) == {name for name, spec in REGISTRY.items() if spec.in_study}
