"""EMNIST: six configs read out of one verified gzip.zip, the examples of TFDS's emnist (all of them for letters).

On the dummy archive (dummy_data/emnist/gzip.zip, every config's members and mappings) by default;
`pytest --full-size` compares with TFDS's emnist on a full-size generated archive (many minutes).
The archive is served by a loopback server or given as a manual dir; its digest is registered
for the test in place of upstream's. TFDS's builder reads the same archive through its public
`download_and_extract` and `extract`; the counts its configs hold are set to the dummy's.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import (
    DUMMY_DATA,
    DUMMY_SPLITS,
    register_dummy_checksums,
    serve_from,
    tfds_build_every_config,
    worker_env,
    write_files,
)
from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import DownloadFailedError, Emnist, MalformedFileError, WrongFileError, formats
from mnist_variants import builder as builder_module

ARCHIVE = (DUMMY_DATA / "emnist" / "gzip.zip").read_bytes()
COUNTS = DUMMY_SPLITS["emnist"]
CONFIGS = [config.name for config in Emnist.BUILDER_CONFIGS]
UNREACHABLE = ("http://127.0.0.1:9/unreachable/",)
# TFDS's emnist/letters reads 88,800 of 124,800 train and 14,800 of 20,800 test examples; on the dummy, as many:
LETTERS_TFDS_READS = {"train": 16 * 88_800 // 124_800, "test": 6 * 14_800 // 20_800}


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return {info.filename: opened.read(info) for info in opened.infolist() if not info.is_dir()}


def rezipped(changes: dict[str, bytes | None]) -> bytes:
    """The dummy archive with members replaced (or, for None, left out)."""
    files = {**members(ARCHIVE), **changes}
    buffer = io.BytesIO()
    testing.write_zip(buffer, [(name, data) for name, data in files.items() if data is not None])
    return buffer.getvalue()


def offline(monkeypatch, tmp_path, archive: bytes = ARCHIVE) -> Path:
    """The archive, registered, in a manual dir; no source answers."""
    register_dummy_checksums(monkeypatch, tmp_path, Emnist, {"gzip.zip": archive})
    monkeypatch.setattr(Emnist, "SOURCES", UNREACHABLE)
    write_files(tmp_path / "manual", {"gzip.zip": archive})
    return tmp_path / "manual"


def prepare(config: str, tmp_path: Path, manual_dir: Path | None = None) -> tfds.core.DatasetBuilder:
    builder = Emnist(config=config, data_dir=tmp_path / "data")
    builder.download_and_prepare(
        download_dir=tmp_path / "downloads", download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def prepare_builtin(config: str, data_dir: Path, archive: Path, counts: dict[str, int]) -> tfds.core.DatasetBuilder:
    """TFDS's emnist on the same archive: public `download_and_extract` gets the local file, which TFDS's own
    `extract` unzips; its config's counts (what it reads) are set to `counts`."""
    theirs = tfds.builder_cls("emnist")
    assert theirs.__module__.startswith("tensorflow_datasets."), theirs
    tfds_config = next(c for c in theirs.BUILDER_CONFIGS if c.name == config)

    def local_archive(dl_manager, url):
        # TFDS 4.9.4 still names the old itl.nist.gov URL, later versions biometrics.nist.gov: the same file.
        assert url.endswith("/cs_links/EMNIST/gzip.zip"), url
        return dl_manager.extract(archive)

    with (
        mock.patch.object(tfds.download.DownloadManager, "download_and_extract", local_archive),
        mock.patch.multiple(tfds_config, train_examples=counts["train"], test_examples=counts["test"]),
    ):
        builder = theirs(config=config, data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def examples(builder, split: str) -> dict[str, np.ndarray]:
    return tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, batch_size=-1))


def first_in_file(ours: dict[str, np.ndarray], archive: Path, images: str, prefix: int) -> dict[str, np.ndarray]:
    """Our examples that are among the first `prefix` of the upstream file, in our order."""
    with zipfile.ZipFile(archive) as opened:
        stored = formats.read_idx_images(opened.read(f"gzip/{images}"))
    first_place: dict[bytes, int] = {}
    for place, image in enumerate(stored):
        first_place.setdefault(image.tobytes(), place)
    keep = np.array([first_place[image.tobytes()] < prefix for image in ours["image"]])
    return {feature: values[keep] for feature, values in ours.items()}


