"""MNIST-C: 16 configs read out of one verified mnist_c.zip, strict `.npy` members, MNIST's labels.

On the dummy archive (dummy_data/mnist_corrupted/mnist_c.zip: MNIST's dummy images and labels, every
config); test_identity.py compares every config with TFDS's mnist_corrupted on a full-size generated
archive under `pytest --full-size`. The archive's digest, and MNIST's dummy files' (whose labels MNIST-C's must equal),
are registered for each test in place of upstream's. TFDS's builder reads the same archive through its
public `download_and_extract` and `extract`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

import conftest
import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import (
    DUMMY_DATA,
    DUMMY_SPLITS,
    REPO,
    child_env,
    dummy_files,
    register_dummy_checksums,
    serve_from,
    tfds_build_every_config,
    write_files,
    write_registry,
)
from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import (
    ChecksumMismatchError,
    DownloadFailedError,
    Emnist,
    MalformedFileError,
    Mnist,
    MnistCorrupted,
    formats,
)

ARCHIVE = (DUMMY_DATA / "mnist_corrupted" / "mnist_c.zip").read_bytes()
MNIST_FILES = dummy_files("mnist")
COUNTS = DUMMY_SPLITS["mnist_corrupted"]
CONFIGS = [config.name for config in MnistCorrupted.BUILDER_CONFIGS]
UNREACHABLE = ("http://127.0.0.1:9/unreachable/",)


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return {info.filename: opened.read(info) for info in opened.infolist() if not info.is_dir()}


def rezipped(changes: dict[str, bytes | None]) -> bytes:
    """The dummy archive with members replaced (or, for None, left out)."""
    files = {name.removeprefix("mnist_c/"): data for name, data in {**members(ARCHIVE), **changes}.items()}
    buffer = io.BytesIO()
    testing.write_zip(buffer, [(name, data) for name, data in files.items() if data is not None], "mnist_c/")
    return buffer.getvalue()


def register(monkeypatch, tmp_path, archive: bytes = ARCHIVE, mnist_files: dict[str, bytes] = MNIST_FILES) -> None:
    """The archive's digest, and MNIST's files' (whose labels MNIST-C's must equal), registered for the test."""
    register_dummy_checksums(monkeypatch, tmp_path, MnistCorrupted, {"mnist_c.zip": archive})
    register_dummy_checksums(monkeypatch, tmp_path, Mnist, mnist_files)


def offline(monkeypatch, tmp_path, archive: bytes = ARCHIVE, folder: str = "") -> Path:
    """The archive, registered, in a manual dir (or its `folder`); no source answers."""
    register(monkeypatch, tmp_path, archive)
    monkeypatch.setattr(MnistCorrupted, "SOURCES", UNREACHABLE)
    write_files(tmp_path / "manual" / folder, {"mnist_c.zip": archive})
    return tmp_path / "manual"


def prepare(config: str, tmp_path: Path, manual_dir: Path | None = None) -> tfds.core.DatasetBuilder:
    """conftest's prepare, of one config."""
    return conftest.prepare(functools.partial(MnistCorrupted, config=config), tmp_path, manual_dir)


def examples(builder, split: str) -> dict[str, np.ndarray]:
    return tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, batch_size=-1))


def builtin_class() -> type[tfds.core.GeneratorBasedBuilder]:
    theirs = tfds.builder_cls("mnist_corrupted")
    assert theirs.__module__.startswith("tensorflow_datasets."), theirs
    return theirs


