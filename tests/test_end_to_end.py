"""The whole DAG on a tiny run, stage by stage through the CLI: download -> split -> train ->
evaluate (per seed) -> visualize -> report, from local copies of the three upstream files."""
import json
import re
import shutil

import mlflow
import pytest

from pipeline import paths, tracking
from pipeline.__main__ import main
from pipeline.registry import evaluate_stage, train_stage
from tests.conftest import ROOT
from tests.fixtures import digest, make_cifar_tar, make_pet_zip, make_vgg16_standin, set_params

pytestmark = pytest.mark.slow  # every stage of the DAG

# One model per task, and one VGG16 model (on the stand-in weights), each trained one epoch under
# the default seed; cifar10_naive under a further seed too, so the report pools two runs of it.
MODELS = {
    "cats_dogs_naive": ("cats_dogs", {"image_size": 48, "epochs": 1, "batch_size": 8}),
    "cats_dogs_vgg16_frozen": ("cats_dogs", {"image_size": 32, "epochs": 1, "batch_size": 8}),
    "cifar10_naive": ("cifar10", {"epochs": 1, "batch_size": 16}),
}
SEED, OTHER_SEED = 42, 1
SEEDS = {"cats_dogs_naive": [SEED], "cats_dogs_vgg16_frozen": [SEED], "cifar10_naive": [SEED, OTHER_SEED]}
RUN_ROW = re.compile(r"^\| `(?P<name>\w+)` \| (?P<seed>\d+) \| [^|]+ \| (?P<val_accuracy>[0-9.]+) "
                     r"\| (?P<test_accuracy>[0-9.]+) \| [0-9.]+ min \|$")