@pytest.fixture(scope="session")
def full_size_archive(request, tmp_path_factory) -> Path | None:
    """With --full-size: a full-size generated gzip.zip (benchmarks/data/emnist's if the benchmark wrote one)."""
    if not request.config.getoption("--full-size"):
        return None
    written = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "emnist" / "gzip.zip"
    if written.exists():
        return written
    return Path(testing.write_archive(Emnist, tmp_path_factory.mktemp("emnist"), seed=11))


def test_registered_beside_tfds_with_six_configs(tmp_path):
    assert tfds.builder_cls(Emnist.name) is Emnist
    assert tfds.builder_cls("emnist").__module__.startswith("tensorflow_datasets.")
    assert CONFIGS == ["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]
    for config in CONFIGS:
        mine = tfds.builder(f"{Emnist.name}/{config}", data_dir=tmp_path).info
        theirs = tfds.builder(f"emnist/{config}", data_dir=tmp_path).info
        assert str(mine.version) == "1.0.0"
        assert mine.supervised_keys == theirs.supervised_keys == ("image", "label")
        assert mine.features["image"].shape == theirs.features["image"].shape == (28, 28, 1)
        assert mine.features["image"].np_dtype == theirs.features["image"].np_dtype == np.uint8


def test_class_names_are_the_characters(tmp_path):
    def names(config: str) -> list[str]:
        return tfds.builder(f"{Emnist.name}/{config}", data_dir=tmp_path).info.features["label"].names

    digits, upper, lower = list("0123456789"), list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), list("abcdefghijklmnopqrstuvwxyz")
    assert names("byclass") == digits + upper + lower
    assert names("bymerge") == names("balanced") == digits + upper + list("abdefghnqrt")
    assert names("letters") == ["N/A", *lower]
    assert names("digits") == names("mnist") == digits
    assert len(names("letters")) == 27  # TFDS's emnist/letters declares 37


def test_the_archive_is_registered_as_tfds_registers_it():
    line = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip\t561753746\tfb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e\tgzip.zip"
    assert Path(Emnist._checksums_path).read_text().strip() == line
    theirs = tfds_checksums.load_url_infos(epath.Path(tfds.__file__).parent / "url_checksums" / "emnist.txt")
    ours = tfds_checksums.load_url_infos(Emnist._checksums_path)
    # The same file as TFDS registers; its URL is the old itl.nist.gov one before TFDS 4.9.5 or so.
    digests = {(int(info.size), info.checksum, info.filename) for info in (*ours.values(), *theirs.values())}
    assert len(digests) == 1 and all(url.endswith("/cs_links/EMNIST/gzip.zip") for url in theirs)
    assert Emnist.SOURCES == (
        "https://biometrics.nist.gov/cs_links/EMNIST/",
        "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/",
    )
    assert Emnist.upstream_filenames() == ["gzip.zip"]


@pytest.mark.parametrize("config", CONFIGS)
def test_same_examples_as_tfds_emnist(config, full_size_archive, monkeypatch, tmp_path, file_server):
    """Every config, example for example, in order, as stored (transposed); letters: all of them, and TFDS's
    (truncated) examples are its first ones."""
    if full_size_archive is not None:
        archive, counts = full_size_archive, testing.EMNIST_COUNTS[config]
        theirs_counts = {"train": 88_800, "test": 14_800} if config == "letters" else counts
    else:
        archive, counts = DUMMY_DATA / "emnist" / "gzip.zip", COUNTS
        theirs_counts = LETTERS_TFDS_READS if config == "letters" else counts
    data = archive.read_bytes()
    serve_from(monkeypatch, tmp_path, file_server, Emnist, {"gzip.zip": data}, "biometrics")
    file_server.serve("/biometrics/gzip.zip", data)
    del data
    mine = prepare(config, tmp_path)
    builtin = prepare_builtin(config, tmp_path / "theirs", archive, theirs_counts)

    for split, count in counts.items():
        assert mine.info.splits[split].num_examples == count  # what the file's header says, all of it
        assert builtin.info.splits[split].num_examples == theirs_counts[split]
        ours, theirs = examples(mine, split), examples(builtin, split)
        if theirs_counts[split] < count:  # TFDS's reads the file's first examples; both order them by index hash
            ours = first_in_file(ours, archive, mine.split_files[split]["images"], theirs_counts[split])
        np.testing.assert_array_equal(ours["image"], theirs["image"], err_msg=f"{split}/image")
        np.testing.assert_array_equal(ours["label"], theirs["label"], err_msg=f"{split}/label")
        assert ours["label"].dtype == theirs["label"].dtype == np.int64
    if config == "letters":
        assert theirs_counts["train"] < counts["train"]  # the examples TFDS's letters drops, kept here


