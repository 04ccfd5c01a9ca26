"""Files known by their digests but not their size (QMNIST's images): a size bound, an md5 and a git blob sha1.

A dummy file is registered so (`conftest.ByDigests`, `<name>.digests.tsv`) and fetched through the
real download path from loopback servers that cut, lie about the length, send past the bound or
claim gigabytes; local copies are judged the same way; and such a file given under another
dataset's name, or another's under its name, is named. Binarized MNIST's train file stands in:
its name has no other form (no `.gz`), as QMNIST's `xnist-images-idx3-ubyte.xz`.
Every server is on 127.0.0.1, every download bounded by the 1 s timeout, every process by a deadline.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import re
import signal
from pathlib import Path

import conftest
import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import (
    BINARIZED_FILES,
    FASHION_FILES,
    ByDigests,
    assert_nothing_prepared,
    assert_prepared,
    peak_growth_mib,
    prepare,
    register_dummy_checksums,
    serve_from,
    write_files,
)
from test_preemption import finished, output, received, start, wait_for
from testing import FileServer

from mnist_variants import BinarizedMnist, FashionMnist, Kmnist, Mnist, fetching, verification
from mnist_variants.errors import ChecksumMismatchError, DownloadFailedError

pytestmark = pytest.mark.usefixtures("short_timeout")

TRAIN = "binarized_mnist_train.amat"
TRAIN_BYTES = BINARIZED_FILES[TRAIN]
BOUND = 2 * len(TRAIN_BYTES)  # the registered max_size: upstream's size is not known, only that it is no larger


def known_by_digests(data: bytes = TRAIN_BYTES, bound: int = BOUND, **wrong: str) -> dict[str, ByDigests]:
    return {TRAIN: ByDigests.of(data, bound, **wrong)}


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def blob(data: bytes) -> str:
    return verification.git_blob_sha1(data)


def said(data: bytes, expected: ByDigests | None = None) -> str:
    """The one wording of a refusal by digests: what `data` has, then what is registered."""
    expected = expected or known_by_digests()[TRAIN]
    return (
        f"md5 {md5(data)}, git blob sha1 {blob(data)}, {verification.plain_size(len(data))}; expected md5"
        f" {expected.md5}, git blob sha1 {expected.git_blob_sha1}, at most {verification.plain_size(expected.max_size)}"
    )


def fetched(builder_cls, tmp_path: Path, manual_dir: Path | None = None) -> dict[str, verification.Verdict]:
    """Every file of the builder, found or downloaded and verified as a preparation gets them, by name (no parse)."""
    dl_manager = tfds.download.DownloadManager(
        download_dir=tmp_path / "downloads",
        manual_dir=manual_dir,
        manual_dir_instructions=builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS,
    )
    fetch = fetching.Fetch(builder_cls(data_dir=tmp_path / "data").wanted(), dl_manager)
    with contextlib.closing(fetch.splits()) as splits:
        return {verdict.name: verdict for _, files in splits for verdict in files.values()}


def without_train() -> dict[str, bytes]:
    return {name: data for name, data in BINARIZED_FILES.items() if name != TRAIN}


def partials_left(tmp_path: Path) -> list[str]:
    folder = tmp_path / "downloads" / BinarizedMnist.name
    return [path.name for path in folder.iterdir() if ".partial" in path.name] if folder.exists() else []


# Downloads.


def test_a_file_known_by_its_digests_is_downloaded_resumed_and_checked_again_later(
    monkeypatch, tmp_path, file_server, capsys
):
    """The size comes from the server (one request for byte 0), within the bound; a cut is resumed from the last
    byte against that size; a later run verifies the kept file by both digests and fetches nothing."""
    (base,) = serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up",
                         by_digests=known_by_digests())  # fmt: skip
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, None, "cut")  # the probe, then half the file
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    size = len(TRAIN_BYTES)
    assert [ranged for path, ranged in file_server.range_requests if path == f"/up/{TRAIN}"] == [
        "bytes=0-0",
        f"bytes=0-{size - 1}",
        f"bytes={size // 2}-{size - 1}",
    ]
    out = capsys.readouterr().out
    assert f"Resuming {TRAIN} from byte {size // 2:,} of {size:,}" in out and f"Got {TRAIN} from {base}{TRAIN}" in out
    assert (tmp_path / "downloads" / BinarizedMnist.name / TRAIN).read_bytes() == TRAIN_BYTES
    assert not partials_left(tmp_path)

    requests = len(file_server.requests)
    later = BinarizedMnist(data_dir=tmp_path / "later")
    later.download_and_prepare(download_dir=tmp_path / "downloads")
    assert f"Using {TRAIN} downloaded earlier" in capsys.readouterr().out
    assert len(file_server.requests) == requests


def test_a_damaged_file_in_the_download_dir_is_named_by_both_digests_and_fetched_again(
    monkeypatch, tmp_path, file_server, capsys
):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    damaged = bytes([TRAIN_BYTES[0] ^ 1]) + TRAIN_BYTES[1:]
    write_files(tmp_path / "downloads" / BinarizedMnist.name, {TRAIN: damaged})
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    out = capsys.readouterr().out
    removing = f"Removing {tmp_path / 'downloads' / BinarizedMnist.name / TRAIN}: it has"
    assert f"{removing} {said(damaged)}" in out
    assert f"/up/{TRAIN}" in file_server.requests


def test_a_large_file_comes_in_parallel_parts_of_the_size_the_server_states(monkeypatch, tmp_path, file_server):
    """9 MiB: two parts of the stated size, each on its own connection, as for a file of registered size."""
    large = np.random.default_rng(3).integers(0, 256, 9 << 20, dtype=np.uint8).tobytes()
    files = {**BINARIZED_FILES, TRAIN: large}
    serve_from(
        monkeypatch, tmp_path, file_server, BinarizedMnist, files, "up", by_digests=known_by_digests(large, 16 << 20)
    )
    file_server.serve_files("up", files)
    verdicts = fetched(BinarizedMnist, tmp_path)
    assert verdicts[TRAIN].data == large and verdicts[TRAIN].verified
    half = len(large) // 2
    assert sorted(ranged for path, ranged in file_server.range_requests if path == f"/up/{TRAIN}") == sorted(
        ["bytes=0-0", f"bytes=0-{half - 1}", f"bytes={half}-{len(large) - 1}"]
    )


def test_a_killed_download_is_resumed_by_the_next_process(tmp_path):
    """A worker killed (SIGKILL) with 40% of the file on disk; the next one resumes from there, asks the size
    again and holds the partial to it, and prepares the data."""
    folder = tmp_path / "files"
    counts = {"train": 3000, "validation": 100, "test": 100}  # train: 4.7 MB
    paths = testing.write_upstream_files(BinarizedMnist, folder, counts, seed=5)
    files = {name: path.read_bytes() for name, path in paths.items()}
    server = FileServer(bytes_per_second=1e6)
    try:
        server.serve_files("up", files)
        env = conftest.worker_env(tmp_path, BinarizedMnist, files, [f"{server.url}/up/"],
                         {TRAIN: ByDigests.of(files[TRAIN], 2 * len(files[TRAIN]))})  # fmt: skip
        env["MNIST_VARIANTS_DOWNLOAD_TIMEOUT"] = "5"
        data_dir = tmp_path / "data"
        record = data_dir / "downloads" / BinarizedMnist.name / f"{TRAIN}.partial.json"
        size = len(files[TRAIN])
        victim = start(tmp_path, env, data_dir)
        try:
            wait_for(lambda: received(record) >= 0.4 * size, "the victim to receive 40% of the train file", 120)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(60)
        left = received(record)
        assert 0.4 * size <= left < size, output(victim)[-3000:]
        server.bytes_per_second = None
        successor = start(tmp_path, env, data_dir)
        assert finished(successor)["splits"] == counts
        said = output(successor)
        resumed = re.findall(rf"Resuming {TRAIN} from byte ([\d,]+) \(left by an earlier run\)", said)
        assert len(resumed) == 1 and int(resumed[0].replace(",", "")) >= left, said[-3000:]
        total = sum(len(data) for data in files.values())
        assert sum(server.sent.values()) <= 1.1 * total, (dict(server.sent), total)
    finally:
        server.stop()


@pytest.mark.parametrize("honour_range", [True, False], ids=["content_range_total", "content_length"])
def test_a_size_claimed_past_the_bound_is_refused_before_the_body(monkeypatch, tmp_path, file_server, honour_range):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, *["claim"] * 9, honour_range=honour_range)  # 64 GiB
    with pytest.raises(DownloadFailedError) as raised:
        prepare(BinarizedMnist, tmp_path)
    assert (
        f"says the file has 64.0 GiB (68,719,476,736 bytes); at most {verification.plain_size(BOUND)} is registered"
        " (refused before its body)" in str(raised.value)
    )
    assert file_server.requests.count(f"/up/{TRAIN}") == 1  # refused at once, not retried
    assert not partials_left(tmp_path)


def sources(monkeypatch, *bases: str) -> None:
    monkeypatch.setattr(BinarizedMnist, "SOURCES", tuple(bases))


@pytest.mark.parametrize("how", ["no-length", "chunked"])
def test_a_body_with_no_stated_size_comes_in_one_stream_and_is_cut_past_the_bound(
    monkeypatch, tmp_path, file_server, how
):
    """The right file, with no length: taken whole, verified by both digests. Past the bound: cut one byte past
    it and refused, and nothing is kept."""
    register_dummy_checksums(monkeypatch, tmp_path, BinarizedMnist, BINARIZED_FILES, known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/right/{TRAIN}", TRAIN_BYTES, how, how)  # the probe and the GET
    sources(monkeypatch, f"{file_server.url}/right/", f"{file_server.url}/up/")
    assert fetched(BinarizedMnist, tmp_path)[TRAIN].data == TRAIN_BYTES
    assert f"/up/{TRAIN}" not in file_server.requests
    file_server.serve(f"/flood/{TRAIN}", TRAIN_BYTES + bytes(4 << 20), how, how)
    file_server.serve_files("others", without_train())
    sources(monkeypatch, f"{file_server.url}/flood/", f"{file_server.url}/others/")
    with pytest.raises(DownloadFailedError) as raised:
        fetched(BinarizedMnist, tmp_path / "flood")
    assert f"sent more than {verification.plain_size(BOUND)}, the most {TRAIN} may have" in str(raised.value)
    assert not partials_left(tmp_path / "flood")


def test_a_whole_chunked_body_of_other_bytes_is_refused_once_not_fetched_again_as_maybe_cut(
    monkeypatch, tmp_path, file_server, capsys
):
    """A chunked body states its own end (its last chunk), so one that fails the digests was not cut: refused after
    one GET (beside the probe), not fetched 3 times over as a body with no length is; the next source delivers."""
    register_dummy_checksums(monkeypatch, tmp_path, BinarizedMnist, BINARIZED_FILES, known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/wrong/{TRAIN}", bytes(len(TRAIN_BYTES)), "chunked", "chunked", "chunked", "chunked")
    sources(monkeypatch, f"{file_server.url}/wrong/", f"{file_server.url}/up/")
    assert fetched(BinarizedMnist, tmp_path)[TRAIN].data == TRAIN_BYTES
    assert file_server.requests.count(f"/wrong/{TRAIN}") == 2, file_server.requests
    assert "maybe cut" not in capsys.readouterr().out


def test_right_bytes_under_a_wrong_stated_size_are_refused_by_both_digests_and_the_next_source_used(
    monkeypatch, tmp_path, file_server, capsys
):
    """A server calls the file 100 bytes shorter (within the bound): what it sends fails both digests, also when
    fetched once more without Range; the refusal names both digests, and the next source delivers."""
    register_dummy_checksums(monkeypatch, tmp_path, BinarizedMnist, BINARIZED_FILES, known_by_digests())
    short = TRAIN_BYTES[:-100]
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/liar/{TRAIN}", short)  # the right file's first bytes, its size stated as theirs
    sources(monkeypatch, f"{file_server.url}/liar/", f"{file_server.url}/up/")
    assert fetched(BinarizedMnist, tmp_path)[TRAIN].data == TRAIN_BYTES
    out = capsys.readouterr().out
    assert f"{file_server.url}/liar/{TRAIN} does not verify ({said(short)}); fetching it once more from zero" in out


def test_a_length_within_the_bound_ends_a_body_whose_size_the_probe_did_not_learn(monkeypatch, tmp_path, file_server):
    """The probe's answer states no total (`bytes 0-0/*`); the GET without Range then states a Content-Length within
    the bound: that is the file's size, and the body ends there."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, "unknown-total")
    assert fetched(BinarizedMnist, tmp_path)[TRAIN].data == TRAIN_BYTES
    asked = [ranged for path, ranged in file_server.range_requests if path == f"/up/{TRAIN}"]
    assert asked == ["bytes=0-0", None]  # the probe, then one GET without Range


