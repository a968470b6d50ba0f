"""Writing outputs whole or not at all: what a stage leaves at an output path is never half-written.

Every output is built beside its path, under a hidden name (`.partial-<pid>.<name>`), and
renamed into place when complete. A run killed part-way leaves such a partial behind; the
next write of the same output removes it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def aside(path: Path, kind: str = "partial") -> Path:
    """This process's hidden sibling of `path`; its name keeps the suffix, which Keras and matplotlib read."""
    return path.with_name(f".{kind}-{os.getpid()}.{path.name}")


def remove_leftovers(path: Path) -> None:
    """Delete what killed runs left beside `path`: partial builds and set-aside old versions."""
    for kind in ("partial", "previous"):
        for stale in path.parent.glob(f".{kind}-*.{path.name}"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing_file(path: Path) -> Iterator[Path]:
    """A sibling path to write to; it replaces `path` only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    partial = aside(path)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


@contextlib.contextmanager
def replacing_folder(target: Path) -> Iterator[Path]:
    """A fresh sibling folder to build in; it replaces `target` only when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    staging = aside(target)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = aside(target, "previous")
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write beside `path`, then rename over it: readers see the old file or the new, never part."""
    with replacing_file(path) as partial:
        partial.write_text(text)