def in_file_order(ours: dict[str, np.ndarray], stored: np.ndarray) -> np.ndarray:
    """Where each of our examples sits in the upstream file (TFDS orders examples by a hash of their index)."""
    flat = stored.reshape(len(stored), -1)
    return np.array([int(np.flatnonzero((flat == image.ravel()).all(axis=1))[0]) for image in ours["image"]])


def test_letters_keeps_every_example_and_upstream_labels(monkeypatch, tmp_path):
    monkeypatch.setattr(builder_module, "SUBMISSION_IMAGES", 5)  # a split goes to the PNG helper in 4 parts
    builder = prepare("letters", tmp_path, manual_dir=offline(monkeypatch, tmp_path))
    files = members(ARCHIVE)
    stored = formats.read_idx_images(files["gzip/emnist-letters-train-images-idx3-ubyte.gz"])
    labels = formats.read_idx_labels(files["gzip/emnist-letters-train-labels-idx1-ubyte.gz"], num_classes=27)
    ours = examples(builder, "train")
    assert len(ours["label"]) == len(labels) == COUNTS["train"]
    order = in_file_order(ours, stored)
    assert sorted(order) == list(range(COUNTS["train"]))  # every example of the file, each once
    np.testing.assert_array_equal(ours["label"], labels[order])  # upstream's values: 1-26, none shifted
    assert ours["label"].min() >= 1 and ours["label"].max() <= 26
    first = int(ours["label"][0])
    assert builder.info.features["label"].int2str(first) == "abcdefghijklmnopqrstuvwxyz"[first - 1]


def test_images_are_as_stored_upstream_and_the_description_says_how_to_turn_them(monkeypatch, tmp_path):
    builder = prepare("balanced", tmp_path, manual_dir=offline(monkeypatch, tmp_path))
    stored = formats.read_idx_images(members(ARCHIVE)["gzip/emnist-balanced-test-images-idx3-ubyte.gz"])
    ours = examples(builder, "test")
    np.testing.assert_array_equal(ours["image"], stored[in_file_order(ours, stored)])
    upright = {"image": stored.transpose(0, 2, 1, 3)}
    with pytest.raises(IndexError):  # the images are not symmetric: no transposed one is among ours
        in_file_order(upright, ours["image"])
    assert "tf.transpose(x['image'], [1, 0, 2])" in builder.info.description
    assert "images.transpose(0, 2, 1, 3)" in builder.info.description


def test_six_configs_share_one_download_and_nothing_is_extracted(monkeypatch, tmp_path, file_server, capsys):
    serve_from(monkeypatch, tmp_path, file_server, Emnist, {"gzip.zip": ARCHIVE}, "biometrics")
    file_server.serve("/biometrics/gzip.zip", ARCHIVE)
    opened = []
    real_read = formats._read_member  # every member read from a zip, deflated (zlib-ng) or not (zipfile)

    def counting_read(archive, info, *args, **kwargs):
        opened.append(info.filename)
        return real_read(archive, info, *args, **kwargs)

    monkeypatch.setattr(formats, "_read_member", counting_read)
    for config in CONFIGS:
        builder = prepare(config, tmp_path)
        assert {split: info.num_examples for split, info in builder.info.splits.items()} == COUNTS
    assert dict(file_server.sent) == {"/biometrics/gzip.zip": len(ARCHIVE)}  # once, for all six
    out = capsys.readouterr().out
    assert out.count("Using gzip.zip downloaded earlier") == len(CONFIGS) - 1
    folder = tmp_path / "downloads" / Emnist.name
    assert sorted(path.name for path in (tmp_path / "downloads").rglob("*") if path.is_file()) == [
        "gzip.zip",
        "gzip.zip.lock",
    ]
    assert folder.is_dir()
    # Each config read its four members and its mapping, once each.
    assert sorted(opened) == sorted(
        f"gzip/emnist-{config}-{name}"
        for config in CONFIGS
        for name in (
            *(f"{split}-{kind}-ubyte.gz" for split in ("train", "test") for kind in ("images-idx3", "labels-idx1")),
            "mapping.txt",
        )
    )


