"""Reading back a model that a training saved: a missing or damaged file is one line that says
how to get it back, not Keras's own message (it calls a .keras file cut short "File not found")."""
from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.registry import train_stage

if TYPE_CHECKING:
    import keras


def load_model(name: str, seed: int, compile: bool = True) -> keras.Model:
    """models/<name>-<seed>.keras, as its training saved it."""
    import keras

    path, stage = paths.model_file(name, seed), train_stage(name, seed)
    if not path.exists():
        raise PipelineError(f"{path}: not found; run `dvc repro {stage}` first")
    if not zipfile.is_zipfile(path):  # cut short: the archive's directory, at its end, is gone
        reason = "truncated, or not a .keras file"
    else:
        try:
            return keras.saving.load_model(path, compile=compile)
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:  # a damaged member
            reason = (str(error).splitlines() or [type(error).__name__])[0]
    raise PipelineError(f"{path}: unreadable ({reason}); restore it with `dvc checkout {path}` "
                        f"or train it again with `dvc repro {stage}`")