def prepare_builtin(config: str, data_dir: Path, archive: Path) -> tfds.core.DatasetBuilder:
    """TFDS's mnist_corrupted on the same archive: public `download_and_extract` gets the local file, which
    TFDS's own `extract` unzips."""

    def local_archive(dl_manager, url):
        assert url == "https://zenodo.org/record/3239543/files/mnist_c.zip", url
        return dl_manager.extract(archive)

    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", local_archive):
        builder = builtin_class()(config=config, data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def test_registered_beside_tfds_with_its_sixteen_configs(tmp_path):
    assert tfds.builder_cls(MnistCorrupted.name) is MnistCorrupted
    assert CONFIGS == [config.name for config in builtin_class().BUILDER_CONFIGS]
    assert len(CONFIGS) == 16 and CONFIGS[0] == "identity"
    for config in ("identity", "canny_edges"):
        mine = tfds.builder(f"{MnistCorrupted.name}/{config}", data_dir=tmp_path).info
        theirs = tfds.builder(f"mnist_corrupted/{config}", data_dir=tmp_path).info
        assert mine.supervised_keys == theirs.supervised_keys == ("image", "label")
        assert mine.features["image"].shape == theirs.features["image"].shape == (28, 28, 1)
        assert mine.features["image"].np_dtype == theirs.features["image"].np_dtype == np.uint8
        assert mine.features["label"].num_classes == theirs.features["label"].num_classes == 10
        assert "Mu, Norman and Gilmer, Justin" in mine.citation and mine.redistribution_info.license == "CC BY 4.0"


def test_the_archive_is_registered_as_tfds_registers_it():
    line = (
        "https://zenodo.org/record/3239543/files/mnist_c.zip\t246661575\t"
        "af9ee8c6a815870c7fdde5af84c7bf8db0bcfa1f41056db83871037fba70e493\tmnist_c.zip"
    )
    assert Path(MnistCorrupted._checksums_path).read_text().strip() == line
    theirs = tfds_checksums.load_url_infos(epath.Path(tfds.__file__).parent / "url_checksums" / "mnist_corrupted.txt")
    assert tfds_checksums.load_url_infos(MnistCorrupted._checksums_path) == theirs
    assert MnistCorrupted.upstream_filenames() == ["mnist_c.zip"]


def test_the_dummy_archive_is_shaped_as_upstreams():
    """Deflated members (upstream's 879 MB of `.npy` fit in 235 MiB), folder entries, `identity` is MNIST."""
    with zipfile.ZipFile(io.BytesIO(ARCHIVE)) as opened:
        infos = {info.filename: info for info in opened.infolist()}
    for config in CONFIGS:
        assert infos[f"mnist_c/{config}/"].is_dir()
        for split in ("train", "test"):
            for role in ("images", "labels"):
                assert infos[f"mnist_c/{config}/{split}_{role}.npy"].compress_type == zipfile.ZIP_DEFLATED
    identity = members(ARCHIVE)
    mnist = {name: formats.gunzip(data) for name, data in MNIST_FILES.items()}
    for split, files in Mnist.SPLIT_FILES.items():
        images = formats.read_npy_images(identity[f"mnist_c/identity/{split}_images.npy"])
        np.testing.assert_array_equal(images, formats.read_idx_images(mnist[files["images"]]))


@pytest.mark.parametrize("config", CONFIGS)
def test_same_examples_as_tfds_mnist_corrupted(config, monkeypatch, tmp_path, file_server):
    """Every config, example for example, in order, against TFDS's builder prepared on the same archive."""
    serve_from(monkeypatch, tmp_path, file_server, MnistCorrupted, {"mnist_c.zip": ARCHIVE}, "zenodo")
    register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    file_server.serve("/zenodo/mnist_c.zip", ARCHIVE)
    mine = prepare(config, tmp_path)
    builtin = prepare_builtin(config, tmp_path / "theirs", DUMMY_DATA / "mnist_corrupted" / "mnist_c.zip")
    for split, count in COUNTS.items():
        assert mine.info.splits[split].num_examples == builtin.info.splits[split].num_examples == count
        ours, theirs = examples(mine, split), examples(builtin, split)
        np.testing.assert_array_equal(ours["image"], theirs["image"], err_msg=f"{split}/image")
        np.testing.assert_array_equal(ours["label"], theirs["label"], err_msg=f"{split}/label")
        assert ours["label"].dtype == theirs["label"].dtype == np.int64


def test_one_download_serves_every_config_and_nothing_is_extracted(monkeypatch, tmp_path, file_server, capsys):
    serve_from(monkeypatch, tmp_path, file_server, MnistCorrupted, {"mnist_c.zip": ARCHIVE}, "zenodo")
    register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    file_server.serve("/zenodo/mnist_c.zip", ARCHIVE)
    chosen = ("identity", "glass_blur", "canny_edges")
    # Every member read from the zip passes through _read_member (deflated ones are not opened through zipfile).
    with mock.patch.object(formats, "_read_member", autospec=True, side_effect=formats._read_member) as spy:
        for config in chosen:
            builder = prepare(config, tmp_path)
            assert {split: info.num_examples for split, info in builder.info.splits.items()} == COUNTS
    opened = [call.args[1].filename for call in spy.call_args_list]
    assert dict(file_server.sent) == {"/zenodo/mnist_c.zip": len(ARCHIVE)}  # once, for all of them
    assert capsys.readouterr().out.count("Using mnist_c.zip downloaded earlier") == len(chosen) - 1
    assert sorted(path.name for path in (tmp_path / "downloads").rglob("*") if path.is_file()) == [
        "mnist_c.zip",
        "mnist_c.zip.lock",
    ]
    assert sorted(opened) == sorted(  # each config read its own four members, once each
        f"mnist_c/{config}/{split}_{role}.npy" for config in chosen for split in COUNTS for role in ("images", "labels")
    )


@pytest.mark.parametrize("where", ["manual_dir", "download_dir"])
def test_a_wrong_archive_is_refused_before_any_member_is_read(where, monkeypatch, tmp_path):
    """Only verified bytes are parsed: a planted or re-zipped mnist_c.zip (a valid zip, not the registered one)
    is refused without a member read, so it costs its own size, never what its members claim (reading members
    while the sha256 was computed, tried in c10edd7, made a 2.6 MB archive cost 2.8 GB before its refusal)."""
    manual = offline(monkeypatch, tmp_path)
    wrong = rezipped({"mnist_c/fog/test_labels.npy": None})
    if where == "manual_dir":
        write_files(manual, {"mnist_c.zip": wrong})
    else:
        (manual / "mnist_c.zip").unlink()
        write_files(tmp_path / "downloads" / MnistCorrupted.name, {"mnist_c.zip": wrong})
    refusal = ChecksumMismatchError if where == "manual_dir" else DownloadFailedError
    with mock.patch.object(formats, "read_zip_members", side_effect=AssertionError("read before verified")) as read:
        with pytest.raises(refusal):
            prepare("fog", tmp_path, manual_dir=manual)
    read.assert_not_called()


@pytest.mark.parametrize("folder", ["", MnistCorrupted.name])
def test_a_manual_dir_holding_mnist_c_zip_works_offline(folder, monkeypatch, tmp_path, capsys):
    manual = offline(monkeypatch, tmp_path, folder=folder)
    builder = prepare("zigzag", tmp_path, manual_dir=manual)
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == COUNTS
    where = manual / folder / "mnist_c.zip"
    assert f"Using local copy of mnist_c.zip: {where} (verified: the upstream file)" in capsys.readouterr().out


def test_extracted_folders_are_not_used_and_it_is_said(monkeypatch, tmp_path, capsys):
    """No digest of an image member is known: the folders extracted from mnist_c.zip are never used."""
    register(monkeypatch, tmp_path)
    monkeypatch.setattr(MnistCorrupted, "SOURCES", UNREACHABLE)
    write_files(
        tmp_path / "manual" / "mnist_c" / "rotate",
        {name.rsplit("/", 1)[-1]: data for name, data in members(ARCHIVE).items() if "/rotate/" in name},
    )
    with pytest.raises(DownloadFailedError) as failure:
        prepare("rotate", tmp_path, manual_dir=tmp_path / "manual")
    statement = (
        "files extracted from mnist_c.zip, and no digest of MNIST-C's members is known, so they cannot be"
        " verified. Put mnist_c.zip itself in the manual dir"
    )
    assert statement in capsys.readouterr().out
    assert statement in str(failure.value)
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def test_images_of_28x28_and_labels_of_any_integer_type_are_read_as_tfds_reads_them(monkeypatch, tmp_path):
    """(n, 28, 28) images and int64 labels, which TFDS's builder stores too: the same examples."""
    files = members(ARCHIVE)
    changes = {}
    for split in COUNTS:
        images = formats.read_npy_images(files[f"mnist_c/scale/{split}_images.npy"])
        labels = formats.read_npy_labels(files[f"mnist_c/scale/{split}_labels.npy"])
        changes[f"mnist_c/scale/{split}_images.npy"] = testing.npy_bytes(images[..., 0])
        changes[f"mnist_c/scale/{split}_labels.npy"] = testing.npy_bytes(labels.astype(np.int64))
    builder = prepare("scale", tmp_path, manual_dir=offline(monkeypatch, tmp_path, rezipped(changes)))
    reference = prepare("scale", tmp_path / "as_upstream", manual_dir=offline(monkeypatch, tmp_path / "ref"))
    for split in COUNTS:
        ours, expected = examples(builder, split), examples(reference, split)
        np.testing.assert_array_equal(ours["image"], expected["image"])
        np.testing.assert_array_equal(ours["label"], expected["label"])


IMAGES = "mnist_c/shear/train_images.npy"
LABELS = "mnist_c/shear/train_labels.npy"


def npy_member(name: str) -> np.ndarray:
    read = formats.read_npy_images if name.endswith("images.npy") else formats.read_npy_labels
    return np.array(read(members(ARCHIVE)[name]))


def with_header(array: np.ndarray, header: dict) -> bytes:
    """`array`'s bytes behind a hand-written .npy 1.0 header (what np.save would not write)."""
    text = repr(header).encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return formats.NPY_MAGIC + b"\x01\x00" + len(text).to_bytes(2, "little") + text + array.tobytes()


LABEL_COUNT = COUNTS["train"]


def pickled(array: np.ndarray) -> bytes:
    """An object array as `np.save(..., allow_pickle=True)` writes it: a pickle behind a .npy header."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("member", "data", "problem"),
    [
        (LABELS, pickled(np.array([None] * LABEL_COUNT)), r"holds Python objects \(object\).*refused"),
        (IMAGES, testing.npy_bytes(np.asfortranarray(npy_member(IMAGES)[..., 0])), r"Fortran order, expected C"),
        (IMAGES, testing.npy_bytes(npy_member(IMAGES).astype(np.float32)), r"float32 images of shape"),
        (IMAGES, testing.npy_bytes(npy_member(IMAGES).reshape(LABEL_COUNT, -1)), r"uint8 images of shape \(12, 784\)"),
        (IMAGES, testing.npy_bytes(npy_member(IMAGES)[:, :27]), r"uint8 images of shape \(12, 27, 28, 1\)"),
        (LABELS, testing.npy_bytes(npy_member(LABELS).astype(np.float64)), r"float64 labels of shape \(12,\)"),
        (LABELS, testing.npy_bytes(npy_member(LABELS)[:, None]), r"uint8 labels of shape \(12, 1\), expected one"),
        (LABELS, testing.npy_bytes(np.full(LABEL_COUNT, 10, np.uint8)), r"label 10 at index 0 is outside 0\.\.9"),
        (LABELS, testing.npy_bytes(np.full(LABEL_COUNT, -1, np.int64)), r"label -1 at index 0 is outside 0\.\.9"),
        (IMAGES, testing.npy_bytes(npy_member(IMAGES))[:-5], r"cut short: its header describes 9,408 bytes"),
        (IMAGES, testing.npy_bytes(npy_member(IMAGES)) + b"\0", r"trailing garbage: its header describes 9,408"),
        (
            IMAGES,
            with_header(npy_member(IMAGES), {"descr": "|u1", "fortran_order": False, "shape": (10**12, 28, 28, 1)}),
            r"its header describes 784,000,000,000,000 bytes",
        ),
        (
            IMAGES,
            with_header(npy_member(IMAGES), {"descr": "|u1", "fortran_order": False, "shape": (12 + 2**60, 28, 28, 1)}),
            r"its header describes 903,890,459,611,768,038,592 bytes",
        ),
        (
            IMAGES,
            with_header(npy_member(IMAGES), {"descr": "|u1", "fortran_order": False, "shape": (-12, 28, 28, -1)}),
            r"a negative dimension, shape \(-12, 28, 28, -1\)",
        ),
        (
            LABELS,
            with_header(npy_member(LABELS), {"descr": "|u1", "fortran_order": False, "shape": (-12,)}),
            r"a negative dimension, shape \(-12,\)",
        ),
        (IMAGES, b"\x89PNG\r\n\x1a\n" + bytes(100), r"not a \.npy array"),
        (IMAGES, formats.NPY_MAGIC + b"\x03\x00" + bytes(100), r"\.npy format version 3\.0"),
        (IMAGES, formats.NPY_MAGIC + b"\x01\x00\xff\x00{'descr'", r"\.npy header cut short"),
        (IMAGES, with_header(np.zeros(3, np.uint8), {"descr": "|u1", "shape": (3,)}), r"not a \.npy array"),
        (IMAGES, testing.npy_bytes(npy_member(IMAGES)[:-1]), r"holds 11 images but .* holds 12 labels"),
        (LABELS, testing.npy_bytes(npy_member(LABELS)[::-1]), r"are not MNIST's train-labels-idx1-ubyte\.gz"),
        (LABELS, testing.npy_bytes(np.zeros(0, np.uint8)), r"holds 12 images but .* holds 0 labels"),
    ],
    ids=[
        "pickle",
        "fortran",
        "float_images",
        "flat_images",
        "27_rows",
        "float_labels",
        "2d_labels",
        "label_10",
        "label_minus_1",
        "cut",
        "trailing",
        "huge_header",
        "overflowing_shape",
        "negative_dimensions",
        "negative_label_count",
        "not_npy",
        "version_3",
        "cut_header",
        "bad_header",
        "count_mismatch",
        "other_labels",
        "no_labels",
    ],
)
def test_a_malformed_member_is_named_with_its_archive(member, data, problem, monkeypatch, tmp_path):
    """The archive verifies (its digest is registered for the test), yet a member is bad: a MalformedFileError
    naming archive and member; nothing written."""
    manual = offline(monkeypatch, tmp_path, rezipped({member: data}))
    with pytest.raises(MalformedFileError, match=problem) as failure:
        prepare("shear", tmp_path, manual_dir=manual)
    assert f"mnist_c.zip[{member}]" in str(failure.value)
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def one_member_zip(content: bytes, name: str = "mnist_c/a.npy") -> tuple[bytes, int]:
    """A zip of one deflated member, and the offset of its central directory entry (CRC-32 at +16, stored size at
    +20, size at +24)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content, zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    return data, data.index(b"PK\x01\x02")


def patched(data: bytes, offset: int, change) -> bytes:
    """`data` with the little-endian 32-bit field at `offset` changed by `change`."""
    field = int.from_bytes(data[offset : offset + 4], "little")
    return data[:offset] + change(field).to_bytes(4, "little") + data[offset + 4 :]


CONTENT = np.random.default_rng(5).integers(0, 4, 50_000, dtype=np.uint8).tobytes()  # deflates, not trivially


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda data, entry: patched(data, entry + 16, lambda crc: crc ^ 1), r"is damaged: its content has CRC-32"),
        (lambda data, entry: patched(data, entry + 24, lambda size: size - 1), r"holds more than its 49,999 bytes"),
        (lambda data, entry: patched(data, entry + 24, lambda size: size + 1), r"is cut short \(50,000 of 50,001"),
        (lambda data, entry: data[:200] + bytes([data[200] ^ 0x55]) + data[201:], r"is damaged"),
        # Its stored bytes halved: the deflate stream ends before its end of stream.
        (lambda data, entry: patched(data, entry + 20, lambda stored: stored // 2), r"is damaged: .*cut short"),
        # Its local header's extra field 60,000 bytes long: the stored bytes would start past the archive's end.
        (lambda data, entry: data[:28] + struct.pack("<H", 60_000) + data[30:], r"is damaged: .* past the archive"),
    ],
    ids=["crc", "holds_more", "cut_short", "corrupt_stream", "stream_cut", "local_extra_past_the_end"],
)
def test_a_member_is_checked_against_its_recorded_size_and_crc(change, problem):
    """Members are inflated here (zlib-ng), not by zipfile, which checked them itself: the same checks, named."""
    data, entry = one_member_zip(CONTENT)
    assert formats.read_zip_members(data, "x.zip", ["mnist_c/a.npy"]) == {"mnist_c/a.npy": CONTENT}
    with pytest.raises(MalformedFileError, match=rf"^x\.zip: member mnist_c/a\.npy {problem}"):
        formats.read_zip_members(change(data, entry), "x.zip", ["mnist_c/a.npy"])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda data: b"XX" + data[2:], r"no local header signature at offset 0"),
        (lambda data: data.replace(b"mnist_c/a.npy", b"mnist_c/b.npy", 1), r"its local header names mnist_c/b\.npy"),
        (lambda data: data[:8] + struct.pack("<H", zipfile.ZIP_STORED) + data[10:], r"its local header's method 0"),
        (lambda data: data[:6] + struct.pack("<H", 1) + data[8:], r"it is encrypted"),
    ],
    ids=["signature", "name", "method", "encrypted"],
)
def test_a_members_local_header_must_match_its_central_record(change, problem):
    """The stored bytes are found through the local header, so it is checked against the central record here:
    signature, name, method and no encryption (zipfile's open() compares the name only)."""
    data, _ = one_member_zip(CONTENT)
    with pytest.raises(MalformedFileError, match=rf"^x\.zip: member mnist_c/a\.npy is damaged: {problem}"):
        formats.read_zip_members(change(data), "x.zip", ["mnist_c/a.npy"])