@pytest.mark.parametrize(
    "faults",
    [(), ("no-length", "no-length"), ("no-length", "no-length-cut", "no-length")],
    ids=["size_stated", "no_length", "no_length_cut_then_whole"],
)
def test_the_progress_bar_ends_at_100_percent(monkeypatch, tmp_path, file_server, capsys, faults):
    """The bar's total counts a file known by its digests as its bound only until its size is known (stated: as
    soon as the probe answers, before the body; or where none is stated, when its body ended); bytes thrown away
    before a refetch stay counted, the total growing by them."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, *faults)  # the probe, then the GETs
    requests_at_each_change = []
    expect = fetching._Progress.expect

    def recording(progress, change: int) -> None:
        if change:
            requests_at_each_change.append(file_server.requests.count(f"/up/{TRAIN}"))
        expect(progress, change)

    monkeypatch.setattr(fetching._Progress, "expect", recording)
    fetched(BinarizedMnist, tmp_path)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "Dl 3 files: 100%" in last, last
    if not faults:  # the stated size corrects the total after the probe alone, before the body's GET
        assert requests_at_each_change[:1] == [1], requests_at_each_change


def test_a_body_cut_with_no_stated_length_is_said_so_and_fetched_again(monkeypatch, tmp_path, file_server, capsys):
    """No Content-Length: a cut looks like the end of a short file. It fails its digests, is said to be maybe cut,
    and is fetched again; a source that cuts every time is given up after 3 tries."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    file_server.serve_files("up", BINARIZED_FILES)
    half = TRAIN_BYTES[: len(TRAIN_BYTES) // 2]
    cut = f"; the body ended after {len(half):,} bytes with no length stated (maybe cut)"
    file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, "no-length", "no-length-cut", "no-length")  # probe, GET, GET
    assert fetched(BinarizedMnist, tmp_path)[TRAIN].data == TRAIN_BYTES
    url = f"{file_server.url}/up/{TRAIN}"
    assert f"{TRAIN} from {url} does not verify ({said(half)}{cut}); fetching it again (try 2 of 3)" in (
        capsys.readouterr().out
    )

    file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, "no-length", *["no-length-cut"] * 9)
    with pytest.raises(DownloadFailedError) as raised:
        fetched(BinarizedMnist, tmp_path / "again")
    assert f"checksum mismatch: {url} sent {said(half)}{cut}" in str(raised.value)
    assert file_server.requests.count(f"/up/{TRAIN}") == 3 + 1 + 3  # the probe and 3 tries, twice over
    assert not partials_left(tmp_path / "again")


