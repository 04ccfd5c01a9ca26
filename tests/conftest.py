"""Shared fixtures: where the dummy data lives, the --full-size option, a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.utils import gcs_utils
from testing import FileServer

from mnist_variants import fetching, http_transport

REPO = Path(__file__).resolve().parents[1]
DUMMY_DATA = REPO / "dummy_data"
# Split sizes of the dummy data (dummy_data/generate.py writes them).
DUMMY_SPLITS = {
    "fashion_mnist": {"train": 12, "test": 5},
    "binarized_mnist": {"train": 10, "validation": 4, "test": 4},
    "mnist": {"train": 12, "test": 5},
    "kmnist": {"train": 12, "test": 5},
    "emnist": {"train": 16, "test": 6},  # every config of dummy_data/emnist/gzip.zip
    "mnist_corrupted": {"train": 12, "test": 5},  # every config of mnist_c.zip: MNIST's dummy examples
    "qmnist": {"train": 12, "test": 8, "nist": 20},  # MNIST's dummy examples, 3 lost test digits; nist: all of them
}


def dummy_files(folder: str) -> dict[str, bytes]:
    """The dummy upstream files of one dataset, by file name."""
    return {path.name: path.read_bytes() for path in (DUMMY_DATA / folder).iterdir()}


FASHION_FILES = dummy_files("fashion_mnist")
BINARIZED_FILES = dummy_files("binarized_mnist")


def decompressed(files: dict[str, bytes]) -> dict[str, bytes]:
    """Gzipped files as keras and torchvision keep them: decompressed, without `.gz`."""
    return {name.removesuffix(".gz"): gzip.decompress(data) for name, data in files.items()}


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


@dataclasses.dataclass(frozen=True)
class ByDigests:
    """A dummy file registered by its digests, not its size (as QMNIST's images are): a line of
    `<name>.digests.tsv`. `of` gives a file's own digests; a test may register a wrong one to see it refused."""

    max_size: int
    md5: str
    git_blob_sha1: str

    @classmethod
    def of(cls, data: bytes, max_size: int | None = None, **wrong: str) -> ByDigests:
        """`data`'s md5 and git blob sha1 (either replaced by `wrong`), bounded by `max_size` (its size by default)."""
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        return dataclasses.replace(cls(len(data) if max_size is None else max_size, md5, blob), **wrong)


def write_registry(
    directory: Path, builder_cls, files: dict[str, bytes], base_url: str, by_digests: Mapping[str, ByDigests] = {}
) -> Path:
    """Checksums of `files` in TFDS's format, shaped as upstream's: the download's digest of every file,
    and the decompressed content's digest of the label files only (the images' are not known upstream).
    Files named in `by_digests` are registered by those instead, in `<name>.digests.tsv` beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{builder_cls.name}.digests.tsv").write_text(
        "".join(
            f"{base_url}{name}\t{known.max_size}\t{known.md5}\t{known.git_blob_sha1}\t{name}\n"
            for name, known in by_digests.items()
        )
    )
    files = {name: data for name, data in files.items() if name not in by_digests}
    labels = {
        files_of_split["labels"] for files_of_split in builder_cls.SPLIT_FILES.values() if "labels" in files_of_split
    }

    def line(name: str, data: bytes, filename: str) -> str:
        return f"{base_url}{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{filename}\n"

    tsv = directory / f"{builder_cls.name}.tsv"
    tsv.write_text("".join(line(name, data, name) for name, data in files.items()))
    # (gzipped ones: the only form whose content is registered; QMNIST's xz label files have no other form)
    contents = {name: gzip.decompress(data) for name, data in files.items() if name in labels and name.endswith(".gz")}
    (directory / f"{builder_cls.name}.decompressed.tsv").write_text(
        "".join(line(name, data, name.removesuffix(".gz")) for name, data in contents.items())
    )
    return tsv


def child_env() -> dict[str, str]:
    """What a process started by a test needs to import tests/workers: that folder on its path, and nothing else
    added (an empty entry would put the working directory, maybe the checkout, before the installed package)."""
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "workers"), *inherited]), "TF_CPP_MIN_LOG_LEVEL": "2"}


def worker_env(
    tmp_path: Path,
    builder_cls,
    files: dict[str, bytes],
    sources: list[str],
    by_digests: Mapping[str, ByDigests] = {},
) -> dict[str, str]:
    """The environment that makes worker processes (tests/workers) use `sources` and the checksums of `files`
    (those in `by_digests` registered by their digests)."""
    tsv = write_registry(tmp_path / "registry", builder_cls, files, sources[0], by_digests)
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({builder_cls.name: {"sources": sources, "checksums": str(tsv)}}))
    return {"MNIST_VARIANTS_TEST_REGISTRY": str(registry), **child_env()}


def tfds_build_every_config(builder_cls, manual_dir: Path, data_dir: Path, env: dict[str, str]) -> dict[str, dict]:
    """`tfds build NAME` with no config named, offline from `manual_dir` (the child registers the test's
    registry through registered_dummies); returns each config's prepared split counts."""
    tfds_cli = shutil.which("tfds", path=str(Path(sys.executable).parent))
    assert tfds_cli, "the tfds command line is installed with the [cli] extra"
    command = [tfds_cli, "build", builder_cls.name, "--imports", "registered_dummies", "--manual_dir",
               str(manual_dir), "--data_dir", str(data_dir)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    built = {config.name: tfds.builder(f"{builder_cls.name}/{config.name}", data_dir=data_dir)
             for config in builder_cls.BUILDER_CONFIGS}  # fmt: skip
    return {
        name: {split: info.num_examples for split, info in builder.info.splits.items()}
        for name, builder in built.items()
    }


def register_dummy_checksums(
    monkeypatch, tmp_path, builder_cls, files: dict[str, bytes], by_digests: Mapping[str, ByDigests] = {}
) -> None:
    """Registers the files' digests in place of upstream's for this test (labels' content too); those named in
    `by_digests` by those (a size bound, md5 and git blob sha1)."""
    tsv = write_registry(tmp_path / "registry", builder_cls, files, builder_cls.SOURCES[0], by_digests)
    monkeypatch.setattr(builder_cls, "_checksums_path", epath.Path(tsv))


def serve_from(
    monkeypatch, tmp_path, server, builder_cls, files, *folders: str, by_digests: Mapping[str, ByDigests] = {}
) -> list[str]:
    """Points the builder's sources at `folders` of the server, registers `files`; returns the base URLs."""
    bases = [f"{server.url}/{folder}/" for folder in folders]
    monkeypatch.setattr(builder_cls, "SOURCES", tuple(bases))
    register_dummy_checksums(monkeypatch, tmp_path, builder_cls, files, by_digests)
    return bases


def prepare(builder_cls, tmp_path, manual_dir=None) -> tfds.core.DatasetBuilder:
    builder = builder_cls(data_dir=tmp_path / "data")
    builder.download_and_prepare(
        download_dir=tmp_path / "downloads",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
    )
    return builder


def assert_prepared(builder, folder: str) -> None:
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == DUMMY_SPLITS[folder]


def assert_nothing_prepared(tmp_path: Path, downloads: bool = True) -> None:
    """No file under the test's data dir but the preparation lock (TFDS may leave empty folders),
    and (unless `downloads` is False: complete downloads may stay) nothing in its downloads dir."""
    leftovers = [
        path
        for folder in (("data", "downloads") if downloads else ("data",))
        for path in (tmp_path / folder).rglob("*")
        if path.is_file() and path.suffix != ".lock"
    ]
    assert not leftovers, leftovers


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads give up on a silent loopback server after 1 s, from the builders' own sources only."""
    monkeypatch.setenv(http_transport.TIMEOUT_ENV, "1")
    monkeypatch.delenv(fetching.MIRROR_ENV, raising=False)
    monkeypatch.delenv(http_transport.CONNECTIONS_ENV, raising=False)


# Port 9 on loopback: nothing listens there, so a connection is refused at once.
CLOSED_LOOPBACK_PORT = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def outside_the_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test, and every process it starts, runs in the test's own folder: `python -c` and `-m` put the
    working directory first on the path, and the checkout's `mnist_variants` must not shadow the installed one."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Whatever a test (or a process it starts) fetches over HTTP, it never leaves this machine:
    loopback is reached directly, every other address through a proxy that refuses. The keras
    cache is an empty folder of the test's, unless the test fills it."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    # TFDS's own builders look up metadata in its GCS bucket when made (before TFDS 4.9.5), which retries
    # for minutes through the refusing proxy; TFDS 4.9.5+ has this switch off by default.
    monkeypatch.setattr(gcs_utils, "_is_gcs_disabled", True)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, CLOSED_LOOPBACK_PORT)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full-size",
        action="store_true",
        help="also compare with TFDS's builders on full-size generated files (minutes)",
    )


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """An HTTP server on 127.0.0.1, stopped at the end of the test."""
    server = FileServer()
    try:
        yield server
    finally:
        server.stop()


def peak_growth_mib(function) -> float:
    """MiB by which this process's peak resident memory (VmHWM, reset first) grew while `function` ran."""

    def status(field: str) -> int:
        with open("/proc/self/status") as file:
            return int(re.search(rf"{field}:\s+(\d+) kB", file.read())[1])

    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")  # resets VmHWM to the present RSS (Linux 4.0+)
    except OSError as error:
        pytest.skip(f"cannot reset the peak memory here ({error})")
    before = status("VmRSS")
    function()
    return (status("VmHWM") - before) / 1024
