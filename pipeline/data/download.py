"""Stage download@<source>: fetch one upstream source, verify it, unpack it into data/raw/<source>.

Where the bytes come from:
1. the mirror folder, when one is set (PIPELINE_DATA_MIRROR, else data.mirror): the file under
   its upstream name, or for cats_dogs an already extracted PetImages/ folder. A mirror that
   does not exist, or lacks the file, is an error, unless data.mirror_fallback allows 2.;
2. sources.<source>.url: http(s), file://, or a local path to the file (for cats_dogs also a
   folder holding PetImages/ or being PetImages/).

An http download grows in data/downloads/<filename>.part and takes its final name only once
its checksum matched: a file under the final name is a verified one, and a .part resumes.
The output folder is built beside its final place and renamed in, so a failure never leaves
half of it. raw_dir/SOURCE.json records where the data came from and what was verified.
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlparse

from pipeline import paths
from pipeline.config import MIRROR_ENV, Config, Source
from pipeline.data import archives
from pipeline.errors import PipelineError
from pipeline.atomic import replacing_folder
from pipeline.progress import progress_bar

CIFAR_FILES = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch", "batches.meta"]
# What each source must unpack to: a wrong file whose checksum was pasted into params still fails.
EXPECTED_CONTENT = {
    "cats_dogs": ["PetImages/Cat", "PetImages/Dog"],
    "cifar10": [f"cifar-10-batches-py/{name}" for name in CIFAR_FILES],
    "vgg16": [],
}
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30  # per connection attempt and per read, so a stalled server cannot hang the stage
ATTEMPTS = 5  # connections that may drop mid-transfer before the stage gives up


def run(config: Config, source: str) -> None:
    spec: Source = getattr(config.sources, source)
    origin = find_origin(config, source, spec)
    from_folder = isinstance(origin, Path) and origin.is_dir()
    # Verify a file before the output folder is touched; a folder is verified as it is copied.
    archive, checksum = (None, None) if from_folder else verified_file(config, source, spec, origin)
    with replacing_folder(paths.raw_dir(config, source)) as staging:
        if archive is None:
            checksum = copy_pet_images(origin, staging)
        elif source == "vgg16":
            copy_files([(archive, staging / spec.filename)], f"copy {spec.filename}")
        else:
            archives.extract(archive, staging)
        finish(staging, source, origin, checksum)


def find_origin(config: Config, source: str, spec: Source) -> Path | str:
    """A local Path (file or folder) or an http(s) URL, following the order in the module docstring."""
    mirror = config.mirror()
    if mirror is None:
        return local_path_or_url(source, spec.url)
    if not mirror.is_dir():  # a mistyped mirror is an error, not a reason to go online
        problem = "not a folder" if mirror.exists() else "no such folder"
        raise PipelineError(f"{mirror}: {problem} (the mirror, set by {config.mirror_setting()})")
    candidates = [mirror / spec.filename] + ([mirror / "PetImages"] if source == "cats_dogs" else [])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    missing = f"mirror {mirror} holds no {' or '.join(path.name for path in candidates)}"
    if not config.data.mirror_fallback:
        raise PipelineError(f"{missing}; put it there, or set data.mirror_fallback: true in params.yaml "
                            f"to fetch sources.{source}.url instead")
    log(f"{missing}; fetching sources.{source}.url (data.mirror_fallback)")
    return local_path_or_url(source, spec.url)


def local_path_or_url(source: str, url: str) -> Path | str:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return url
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise PipelineError(f"sources.{source}.url: unsupported scheme {parsed.scheme!r} (http, https, file or a path)")
    else:
        path = Path(url).expanduser()
    if not path.exists():
        raise PipelineError(f"{path}: not found (sources.{source}.url)")
    if path.is_dir() and source != "cats_dogs":
        raise PipelineError(f"{path}: is a folder; sources.{source}.url must name the {source} file itself")
    return path


def verified_file(config: Config, source: str, spec: Source, origin: Path | str) -> tuple[Path, str]:
    """The upstream file on local disk and the checksum it matched: a local copy in place, a URL downloaded."""
    if isinstance(origin, Path):
        # Someone else's file: report a mismatch but never delete it.
        return origin, verify(origin, spec, source, delete_if_bad=False)
    return download(config, source, spec, origin)


def download(config: Config, source: str, spec: Source, url: str) -> tuple[Path, str]:
    folder = paths.downloads_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / spec.filename
    if final.exists():
        checksum = accepted_checksum(final, spec, source, digests_of(final))
        if checksum is not None:
            log(f"reusing {final}, already verified")
            return final, checksum
        log(f"{final} no longer matches sources.{source}; fetching it again")
        final.unlink()
    partial = folder / f"{spec.filename}.part"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            fetch_into(url, partial, spec.size)
            break
        except urllib.error.URLError as error:  # refused, unknown host, an HTTP error status: a retry won't help
            raise PipelineError(unreachable_message(url, spec.filename, error, config.mirror())) from None
        except (OSError, http.client.HTTPException) as error:  # cut off mid-transfer: ask for the rest
            if attempt == ATTEMPTS:
                message = unreachable_message(url, spec.filename, error, config.mirror())
                raise PipelineError(f"{message}; {partial.name} is kept and the next run resumes it") from None
            log(f"connection lost at byte {file_size(partial)} ({error}); resuming")
    checksum = verify(partial, spec, source, delete_if_bad=True)
    partial.rename(final)
    return final, checksum


def fetch_into(url: str, partial: Path, expected_size: int | None) -> None:
    """Append the rest of `url` to `partial`, asking only for the missing bytes; raise if cut short."""
    start = file_size(partial)
    if expected_size is not None and start >= expected_size:
        return  # complete already; verification decides whether it is right
    headers = {"User-Agent": "pipeline-download"} | ({"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:
            return  # nothing left past `start`: the .part is whole, so verify it
        raise
    with response:
        resumed = start > 0 and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
            raise PipelineError(f"{url}: the server resumed at another offset than {start}; delete {partial}")
        if not resumed:
            start = 0  # the server ignored Range and sends the whole file
        length = response.headers.get("Content-Length")
        end = start + int(length) if length else None
        bar = progress_bar(f"download {partial.stem}", total=end)
        with partial.open("ab" if resumed else "wb") as out, bar:
            bar.update(start)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    # urllib reports a connection closed early as a plain end of data, so count the bytes.
    if end is not None and file_size(partial) < end:
        raise ConnectionError(f"connection closed at byte {file_size(partial)} of {end}")


def unreachable_message(url: str, filename: str, error: Exception, mirror: Path | None) -> str:
    # URLError wraps the socket error in .reason; HTTPError's own text carries the status code.
    reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", error)
    if mirror is not None:
        return f"could not fetch {url} ({reason}); to use a local copy, put {filename} in the mirror {mirror}"
    return (
        f"could not fetch {url} ({reason}); to use a local copy, set "
        f"{MIRROR_ENV}=<folder holding {filename}> or data.mirror in params.yaml"
    )


def verify(path: Path, spec: Source, source: str, *, delete_if_bad: bool) -> str:
    """The accepted checksum that `path` matches; PipelineError if it matches none."""
    digests = digests_of(path)
    checksum = accepted_checksum(path, spec, source, digests)
    if checksum is not None:
        return checksum
    problem = checksum_problem(path, spec, source, digests)
    if delete_if_bad:
        path.unlink()
        problem += f" ({path.name} deleted)"
    raise PipelineError(problem)


def digests_of(path: Path) -> Callable[[str], str]:
    """file_digest(path, algorithm), remembered: each algorithm reads the file at most once."""
    return functools.cache(lambda algorithm: file_digest(path, algorithm))


def accepted_checksum(path: Path, spec: Source, source: str, digests: Callable[[str], str]) -> str | None:
    """The checksum of the first accepted copy that `path` is: the upstream file's, else a named one's."""
    size = path.stat().st_size
    for name, copy in [(None, spec), *spec.also_accepted.items()]:
        algorithm, expected = copy.checksum.split(":")
        if copy.size in (None, size) and digests(algorithm) == expected:
            if name is not None:
                log(f"{path.name} is sources.{source}.also_accepted.{name}, not the upstream file")
            return copy.checksum
    return None


def checksum_problem(path: Path, spec: Source, source: str, digests: Callable[[str], str]) -> str:
    """One line: expected (the upstream file, then the named copies) vs got, and the entry that
    would accept this copy (docs/offline-mirror.md: the upstream checksum stays beside it)."""
    algorithm, expected = spec.checksum.split(":")
    got = digests(algorithm)
    size = path.stat().st_size
    found = f"{algorithm} {got}, {size} bytes"
    wanted = f"{algorithm} {expected}" + (f", {spec.size} bytes" if spec.size is not None else "")
    if spec.also_accepted:  # named briefly: params.yaml holds their checksums in full
        others = ", ".join(f"{name} ({copy.checksum[:15]}…)" for name, copy in spec.also_accepted.items())
        wanted += f", or sources.{source}.also_accepted: {others}"
    entry = f'local_copy: {{checksum: "{algorithm}:{got}", size: {size}}}'
    return (f"{path}: got {found}; expected {wanted}. If this copy is trusted, name it under "
            f"sources.{source}.also_accepted in params.yaml, e.g. {entry}")


def copy_pet_images(folder: Path, staging: Path) -> str | None:
    """Copy PetImages/ into staging; return what was verified ('sha256:<hex>' of SHA256SUMS) or None."""
    pet = folder / "PetImages" if (folder / "PetImages").is_dir() else folder
    if pet.name != "PetImages":
        raise PipelineError(f"{folder}: holds no PetImages/ folder")
    files = sorted(path for path in pet.rglob("*") if path.is_file())
    copy_files([(path, staging / "PetImages" / path.relative_to(pet)) for path in files], f"copy {pet}")
    sums = pet.parent / "SHA256SUMS"
    if not sums.is_file():
        warn(f"{pet}: no SHA256SUMS beside it, so its content is unverified")
        return None
    check_listed_files(sums, staging)
    return f"sha256:{file_digest(sums, 'sha256')}"


def check_listed_files(sums: Path, root: Path) -> None:
    """Every `<sha256>  PetImages/...` line of SHA256SUMS must match its file under root."""
    listed = {}
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        expected, _, name = line.partition(" ")
        name = name.strip().removeprefix("*")  # '*' marks binary mode in sha256sum's format
        parts = PurePosixPath(name).parts
        if not parts or parts[0] != "PetImages" or ".." in parts or len(expected) != 64:
            raise PipelineError(f"{sums} line {number}: expected '<sha256>  PetImages/<Class>/<file>'")
        listed[name] = expected.lower()
    with progress_bar(f"verify {sums.parent.name}", total=len(listed), unit="file") as bar:
        for name, expected in listed.items():
            path = root / name
            if not path.is_file():
                raise PipelineError(f"{name}: listed in {sums} but missing from the folder")
            got = hashlib.sha256(path.read_bytes()).hexdigest()
            if got != expected:
                raise PipelineError(f"{name}: sha256 {got}, expected {expected} ({sums})")
            bar.update()
    unlisted = sum(1 for path in (root / "PetImages").rglob("*") if path.is_file()) - len(listed)
    if unlisted > 0:
        warn(f"{unlisted} files under PetImages/ are not listed in {sums} and stay unverified")


def finish(staging: Path, source: str, origin: Path | str, checksum: str | None) -> None:
    missing = [name for name in EXPECTED_CONTENT[source] if not (staging / name).exists()]
    if missing:
        raise PipelineError(f"{origin}: has no {', '.join(missing)}; does sources.{source} name the right file?")
    record = {"source": source, "origin": str(origin), "checksum": checksum, "verified": checksum is not None}
    (staging / "SOURCE.json").write_text(json.dumps(record, indent=2) + "\n")




def copy_files(pairs: list[tuple[Path, Path]], description: str) -> None:
    with progress_bar(description, total=sum(source.stat().st_size for source, _ in pairs)) as bar:
        for source, destination in pairs:
            destination.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as reader, destination.open("wb") as writer:
                while chunk := reader.read(CHUNK_BYTES):
                    writer.write(chunk)
                    bar.update(len(chunk))


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as reader, progress_bar(f"verify {path.name}", total=path.stat().st_size) as bar:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def log(message: str) -> None:
    print(f"download: {message}", file=sys.stderr)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
