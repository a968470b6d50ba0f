"""Where every stage reads and writes: the files DVC tracks, named in one place."""
from pathlib import Path

from pipeline.config import Config

MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")
TUNED_DIR = Path("tuned")


def downloads_dir(config: Config) -> Path:
    """Fetched archives, kept out of DVC so an interrupted download can resume."""
    return config.data.root / "downloads"


def raw_dir(config: Config, source: str) -> Path:
    return config.data.root / "raw" / source


def split_dir(config: Config, task: str) -> Path:
    return config.data.root / "split" / task


def split_summary(task: str) -> Path:
    """Counts per class and part, the files left out and the split's sha256 (not a DVC metric)."""
    return REPORTS_DIR / "splits" / f"{task}.json"


def model_file(model: str) -> Path:
    return MODELS_DIR / f"{model}.keras"


def run_id_file(model: str) -> Path:
    return MODELS_DIR / f"{model}.run_id"


def history_file(model: str) -> Path:
    return REPORTS_DIR / "history" / f"{model}.csv"


def train_summary(model: str) -> Path:
    """What training did: hyperparameters, best and final epochs, wall time, machine (not a DVC metric)."""
    return REPORTS_DIR / "training" / f"{model}.json"


def eval_metrics(model: str) -> Path:
    """The numbers `dvc metrics show` compares: the saved model's val and test accuracy and loss, wall time."""
    return METRICS_DIR / f"{model}.json"


def test_summary(model: str) -> Path:
    """Per-class precision, recall and F1, ROC-AUC and the test size (not a DVC metric)."""
    return REPORTS_DIR / "test" / f"{model}.json"


def confusion_file(model: str) -> Path:
    return REPORTS_DIR / "confusion" / f"{model}.csv"


def figures_dir(model: str) -> Path:
    return REPORTS_DIR / "figures" / model


def tuned_file(model: str) -> Path:
    return TUNED_DIR / f"{model}.json"



# A further seed's record (stage replicate_<task>@<model>-<seed>), beside the default seed's.
def replicate_metrics(model: str, seed: int) -> Path:
    """The numbers metrics/<model>.json holds, for this seed."""
    return METRICS_DIR / "seeds" / f"{model}-{seed}.json"


def replicate_summary(model: str, seed: int) -> Path:
    return REPORTS_DIR / "seeds" / f"{model}-{seed}.json"


def replicate_history(model: str, seed: int) -> Path:
    return REPORTS_DIR / "seeds" / f"{model}-{seed}.csv"
