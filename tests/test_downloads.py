"""Downloads on bad networks, through the real download path, against loopback servers that misbehave.

Parallel downloads, a cut or a stall resumed with Range from the last byte, a server that
ignores Range (read again from zero), one whose Range answer lies (fetched once more from zero,
then the next source), an HTML page with status 200, sizes that disagree with the registry,
the stated time limits measured in elapsed time, and large files over several connections.
Every test is bounded by the 1 s download timeout set here, and stops its server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import tensorflow_datasets as tfds
import testing
from conftest import (
    BINARIZED_FILES,
    FASHION_FILES,
    assert_nothing_prepared,
    assert_prepared,
    prepare,
    serve_from,
)
from testing import FileServer

from mnist_variants import BinarizedMnist, DownloadFailedError, FashionMnist, http_transport

pytestmark = pytest.mark.usefixtures("short_timeout")


def total(files: dict[str, bytes]) -> int:
    return sum(len(data) for data in files.values())


def test_all_files_download_at_the_same_time(monkeypatch, tmp_path):
    server = FileServer(bytes_per_second=20_000)  # each dummy file takes 0.3 s or more
    try:
        serve_from(monkeypatch, tmp_path, server, BinarizedMnist, BINARIZED_FILES, "upstream")
        server.serve_files("upstream", BINARIZED_FILES)
        assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
        assert server.most_active == len(BINARIZED_FILES)
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_a_cut_or_a_stall_is_resumed_from_the_last_byte(monkeypatch, tmp_path, file_server, capsys, fault):
    (base,) = serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3")
    file_server.serve_files("s3", FASHION_FILES, fault)  # each file once, half-way
    assert_prepared(prepare(FashionMnist, tmp_path), "fashion_mnist")
    assert sum(file_server.sent.values()) <= 1.3 * total(FASHION_FILES)
    for name, data in FASHION_FILES.items():
        half = len(data) // 2
        assert file_server.range_requests.count((f"/s3/{name}", f"bytes={half}-{len(data) - 1}")) == 1
    out = capsys.readouterr().out
    assert (
        f"Resuming train-images-idx3-ubyte.gz from byte {len(FASHION_FILES['train-images-idx3-ubyte.gz']) // 2:,}"
        in out
    )
    assert f"Got train-images-idx3-ubyte.gz from {base}" in out


def test_a_server_that_ignores_range_is_read_again_from_zero(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    for name, data in BINARIZED_FILES.items():
        file_server.serve(f"/upstream/{name}", data, "cut", honour_range=False)
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    assert sum(file_server.sent.values()) == total(BINARIZED_FILES) + sum(len(d) // 2 for d in BINARIZED_FILES.values())


def test_a_lying_range_answer_is_fetched_once_more_from_zero(monkeypatch, tmp_path, file_server, capsys):
    """Resumed bytes that do not continue the file fail the sha256; the file then comes whole from the same source."""
    (liar,) = serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "liar")
    file_server.serve_files("liar", BINARIZED_FILES, "cut", "lie")
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    out = capsys.readouterr().out
    for name, data in BINARIZED_FILES.items():
        assert f"{name} from {liar}{name} does not verify" in out and "fetching it once more from zero" in out
        assert file_server.sent[f"/liar/{name}"] == len(data) // 2 + (len(data) - len(data) // 2) + len(data)


def test_a_liar_twice_ends_in_a_checksum_error_and_the_next_source(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "liar", "mirror")
    file_server.serve_files("liar", BINARIZED_FILES, "cut", "lie", "garble")  # the plain GET of the refetch lies too
    file_server.serve_files("mirror", BINARIZED_FILES)
    builder = prepare(BinarizedMnist, tmp_path)
    assert_prepared(builder, "binarized_mnist")
    assert all(file_server.sent[f"/mirror/{name}"] == len(data) for name, data in BINARIZED_FILES.items())
    downloads = tmp_path / "downloads" / BinarizedMnist.name
    assert not [path for path in downloads.iterdir() if ".partial" in path.name]  # the refused bytes are gone


def test_only_a_liar_fails_with_the_checksum_and_leaves_nothing(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "liar")
    file_server.serve_files("liar", BINARIZED_FILES, "cut", "lie", "garble")  # the plain GET of the refetch lies too
    with pytest.raises(DownloadFailedError, match="checksum mismatch") as raised:
        prepare(BinarizedMnist, tmp_path)
    failed = [name for name in BINARIZED_FILES if f"Could not download {name}" in str(raised.value)]
    downloads = tmp_path / "downloads" / BinarizedMnist.name
    left = {path.name for path in downloads.iterdir() if not path.name.endswith(".lock")}
    assert failed and not any(name.startswith(tuple(failed)) for name in left)  # refused bytes are gone
    assert all(name.endswith((".partial", ".partial.json")) for name in left)  # cancelled ones wait to be resumed
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def test_an_html_page_with_status_200_is_called_an_html_page(monkeypatch, tmp_path, file_server, capsys):
    _, mirror = serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3", "keras")
    file_server.serve_files("s3", FASHION_FILES, "html")
    file_server.serve_files("keras", FASHION_FILES)
    assert_prepared(prepare(FashionMnist, tmp_path), "fashion_mnist")
    assert f"Got train-images-idx3-ubyte.gz from {mirror}" in capsys.readouterr().out


def test_only_html_pages_fail_naming_them(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3")
    file_server.serve_files("s3", FASHION_FILES, "html")
    with pytest.raises(DownloadFailedError, match=r"answered with an HTML page \(status 200\), not the file"):
        prepare(FashionMnist, tmp_path)
    assert_nothing_prepared(tmp_path)


def seconds_until_the_mirror(server: FileServer, name: str) -> float:
    """From the first request to the first source until the first request to the mirror, for `name`."""
    times = {path: t for path, t in zip(reversed(server.requests), reversed(server.request_times), strict=True)}
    return times[f"/mirror/{name}"] - times[f"/first/{name}"]


@pytest.mark.parametrize(
    ("fault", "bound"),
    [
        ("silent", "silent_source_seconds"),
        ("headers", "silent_source_seconds"),
        ("trickle", "trickling_source_seconds"),
    ],
)
def test_a_silent_or_trickling_source_is_given_up_within_the_stated_time(
    monkeypatch, tmp_path, file_server, capsys, fault, bound
):
    """README: a silent source costs at most 3 x timeout + 1.5 s (timeout 1 s here), a trickling one 6 x + 1.5 s."""
    _, mirror = serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "first", "mirror")
    file_server.serve_files("first", BINARIZED_FILES, *[fault] * 9)
    file_server.serve_files("mirror", BINARIZED_FILES)
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    policy = http_transport.Policy(timeout=1)
    limit = getattr(policy, bound)()
    assert limit == (4.5 if bound == "silent_source_seconds" else 7.5)
    for name in BINARIZED_FILES:
        assert file_server.requests.count(f"/first/{name}") == policy.fruitless_attempts == 3
        assert 3 * policy.timeout <= seconds_until_the_mirror(file_server, name) <= limit + 0.5
    out = capsys.readouterr().out
    assert f"from {mirror}" in out
    assert ("Resuming" in out) == (fault == "trickle")  # said only where bytes of the file were received


def test_parts_that_never_answer_cost_no_more_than_a_silent_source(monkeypatch, tmp_path, link, capsys):
    """The first part comes; every later part's request is silent: given up within 3 x timeout + 1.5 s of them."""
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, link, BinarizedMnist, files, "first", "mirror")
    link.serve_files("first", files)
    link.serve_files("mirror", files)
    train, data = "binarized_mnist_train.amat", files["binarized_mnist_train.amat"]
    link.serve(f"/first/{train}", data, None, *["silent"] * 9)
    assert prepare(BinarizedMnist, tmp_path).info.splits["train"].num_examples == 6000
    part_requests = [t for path, t in zip(link.requests, link.request_times, strict=True) if path == f"/first/{train}"]
    assert len(part_requests) == 1 + 3  # the first part, then the second part's three silent attempts
    assert seconds_until_the_mirror(link, train) <= http_transport.Policy(timeout=1).silent_source_seconds() + 1.0
    out = capsys.readouterr().out
    assert f"Resuming {train}" not in out  # the second part never received a byte
    # The first part's bytes are the file's, whichever source sent them: the mirror goes on from them.
    assert f"Going on with {train} from byte {link.sent[f'/first/{train}']:,}, received from {link.url}/first/" in out
    assert link.sent[f"/mirror/{train}"] == len(data) - link.sent[f"/first/{train}"]