def test_an_empty_deflated_member_with_no_stored_bytes_is_read_as_zipfile_reads_it():
    """A deflated member of 0 bytes with no deflate stream at all: zipfile (and main) read it as b""."""
    name = b"mnist_c/a.npy"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, 0, 0, len(name), 0) + name
    entry = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(entry) + len(name), len(local), 0)
    data = local + entry + name + end
    assert zipfile.ZipFile(io.BytesIO(data)).read("mnist_c/a.npy") == b""
    assert formats.read_zip_members(data, "x.zip", ["mnist_c/a.npy"]) == {"mnist_c/a.npy": b""}


def test_a_member_larger_than_one_inflated_part_is_read_whole():
    """Members over 16 MiB are inflated part by part into one buffer of their recorded size."""
    content = np.tile(np.frombuffer(CONTENT, np.uint8), 400).tobytes()  # 20 MB
    data, _ = one_member_zip(content)
    read = formats.read_zip_members(data, "x.zip", ["mnist_c/a.npy"])["mnist_c/a.npy"]
    assert len(read) == len(content) and read == content


def test_a_missing_member_or_other_labels_in_every_config_are_refused(monkeypatch, tmp_path):
    archive = rezipped({"mnist_c/fog/test_labels.npy": None})
    with pytest.raises(MalformedFileError, match=r"mnist_c\.zip: has no member mnist_c/fog/test_labels\.npy"):
        prepare("fog", tmp_path, manual_dir=offline(monkeypatch, tmp_path, archive))
    # Labels of the same count and classes, MNIST's but shuffled, in every config: not MNIST-C's.
    shuffled = {
        f"mnist_c/{config}/test_labels.npy": testing.npy_bytes(np.roll(npy_member("mnist_c/fog/test_labels.npy"), 1))
        for config in CONFIGS
    }
    with pytest.raises(MalformedFileError, match=r"test_labels\.npy\]: its 5 labels are not MNIST's t10k-labels"):
        prepare("fog", tmp_path / "shuffled", manual_dir=offline(monkeypatch, tmp_path / "s", rezipped(shuffled)))