def test_a_manual_dir_holding_gzip_zip_works_offline(monkeypatch, tmp_path, capsys):
    manual = offline(monkeypatch, tmp_path)
    builder = prepare("digits", tmp_path, manual_dir=manual)
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == COUNTS
    assert f"Using local copy of gzip.zip: {manual / 'gzip.zip'} (verified: the upstream file)" in (
        capsys.readouterr().out
    )


def test_a_torchvision_root_with_its_gzip_zip_is_a_manual_dir(monkeypatch, tmp_path):
    offline(monkeypatch, tmp_path)
    raw = tmp_path / "torchvision" / "EMNIST" / "raw"
    write_files(raw, {"gzip.zip": ARCHIVE})
    write_files(raw, {"emnist-mnist-train-images-idx3-ubyte": b"extracted by torchvision"})
    builder = prepare("mnist", tmp_path, manual_dir=tmp_path / "torchvision")
    assert builder.info.splits["train"].num_examples == COUNTS["train"]


@pytest.mark.parametrize("layout", ["extracted_folder", "torchvision_raw"])
def test_extracted_members_are_not_used_and_it_is_said(layout, monkeypatch, tmp_path, capsys):
    """No digest of a member is known: files extracted from gzip.zip are named as unverifiable, never used."""
    register_dummy_checksums(monkeypatch, tmp_path, Emnist, {"gzip.zip": ARCHIVE})
    monkeypatch.setattr(Emnist, "SOURCES", UNREACHABLE)
    files = {name.removeprefix("gzip/"): data for name, data in members(ARCHIVE).items()}
    if layout == "extracted_folder":
        place = tmp_path / "manual" / "gzip"
        write_files(place, files)
    else:
        place = tmp_path / "manual" / "EMNIST" / "raw"
        write_files(place, {name.removesuffix(".gz"): testing.gzip.decompress(data) for name, data in files.items()
                            if name.endswith(".gz")})  # fmt: skip
    with pytest.raises(DownloadFailedError) as failure:
        prepare("letters", tmp_path, manual_dir=tmp_path / "manual")
    statement = (
        f"in {place}: files extracted from gzip.zip, and no digest of EMNIST's members is known, so they cannot"
        " be verified. Put gzip.zip itself in the manual dir"
    )
    assert statement in capsys.readouterr().out
    assert statement in str(failure.value)
    assert "emnist-letters-train-images-idx3-ubyte" in str(failure.value)
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>EMNIST</title></head><body>" + b"<p>moved</p>" * 9_400 + b"</html>"


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream"])
def test_the_old_nist_url_is_named_an_html_page(content_type, monkeypatch, tmp_path, file_server, short_timeout):
    """itl.nist.gov answers a 110 KiB page with status 200: named as such, with or without text/html, never as a
    size or checksum mismatch; biometrics.nist.gov (here: cut once, then resumed) delivers."""
    assert 100 << 10 < len(HTML_PAGE) < 120 << 10
    serve_from(monkeypatch, tmp_path, file_server, Emnist, {"gzip.zip": ARCHIVE}, "itl", "biometrics")
    if content_type == "text/html":
        file_server.serve("/itl/gzip.zip", ARCHIVE, "html")
    else:  # a page served as data, ignoring ranges: its Content-Length is the first thing that disagrees
        file_server.serve("/itl/gzip.zip", HTML_PAGE, honour_range=False)
    file_server.serve("/biometrics/gzip.zip", ARCHIVE, "cut")
    with pytest.raises(DownloadFailedError) as failure:
        monkeypatch.setattr(Emnist, "SOURCES", (f"{file_server.url}/itl/",))
        prepare("mnist", tmp_path)
    message = str(failure.value)
    assert f"{file_server.url}/itl/gzip.zip answered with an HTML page (status 200), not the file" in message
    assert "claims" not in message and "checksum" not in message
    monkeypatch.setattr(Emnist, "SOURCES", (f"{file_server.url}/itl/", f"{file_server.url}/biometrics/"))
    if content_type == "text/html":
        file_server.serve("/itl/gzip.zip", ARCHIVE, "html")
    builder = prepare("mnist", tmp_path / "again")
    assert builder.info.splits["test"].num_examples == COUNTS["test"]


