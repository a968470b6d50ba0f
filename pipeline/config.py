"""params.yaml -> one typed, validated config that every stage reads.

A model's settings are its `train.<model>` section over its task's recipe (`recipes.<task>`):
the recipe is written once, each model overrides what it changes. The merge happens here, in
Python, not with YAML anchors: `dvc exp run -S` rewrites params.yaml and would not carry a
change of an anchor to its aliases (treeverse/dvc#10984).

Any problem (unknown key, wrong type, out-of-range value) becomes a ConfigError whose
one-line message names the dotted key, so the CLI can print it and exit with code 2.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, create_model, field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from pipeline.registry import REGISTRY, TASKS

PARAMS_FILE = Path("params.yaml")
MIRROR_ENV = "PIPELINE_DATA_MIRROR"
SPLITS = ("train", "val", "test")


class Section(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored value;
    # strict=True refuses a value of another type instead of converting it: YAML reads `yes` as
    # true, which a lax int takes as 1 (a float still takes an int).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


FolderPath = Annotated[Path, Strict(False)]  # written as a string in YAML


def _known_checksum(value: str) -> str:
    algorithm, _, digest = value.partition(":")
    lengths = {"md5": 32, "sha256": 64}
    if algorithm not in lengths or len(digest) != lengths[algorithm] or not _is_hex(digest):
        raise ValueError("must be 'md5:<32 hex digits>' or 'sha256:<64 hex digits>'")
    return value.lower()


Checksum = Annotated[str, AfterValidator(_known_checksum)]


class AcceptedCopy(Section):
    """A file other than the upstream one that is trusted as the source (a rebuilt archive, say)."""

    checksum: Checksum
    size: int | None = Field(default=None, gt=0)


class Source(Section):
    url: str
    filename: str
    checksum: Checksum = Field(description="'md5:<hex>' or 'sha256:<hex>' of the upstream file")
    size: int | None = Field(default=None, gt=0)
    # Named, so that params.yaml says which file each checksum is; the download accepts any of them.
    also_accepted: dict[str, AcceptedCopy] = Field(default_factory=dict)


class Sources(Section):
    cats_dogs: Source
    cifar10: Source
    vgg16: Source


class Data(Section):
    root: FolderPath = Path("data")
    mirror: FolderPath | None = None
    mirror_fallback: bool = False  # a file the mirror lacks is fetched from sources.<name>.url (else an error)
    subset_per_class: int | None = Field(default=None, gt=0)


class Fractions(Section):
    train: float = Field(gt=0, lt=1)
    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> Fractions:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must sum to 1, not {total:g}")
        return self


class TaskSplit(Section):
    per_class: int = Field(gt=0)
    fractions: Fractions


class Split(Section):
    seed: int = Field(default=42, ge=0)  # draws the sample and the split; every training sees the same
    cats_dogs: TaskSplit
    cifar10: TaskSplit


class Augment(Section):
    flip: bool = True
    rotation: float = Field(default=0.1, ge=0, le=1)
    zoom: float = Field(default=0.2, ge=0, lt=1)
    translation: float = Field(default=0.1, ge=0, lt=1)
    contrast: float = Field(default=0.0, ge=0, lt=1)
    cutout: float = Field(default=0.0, ge=0, le=1)


class FineTune(Section):
    epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0, le=1)
    unfreeze_from: str = "block5_conv1"


class Model(Section):
    epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0, le=1)
    batch_size: int = Field(gt=0)
    image_size: int = Field(gt=0)
    dropout: float = Field(default=0.5, ge=0, lt=1)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decays to 0 over the epochs
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    ema_momentum: Optional[float] = Field(default=None, gt=0, lt=1)  # None: no moving average of the weights
    mirror_average: bool = False  # evaluate, predict and serve the mean over each image and its mirror image
    precision: Literal["float32", "bfloat16", "auto"] = "float32"  # auto: bfloat16 where the CPU has it
    augment: Augment | None = None
    fine_tune: FineTune | None = None


def _optional(field) -> tuple:
    """A Model field as a recipe holds it: the same type and bounds, but it may be left out."""
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return (Optional[annotation], None)


# A recipe: any of a model's keys, checked as the model checks them; what it leaves out, models set.
Recipe = create_model("Recipe", __base__=Section, **{key: _optional(field) for key, field in Model.model_fields.items()})
Recipes = create_model("Recipes", __base__=Section, **{task: (Recipe, Recipe()) for task in TASKS})

# One required `Model` section per model of the registry.
Train = create_model("Train", __base__=Section, **{name: (Model, ...) for name in REGISTRY})


class Range(Section):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g})")
        return self


class Search(Section):
    storage: str = "sqlite:///optuna.db"
    n_trials: int = Field(default=20, gt=0)
    timeout_s: int | None = Field(default=None, gt=0)
    pruner: Literal["percentile", "median", "hyperband", "none"] = "percentile"
    percentile: float = Field(default=33.0, gt=0, lt=100)  # the percentile pruner keeps this top share
    epochs: Range
    learning_rate: Range
    batch_size: list[int] = Field(min_length=1)

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, value: Range) -> Range:
        if value.low < 1 or value.low != int(value.low) or value.high != int(value.high):
            raise ValueError("epochs must be whole numbers of at least 1")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _positive_learning_rate(cls, value: Range) -> Range:
        if value.low <= 0:
            raise ValueError("learning rate must be positive (searched on a log scale)")
        return value

    @field_validator("batch_size")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        if any(size <= 0 for size in value):
            raise ValueError("batch sizes must be positive")
        return value


class Visualize(Section):
    activation_layers: int = Field(default=8, gt=0)
    filter_layers: dict[str, list[str]] = Field(default_factory=dict)
    filters_per_layer: int = Field(default=16, gt=0)
    ascent_steps: int = Field(default=60, gt=0)
    ascent_step_size: float = Field(default=10.0, gt=0)
    gradcam_images_per_class: int = Field(default=2, gt=0)

    @field_validator("filter_layers")
    @classmethod
    def _known_models(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = [name for name in value if name not in REGISTRY]
        if unknown:  # a misspelt name would leave its model with the default layers, silently
            raise ValueError(f"{', '.join(unknown)}: no such model")
        return value


class Config(Section):
    # Every model trains once per seed; the first is the default seed, whose model is registered and served.
    seeds: list[int] = Field(default=[42], min_length=1)
    data: Data = Data()
    sources: Sources
    split: Split
    recipes: Recipes = Recipes()  # type: ignore[valid-type]  # checked before train, so its errors name it
    train: Train  # type: ignore[valid-type]
    search: Search
    visualize: Visualize = Visualize()

    @model_validator(mode="before")
    @classmethod
    def _recipes_under_models(cls, raw: object) -> object:
        """Each model's section over its task's recipe, before either is checked."""
        if not isinstance(raw, dict) or not isinstance(raw.get("train"), dict):
            return raw
        recipes = raw.get("recipes") if isinstance(raw.get("recipes"), dict) else {}
        train = dict(raw["train"])
        for name, spec in REGISTRY.items():
            recipe, own = recipes.get(spec.task), train.get(name)
            if name in train and isinstance(recipe, dict) and isinstance(own, dict | None):
                train[name] = merged(recipe, own or {})  # `cifar10_naive:` with nothing under it is {}
        return {**raw, "train": train}

    @model_validator(mode="after")
    def _subset_fits(self) -> Config:
        subset = self.data.subset_per_class
        for task in TASKS:
            per_class = getattr(self.split, task).per_class
            if subset is not None and subset > per_class:
                raise ValueError(
                    f"data.subset_per_class ({subset}) is larger than split.{task}.per_class ({per_class})"
                )
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(seed < 0 for seed in value):
            raise ValueError("seeds must be distinct and not negative")
        return value

    @property
    def seed(self) -> int:
        """The default seed: the one a search trains under, and the one whose model is served."""
        return self.seeds[0]

    def check_seed(self, seed: int) -> None:
        if seed not in self.seeds:
            raise ConfigError(f"seed {seed} is not in seeds {self.seeds}")

    def under_seed(self, seed: int) -> Config:
        """This config for one training under `seed`: its shuffles, draws and initial weights."""
        return self.model_copy(update={"seeds": [seed]})

    def model(self, name: str) -> Model:
        """The training hyperparameters of one model of the registry."""
        return getattr(self.train, name)

    def mirror(self) -> Path | None:
        """The mirror folder: the environment variable wins over params, so CI needs no edit."""
        value = os.environ.get(MIRROR_ENV)
        return Path(value) if value else self.data.mirror

    def mirror_setting(self) -> str:
        """Which setting names the mirror, for messages."""
        return MIRROR_ENV if os.environ.get(MIRROR_ENV) else "data.mirror"

    def per_class(self, task: str) -> int:
        """Images per class that the split of `task` keeps, after the subset profile."""
        per_class = getattr(self.split, task).per_class
        subset = self.data.subset_per_class
        return per_class if subset is None else min(subset, per_class)


def merged(recipe: dict, own: dict) -> dict:
    """`own` over `recipe`, key by key, nested sections too; `None` in `own` clears a key,
    `None` in the recipe sets none."""
    result = {key: value for key, value in recipe.items() if value is not None}
    for key, value in own.items():
        both_sections = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both_sections else value
    return result


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in text)


def _first_error(error: ValidationError) -> str:
    """One line: 'train.cifar10_naive.learning_rate: Input should be greater than 0'. An unknown
    key comes first: it is often the cause of the rest (`recipe:` for `recipes:` leaves each
    model missing the keys the recipe held)."""
    errors = error.errors()
    first = next((each for each in errors if each["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "missing key"
        if len(first["loc"]) == 3 and first["loc"][0] == "train" and first["loc"][1] in REGISTRY:
            message += f" (set it there or in recipes.{REGISTRY[first['loc'][1]].task})"
    if not key:  # a whole-config check: its message names the keys itself
        return message
    return f"{key}: {message}"


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key written twice in one mapping (PyYAML keeps the last, silently),
    and reads `1e-3` as a number, as YAML 1.2 and DVC do (PyYAML's YAML 1.1 reads a string)."""

    def construct_mapping(self, node, deep=False):
        seen = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat what it merges
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} written twice", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep)


EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


def load_config(path: Path | str = PARAMS_FILE) -> Config:
    """Read and validate params.yaml; raise ConfigError with one line on any problem."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_first_error(error)}") from None
