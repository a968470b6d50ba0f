"""Stage download: sources, mirrors, checksums, resumed downloads and safe extraction."""
from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.data import archives, download
from pipeline.errors import PipelineError
from tests.fixtures import digest, make_cifar_tar, make_pet_images, make_pet_zip, set_params, write_sha256sums

PER_CLASS = 3
FILES_PER_CLASS = PER_CLASS + 4  # make_pet_images adds four broken files per class


def point_source(project: Path, source: str, url: str, file: Path | None = None, **params: object) -> None:
    """Aim sources.<source> at `url`; with `file`, take the checksum and size from it."""
    values = {f"sources.{source}.url": url}
    if file is not None:
        values |= {f"sources.{source}.checksum": digest(file), f"sources.{source}.size": file.stat().st_size}
    values |= {f"sources.{source}.{key}": value for key, value in params.items()}
    set_params(project / "params.yaml", **values)


def source_record(source: str) -> dict:
    return json.loads((paths.raw_dir(load_config(), source) / "SOURCE.json").read_text())


def pet_files(source: str = "cats_dogs") -> list[str]:
    pet = paths.raw_dir(load_config(), source) / "PetImages"
    return sorted(path.relative_to(pet).as_posix() for path in pet.rglob("*") if path.is_file())


def raw_entries() -> list[Path]:
    """Everything under data/raw: empty after a failure, staging folders included."""
    raw = paths.raw_dir(load_config(), "cats_dogs").parent
    return list(raw.iterdir()) if raw.exists() else []


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/x"