def test_an_html_page_in_the_manual_dir_is_named(monkeypatch, tmp_path):
    register_dummy_checksums(monkeypatch, tmp_path, Emnist, {"gzip.zip": ARCHIVE})
    monkeypatch.setattr(Emnist, "SOURCES", UNREACHABLE)
    write_files(tmp_path / "manual", {"gzip.zip": HTML_PAGE})
    with pytest.raises(WrongFileError, match=r"gzip\.zip is an HTML page, not the file gzip\.zip"):
        prepare("mnist", tmp_path, manual_dir=tmp_path / "manual")


def damaged(name: str) -> bytes:
    """The dummy archive with one byte of member `name`'s stored data changed."""
    data = bytearray(ARCHIVE)
    with zipfile.ZipFile(io.BytesIO(ARCHIVE)) as opened:
        info = opened.getinfo(name)
    header = 30 + len(info.filename.encode()) + len(info.extra)
    data[info.header_offset + header + info.compress_size // 2] ^= 0x55
    return bytes(data)


IMAGES = "gzip/emnist-letters-train-images-idx3-ubyte.gz"
LABELS = "gzip/emnist-letters-train-labels-idx1-ubyte.gz"


@pytest.mark.parametrize(
    ("archive", "problem"),
    [
        (damaged(IMAGES), rf"gzip\.zip: member {IMAGES} is damaged"),
        (rezipped({LABELS: None}), rf"gzip\.zip: has no member {LABELS}"),
        (rezipped({IMAGES: members(ARCHIVE)[IMAGES][:-9]}), rf"\[{IMAGES}\]: gzip stream is cut short"),
        (
            rezipped({LABELS: testing.gzip_bytes(testing.encode_idx(np.full(COUNTS["train"], 27, np.uint8)))}),
            rf"gzip\.zip\[{LABELS}\]: label 27 at index 0 is outside 1\.\.26",
        ),
        (b"PK\x03\x04 not really a zip", r"gzip\.zip: not a readable zip archive"),
    ],
    ids=["damaged_member", "missing_member", "cut_idx", "label_out_of_range", "not_a_zip"],
)
def test_a_damaged_or_missing_member_is_named(archive, problem, monkeypatch, tmp_path):
    """The archive verifies (its digest is registered for the test), yet a member is bad: named, nothing written."""
    with pytest.raises(MalformedFileError, match=problem):
        prepare("letters", tmp_path, manual_dir=offline(monkeypatch, tmp_path, archive))
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def test_class_names_are_checked_against_the_archives_mapping(monkeypatch, tmp_path):
    mapping = "gzip/emnist-bymerge-mapping.txt"
    wrong = members(ARCHIVE)[mapping].replace(b"\n36 97\n", b"\n36 99\n")  # label 36 would be "c"
    with pytest.raises(MalformedFileError, match=rf"\[{mapping}\]: label 36 is 'c', but the builder names it 'a'"):
        prepare("bymerge", tmp_path, manual_dir=offline(monkeypatch, tmp_path, rezipped({mapping: wrong})))
    assert members(ARCHIVE)["gzip/emnist-letters-mapping.txt"].startswith(b"1 65 97\n2 66 98\n")  # upstream's form


def test_an_archive_without_mappings_still_prepares(monkeypatch, tmp_path):
    archive = rezipped({name: None for name in members(ARCHIVE) if name.endswith("-mapping.txt")})
    builder = prepare("byclass", tmp_path, manual_dir=offline(monkeypatch, tmp_path, archive))
    assert builder.info.splits["train"].num_examples == COUNTS["train"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"0 48\n0 49\n", r"label 0 is listed twice"),
        (b"0 48\n\n1 49\n", r"line 2 is b''"),
        (b"0 forty-eight\n", r"line 1 is b'0 forty-eight'"),
        (b"0 48\n1 49\n", r"label 1 \('1'\) is not among the 1 classes"),
    ],
)
def test_mapping_files_are_read_strictly(text, problem):
    with pytest.raises(MalformedFileError, match=problem):
        formats.check_class_names(formats.read_class_codes(text, "m.txt"), ["0"], "m.txt")
    with pytest.raises(MalformedFileError, match=r"lists no character for the declared labels \[1\]"):
        formats.check_class_names(formats.read_class_codes(b"0 48\n"), ["0", "1"], "m.txt")
    formats.check_class_names(formats.read_class_codes(b"1 65 97\n"), ["N/A", "a"], "m.txt")


