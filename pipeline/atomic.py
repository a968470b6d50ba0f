"""Writing outputs whole or not at all: what a stage leaves at an output path is never half-written.

Every output is built beside its path, under a hidden name (`.partial-<pid>.<name>`), and
renamed into place when complete. A run killed part-way leaves such a partial behind; the
next write of the same output removes it. A write that the disk refuses (full, read-only)
removes its partial, keeps the old output and ends the stage with one line naming the path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import DISK_ERRORS, PipelineError, cannot_write


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


def make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PipelineError(f"{path.parent}: is a file, where a folder should be") from None
    except OSError as error:  # a read-only disk, a file further up
        raise cannot_write(path, error) from None


def discard(partial: Path) -> None:
    """Remove a partial file, emptied first: a library that still holds it open (h5py after a
    full disk) must be able to close it, and on a full disk it can only once the space is back;
    otherwise HDF5 crashes the interpreter at exit."""
    with contextlib.suppress(OSError):
        os.truncate(partial, 0)
    partial.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing_file(path: Path) -> Iterator[Path]:
    """A sibling path to write to; it replaces `path` only when the block succeeds."""
    make_parent(path)
    remove_leftovers(path)
    partial = aside(path)
    try:
        yield partial
    except BaseException as error:
        discard(partial)
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            raise cannot_write(path, error) from None
        raise
    try:
        partial.replace(path)
    except OSError as error:  # a folder in the way, a read-only disk
        discard(partial)
        raise cannot_write(path, error) from None


def check_writable(path: Path) -> None:
    """Fail before the work rather than after it: `path` must name a file (not a folder) in a
    folder that this process can write into. Root writes through file modes, so try it."""
    if path.is_dir():
        raise PipelineError(f"{path}: is a folder; name a file to write")
    make_parent(path)
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise cannot_write(path, error) from None


@contextlib.contextmanager
def replacing_folder(target: Path) -> Iterator[Path]:
    """A fresh sibling folder to build in; it replaces `target` only when the block succeeds."""
    make_parent(target)
    remove_leftovers(target)
    staging = aside(target)
    staging.mkdir()
    try:
        yield staging
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            raise cannot_write(target, error) from None
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