@pytest.mark.parametrize("wrong", ["md5", "git_blob_sha1"])
def test_either_digest_alone_is_not_enough(monkeypatch, tmp_path, file_server, wrong):
    """No md5 collision can be made here: the registry names a wrong one of the two, and the file is refused."""
    registered = known_by_digests(**{wrong: "0" * (32 if wrong == "md5" else 40)})
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=registered)
    file_server.serve_files("up", BINARIZED_FILES)
    with pytest.raises(DownloadFailedError, match="checksum mismatch") as raised:
        fetched(BinarizedMnist, tmp_path)
    expected = registered[TRAIN]
    message = str(raised.value)
    assert f"checksum mismatch: {file_server.url}/up/{TRAIN} sent {said(TRAIN_BYTES, expected)}" in message
    assert not partials_left(tmp_path) and not (tmp_path / "downloads" / BinarizedMnist.name / TRAIN).exists()


@pytest.mark.parametrize("how", ["claimed", "sent"])
def test_memory_stays_bounded_whatever_the_server_claims_or_sends(monkeypatch, tmp_path, file_server, how):
    """A bound of 1 MiB; a server claiming 64 GiB, or sending 256 MiB with no length: the peak grows by far less."""
    bound = 1 << 20
    register_dummy_checksums(monkeypatch, tmp_path, BinarizedMnist, BINARIZED_FILES, known_by_digests(bound=bound))

    def refused() -> None:
        with pytest.raises(DownloadFailedError):
            fetched(BinarizedMnist, tmp_path)

    file_server.serve_files("up", without_train())
    if how == "claimed":
        file_server.serve(f"/up/{TRAIN}", TRAIN_BYTES, *["claim"] * 9, honour_range=False)
        sources(monkeypatch, f"{file_server.url}/up/")
        growth = peak_growth_mib(refused)
    else:
        file_server.serve(f"/flood/{TRAIN}", bytes(256 << 20), "no-length", "no-length")  # the probe and the GET
        sources(monkeypatch, f"{file_server.url}/flood/", f"{file_server.url}/up/")
        growth = peak_growth_mib(refused)
        assert file_server.sent[f"/flood/{TRAIN}"] < 64 << 20
    print(f"peak memory growth: {growth:.1f} MiB")
    assert growth < 48, growth