def test_tfds_build_builds_all_six_configs_from_a_manual_dir(tmp_path):
    """`tfds build mnist_variants_emnist` with no config named builds every config, offline, from gzip.zip."""
    write_files(tmp_path / "manual", {"gzip.zip": ARCHIVE})
    env = {**os.environ, **worker_env(tmp_path, Emnist, {"gzip.zip": ARCHIVE}, list(UNREACHABLE))}
    counts = tfds_build_every_config(Emnist, tmp_path / "manual", tmp_path / "data", env)
    assert counts == {config: COUNTS for config in CONFIGS}


def test_letters_refuses_label_0_naming_the_file_and_the_value(monkeypatch, tmp_path):
    """Letters uses 1..26; 0 is the class its own names call unused (N/A). A train labels file of all zeros
    prepared without a word before (issue 31)."""
    name = "gzip/emnist-letters-train-labels-idx1-ubyte.gz"
    count = COUNTS["train"]
    zeros = testing.gzip_bytes(testing.encode_idx(np.zeros(count, np.uint8)))
    with pytest.raises(MalformedFileError, match=rf"\[{name}\]: label 0 at index 0 is outside 1\.\.26 \({count} such"):
        prepare("letters", tmp_path, manual_dir=offline(monkeypatch, tmp_path, rezipped({name: zeros})))


@pytest.mark.parametrize(
    "form",
    ["crlf", "final-blank-line", "byte-order-mark", "all-three"],
)
def test_mapping_files_as_real_files_are_written_are_read(form):
    """CRLF line ends, a final blank line and a UTF-8 byte-order mark are what files edited or saved elsewhere hold."""
    text = b"1 65 97\n2 66 98\n"
    if form in ("crlf", "all-three"):
        text = text.replace(b"\n", b"\r\n")
    if form in ("final-blank-line", "all-three"):
        text += b"\r\n" if form == "all-three" else b"\n"
    if form in ("byte-order-mark", "all-three"):
        text = b"\xef\xbb\xbf" + text
    codes = formats.read_class_codes(text, "m.txt")
    assert codes == {1: (65, 97), 2: (66, 98)}
    formats.check_class_names(codes, ["N/A", "a", "b"], "m.txt")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"1 65 98\n2 66 98\n", "label 1 is 'A' or 'b', but the builder names it 'a'"),  # the second: another letter
        (b"1 97 66\n2 66 98\n", "label 1 is 'a' or 'B', but the builder names it 'a'"),
        (b"1 65 97 98\n2 66 98\n", "label 1 is 'A' or 'a' or 'b', but the builder names it 'a'"),
    ],
)
def test_a_mapping_line_naming_another_character_is_refused(text, problem):
    with pytest.raises(MalformedFileError, match=r"^m\.txt: " + re.escape(problem)):
        formats.check_class_names(formats.read_class_codes(text, "m.txt"), ["N/A", "a", "b"], "m.txt")
