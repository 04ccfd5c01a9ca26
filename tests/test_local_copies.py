"""Hostile and broken local copies: what is verified is what is parsed, a gzip bomb costs little,
an unreadable copy is passed over, and the keras cache is where keras itself keeps it.

Real files and real servers on 127.0.0.1; whatever could hang runs under a time limit.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import (
    BINARIZED_FILES,
    FASHION_FILES,
    REPO,
    assert_nothing_prepared,
    assert_prepared,
    prepare,
    serve_from,
    write_files,
    write_registry,
)
from etils import epath

from mnist_variants import (
    BinarizedMnist,
    ChecksumMismatchError,
    DownloadFailedError,
    FashionMnist,
    local_copies,
    locations,
    verification,
)

pytestmark = pytest.mark.usefixtures("short_timeout")

TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS_IN_FILE = np.frombuffer(gzip.decompress(FASHION_FILES[TRAIN_LABELS])[8:], np.uint8)
GENUINE_TRAIN_LABELS = np.sort(TRAIN_LABELS_IN_FILE)
ALL_NINES = testing.gzip_bytes(testing.encode_idx(np.full_like(TRAIN_LABELS_IN_FILE, 9)))


def keras_cache(tmp_path: Path) -> Path:
    """The test's keras cache folder for Fashion-MNIST (conftest points KERAS_HOME at tmp_path/keras_home)."""
    return tmp_path / "keras_home" / FashionMnist.KERAS_CACHE_FOLDER


def train_labels(builder: tfds.core.DatasetBuilder) -> np.ndarray:
    """The prepared train labels, sorted (TFDS's writer orders examples by a hash of their keys)."""
    return np.sort([int(e["label"]) for e in tfds.as_numpy(builder.as_dataset("train", shuffle_files=False))])


def local_copies_of(tmp_path: Path, manual_root: Path | None = None) -> local_copies.LocalCopies:
    """Fashion-MNIST's local copies with the dummy files registered, looked for as the builder does."""
    tsv = write_registry(tmp_path / "registry", FashionMnist, FASHION_FILES, FashionMnist.SOURCES[0])
    url_infos = tfds.core.download.checksums.load_url_infos(epath.Path(tsv))
    registry = verification.load_registry(url_infos, epath.Path(tsv))
    root = epath.Path(manual_root) if manual_root else None
    manual = locations.ManualDir(root, (root,) if root else ())
    return local_copies.LocalCopies("Fashion-MNIST", registry, manual, locations.keras_cache("datasets/fashion-mnist"))