@pytest.mark.parametrize("padding", [0, 2 * len(ARCHIVE)], ids=["smaller", "larger_as_upstreams"])
def test_other_datasets_files_given_as_mnist_c_zip_are_named(padding, monkeypatch, tmp_path):
    """EMNIST's gzip.zip, or MNIST's labels, under MNIST-C's name: refused, naming whose they are. Upstream's
    gzip.zip is larger than mnist_c.zip (561,753,746 and 246,661,575 bytes): the stand-in registered as
    EMNIST's is too, in the second case, so it is refused past MNIST-C's size and still named."""
    offline(monkeypatch, tmp_path)
    emnist_archive = (DUMMY_DATA / "emnist" / "gzip.zip").read_bytes() + bytes(padding)
    register_dummy_checksums(monkeypatch, tmp_path / "emnist", Emnist, {"gzip.zip": emnist_archive})
    with pytest.raises(ChecksumMismatchError, match=r"mnist_c\.zip is EMNIST's gzip\.zip, not MNIST-C's mnist_c"):
        prepare("identity", tmp_path, manual_dir=write_manual(tmp_path / "m1", emnist_archive))
    labels = MNIST_FILES["train-labels-idx1-ubyte.gz"]
    with pytest.raises(ChecksumMismatchError, match=r"is MNIST's train-labels-idx1-ubyte\.gz, not MNIST-C's"):
        prepare("identity", tmp_path / "labels", manual_dir=write_manual(tmp_path / "m2", labels))