# Local copies.


def test_a_local_copy_is_verified_by_both_digests_and_its_bytes_handed_on(monkeypatch, tmp_path, file_server, capsys):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    manual = tmp_path / "manual"
    write_files(manual, BINARIZED_FILES)
    verdicts = fetched(BinarizedMnist, tmp_path, manual)
    (manual / TRAIN).write_bytes(bytes(len(TRAIN_BYTES)))  # swapped after its check
    assert verdicts[TRAIN].data == TRAIN_BYTES and verdicts[TRAIN].verified
    assert f"Using local copy of {TRAIN}: {manual / TRAIN} (verified: the upstream file)" in capsys.readouterr().out
    assert file_server.requests == []


@pytest.mark.parametrize("copy", ["damaged", "larger_than_the_bound"])
def test_a_wrong_local_copy_is_refused_naming_the_file_and_both_digests(monkeypatch, tmp_path, file_server, copy):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    wrong = TRAIN_BYTES[:-1] + b"1" if copy == "damaged" else TRAIN_BYTES * 3
    write_files(tmp_path / "manual", {**BINARIZED_FILES, TRAIN: wrong})
    with pytest.raises(ChecksumMismatchError) as raised:
        prepare(BinarizedMnist, tmp_path, manual_dir=tmp_path / "manual")
    message = str(raised.value)
    assert str(tmp_path / "manual" / TRAIN) in message
    assert md5(TRAIN_BYTES) in message and blob(TRAIN_BYTES) in message
    if copy == "damaged":
        assert f"is not the upstream {TRAIN}: it has {said(wrong)}.\n" in message
    else:
        assert f"it is larger than {verification.plain_size(BOUND)}" in message
    assert file_server.requests == []
    assert_nothing_prepared(tmp_path)