def bounded(function, seconds: float = 60):
    """Runs `function` in a thread and returns its result; fails the test if it takes longer than `seconds`."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# What is verified is what is parsed.


def test_the_verdict_carries_the_verified_bytes_not_the_file(tmp_path):
    cache = keras_cache(tmp_path)
    write_files(cache, {TRAIN_LABELS: FASHION_FILES[TRAIN_LABELS]})
    verdict = local_copies_of(tmp_path).find(TRAIN_LABELS, "http://example.invalid/")
    assert verdict is not None and verdict.verified and verdict.path == epath.Path(cache / TRAIN_LABELS)
    (cache / TRAIN_LABELS).write_bytes(ALL_NINES)  # swapped after its check
    assert verdict.data == FASHION_FILES[TRAIN_LABELS]


def test_a_cache_copy_swapped_while_another_file_downloads_does_not_reach_the_data(monkeypatch, tmp_path, capsys):
    """Needs fetching.py to hand the builder `verdict.data` (not the path)."""
    server = testing.FileServer()
    try:
        serve_from(monkeypatch, tmp_path, server, FashionMnist, FASHION_FILES, "s3")
        # Half the train images, then silence: resumed after the 1 s timeout, which is when the swap happens.
        server.serve(f"/s3/{TRAIN_IMAGES}", FASHION_FILES[TRAIN_IMAGES], "stall")
        cache = keras_cache(tmp_path)
        write_files(cache, {name: data for name, data in FASHION_FILES.items() if name != TRAIN_IMAGES})
        swapped_mid_download = threading.Event()

        def swap_when_the_download_stalls() -> None:
            deadline = time.monotonic() + 60
            while not server.sent[f"/s3/{TRAIN_IMAGES}"] and time.monotonic() < deadline:
                time.sleep(0.01)
            (cache / TRAIN_LABELS).write_bytes(ALL_NINES)  # another user's labels, after ours verified
            if len(server.requests) == 1:  # the stalled first attempt: the images are not here yet
                swapped_mid_download.set()

        swapper = threading.Thread(target=swap_when_the_download_stalls, daemon=True)
        swapper.start()
        builder = prepare(FashionMnist, tmp_path)
        swapper.join(60)
    finally:
        server.stop()
    assert swapped_mid_download.is_set()
    assert f"Using {TRAIN_LABELS} from the keras cache" in capsys.readouterr().out
    assert server.requests and set(server.requests) == {f"/s3/{TRAIN_IMAGES}"}
    np.testing.assert_array_equal(train_labels(builder), GENUINE_TRAIN_LABELS)


# A gzip bomb costs little.

BOMB_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from etils import epath
    from mnist_variants import FashionMnist, formats, verification
    from mnist_variants.errors import MnistVariantsError

    def peak_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the high-water mark of resident memory starts again from now

    registry = verification.load_registry(FashionMnist.url_infos, FashionMnist._checksums_path)
    folder = epath.Path(sys.argv[1])
    labels = registry["train-labels-idx1-ubyte.gz"]

    def judge(path):
        return verification.judge(path, "train-labels-idx1-ubyte.gz", labels, "Fashion-MNIST", "URL")

    steps = {
        "judge labels_1gib": lambda: judge(folder / "labels_1gib"),
        "judge labels_100mib": lambda: judge(folder / "labels_100mib"),
        "judge sparse_1gib": lambda: judge(folder / "sparse_1gib"),
        "gunzip labels_1gib": lambda: formats.gunzip((folder / "labels_1gib").read_bytes(), "bomb", limit=60_008),
        "read_idx_labels labels_1gib": lambda: formats.read_idx_labels((folder / "labels_1gib").read_bytes()),
        "read_idx_images images_1gib": lambda: formats.read_idx_images((folder / "images_1gib").read_bytes()),
    }
    report = {}
    for step, run in steps.items():
        reset_peak()
        before, started = peak_kib(), time.monotonic()
        try:
            run()
            error = None
        except MnistVariantsError as raised:
            error = f"{type(raised).__name__}: {raised}"
        report[step] = {"seconds": time.monotonic() - started, "peak_mib": (peak_kib() - before) / 1024, "error": error}
    print(json.dumps(report))
    """
)


