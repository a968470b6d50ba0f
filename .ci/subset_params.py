"""The subset profile CI runs: params.yaml shrunk so the whole DAG (every model) trains in minutes.

Usage: python .ci/subset_params.py MIRROR   (in the project's folder; rewrites its params.yaml)
"""
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))
from pipeline.config import load_config  # noqa: E402
from pipeline.registry import REGISTRY  # noqa: E402
from tests.fixtures import set_params  # noqa: E402

VGG16_WEIGHTS = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def subset_overrides(mirror: Path) -> dict:
    overrides = {
        "data.subset_per_class": 50,
        "seeds": [42],  # the default seed alone: one training per model
        # The VGG16 stand-in is not the upstream file: its own checksum. The CIFAR-10 archive built
        # from the JPEG copies is sources.cifar10.also_accepted's, so params keep it as committed.
        "sources.vgg16.checksum": sha256(mirror / VGG16_WEIGHTS),
        "search.n_trials": 2, "search.epochs": {"low": 1, "high": 2},
        # Gradient ascent through VGG16 on two CPU cores is slow: fewer steps and filters.
        "visualize.ascent_steps": 5, "visualize.filters_per_layer": 4,
    }
    config = load_config()
    for model in REGISTRY:  # every model of the registry, two epochs (fine-tuning one)
        overrides[f"train.{model}.epochs"] = 2
        if config.model(model).fine_tune:
            overrides[f"train.{model}.fine_tune.epochs"] = 1
    return overrides


if __name__ == "__main__":
    set_params(Path("params.yaml"), **subset_overrides(Path(sys.argv[1])))
