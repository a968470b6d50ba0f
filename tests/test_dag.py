"""dvc.yaml tells DVC everything a stage reads: change any input (a param, a source file, a split
file) and `dvc status` calls the stage stale. The inputs are written down here, from what the
code reads, not read back from dvc.yaml."""
import json

import pytest
import yaml

from tests.fixtures import dvc, scratch_dvc_project, set_params

MODEL = "cifar10_naive"
REPLICATE = f"replicate_cifar10@{MODEL}-1"  # the model under its first further seed
STAGES = [f"tune@{MODEL}", f"train@{MODEL}", f"evaluate@{MODEL}", f"visualize@{MODEL}", REPLICATE, "report"]
TRAININGS = [f"tune@{MODEL}", f"train@{MODEL}", REPLICATE]

# What each change is, and the stages that read it. DVC watches a declared params section as a
# whole, so a stage may be called stale for a key of it that it does not read: harmless.
PARAM_CHANGES = {
    "recipes.cifar10.image_size": (48, STAGES),  # the size every stage reads the images at
    f"train.{MODEL}.image_size": (48, STAGES),
    "recipes.cifar10.precision": ("float32", TRAININGS),
    "recipes.cifar10.label_smoothing": (0.2, [*TRAININGS, f"evaluate@{MODEL}"]),  # evaluate's loss
    "recipes.cifar10.augment.cutout": (0.25, TRAININGS),
    "seed": (7, [f"tune@{MODEL}", f"train@{MODEL}", "report"]),
    "data.subset_per_class": (50, ["report"]),
    "visualize.ascent_steps": (3, [f"visualize@{MODEL}"]),
    "train.cifar10_residual.dropout": (0.1, ["report"]),  # the report builds every CIFAR-10 network
}
FILE_CHANGES = {
    "data/split/cifar10/content": [*TRAININGS, f"evaluate@{MODEL}", f"visualize@{MODEL}"],
    "reports/splits/cifar10.json": [*TRAININGS, f"evaluate@{MODEL}", "report"],
    "pipeline/data/loaders.py": [*TRAININGS, f"evaluate@{MODEL}", f"visualize@{MODEL}"],
    "pipeline/models/naive.py": [*TRAININGS, "report"],
    "pipeline/data/augment.py": TRAININGS,
    "pipeline/hardware.py": TRAININGS,  # precision auto reads the CPU
    "pipeline/train.py": TRAININGS,
    "pipeline/replicate.py": [REPLICATE],
    "pipeline/evaluate.py": [f"evaluate@{MODEL}", REPLICATE],  # a further seed is scored as the default one
    "pipeline/inference.py": [f"evaluate@{MODEL}", REPLICATE],
    "pipeline/visualize/filters.py": [f"visualize@{MODEL}"],
    f"reports/history/{MODEL}.csv": [f"train@{MODEL}", f"visualize@{MODEL}", "report"],  # train@ writes it
    f"metrics/seeds/{MODEL}-1.json": [REPLICATE, "report"],  # the report's spread between seeds
    "pipeline/report.py": ["report"],
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A scratch project whose dvc.lock holds the stages as if they had just run."""
    root = scratch_dvc_project(tmp_path_factory.mktemp("dag"))
    dvc(root, "commit", "-f", "-q", *STAGES)
    return root


def stale(root) -> set[str]:
    return set(json.loads(dvc(root, "status", "--json", *STAGES)))


def test_nothing_is_stale_right_after_the_stages_ran(recorded):
    assert stale(recorded) == set()


@pytest.mark.parametrize("key", PARAM_CHANGES)
def test_a_param_change_makes_each_stage_that_reads_it_stale(recorded, key):
    value, readers = PARAM_CHANGES[key]
    params = recorded / "params.yaml"
    before = params.read_text()
    set_params(params, **{key: value})
    try:
        assert set(readers) <= stale(recorded)
    finally:
        params.write_text(before)


@pytest.mark.parametrize("path", FILE_CHANGES)
def test_a_file_change_makes_each_stage_that_reads_it_stale(recorded, path):
    file = recorded / path
    before = file.read_bytes()
    file.write_bytes(before + b"\n# changed\n")
    try:
        assert stale(recorded) == set(FILE_CHANGES[path])
    finally:
        file.write_bytes(before)


def test_no_stage_lists_an_input_twice(recorded):
    lock = yaml.safe_load((recorded / "dvc.lock").read_text())
    for stage, entry in lock["stages"].items():
        paths = [dep["path"] for dep in entry.get("deps", [])]
        assert len(paths) == len(set(paths)), stage