def write_manual(folder: Path, data: bytes) -> Path:
    write_files(folder, {"mnist_c.zip": data})
    return folder


def test_mnist_c_zip_given_as_another_datasets_file_is_named(monkeypatch, tmp_path):
    """mnist_c.zip under EMNIST's archive's name: refused as MNIST-C's (upstream's gzip.zip is the larger file,
    as the one registered for EMNIST here)."""
    register(monkeypatch, tmp_path)
    register_dummy_checksums(monkeypatch, tmp_path / "emnist", Emnist, {"gzip.zip": bytes(len(ARCHIVE) * 2)})
    monkeypatch.setattr(Emnist, "SOURCES", UNREACHABLE)
    write_files(tmp_path / "emnist_manual", {"gzip.zip": ARCHIVE})
    builder = Emnist(config="digits", data_dir=tmp_path / "data")
    config = tfds.download.DownloadConfig(manual_dir=tmp_path / "emnist_manual")
    with pytest.raises(ChecksumMismatchError, match=r"gzip\.zip is MNIST-C's mnist_c\.zip, not EMNIST's gzip\.zip"):
        builder.download_and_prepare(download_config=config)


def test_mnist_c_zip_given_as_mnists_labels_is_named(monkeypatch, tmp_path):
    """mnist_c.zip under MNIST's label file's name: larger than any copy of that file can be (as upstream's,
    246,661,575 bytes, is; the stand-in registered as MNIST-C's is too), and still named as MNIST-C's."""
    archive = ARCHIVE + bytes(1 << 18)
    register(monkeypatch, tmp_path, archive)
    monkeypatch.setattr(Mnist, "SOURCES", UNREACHABLE)
    write_files(tmp_path / "mnist_manual", {**MNIST_FILES, "train-labels-idx1-ubyte.gz": archive})
    with pytest.raises(ChecksumMismatchError, match=r"gz is MNIST-C's mnist_c\.zip, not MNIST's train-labels"):
        conftest.prepare(Mnist, tmp_path, manual_dir=tmp_path / "mnist_manual")


