"""Unpacking zip and tar archives without trusting their member names.

An archive may name a member `../../.bashrc` or `/etc/passwd`, or hold a symlink pointing
out of the folder, and be extracted over files it has no business touching. Every member is
checked before anything is written; a bad one stops the extraction with a PipelineError
naming it. A damaged archive (bad zip, truncated gzip) also becomes a one-line PipelineError.
A failure can leave part of the archive in the target folder: callers extract into a staging
folder and discard it.
"""
from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError
from pipeline.progress import progress_bar

# What zipfile, tarfile and gzip raise when the bytes themselves are damaged.
CORRUPT_ARCHIVE = (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)


def extract(archive: Path, target: Path) -> None:
    """Unpack a .zip, .tar, .tar.gz or .tgz into the folder `target` (created if absent)."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.endswith(".zip"):
            extract_zip(archive, target)
        elif archive.name.endswith((".tar", ".tar.gz", ".tgz")):
            extract_tar(archive, target)
        else:
            raise PipelineError(f"{archive}: not a .zip, .tar or .tar.gz file name")
    except tarfile.FilterError as error:
        raise PipelineError(f"{archive}: refusing member {error.tarinfo.name!r}: {error}") from None
    except CORRUPT_ARCHIVE as error:
        raise PipelineError(f"{archive}: corrupt or truncated archive ({error or type(error).__name__})") from None


def extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for member in members:
            check_member_path(archive, member.filename)
        total = sum(member.file_size for member in members)
        with progress_bar(f"extract {archive.name}", total=total) as bar:
            for member in members:
                # zipfile stores symlinks as plain files holding the link text, so none can escape.
                zipped.extract(member, target)
                bar.update(member.file_size)


def extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()  # reads to the end, so a truncated archive fails before any write
        for member in members:
            check_tar_member(archive, member)
        with progress_bar(f"extract {archive.name}", total=sum(member.size for member in members)) as bar:
            for member in members:
                # The "data" filter also resolves links already on disk (a link to "." followed by
                # one to ".." passes the name checks above) and drops device files and set-uid bits.
                tar.extract(member, target, filter="data")
                bar.update(member.size)


def check_member_path(archive: Path, name: str) -> None:
    """Refuse absolute names and names that climb out with `..`."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")) or ".." in path.parts:
        raise PipelineError(f"{archive}: refusing member {name!r}: it would land outside the target folder")


def check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    check_member_path(archive, member.name)
    if not (member.issym() or member.islnk()):
        return
    # A symlink's target is relative to its own folder; a hard link's to the archive root.
    base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
    link = PurePosixPath(member.linkname)
    if link.is_absolute() or not stays_inside(base / link):
        kind = "symlink" if member.issym() else "hard link"
        raise PipelineError(f"{archive}: refusing member {member.name!r}: "
                            f"{kind} to {member.linkname!r} points outside the target folder")


def stays_inside(path: PurePosixPath) -> bool:
    """Whether a relative path, with its `..` steps applied in order, never climbs above its start."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            return False
    return True
