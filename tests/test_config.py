"""params.yaml validation: every bad value ends the command with exit 2 and one line naming the key;
the seeds; the CLI and the MLproject entry points that run it."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.__main__ import build_parser, main
from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import ROOT
from tests.fixtures import set_params


def test_shipped_params_are_valid():
    config = load_config(ROOT / "params.yaml")
    assert config.split.cats_dogs.per_class == 2000
    assert config.per_class("cifar10") == 6000
    assert config.model("cifar10_naive").image_size == 32


@pytest.mark.parametrize(
    "override, key",
    [
        ({"train.cifar10_naive.learning_rate": -0.001}, "train.cifar10_naive.learning_rate"),
        ({"train.cifar10_naive.epochs": "ten"}, "train.cifar10_naive.epochs"),
        ({"train.cifar10_naive.batch_size": 0}, "train.cifar10_naive.batch_size"),
        ({"train.cifar10_naive.learnig_rate": 0.01}, "train.cifar10_naive.learnig_rate"),
        ({"split.cats_dogs.fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}, "split.cats_dogs.fractions"),
        ({"data.subset_per_class": 5000}, "data.subset_per_class"),
        ({"data.subset_per_class": -1}, "data.subset_per_class"),
        ({"sources.cifar10.checksum": "crc:1234"}, "sources.cifar10.checksum"),
        ({"sources.cifar10.also_accepted.rebuilt_from_jpegs.checksum": "sha256:abc"},
         "sources.cifar10.also_accepted.rebuilt_from_jpegs.checksum"),
        ({"sources.cifar10.also_accepted.rebuilt_from_jpegs.size": 0},
         "sources.cifar10.also_accepted.rebuilt_from_jpegs.size"),
        ({"sources.cifar10.also_accepted.mine": {"md5": "0" * 32}},
         "sources.cifar10.also_accepted.mine.md5: unknown key"),
        ({"sources.cifar10.also_accepted": ["md5:" + "0" * 32]}, "sources.cifar10.also_accepted"),
        ({"search.learning_rate": {"low": 0.1, "high": 0.01}}, "search.learning_rate"),
        ({"search.learning_rate": {"low": 0.0, "high": 0.01}}, "search.learning_rate"),
        ({"search.epochs": {"low": 5, "high": 2}}, "search.epochs"),
        ({"search.pruner": "random"}, "search.pruner"),
        ({"unknown_section": 1}, "unknown_section"),
        ({"seeds": [42, 1, 42]}, "seeds: seeds must be distinct and not negative"),
        ({"seeds": [42, -1]}, "seeds: seeds must be distinct and not negative"),
        ({"seeds": []}, "seeds: List should have at least 1 item"),
        ({"seeds": 42}, "seeds: Input should be a valid list"),
        ({"split.seed": -1}, "split.seed"),
        # the keys the seeds and the search replaced are refused, not ignored in silence
        ({"seed": 7}, "seed: unknown key"),
        ({"replicate.seeds": [1, 2]}, "replicate: unknown key"),
        ({"tune.n_trials": 3}, "tune: unknown key"),
        ({"train.use_tuned": True}, "train.use_tuned: unknown key"),
        ({"recipes.cifar10.augment.cutout": 1.5}, "recipes.cifar10.augment.cutout"),
        # YAML reads yes as true: not a number of epochs, nor a learning rate (lax, they were 1 and 1.0)
        ({"train.cifar10_naive.epochs": True}, "train.cifar10_naive.epochs"),
        ({"train.cifar10_naive.learning_rate": True}, "train.cifar10_naive.learning_rate"),
        ({"recipes.cats_dogs.batch_size": True}, "recipes.cats_dogs.batch_size"),
        ({"visualize.filter_layers": {"cifar10_naiv": ["conv2d"]}}, "visualize.filter_layers: cifar10_naiv: no such"),
    ],
)
def test_bad_value_exits_2_naming_the_key(project, capsys, override, key):
    set_params(project / "params.yaml", **override)
    assert main(["split", "cats_dogs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: params.yaml")
    assert key in err[0]


def test_malformed_yaml_is_one_line(project, capsys):
    (project / "params.yaml").write_text("seeds: [1]\ntrain: [unclosed\n")
    assert main(["split", "cats_dogs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "params.yaml line" in err[0]


def test_missing_params_file_is_one_line(project, capsys):
    (project / "params.yaml").unlink()
    assert main(["split", "cats_dogs"]) == 2
    assert "params.yaml: file not found" in capsys.readouterr().err


def test_cli_offers_every_stage():
    """The parser's own choices, not its help text (where "train" also appears in split's line)."""
    stages = build_parser()._subparsers._group_actions[0].choices
    assert list(stages) == ["download", "split", "train", "evaluate", "visualize", "search", "report", "predict"]


def test_the_first_seed_is_the_default_and_each_training_runs_under_one():
    config = load_config(ROOT / "params.yaml")
    assert config.seeds == [42, 1, 2] and config.seed == 42
    assert config.split.seed == 42  # the split's own seed, not the trainings'
    one = config.under_seed(1)
    assert (one.seeds, one.seed) == ([1], 1)
    assert one.train == config.train and one.split.seed == 42  # nothing else changes
    assert config.seeds == [42, 1, 2]  # a copy: the config itself is left as it was


def test_seeds_and_split_seed_have_defaults(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["seeds"], params["split"]["seed"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    config = load_config(project / "params.yaml")
    assert (config.seeds, config.seed, config.split.seed) == ([42], 42, 42)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_seed_not_in_seeds_exits_2_naming_the_seeds(project, capsys, stage):
    """Checked before anything is read or trained: no model, split or MLflow run is needed to refuse."""
    assert main([stage, "cifar10_naive", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: seed 7 is not in seeds [42, 1, 2]"]
    assert not (project / "mlflow.db").exists() and not (project / "models").exists()


def test_train_and_evaluate_take_an_optional_seed_search_an_apply_switch():
    parser = build_parser()
    assert parser.parse_args(["train", "cifar10_naive"]).seed is None  # the stage takes seeds[0]
    assert parser.parse_args(["evaluate", "cifar10_naive", "2"]).seed == 2
    assert parser.parse_args(["search", "cifar10_naive"]).apply is False
    assert parser.parse_args(["search", "cifar10_naive", "--apply"]).apply is True
    with pytest.raises(SystemExit):
        parser.parse_args(["visualize", "cifar10_naive", "1"])  # the default seed's figures only


def entry_point_command(tmp_path, entry: str, **parameters) -> tuple[dict, list[str]]:
    """What `mlflow run . -e ENTRY -P ...` runs: MLflow's own rendering of the MLproject command,
    through bash as MLflow runs it, with a stand-in `python` that reports its arguments and
    environment. Returns that environment and the arguments after `python -m pipeline`."""
    from mlflow.projects import _project_spec

    command = _project_spec.load_project(str(ROOT)).get_entry_point(entry).compute_command(parameters, None)
    stand_in = tmp_path / "bin" / "python"
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text('#!/bin/sh\nexec "$REAL_PYTHON" -c \'import json, os, sys; '
                        'print(json.dumps([dict(os.environ), sys.argv[1:]]))\' "$@"\n')
    stand_in.chmod(0o755)
    environment = {**os.environ, "PATH": f"{stand_in.parent}:{os.environ['PATH']}", "REAL_PYTHON": sys.executable,
                   "MLFLOW_RUN_ID": "the run `mlflow run` made"}
    done = subprocess.run(["bash", "-c", command], env=environment, capture_output=True, text=True, check=True)
    seen, argv = json.loads(done.stdout)
    assert argv[:2] == ["-m", "pipeline"], argv
    assert "MLFLOW_RUN_ID" not in seen  # the pipeline opens its own runs
    return seen, argv[2:]


@pytest.mark.parametrize("entry", ["train", "evaluate"])
def test_mlflow_project_train_and_evaluate_entry_points_run_one_seed(tmp_path, entry):
    parser = build_parser()
    _, argv = entry_point_command(tmp_path, entry, model="cifar10_naive", seed="1")
    args = parser.parse_args(argv)
    assert (args.stage, args.model, args.seed) == (entry, "cifar10_naive", 1)
    _, argv = entry_point_command(tmp_path, entry, model="cifar10_naive")  # no seed: the default one
    args = parser.parse_args(argv)
    assert (args.stage, args.model, args.seed) == (entry, "cifar10_naive", None)


def test_a_misspelt_section_is_reported_before_what_it_leaves_missing(project, capsys):
    """`recipe:` for `recipes:` leaves 37 keys missing; the unknown key is the cause, so it comes first."""
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("\nrecipes:\n", "\nrecipe:\n"))
    assert main(["split", "cats_dogs"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: params.yaml: recipe: unknown key"]


@pytest.mark.parametrize("duplicate, after", [("seeds: [7]", "seeds: [42, 1, 2]"), ("  seed: 7", "  seed: 42")])
def test_a_key_written_twice_is_one_line_naming_it(project, capsys, duplicate, after):
    params = project / "params.yaml"
    lines = params.read_text().splitlines()
    index = next(number for number, text in enumerate(lines) if text.startswith(after))
    lines.insert(index + 1, duplicate)
    params.write_text("\n".join(lines) + "\n")
    assert main(["split", "cats_dogs"]) == 2
    key = duplicate.split(":")[0].strip()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: params.yaml line {index + 2}: key '{key}' written twice"]


def test_numbers_are_read_as_dvc_reads_them(project):
    """`1e-3` is a number to DVC (YAML 1.2) and to a strict float here, not PyYAML's string;
    `yes` is YAML's true, and no number of epochs."""
    params = project / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("    learning_rate: 0.0005\n", "    learning_rate: 5e-4\n", 1))
    assert load_config(params).model("cats_dogs_naive").learning_rate == 0.0005
    params.write_text(text.replace("    epochs: 100\n", "    epochs: yes\n", 1))
    with pytest.raises(ConfigError, match="train.cats_dogs_naive.epochs: Input should be a valid integer$"):
        load_config(params)
