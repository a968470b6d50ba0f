"""params.yaml validation: every bad value ends the command with exit 2 and one line naming the key."""

import pytest

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
        ({"tune.learning_rate": {"low": 0.1, "high": 0.01}}, "tune.learning_rate"),
        ({"tune.learning_rate": {"low": 0.0, "high": 0.01}}, "tune.learning_rate"),
        ({"tune.epochs": {"low": 5, "high": 2}}, "tune.epochs"),
        ({"tune.pruner": "random"}, "tune.pruner"),
        ({"unknown_section": 1}, "unknown_section"),
        ({"replicate.seeds": [1, 1]}, "replicate.seeds"),
        ({"replicate.seeds": [1, 42]}, "replicate.seeds"),  # 42 is the default seed
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
    (project / "params.yaml").write_text("seed: 1\ntrain: [unclosed\n")
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
    assert list(stages) == ["download", "split", "train", "evaluate", "visualize", "tune", "report", "replicate", "readme",
                            "predict"]


def test_a_misspelt_section_is_reported_before_what_it_leaves_missing(project, capsys):
    """`recipe:` for `recipes:` leaves 37 keys missing; the unknown key is the cause, so it comes first."""
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("\nrecipes:\n", "\nrecipe:\n"))
    assert main(["split", "cats_dogs"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: params.yaml: recipe: unknown key"]


@pytest.mark.parametrize("duplicate, after", [("seed: 7", "seed: 42"), ("  use_tuned: true", "  use_tuned: false")])
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