def test_a_transfer_is_given_up_after_eight_resumes(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    train = "binarized_mnist_train.amat"
    file_server.serve(f"/upstream/{train}", BINARIZED_FILES[train], *["cut"] * 20)
    with pytest.raises(DownloadFailedError, match=r"binarized_mnist_train.amat: interrupted 9 times"):
        prepare(BinarizedMnist, tmp_path)
    assert file_server.requests.count(f"/upstream/{train}") == 1 + http_transport.Policy().max_resumes


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "whole"])
def test_a_source_that_claims_another_size_is_given_up_at_once(monkeypatch, tmp_path, file_server, honour_range):
    """A Content-Length or Content-Range total that is not the registered size ends the source, named."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "liar")
    for name, data in BINARIZED_FILES.items():
        file_server.serve(f"/liar/{name}", data, *["claim"] * 9, honour_range=honour_range)
    with pytest.raises(DownloadFailedError, match=r"64\.0 GiB") as raised:
        prepare(BinarizedMnist, tmp_path)
    assert "registered" in str(raised.value)
    assert all(file_server.requests.count(f"/liar/{name}") <= 1 for name in BINARIZED_FILES)
    assert_nothing_prepared(tmp_path)


@pytest.fixture
def link() -> Iterator[FileServer]:
    """A server sending 20 MB/s per connection, as a real link: little is in flight when a connection closes."""
    server = FileServer(bytes_per_second=20e6)
    try:
        yield server
    finally:
        server.stop()


def large_binarized_files(tmp_path) -> dict[str, bytes]:
    """Binarized MNIST files large enough for several connections (train: 9.4 MB, 2 parts)."""
    counts = {"train": 6000, "validation": 300, "test": 300}
    paths = testing.write_upstream_files(BinarizedMnist, tmp_path / "large", counts, seed=5)
    return {name: path.read_bytes() for name, path in paths.items()}


def test_a_large_file_comes_over_several_connections_in_order(monkeypatch, tmp_path, link):
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, link, BinarizedMnist, files, "upstream")
    link.serve_files("upstream", files)
    builder = prepare(BinarizedMnist, tmp_path)
    assert builder.info.splits["train"].num_examples == 6000
    train = "/upstream/binarized_mnist_train.amat"
    size = len(files["binarized_mnist_train.amat"])
    asked = sorted(header for path, header in link.range_requests if path == train)
    assert asked == [f"bytes=0-{size // 2 - 1}", f"bytes={size // 2}-{size - 1}"]  # closed ranges, one part each
    assert link.sent[train] == size  # no connection sends more than its part


def test_a_part_cut_mid_way_is_resumed(monkeypatch, tmp_path, link, capsys):
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, link, BinarizedMnist, files, "upstream")
    link.serve_files("upstream", files)
    train, data = "/upstream/binarized_mnist_train.amat", files["binarized_mnist_train.amat"]
    link.serve(train, data, None, "cut")  # the first request is whole; the second (a part) is cut
    builder = prepare(BinarizedMnist, tmp_path)
    assert builder.info.splits["train"].num_examples == 6000
    assert link.sent[train] <= 1.3 * len(data)
    assert "Resuming binarized_mnist_train.amat from byte" in capsys.readouterr().out


def test_a_later_part_answered_with_the_whole_file_keeps_its_own_bytes(monkeypatch, tmp_path, link):
    """The first part is answered as asked; the second part's request gets the whole file (200): it reads on
    to its own bytes and keeps them, instead of failing the source."""
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, link, BinarizedMnist, files, "upstream")
    link.serve_files("upstream", files)
    train, data = "/upstream/binarized_mnist_train.amat", files["binarized_mnist_train.amat"]
    link.serve(train, data, None, "whole")
    assert prepare(BinarizedMnist, tmp_path).info.splits["train"].num_examples == 6000
    assert link.requests.count(train) == 2  # no retry, no other source
    assert link.sent[train] <= len(data) // 2 + len(data) + (1 << 20)  # the first part, then at most the file


def test_a_server_that_ignores_range_gets_one_connection(monkeypatch, tmp_path, file_server):
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, files, "upstream")
    for name, data in files.items():
        file_server.serve(f"/upstream/{name}", data, honour_range=False)
    assert prepare(BinarizedMnist, tmp_path).info.splits["train"].num_examples == 6000
    assert file_server.sent == {f"/upstream/{name}": len(data) for name, data in files.items()}


def test_one_connection_per_file_when_asked(monkeypatch, tmp_path, file_server):
    monkeypatch.setenv(http_transport.CONNECTIONS_ENV, "1")
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, files, "upstream")
    file_server.serve_files("upstream", files)
    prepare(BinarizedMnist, tmp_path)
    assert sorted(file_server.range_requests) == sorted(
        (f"/upstream/{name}", f"bytes=0-{len(data) - 1}") for name, data in files.items()
    )


def test_parts_of_a_file_are_as_planned():
    mib = 1 << 20
    assert http_transport.parts(3 * mib, 4) == [(0, 3 * mib)]
    assert http_transport.parts(78_400_000, 4) == [(0, 19_600_000), (19_600_000, 39_200_000),
                                                   (39_200_000, 58_800_000), (58_800_000, 78_400_000)]  # fmt: skip
    assert http_transport.parts(9 * mib, 4) == [(0, 9 * mib // 2), (9 * mib // 2, 9 * mib)]
    assert http_transport.parts(78_400_000, 1) == [(0, 78_400_000)]


@pytest.mark.parametrize(("value", "problem"), [("soon", "is not a number"), ("0", "must be positive")])
def test_a_bad_timeout_setting_is_named(monkeypatch, tmp_path, value, problem):
    monkeypatch.setenv(http_transport.TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=problem):
        http_transport.policy_from_env()


def test_a_split_is_parsed_while_a_larger_file_still_downloads(monkeypatch, tmp_path, file_server, capsys):
    """The train file stalls (resumed after the 1 s timeout); validation and test are parsed meanwhile,
    and the prepared data is what it is without the stall."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    train = "binarized_mnist_train.amat"
    file_server.serve(f"/upstream/{train}", BINARIZED_FILES[train], "stall")
    read_split = BinarizedMnist._read_split

    def reporting_read_split(self, files):
        print(f"Parsing {', '.join(path.name for path in files.values())}", flush=True)
        return read_split(self, files)

    monkeypatch.setattr(BinarizedMnist, "_read_split", reporting_read_split)
    builder = prepare(BinarizedMnist, tmp_path)
    assert_prepared(builder, "binarized_mnist")
    out = capsys.readouterr().out
    arrived = out.index(f"Got {train} from")
    parsed = {part: re.search(rf"Parsing \S*mnist_{part}\S*\.amat", out).start() for part in ("valid", "test", "train")}
    assert parsed["valid"] < arrived and parsed["test"] < arrived < parsed["train"], out
    reference = tmp_path / "reference"
    file_server.serve_files("upstream", BINARIZED_FILES)
    unstalled = prepare(BinarizedMnist, reference)
    for split in builder.info.splits:
        ours = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, shuffle_files=False))["image"]
        theirs = tfds.as_numpy(unstalled.as_dataset(split, batch_size=-1, shuffle_files=False))["image"]
        assert (ours == theirs).all()