def local_sources(project):
    """The three upstream files, built small, with params pointing at them by path and checksum."""
    folder = project / "upstream"
    folder.mkdir()
    files = {
        "cats_dogs": make_pet_zip(folder / "kagglecatsanddogs_5340.zip", per_class=12),  # with broken files
        "cifar10": make_cifar_tar(folder / "cifar-10-python.tar.gz", train_per_class=10, test_per_class=2),
        "vgg16": make_vgg16_standin(folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    }
    params = {}
    for source, path in files.items():
        params |= {f"sources.{source}.url": str(path), f"sources.{source}.checksum": digest(path)}
        if source != "vgg16":
            params[f"sources.{source}.size"] = path.stat().st_size
    return params


def cli(*argv):
    assert main(list(argv)) == 0, f"python -m pipeline {' '.join(argv)} failed"


def test_whole_dag_on_a_tiny_run(project):
    params = local_sources(project)
    params |= {"seeds": [SEED, OTHER_SEED], "split.cats_dogs.per_class": 10, "split.cifar10.per_class": 10}
    for name, (_, model_params) in MODELS.items():
        params |= {f"train.{name}.{key}": value for key, value in model_params.items()}
    params |= {"visualize.ascent_steps": 2, "visualize.filters_per_layer": 2, "visualize.activation_layers": 2,
               "visualize.gradcam_images_per_class": 1,
               # two of VGG16's five default layers: the chosen names must be the ones drawn
               "visualize.filter_layers": {"cats_dogs_vgg16_frozen": ["block1_conv1", "block5_conv1"]}}
    set_params(project / "params.yaml", **params)
    shutil.copy(ROOT / "README.md", project / "README.md")  # the report writes its tables between its markers

    for source in ("cats_dogs", "cifar10", "vgg16"):
        cli("download", source)
        assert json.loads((project / "data" / "raw" / source / "SOURCE.json").read_text())["verified"]
    for task in ("cats_dogs", "cifar10"):
        cli("split", task)
    assert json.loads(paths.split_summary("cats_dogs").read_text())["totals"] == {"train": 14, "val": 4, "test": 2}
    assert json.loads(paths.split_summary("cifar10").read_text())["totals"] == {"train": 80, "val": 10, "test": 10}
    for name in MODELS:
        cli("train", name)  # the default seed
        cli("evaluate", name)
        for seed in SEEDS[name][1:]:
            cli("train", name, str(seed))
            cli("evaluate", name, str(seed))
        cli("visualize", name)
    cli("report")

    # The report's run-by-run table holds each measured run as its files have it; the VGG16 model on
    # the stand-in weights claims no accuracy.
    results = (project / "reports" / "results.md").read_text()
    rows = {(match["name"], int(match["seed"])): match for match in map(RUN_ROW.match, results.splitlines()) if match}
    runs = [(name, seed) for name, seeds in SEEDS.items() for seed in seeds]
    assert set(rows) == {(name, seed) for name, seed in runs if "vgg16" not in name}
    for (name, seed), row in rows.items():
        tested = json.loads(paths.eval_metrics(name, seed).read_text())
        assert float(row["test_accuracy"]) == pytest.approx(tested["test_accuracy"], abs=5e-5)
        assert float(row["val_accuracy"]) == pytest.approx(tested["val_accuracy"], abs=5e-5)
    assert "`cats_dogs_vgg16_frozen` | cats vs dogs | VGG16 stand-in weights: no accuracy claimed |" in results
    assert "(n=2)" in next(line for line in results.splitlines() if line.startswith("| `cifar10_naive` | CIFAR-10 |"))
    readme = (project / "README.md").read_text()  # its summary table is the report's
    assert next(line for line in readme.splitlines() if line.startswith("| `cifar10_naive` |")) in results
    for task in ("cats_dogs", "cifar10"):
        assert (project / "reports" / "compare" / f"{task}_curves.png").stat().st_size > 0

    client = mlflow.MlflowClient()
    for name, (task, _) in MODELS.items():
        # Figures on disk, of the default seed's model: curves, activations, filter patterns, Grad-CAM.
        figures = paths.figures_dir(name)
        pngs = {path.name for path in figures.glob("*.png")}
        assert {"curves.png", "activations_00_input.png", "gradcam.png"} <= pngs
        assert any(png.startswith("activations_01_") for png in pngs)
        assert any(png.startswith("filters_") for png in pngs)

        for seed in SEEDS[name]:
            # Each training's one MLflow run holds its training and its test metrics.
            run_id = tracking.recorded_run_id(name, seed)
            runs_found = mlflow.search_runs(experiment_names=[task],
                                            filter_string=f"attributes.run_name = '{name} seed {seed}'")
            assert list(runs_found["run_id"]) == [run_id]
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED"
            assert run.data.tags["dvc_stage"] == train_stage(name, seed)
            assert run.data.tags["dvc_stage.evaluate"] == evaluate_stage(name, seed)
            tested = json.loads(paths.eval_metrics(name, seed).read_text())
            summary = json.loads(paths.test_summary(name, seed).read_text())
            assert run.data.metrics["test_accuracy"] == pytest.approx(tested["test_accuracy"], abs=5e-5)
            assert run.data.metrics["test_loss"] == pytest.approx(tested["test_loss"], abs=5e-5)
            if task == "cats_dogs":  # its test split holds both classes (one image each), so it has an AUC
                assert run.data.metrics["test_roc_auc"] == pytest.approx(summary["test_roc_auc"])
            else:
                assert "test_roc_auc" not in summary
            logged = {artifact.path for artifact in client.list_artifacts(run_id, "figures")}
            assert f"figures/{name}-{seed}.png" in logged  # the confusion matrix
            models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                                 filter_string=f"source_run_id = '{run_id}'")
            if seed == SEED:  # the default seed's run: its figures, its models, its registered version
                assert {f"figures/{png}" for png in pngs} <= logged
                assert [model.name for model in models] == ["classifier"]  # one per training: the photo classifier
                assert client.get_model_version_by_alias(name, tracking.CHAMPION).run_id == run_id
            else:
                assert not {f"figures/{png}" for png in pngs} & logged
                assert models == []
    assert {png.name for png in paths.figures_dir("cats_dogs_vgg16_frozen").glob("filters_*.png")} == \
        {"filters_block1_conv1.png", "filters_block5_conv1.png"}
    assert len(mlflow.search_runs(experiment_names=["cats_dogs"])) == 2
    assert len(mlflow.search_runs(experiment_names=["cifar10"])) == 2
    assert len(client.search_model_versions("name = 'cifar10_naive'")) == 1  # the further seed registers none