IMAGES = "train-images-idx3-ubyte.gz"


def fashion_images_by_digests(monkeypatch, tmp_path: Path, file_server) -> None:
    """Fashion-MNIST's train images registered by their digests (bound 1 MiB, no content digest), as QMNIST's."""
    registered = {IMAGES: ByDigests.of(FASHION_FILES[IMAGES], 1 << 20)}
    serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3", by_digests=registered)


def test_a_recompressed_gz_known_by_its_digests_is_refused_naming_both_digests(monkeypatch, tmp_path, file_server):
    """With no content digest registered, a copy that fails both digests is not used "unverified" beside verified
    labels: nothing shows its content is upstream's."""
    fashion_images_by_digests(monkeypatch, tmp_path, file_server)
    recompressed = gzip.compress(gzip.decompress(FASHION_FILES[IMAGES]), 1, mtime=0)
    assert recompressed != FASHION_FILES[IMAGES]
    write_files(tmp_path / "manual", {**FASHION_FILES, IMAGES: recompressed})
    with pytest.raises(ChecksumMismatchError) as raised:
        prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")
    message = str(raised.value)
    assert str(tmp_path / "manual" / IMAGES) in message
    assert md5(FASHION_FILES[IMAGES]) in message and blob(FASHION_FILES[IMAGES]) in message
    assert md5(recompressed) in message and blob(recompressed) in message
    assert file_server.requests == []
    assert_nothing_prepared(tmp_path)