def write_gzip_bomb(path: Path, header: bytes, content_size: int) -> None:
    """A gzip file of `header` then zeros, `content_size` bytes in all (a whole number of MiB), made in a second.

    Each MiB of zeros is deflated once and its block repeated: a full flush makes every block independent.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    first = compressor.compress(header + zeros[len(header) :]) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(zeros, zlib.crc32(header + zeros[len(header) :]))
    for _ in range(content_size // len(zeros) - 2):
        crc = zlib.crc32(zeros, crc)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first)
        for _ in range(content_size // len(zeros) - 1):
            out.write(block)
        out.write(compressor.flush(zlib.Z_FINISH) + struct.pack("<II", crc, content_size & 0xFFFFFFFF))


def test_a_gzip_bomb_is_refused_with_bounded_memory(tmp_path):
    """A gzip bomb costs little: a file larger than any copy is not read whole (nor a huge plain one), the content
    check inflates no further than upstream's size, the parsers no further than the header's count."""
    bombs = {
        "labels_1gib": (testing.encode_idx(np.zeros(60_000, np.uint8))[:8], 1 << 30),  # about 1 MB
        "labels_100mib": (testing.encode_idx(np.zeros(60_000, np.uint8))[:8], 100 << 20),  # about 100 KB
        "images_1gib": (testing.encode_idx(np.zeros((1000, 28, 28), np.uint8))[:16], 1 << 30),
    }
    for name, (header, size) in bombs.items():
        write_gzip_bomb(tmp_path / name, header, size)
    with (tmp_path / "sparse_1gib").open("wb") as sparse:  # 1 GiB of zeros that takes no room on disk
        sparse.truncate(1 << 30)
    assert 900_000 < (tmp_path / "labels_1gib").stat().st_size < 1_200_000
    assert (tmp_path / "labels_100mib").stat().st_size < 120_000  # within what a recompressed copy may weigh
    result = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    print(json.dumps(report, indent=1))
    large, small = report["judge labels_1gib"], report["judge labels_100mib"]
    refused = f"ChecksumMismatchError: {tmp_path / 'labels_1gib'} is not Fashion-MNIST's train-labels-idx1-ubyte.gz"
    assert large["error"].startswith(refused) and "it is larger than 122.6 KiB (125,564 bytes)" in large["error"]
    assert "it is larger than 122.6 KiB" in report["judge sparse_1gib"]["error"]
    assert "it decompresses to more than upstream's 58.6 KiB (60,008 bytes)" in small["error"]
    assert "decompresses to more than 60,008 bytes" in report["gunzip labels_1gib"]["error"]
    assert "trailing garbage" in report["read_idx_labels labels_1gib"]["error"]
    assert "trailing garbage" in report["read_idx_images images_1gib"]["error"]
    for step in report.values():
        assert step["seconds"] < 10 and step["peak_mib"] < 64, report  # in MiB above the peak before the step


# An unreadable copy is passed over.


def eio_file(path: Path) -> None:
    """A file whose reading fails with an I/O error, without FUSE: /proc/self/mem at offset 0 (never mapped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/proc/self/mem")


@pytest.fixture
def fashion(monkeypatch, tmp_path, file_server) -> str:
    (base,) = serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3")
    return base


def test_unreadable_copies_are_passed_over_and_the_files_downloaded(fashion, tmp_path, file_server, capsys):
    manual, cache = tmp_path / "manual", keras_cache(tmp_path)
    write_files(manual, {name: data for name, data in FASHION_FILES.items() if name != TRAIN_LABELS})
    (manual / TRAIN_LABELS).mkdir()  # a directory under the file's name
    eio_file(cache / TRAIN_LABELS)
    file_server.serve(f"/s3/{TRAIN_LABELS}", FASHION_FILES[TRAIN_LABELS])
    builder = prepare(FashionMnist, tmp_path, manual_dir=manual)
    assert_prepared(builder, "fashion_mnist")
    out = capsys.readouterr().out
    assert f"Not using {manual / TRAIN_LABELS}: a folder, not a file\n" in out, out
    assert f"Not using {cache / TRAIN_LABELS} from the keras cache: cannot be read (Input/output error)\n" in out
    assert file_server.requests == [f"/s3/{TRAIN_LABELS}"]
    np.testing.assert_array_equal(train_labels(builder), GENUINE_TRAIN_LABELS)


def test_when_nothing_is_left_the_failure_lists_every_reason(fashion, tmp_path, file_server):
    manual, cache = tmp_path / "manual", keras_cache(tmp_path)
    write_files(manual, {name: data for name, data in FASHION_FILES.items() if name != TRAIN_LABELS})
    (manual / TRAIN_LABELS).mkdir()
    eio_file(cache / TRAIN_LABELS)
    with pytest.raises(DownloadFailedError) as raised:  # the server has no file: 404
        prepare(FashionMnist, tmp_path, manual_dir=manual)
    message = str(raised.value)
    assert f"{fashion}{TRAIN_LABELS}" in message and "404" in message
    assert f"Not using {manual / TRAIN_LABELS}: a folder, not a file" in message
    assert f"Not using {cache / TRAIN_LABELS} from the keras cache: cannot be read (Input/output error)" in message
    assert f"Manual dir {manual}: found" in message and f"missing {TRAIN_LABELS}" in message
    assert_nothing_prepared(tmp_path)


def test_a_pipe_under_a_files_name_is_passed_over_at_once(tmp_path, capsys):
    """A FIFO would make a plain read wait for a writer forever."""
    cache = keras_cache(tmp_path)
    cache.mkdir(parents=True)
    os.mkfifo(cache / TRAIN_LABELS)
    copies = local_copies_of(tmp_path)
    assert bounded(lambda: copies.find(TRAIN_LABELS, "URL"), seconds=30) is None
    assert copies.passed_over == [f"Not using {cache / TRAIN_LABELS} from the keras cache: a FIFO, not a file"]
    assert copies.passed_over[0] in capsys.readouterr().out


def test_a_readable_wrong_copy_in_the_manual_dir_is_still_refused_loudly(tmp_path):
    manual = tmp_path / "manual"
    write_files(manual, {TRAIN_LABELS: ALL_NINES})
    with pytest.raises(ChecksumMismatchError, match=r"is not Fashion-MNIST's train-labels-idx1-ubyte\.gz"):
        local_copies_of(tmp_path, manual).find(TRAIN_LABELS, "URL")


def test_a_copy_larger_than_any_form_of_the_file_is_not_read_whole(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with (manual / "t10k-labels-idx1-ubyte").open("wb") as big:  # 1 GiB, sparse: nothing on disk
        big.truncate(1 << 30)
    with pytest.raises(ChecksumMismatchError, match=r"is larger than 64\.0 KiB"):
        bounded(lambda: local_copies_of(tmp_path, manual).find("t10k-labels-idx1-ubyte.gz", "URL"), seconds=30)


# The keras cache is where keras keeps it.


@pytest.fixture
def home(monkeypatch, tmp_path) -> Path:
    """A home folder of the test's own, with no KERAS_HOME."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    return folder


def deny_writing(monkeypatch, *folders: Path) -> None:
    """`folders` look read-only to os.access, as for a user who may not write there (the tests run as root)."""
    denied = {os.path.abspath(folder) for folder in folders}
    real_access = os.access

    def access(path, mode, **kwargs) -> bool:
        if mode & os.W_OK and os.path.abspath(path) in denied:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(locations.os, "access", access)


def test_keras_cache_is_keras_home_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert locations.keras_cache("datasets/x") == [epath.Path(tmp_path / "kh" / "datasets" / "x")]


def test_keras_cache_is_dot_keras_in_home_and_nothing_else(home):
    (home / ".keras").mkdir()
    assert locations.keras_cache("datasets/x") == [epath.Path(home / ".keras" / "datasets" / "x")]


def test_keras_cache_is_dot_keras_in_home_before_keras_made_it(home):
    assert locations.keras_cache("datasets/x") == [epath.Path(home / ".keras" / "datasets" / "x")]


@pytest.mark.parametrize("where", ["home_dot_keras", "home_itself", "keras_home"])
def test_keras_cache_falls_back_to_tmp_only_where_keras_cannot_write(monkeypatch, home, where):
    if where == "home_dot_keras":
        (home / ".keras").mkdir()
        deny_writing(monkeypatch, home / ".keras")
    elif where == "home_itself":
        deny_writing(monkeypatch, home)
    else:
        (home / "kh").mkdir()
        monkeypatch.setenv("KERAS_HOME", str(home / "kh"))
        deny_writing(monkeypatch, home / "kh")
    assert locations.keras_cache("datasets/x") == [epath.Path("/tmp/.keras/datasets/x")]


def test_files_in_the_default_keras_cache_are_used_offline(fashion, home, tmp_path, file_server, capsys):
    cache = home / ".keras" / FashionMnist.KERAS_CACHE_FOLDER
    write_files(cache, FASHION_FILES)
    assert_prepared(prepare(FashionMnist, tmp_path), "fashion_mnist")
    assert f"from the keras cache {cache} (verified: the upstream file)" in capsys.readouterr().out
    assert file_server.requests == []


KERAS_AGREES = textwrap.dedent(
    """
    import keras  # makes its home folder, as on any machine where keras has run
    from mnist_variants import locations

    (ours,) = locations.keras_cache("datasets/fashion-mnist")
    ours.mkdir(parents=True, exist_ok=True)
    (ours / "probe.gz").write_bytes(b"probe")
    # keras finds the file where it keeps it, or tries to download it from a closed port and fails.
    print(keras.utils.get_file("probe.gz", origin="http://127.0.0.1:9/probe.gz", cache_subdir="datasets/fashion-mnist"))
    print(ours / "probe.gz")
    """
)


@pytest.mark.parametrize("setting", ["home", "keras_home"])
def test_keras_itself_keeps_its_datasets_where_we_look(tmp_path, setting):
    """The rule checked against keras's own get_file (in a child process: keras reads its home on import)."""
    pytest.importorskip("keras")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_HOME", None)
    if setting == "keras_home":
        env["KERAS_HOME"] = str(tmp_path / "kh")
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", KERAS_AGREES], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    theirs, ours = result.stdout.splitlines()[-2:]
    assert theirs == ours
    assert ours.startswith(str(tmp_path / ("kh" if setting == "keras_home" else "home/.keras")))


# The manual dir's problems in our words.


@pytest.mark.parametrize("state", ["missing", "empty", "a_file"])
def test_an_unusable_manual_dir_is_described_in_our_words(monkeypatch, tmp_path, file_server, state):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")  # none served
    manual = tmp_path / "manual"
    if state == "empty":
        manual.mkdir()
    elif state == "a_file":
        manual.write_text("not a folder")
    with pytest.raises(DownloadFailedError) as raised:  # the server has no file: 404
        prepare(BinarizedMnist, tmp_path, manual_dir=manual)
    message = str(raised.value)
    problem = {"missing": "does not exist", "empty": "is empty", "a_file": "is not a folder"}[state]
    assert f"No manual dir: {manual} {problem}." in message
    assert "instructions" not in message and "Create it" not in message


def test_no_manual_dir_given_names_tfds_default(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")  # none served
    with pytest.raises(DownloadFailedError) as raised:
        prepare(BinarizedMnist, tmp_path)
    message = str(raised.value)
    assert (
        f"No manual dir: {tmp_path / 'downloads' / 'manual'} does not exist (TFDS's default; none was given)."
        in message
    )
    assert "instructions" not in message