@pytest.fixture
def inputs(tmp_path):
    """A folder outside the project for upstream-like files."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


@pytest.fixture
def serve():
    """serve(body, cut_first_at=N, honour_range=True) -> (url, Range headers received, one per request)."""
    servers = []

    def start(body: bytes, cut_first_at: int | None = None, honour_range: bool = True):
        ranges = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                ranges.append(self.headers.get("Range"))
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                offset = int(match[1]) if match and honour_range else 0
                self.send_response(206 if offset else 200)
                if offset:
                    self.send_header("Content-Range", f"bytes {offset}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - offset))
                self.end_headers()
                rest = body[offset:]
                # The first answer promises the whole length, then the connection drops.
                self.wfile.write(rest[:cut_first_at] if cut_first_at and len(ranges) == 1 else rest)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/file", ranges

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- where the bytes come from ---------------------------------------------------------


def test_local_zip_path_is_verified_and_extracted_with_its_junk(project, inputs):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    point_source(project, "cats_dogs", str(archive), archive)
    download.run(load_config(), "cats_dogs")
    files = pet_files()
    assert len(files) == 2 * FILES_PER_CLASS
    assert {"Cat/empty.jpg", "Dog/notes.txt", "Cat/0.jpg"} <= set(files)  # kept as is; split filters
    assert source_record("cats_dogs") == {
        "source": "cats_dogs", "origin": str(archive), "checksum": digest(archive), "verified": True,
    }
    assert archive.exists()


def test_file_url_cifar_tar(project, inputs):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    point_source(project, "cifar10", archive.as_uri(), archive)
    download.run(load_config(), "cifar10")
    batches = paths.raw_dir(load_config(), "cifar10") / "cifar-10-batches-py"
    assert sorted(path.name for path in batches.iterdir()) == sorted(download.CIFAR_FILES)
    assert source_record("cifar10")["verified"] is True


def test_vgg16_file_lands_as_is(project, inputs):
    weights = inputs / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 10)
    point_source(project, "vgg16", str(weights), weights, checksum=digest(weights, "md5"))
    download.run(load_config(), "vgg16")
    copied = paths.raw_dir(load_config(), "vgg16") / weights.name
    assert copied.read_bytes() == weights.read_bytes()
    assert source_record("vgg16")["checksum"] == digest(weights, "md5")


def test_mirror_file_under_upstream_name_wins_over_url(project, inputs, monkeypatch):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    point_source(project, "cats_dogs", closed_port_url(), archive)
    monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(inputs))
    download.run(load_config(), "cats_dogs")
    assert len(pet_files()) == 2 * FILES_PER_CLASS
    assert source_record("cats_dogs")["origin"] == str(archive)


def test_mirror_pet_images_with_sha256sums_is_verified(project, inputs):
    write_sha256sums(make_pet_images(inputs, PER_CLASS))
    point_source(project, "cats_dogs", closed_port_url())
    set_params(project / "params.yaml", **{"data.mirror": str(inputs)})
    download.run(load_config(), "cats_dogs")
    assert len(pet_files()) == 2 * FILES_PER_CLASS
    record = source_record("cats_dogs")
    assert record["verified"] is True
    assert record["checksum"] == digest(inputs / "SHA256SUMS")
    assert record["origin"] == str(inputs / "PetImages")


def test_mirror_pet_images_without_sha256sums_warns_unverified(project, inputs, monkeypatch, capsys):
    make_pet_images(inputs, PER_CLASS)
    point_source(project, "cats_dogs", closed_port_url())
    monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(inputs))
    download.run(load_config(), "cats_dogs")
    err = capsys.readouterr().err
    assert re.search(r"^warning: .*PetImages: no SHA256SUMS beside it, so its content is unverified$", err, re.M)
    record = source_record("cats_dogs")
    assert record["verified"] is False and record["checksum"] is None
    assert len(pet_files()) == 2 * FILES_PER_CLASS


@pytest.mark.parametrize("point_at", ["parent", "PetImages"])
def test_folder_url(project, inputs, point_at):
    pet = make_pet_images(inputs, PER_CLASS)
    write_sha256sums(pet)
    point_source(project, "cats_dogs", str(inputs if point_at == "parent" else pet))
    download.run(load_config(), "cats_dogs")
    assert len(pet_files()) == 2 * FILES_PER_CLASS
    assert source_record("cats_dogs")["verified"] is True


@pytest.mark.parametrize("set_by", ["PIPELINE_DATA_MIRROR", "data.mirror"])
@pytest.mark.parametrize("problem", ["no such folder", "not a folder"])
def test_a_mirror_that_does_not_exist_is_an_error_naming_its_setting(project, inputs, serve, monkeypatch, set_by,
                                                                     problem):
    url, ranges = serve(b"the upstream file")
    point_source(project, "cats_dogs", url)
    mirror = inputs / "no_such_dir"
    if problem == "not a folder":
        mirror.write_text("a file")
    if set_by == "PIPELINE_DATA_MIRROR":
        monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(mirror))
    else:
        set_params(project / "params.yaml", **{"data.mirror": str(mirror)})
    with pytest.raises(PipelineError) as error:
        download.run(load_config(), "cats_dogs")
    assert str(error.value) == f"{mirror}: {problem} (the mirror, set by {set_by})"
    assert ranges == [] and raw_entries() == []  # the upstream URL was not asked


def test_a_mirror_without_the_file_is_an_error_naming_it_and_the_fallback(project, inputs, serve, monkeypatch):
    url, ranges = serve(b"the upstream file")
    point_source(project, "cats_dogs", url)
    empty = inputs / "empty_mirror"
    empty.mkdir()
    monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(empty))
    with pytest.raises(PipelineError) as error:
        download.run(load_config(), "cats_dogs")
    assert str(error.value) == (f"mirror {empty} holds no kagglecatsanddogs_5340.zip or PetImages; put it there, or "
                                f"set data.mirror_fallback: true in params.yaml to fetch sources.cats_dogs.url instead")
    assert ranges == [] and raw_entries() == []


def test_mirror_fallback_fetches_what_the_mirror_lacks_with_a_log_line(project, inputs, monkeypatch, capsys):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    point_source(project, "cats_dogs", str(archive), archive)
    set_params(project / "params.yaml", **{"data.mirror_fallback": True})
    empty = inputs / "empty_mirror"
    empty.mkdir()
    monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(empty))
    download.run(load_config(), "cats_dogs")
    assert f"mirror {empty} holds no kagglecatsanddogs_5340.zip or PetImages; fetching sources.cats_dogs.url" in (
        capsys.readouterr().err)
    assert source_record("cats_dogs")["origin"] == str(archive)


def test_offline_with_a_mirror_says_to_put_the_file_there(project, inputs, monkeypatch):
    """Not "set PIPELINE_DATA_MIRROR", which is set."""
    url = closed_port_url()
    point_source(project, "cats_dogs", url)
    set_params(project / "params.yaml", **{"data.mirror_fallback": True})
    monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(inputs))
    with pytest.raises(PipelineError) as error:
        download.run(load_config(), "cats_dogs")
    assert str(error.value).endswith(f"to use a local copy, put kagglecatsanddogs_5340.zip in the mirror {inputs}")


def test_a_second_run_replaces_the_output(project, inputs):
    pet = make_pet_images(inputs, PER_CLASS, with_bad=False)
    point_source(project, "cats_dogs", str(inputs))
    download.run(load_config(), "cats_dogs")
    (pet / "Cat" / "0.jpg").unlink()
    download.run(load_config(), "cats_dogs")
    assert "Cat/0.jpg" not in pet_files()
    assert [path.name for path in raw_entries()] == ["cats_dogs"]


# --- verification -----------------------------------------------------------------------


def test_checksum_mismatch_of_a_local_file_fails_and_writes_nothing(project, inputs):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    wrong = "sha256:" + "0" * 64
    point_source(project, "cats_dogs", str(archive), archive, checksum=wrong)
    with pytest.raises(PipelineError) as error:
        download.run(load_config(), "cats_dogs")
    message = str(error.value)
    assert "\n" not in message
    got = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "0" * 64 in message and got in message
    # The fix that docs/offline-mirror.md gives: a named entry beside the upstream checksum.
    assert message.endswith("If this copy is trusted, name it under sources.cats_dogs.also_accepted in params.yaml, "
                            f'e.g. local_copy: {{checksum: "sha256:{got}", size: {archive.stat().st_size}}}')
    assert raw_entries() == []
    assert archive.exists()  # not ours to delete


def test_size_mismatch_suggests_an_entry_with_the_size(project, inputs):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    point_source(project, "cifar10", str(archive), archive, size=archive.stat().st_size + 1)
    with pytest.raises(PipelineError, match=rf"sources\.cifar10\.also_accepted .*size: {archive.stat().st_size}}}$"):
        download.run(load_config(), "cifar10")
    assert raw_entries() == []


def test_checksum_mismatch_of_a_download_deletes_it(project, inputs, serve):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    url, _ = serve(archive.read_bytes())
    point_source(project, "cats_dogs", url, archive, checksum="md5:" + "0" * 32)
    with pytest.raises(PipelineError, match=r"sources\.cats_dogs\.also_accepted .*deleted\)$"):
        download.run(load_config(), "cats_dogs")
    assert list(paths.downloads_dir(load_config()).iterdir()) == []
    assert raw_entries() == []


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_sha256sums_mismatch_names_the_file(project, inputs, damage):
    pet = make_pet_images(inputs, PER_CLASS)
    write_sha256sums(pet)
    victim = pet / "Dog" / "1.jpg"
    if damage == "changed":
        victim.write_bytes(b"not the listed bytes")
    else:
        victim.unlink()
    point_source(project, "cats_dogs", str(inputs))
    with pytest.raises(PipelineError, match="PetImages/Dog/1.jpg"):
        download.run(load_config(), "cats_dogs")
    assert raw_entries() == []


# --- other accepted copies (sources.<name>.also_accepted) --------------------------------


def accept_as(project: Path, name: str, archive: Path, **entry: object) -> None:
    """cifar10 from `archive`, whose checksum differs from the upstream one: trusted under `name` only."""
    point_source(project, "cifar10", str(archive), checksum="md5:" + "0" * 32, size=170498071)
    entry = {"checksum": digest(archive), "size": archive.stat().st_size} | entry
    set_params(project / "params.yaml", **{"sources.cifar10.also_accepted": {name: entry}})


def test_a_named_copy_is_accepted_and_recorded_with_its_checksum(project, inputs, capsys):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    accept_as(project, "rebuilt", archive)
    download.run(load_config(), "cifar10")
    batches = paths.raw_dir(load_config(), "cifar10") / "cifar-10-batches-py"
    assert sorted(path.name for path in batches.iterdir()) == sorted(download.CIFAR_FILES)
    # The record a pasted-in checksum made: the same fields, the checksum the file matched.
    assert source_record("cifar10") == {
        "source": "cifar10", "origin": str(archive), "checksum": digest(archive), "verified": True,
    }
    assert "sources.cifar10.also_accepted.rebuilt" in capsys.readouterr().err


def test_a_named_copy_is_accepted_from_a_download_and_when_reused(project, inputs, serve):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    url, ranges = serve(archive.read_bytes())
    accept_as(project, "rebuilt", archive)
    set_params(project / "params.yaml", **{"sources.cifar10.url": url})
    download.run(load_config(), "cifar10")
    download.run(load_config(), "cifar10")
    assert len(ranges) == 1  # the second run reused the verified download
    assert source_record("cifar10")["checksum"] == digest(archive)


def test_a_named_copy_of_another_size_is_refused(project, inputs):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    accept_as(project, "rebuilt", archive, size=archive.stat().st_size + 1)
    with pytest.raises(PipelineError, match=r"sources\.cifar10\.also_accepted: rebuilt"):
        download.run(load_config(), "cifar10")
    assert raw_entries() == []


def test_a_file_matching_no_accepted_copy_names_them_reading_it_once_per_algorithm(project, inputs, monkeypatch):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    other = make_cifar_tar(inputs / "other.tar.gz", seed=1)
    accept_as(project, "rebuilt", other)
    set_params(project / "params.yaml", **{"sources.cifar10.also_accepted.old_md5": {"checksum": digest(other, "md5")}})
    reads = []
    monkeypatch.setattr(download, "file_digest", lambda path, algorithm: reads.append(algorithm) or "f" * 64)
    with pytest.raises(PipelineError) as error:
        download.run(load_config(), "cifar10")
    message = str(error.value)
    assert "\n" not in message
    assert "name it under sources.cifar10.also_accepted" in message  # the fix, as for any mismatch
    assert "sources.cifar10.also_accepted: rebuilt (sha256:" in message and "old_md5 (md5:" in message
    assert sorted(reads) == ["md5", "sha256"]
    assert raw_entries() == []


def test_the_committed_params_accept_the_archive_the_cifar10_record_was_made_from():
    from tests.conftest import ROOT

    record = ROOT / "reports" / "splits" / "cifar10.json"
    if not record.exists():  # split@cifar10 rewrites it: none is committed until the pipeline reran
        pytest.skip(f"{record.relative_to(ROOT)} is not committed")
    recorded = json.loads(record.read_text())["source"]["checksum"]
    cifar10 = load_config(ROOT / "params.yaml").sources.cifar10
    assert recorded in [copy.checksum for copy in cifar10.also_accepted.values()]
    assert cifar10.checksum == "md5:c58f30108f718f92721af3b95e74349a"  # the upstream one stays


# --- http -------------------------------------------------------------------------------


@pytest.mark.parametrize("honour_range", [True, False])
def test_interrupted_download_resumes(project, inputs, serve, capsys, honour_range):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    cut = archive.stat().st_size // 3
    url, ranges = serve(archive.read_bytes(), cut_first_at=cut, honour_range=honour_range)
    point_source(project, "cats_dogs", url, archive)
    download.run(load_config(), "cats_dogs")
    assert ranges == [None, f"bytes={cut}-"]
    assert "resuming" in capsys.readouterr().err
    downloaded = paths.downloads_dir(load_config()) / archive.name
    assert downloaded.read_bytes() == archive.read_bytes()  # appended on 206, restarted on 200
    assert not downloaded.with_name(archive.name + ".part").exists()
    assert source_record("cats_dogs") == {
        "source": "cats_dogs", "origin": url, "checksum": digest(archive), "verified": True,
    }


def test_verified_download_is_reused_without_a_request(project, inputs, serve):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    url, ranges = serve(archive.read_bytes())
    point_source(project, "cifar10", url, archive)
    download.run(load_config(), "cifar10")
    download.run(load_config(), "cifar10")
    assert ranges == [None]


def test_partial_left_by_an_earlier_run_resumes(project, inputs, serve):
    archive = make_cifar_tar(inputs / "cifar-10-python.tar.gz")
    body = archive.read_bytes()
    url, ranges = serve(body)
    point_source(project, "cifar10", url, archive)
    downloads = paths.downloads_dir(load_config())
    downloads.mkdir(parents=True)
    (downloads / f"{archive.name}.part").write_bytes(body[:100])
    download.run(load_config(), "cifar10")
    assert ranges == ["bytes=100-"]
    assert (downloads / archive.name).read_bytes() == body


def test_unreachable_url_without_mirror_says_how_to_use_a_local_copy(project):
    url = closed_port_url()
    point_source(project, "cats_dogs", url)
    with pytest.raises(PipelineError) as error:
        download.run(load_config(), "cats_dogs")
    message = str(error.value)
    assert "\n" not in message
    assert url in message
    assert "PIPELINE_DATA_MIRROR=<folder holding kagglecatsanddogs_5340.zip>" in message
    assert "data.mirror" in message
    assert raw_entries() == []


# --- safe extraction --------------------------------------------------------------------


def make_zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name in names:
            zipped.writestr(name, b"data")
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"data") if member.isfile() else None)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    member.size = 4 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("name", ["../evil", "PetImages/../../evil", "/tmp/evil"])
def test_zip_slip_is_refused(tmp_path, name):
    archive = make_zip(tmp_path / "bad.zip", ["PetImages/Cat/0.jpg", name])
    target = tmp_path / "out" / "target"
    with pytest.raises(PipelineError, match=re.escape(repr(name))):
        archives.extract(archive, target)
    assert not any(target.rglob("*"))
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    "member",
    [
        tar_member("../evil"),
        tar_member("/tmp/evil"),
        tar_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "../../outside"),
        tar_member("link", tarfile.SYMTYPE, "/etc/passwd"),
        tar_member("hard", tarfile.LNKTYPE, "../outside"),
    ],
    ids=["dotdot", "absolute", "symlink-up", "symlink-absolute", "hardlink-up"],
)
def test_tar_traversal_and_links_out_are_refused(tmp_path, member):
    archive = make_tar(tmp_path / "bad.tar.gz", [tar_member("cifar-10-batches-py/batches.meta"), member])
    target = tmp_path / "out" / "target"
    with pytest.raises(PipelineError, match=re.escape(repr(member.name))):
        archives.extract(archive, target)
    assert not any(target.rglob("*"))


def test_link_through_a_link_already_extracted_is_refused(tmp_path):
    archive = make_tar(tmp_path / "bad.tar", [
        tar_member("here", tarfile.SYMTYPE, "."),
        tar_member("here/up", tarfile.SYMTYPE, ".."),  # fine by name, outside once `here` is on disk
    ])
    with pytest.raises(PipelineError, match="refusing member 'here/up'"):
        archives.extract(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out" / "up").exists()


def test_links_that_stay_inside_are_kept(tmp_path):
    archive = make_tar(tmp_path / "ok.tar", [
        tar_member("data/file"),
        tar_member("data/sub/link", tarfile.SYMTYPE, "../file"),
        tar_member("data/hard", tarfile.LNKTYPE, "data/file"),
    ])
    archives.extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "sub" / "link").read_bytes() == b"data"
    assert (tmp_path / "out" / "data" / "hard").read_bytes() == b"data"


def test_stage_refuses_a_malicious_tar_and_leaves_nothing(project, inputs):
    archive = make_tar(inputs / "cifar-10-python.tar.gz", [tar_member("cifar-10-batches-py/../../evil")])
    point_source(project, "cifar10", str(archive), archive)
    with pytest.raises(PipelineError, match="refusing member"):
        download.run(load_config(), "cifar10")
    assert raw_entries() == []
    assert not (project / "data" / "evil").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_corrupt_archive_is_one_line(project, inputs, kind):
    if kind == "zip":
        good = make_pet_zip(inputs / "good.zip", PER_CLASS)
        source, name = "cats_dogs", "kagglecatsanddogs_5340.zip"
    else:
        good = make_cifar_tar(inputs / "good.tar.gz", train_per_class=50)
        source, name = "cifar10", "cifar-10-python.tar.gz"
    broken = inputs / name
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    point_source(project, source, str(broken), broken)
    with pytest.raises(PipelineError, match="corrupt or truncated archive") as error:
        download.run(load_config(), source)
    assert "\n" not in str(error.value)
    assert raw_entries() == []


# --- command line -----------------------------------------------------------------------


def test_cli_prints_one_error_line_and_exits_1(project, inputs, capsys):
    archive = make_pet_zip(inputs / "kagglecatsanddogs_5340.zip", PER_CLASS)
    point_source(project, "cats_dogs", str(archive), archive, checksum="md5:" + "f" * 32)
    assert main(["download", "cats_dogs"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "sources.cats_dogs.also_accepted" in errors[0]