def test_an_oversized_gz_known_by_its_digests_is_refused_unread_past_the_bound(monkeypatch, tmp_path, file_server):
    """A 256 MiB copy (sparse) where the bound is 1 MiB: refused, the peak memory growing by far less."""
    fashion_images_by_digests(monkeypatch, tmp_path, file_server)
    manual = tmp_path / "manual"
    write_files(manual, FASHION_FILES)
    with open(manual / IMAGES, "r+b") as file:
        file.truncate(256 << 20)
    assert verification.largest_copy(IMAGES, FashionMnist.registry()[IMAGES]) == 1 << 20

    def refused() -> None:
        with pytest.raises(ChecksumMismatchError, match=f"{re.escape(str(manual / IMAGES))} is not .*larger than"):
            fetched(FashionMnist, tmp_path, manual)

    growth = peak_growth_mib(refused)
    print(f"peak memory growth: {growth:.1f} MiB")
    assert growth < 48, growth
    assert file_server.requests == []


def test_a_torchvision_root_and_a_mirror_serve_a_file_known_by_its_digests(monkeypatch, tmp_path, file_server, capsys):
    """Fashion-MNIST's train images registered by their digests: found in torchvision's `FashionMNIST/raw/`, and
    downloaded from MNIST_VARIANTS_MIRROR."""
    images = "train-images-idx3-ubyte.gz"
    registered = {images: ByDigests.of(FASHION_FILES[images], 1 << 20)}
    serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3", by_digests=registered)
    raw = tmp_path / "torchvision" / "FashionMNIST" / "raw"
    write_files(raw, FASHION_FILES)
    assert_prepared(prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "torchvision"), "fashion_mnist")
    assert f"{raw / images} (verified: the upstream file)" in capsys.readouterr().out
    assert file_server.requests == []

    monkeypatch.setenv(fetching.MIRROR_ENV, f"{file_server.url}/mirror")
    file_server.serve_files(f"mirror/{FashionMnist.name}", FASHION_FILES)
    assert_prepared(prepare(FashionMnist, tmp_path / "mirrored"), "fashion_mnist")
    assert f"Got {images} from {file_server.url}/mirror/{FashionMnist.name}/{images}" in capsys.readouterr().out


# Cross-refusals: whose file it is.


@pytest.mark.parametrize("size", ["small", "larger_than_any_copy"])
def test_a_file_known_by_its_digests_under_another_datasets_name_is_named(monkeypatch, tmp_path, file_server, size):
    """Binarized MNIST's train file (registered by its digests) given as Fashion-MNIST's train labels: named as
    Binarized MNIST's; also when it is larger than any copy of the labels can be (hashed from the file, in blocks)."""
    data = TRAIN_BYTES if size == "small" else TRAIN_BYTES * 16  # 245 KiB: past the labels' 122.6 KiB
    register_dummy_checksums(monkeypatch, tmp_path / "b", BinarizedMnist, {**BINARIZED_FILES, TRAIN: data},
                             known_by_digests(data, 2 * len(data)))  # fmt: skip
    serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3")
    write_files(tmp_path / "manual", {**FASHION_FILES, "train-labels-idx1-ubyte.gz": data})
    with pytest.raises(ChecksumMismatchError, match=rf"is Binarized MNIST's {TRAIN}, not Fashion-MNIST's train-labels"):
        prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")