def registry_env(tmp_path: Path) -> dict[str, str]:
    """The environment in which child processes (registered_dummies) register the dummy archive as MNIST-C's
    and MNIST's dummy files as MNIST's (whose labels MNIST-C's must equal), with no source answering."""
    registry = {}
    for builder_cls, files in ((Mnist, MNIST_FILES), (MnistCorrupted, {"mnist_c.zip": ARCHIVE})):
        tsv = write_registry(tmp_path / "registry", builder_cls, files, UNREACHABLE[0])
        registry[builder_cls.name] = {"sources": list(UNREACHABLE), "checksums": str(tsv)}
    (tmp_path / "family.json").write_text(json.dumps(registry))
    return {**os.environ, **child_env(), "MNIST_VARIANTS_TEST_REGISTRY": str(tmp_path / "family.json")}


def test_compare_classifiers_fits_on_identity_and_tests_on_a_corruption(tmp_path):
    """examples/compare_classifiers.py --corruption fog, offline: MNIST's rows, then MNIST-C's identity and fog,
    fit on identity. identity's images and labels are MNIST's, so each classifier scores the same on both."""
    env = registry_env(tmp_path)
    for builder_cls, files in ((Mnist, MNIST_FILES), (MnistCorrupted, {"mnist_c.zip": ARCHIVE})):
        write_files(tmp_path / "manual" / builder_cls.name, files)
    script = REPO / "examples" / "compare_classifiers.py"
    run = "import registered_dummies, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"  # noqa: E501
    command = [sys.executable, "-c", run, str(script), "--datasets", Mnist.name, "--corruption", "fog",
               "--manual_dir", str(tmp_path / "manual"), "--data_dir", str(tmp_path / "data")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    row = r"^\| ([\w/]+)( \(fit on identity\))? \| ([^|]+) \| ([\d.]+) \| [\d.]+ \|$"
    rows = re.findall(row, result.stdout, re.MULTILINE)
    accuracy = {(name, classifier.strip()): float(value) for name, _, classifier, value in rows}
    classifiers = ("logistic regression", "random forest", "MLP (256)")
    names = (Mnist.name, f"{MnistCorrupted.name}/identity", f"{MnistCorrupted.name}/fog")
    assert set(accuracy) == {(name, classifier) for name in names for classifier in classifiers}, result.stdout
    for classifier in classifiers:
        assert accuracy[(names[1], classifier)] == accuracy[(names[0], classifier)], classifier
    assert f"| {MnistCorrupted.name}/fog (fit on identity) |" in result.stdout
    # fog's own test split, not identity's again: prepared, and its (shifted, darkened) images score otherwise.
    assert list((tmp_path / "data" / MnistCorrupted.name / "fog").glob("*/dataset_info.json"))
    assert any(accuracy[(names[2], classifier)] != accuracy[(names[1], classifier)] for classifier in classifiers)


def test_compare_classifiers_refuses_an_unknown_corruption_before_fitting(tmp_path):
    """A typo, or a corruption of MNIST-C's paper that is not a config (gaussian_noise): refused by argparse,
    naming the choices, before any dataset is prepared or any classifier fitted."""
    command = [sys.executable, str(REPO / "examples" / "compare_classifiers.py"), "--datasets", Mnist.name,
               "--corruption", "gaussian_noise", "--data_dir", str(tmp_path / "data")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=registry_env(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert all(word in result.stderr for word in ("invalid choice", "gaussian_noise", "fog")), result.stderr
    assert "| dataset |" not in result.stdout and not (tmp_path / "data").exists()


def test_tfds_build_builds_all_sixteen_configs_from_a_manual_dir(tmp_path):
    """`tfds build mnist_variants_mnist_corrupted` with no config named builds every config, offline, from
    mnist_c.zip: one command, 16 datasets, each as the dummy's counts say."""
    write_files(tmp_path / "manual", {"mnist_c.zip": ARCHIVE})
    counts = tfds_build_every_config(MnistCorrupted, tmp_path / "manual", tmp_path / "data", registry_env(tmp_path))
    assert counts == {config: COUNTS for config in CONFIGS}
