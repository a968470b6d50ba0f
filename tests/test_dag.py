"""dvc.yaml tells DVC exactly what each stage reads: change any input (a param, a source file, a
default in config.py, a split file) and `dvc status` calls the stages that read it stale, and no
other. The expectations are written down here, from what the code reads, not read back from dvc.yaml."""
import ast
import json
from pathlib import Path

import pytest
import yaml

from pipeline.registry import REGISTRY, evaluate_stage, group, train_stage
from tests.conftest import ROOT
from tests.fixtures import dvc, scratch_dvc_project, set_params

MODEL, SEED, OTHER_SEED = "cifar10_naive", 42, 1
TRAIN, EVALUATE = train_stage(MODEL, SEED), evaluate_stage(MODEL, SEED)
TRAIN_1, EVALUATE_1 = train_stage(MODEL, OTHER_SEED), evaluate_stage(MODEL, OTHER_SEED)
VISUALIZE, CATS_DOGS = f"visualize@{MODEL}", train_stage("cats_dogs_naive", SEED)
STAGES = [TRAIN, EVALUATE, TRAIN_1, EVALUATE_1, VISUALIZE, CATS_DOGS, "report"]
TRAININGS = [TRAIN, TRAIN_1]
EVALUATIONS = [EVALUATE, EVALUATE_1]

# What each change is, and the stages that read it. DVC watches a declared params section as a
# whole, so a stage may be called stale for a key of it that it does not read: harmless.
PARAM_CHANGES = {
    "recipes.cifar10.image_size": (48, [*TRAININGS, *EVALUATIONS, VISUALIZE]),  # every stage reads images at it
    f"train.{MODEL}.image_size": (48, [*TRAININGS, *EVALUATIONS, VISUALIZE]),
    "recipes.cifar10.precision": ("float32", TRAININGS),
    "recipes.cifar10.label_smoothing": (0.2, [*TRAININGS, *EVALUATIONS]),  # evaluate's loss
    "recipes.cifar10.augment.cutout": (0.25, TRAININGS),
    "seeds": ([42, 1, 2, 3], ["report"]),  # a new seed trains only its own runs; the report pools it
    "data.subset_per_class": (50, ["report"]),
    "visualize.ascent_steps": (3, [VISUALIZE]),
}
FILE_CHANGES = {
    "data/split/cifar10/content": [*TRAININGS, *EVALUATIONS, VISUALIZE],
    "reports/splits/cifar10.json": [*TRAININGS, *EVALUATIONS, "report"],
    "pipeline/data/loaders.py": [*TRAININGS, *EVALUATIONS, VISUALIZE, CATS_DOGS],
    "pipeline/models/naive.py": [*TRAININGS, CATS_DOGS],
    "pipeline/models/__init__.py": [*TRAININGS, *EVALUATIONS, CATS_DOGS],  # the loss evaluate computes
    "pipeline/data/augment.py": [*TRAININGS, CATS_DOGS],
    "pipeline/hardware.py": [*TRAININGS, CATS_DOGS],  # precision auto reads the CPU
    "pipeline/train.py": [*TRAININGS, CATS_DOGS],
    "pipeline/evaluate.py": EVALUATIONS,
    "pipeline/inference.py": EVALUATIONS,
    "pipeline/visualize/filters.py": [VISUALIZE],
    f"reports/history/{MODEL}-{SEED}.csv": [TRAIN, VISUALIZE, "report"],  # TRAIN writes it
    f"metrics/{MODEL}-{OTHER_SEED}.json": [EVALUATE_1, "report"],  # EVALUATE_1 writes it; the report pools it
    f"reports/training/{MODEL}-{OTHER_SEED}.json": [TRAIN_1, EVALUATE_1, "report"],
    "pipeline/report/__init__.py": ["report"],
}
# The stages whose entry module each kind of stage runs (python -m pipeline STAGE loads it).
ENTRY_MODULES = {"download": "pipeline.data.download", "split": "pipeline.data.split", "train": "pipeline.train",
                 "evaluate": "pipeline.evaluate", "visualize": "pipeline.visualize", "report": "pipeline.report"}


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


def test_a_new_seed_leaves_the_recorded_trainings_current(recorded):
    params = recorded / "params.yaml"
    before = params.read_text()
    set_params(params, seeds=[42, 1, 2, 3])
    try:
        assert stale(recorded) == {"report"}
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


def test_a_changed_default_in_config_makes_the_trainings_it_shapes_stale(recorded):
    """config.py's defaults fill what params.yaml leaves out (the VGG16 models' schedule, say)."""
    config = recorded / "pipeline/config.py"
    before = config.read_text()
    assert 'lr_schedule: Literal["constant", "cosine"] = "constant"' in before
    config.write_text(before.replace('= "constant"  # cosine', '= "cosine"  # cosine'))
    try:
        assert set(TRAININGS) | {CATS_DOGS} <= stale(recorded)
    finally:
        config.write_text(before)


def test_no_stage_lists_an_input_twice(recorded):
    lock = yaml.safe_load((recorded / "dvc.lock").read_text())
    for stage, entry in lock["stages"].items():
        paths = [dep["path"] for dep in entry.get("deps", [])]
        assert len(paths) == len(set(paths)), stage


def imported_files(module: str) -> set[Path]:
    """The project's source files that `module` loads, itself included, following every import
    of a pipeline module (inside functions too), as files relative to the project's root."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / Path(*name.split("."))
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if file in seen or not file.exists():
            continue
        seen.add(file)
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("pipeline")]
    return {file.relative_to(ROOT) for file in seen}


def declared_code(stage: dict) -> list[Path]:
    return [Path(dep.split(" ")[0]) for dep in stage["deps"] if str(dep).startswith("pipeline")]


@pytest.mark.parametrize("name", yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
def test_no_stage_lists_code_it_never_loads(name):
    """Each code dependency is a file (or a folder holding a file) that the stage's command imports."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    stage = stage.get("do", stage)
    loaded = imported_files(ENTRY_MODULES[name.split("_")[0]]) | imported_files("pipeline.__main__")
    for dep in declared_code(stage):
        assert any(file == dep or dep in file.parents for file in loaded), f"{name}: {dep} is never loaded"


def test_the_trainings_are_per_model_and_seed_in_the_registry_s_groups():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for kind in ("train", "evaluate"):
        groups = {name.removeprefix(f"{kind}_"): stage for name, stage in stages.items() if name.startswith(f"{kind}_")}
        assert {g: groups[g]["matrix"]["model"] for g in groups} == \
            {g: [m for m in REGISTRY if group(m) == g] for g in groups}
        assert all(stage["matrix"]["seed"] == "${seeds}" for stage in groups.values())
    assert list(stages["visualize"]["foreach"]) == list(REGISTRY)
    assert all(stages["visualize"]["foreach"][name] == spec.task for name, spec in REGISTRY.items())