@pytest.mark.parametrize("size", ["small", "larger_than_the_bound"])
def test_another_datasets_file_under_a_name_known_by_its_digests_is_named(monkeypatch, tmp_path, file_server, size):
    """Fashion-MNIST's train images given as Binarized MNIST's train file (known by its digests): named as
    Fashion-MNIST's, by their sha256, also past the bound."""
    images = FASHION_FILES["train-images-idx3-ubyte.gz"]
    if size != "small":
        images += bytes(BOUND)
    register_dummy_checksums(monkeypatch, tmp_path / "f", FashionMnist,
                             {**FASHION_FILES, "train-images-idx3-ubyte.gz": images})  # fmt: skip
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=known_by_digests())
    write_files(tmp_path / "manual", {**BINARIZED_FILES, TRAIN: images})
    named = rf"is Fashion-MNIST's train-images-idx3-ubyte\.gz, not Binarized MNIST's {TRAIN}"
    with pytest.raises(ChecksumMismatchError, match=named):
        prepare(BinarizedMnist, tmp_path, manual_dir=tmp_path / "manual")


def qmnist_test_labels_idx1() -> bytes:
    """qmnist-test-labels-idx1-ubyte.gz's content (60,008 bytes): column 0 of QMNIST's extended test labels, read
    from the shared data folder (never copied into the repository)."""
    here = Path(__file__).resolve().parents[1]
    for folder in (Path("/work/shared/data/qmnist"), here.parent / "shared" / "data" / "qmnist"):
        if (folder / "qmnist-test-labels-idx2-int.gz").is_file():
            raw = gzip.decompress((folder / "qmnist-test-labels-idx2-int.gz").read_bytes())
            rows = np.frombuffer(raw[12:], ">i4").reshape(-1, 8)
            return testing.encode_idx(rows[:, 0].astype(np.uint8))
    pytest.skip("QMNIST's qmnist-test-labels-idx2-int.gz is not in /work/shared/data/qmnist nor ../shared/data/qmnist")


def judged(builder_cls, path: Path, name: str) -> verification.Verdict:
    known = verification.Known.of({cls.TITLE: cls.registry() for cls in (Mnist, FashionMnist, Kmnist)})
    return verification.judge(path, name, builder_cls.registry()[name], builder_cls.TITLE, "URL", known=known)


@pytest.mark.parametrize("builder_cls", [Mnist, FashionMnist, Kmnist])
@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_qmnists_test_labels_idx1_under_a_label_name_is_named(tmp_path, builder_cls, name):
    """QMNIST's repository also publishes qmnist-test-labels-idx1-ubyte.gz (60,000 labels in MNIST's format).
    Dropped in under MNIST's, Fashion-MNIST's or Kuzushiji-MNIST's label names it is named, recognised by its
    content's sha256: also where that name has no content digest registered (Kuzushiji-MNIST's)."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(qmnist_test_labels_idx1()))
    named = rf"{re.escape(str(path))} is QMNIST's qmnist-test-labels-idx1-ubyte\.gz \(decompressed\), not"
    with pytest.raises(ChecksumMismatchError, match=named):
        judged(builder_cls, path, name)


def test_other_60000_labels_under_mnists_test_labels_name_are_not_called_qmnists(tmp_path):
    """A label count is no fingerprint: 60,000 random labels under MNIST's t10k name get the generic refusal."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(testing.encode_idx(np.random.default_rng(0).integers(0, 10, 60_000, np.uint8))))
    with pytest.raises(ChecksumMismatchError) as raised:
        judged(Mnist, path, path.name)
    assert "QMNIST" not in str(raised.value) and "is not MNIST's t10k-labels-idx1-ubyte.gz" in str(raised.value)


def test_the_digests_file_is_read_strictly(tmp_path):
    path = tmp_path / "x.digests.tsv"
    good = f"http://h/f\t100\t{'a' * 32}\t{'b' * 40}\tf\n"
    path.write_text(good + f"http://mirror/f\t100\t{'a' * 32}\t{'b' * 40}\tf\n")
    assert verification.load_digests(path) == {"f": verification.Digests(100, "a" * 32, "b" * 40)}
    for line, problem in [
        (f"http://h/f\t100\t{'a' * 32}\t{'b' * 40}\n", "not url, max_size"),
        (f"http://h/f\t-1\t{'a' * 32}\t{'b' * 40}\tf\n", "not url, max_size"),
        (f"http://h/f\t100\t{'a' * 31}\t{'b' * 40}\tf\n", "not url, max_size"),
        (f"http://h/f\t100\t{'a' * 32}\t{'c' * 40}\tf\n", "listed with other digests above"),
    ]:
        path.write_text(good + line)
        with pytest.raises(ValueError, match=problem):
            verification.load_digests(path)


def test_a_file_registered_both_ways_is_refused(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text(f"http://h/f\t10\t{'a' * 64}\tf\n")
    (tmp_path / "x.digests.tsv").write_text(f"http://h/f\t100\t{'a' * 32}\t{'b' * 40}\tf\n")
    url_infos = tfds.core.download.checksums.load_url_infos(tsv)
    with pytest.raises(ValueError, match="registered by its size and sha256 already"):
        verification.load_registry(url_infos, tsv)


def test_one_byte_past_the_bound_is_refused_even_with_both_digests_right(monkeypatch, tmp_path, file_server, capsys):
    """The bound is part of what is registered: a file larger, whose md5 and git blob sha1 are those registered,
    is refused from a server, from the manual dir and from the download dir alike."""
    registered = known_by_digests(bound=len(TRAIN_BYTES) - 1)
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "up", by_digests=registered)
    file_server.serve_files("up", BINARIZED_FILES)
    with pytest.raises(DownloadFailedError, match="refused before its body"):
        fetched(BinarizedMnist, tmp_path)
    write_files(tmp_path / "manual", BINARIZED_FILES)
    with pytest.raises(ChecksumMismatchError, match=f"is not Binarized MNIST's {TRAIN}: it is larger than"):
        fetched(BinarizedMnist, tmp_path, tmp_path / "manual")
    write_files(tmp_path / "downloads" / BinarizedMnist.name, {TRAIN: TRAIN_BYTES})
    with pytest.raises(DownloadFailedError):
        fetched(BinarizedMnist, tmp_path)
    assert f"Removing {tmp_path / 'downloads' / BinarizedMnist.name / TRAIN}: it has md5" in capsys.readouterr().out


def test_qmnist_as_registered_upstream_downloads_verifies_and_prepares(monkeypatch, tmp_path, file_server):
    """QMNIST registered as upstream is (checksums/): its three image files by md5 + git blob sha1 within a size
    bound, its label files by size and sha256. Its dummy files, so registered and served on 127.0.0.1, download
    and prepare every split; a server that sends other bytes for one image file is refused naming both digests."""
    from mnist_variants import Qmnist

    real = Qmnist.registry()
    by_digests_names = {name for name, known in real.items() if known.digests is not None}
    assert by_digests_names == {
        "qmnist-train-images-idx3-ubyte.gz",
        "qmnist-test-images-idx3-ubyte.gz",
        "xnist-images-idx3-ubyte.xz",
    }
    assert real["qmnist-train-images-idx3-ubyte.gz"].digests.md5 == "ed72d4157d28c017586c42bc6afe6370"
    assert real["xnist-images-idx3-ubyte.xz"].digests.git_blob_sha1 == "da014118ee256cd9edd2d0f272cc925c6ea3e539"
    files = conftest.dummy_files("qmnist")
    # Bounded as the real registry bounds them: the uncompressed IDX size of the dummy's images.
    by_digests = {name: ByDigests.of(files[name], 16 + 784 * 64) for name in by_digests_names}
    file_server.serve_files("upstream", files)
    serve_from(monkeypatch, tmp_path, file_server, Qmnist, files, "upstream", by_digests=by_digests)
    conftest.register_dummy_checksums(monkeypatch, tmp_path / "mnist", Mnist, conftest.dummy_files("mnist"))
    builder = prepare(Qmnist, tmp_path)
    assert_prepared(builder, "qmnist")
    assert {f"/upstream/{name}" for name in files} <= set(file_server.sent)

    other = dict(files, **{"qmnist-test-images-idx3-ubyte.gz": gzip.compress(b"\0" * 4096)})
    file_server.serve_files("lying", other)
    serve_from(monkeypatch, tmp_path / "again", file_server, Qmnist, files, "lying", by_digests=by_digests)
    with pytest.raises(DownloadFailedError, match=r"(?s)qmnist-test-images.*md5 .*git blob sha1"):
        prepare(Qmnist, tmp_path / "again")
