"""QMNIST: three splits from six files (gzip and xz), IDX int32 label tables, MNIST's labels checked.

On the dummy files (dummy_data/qmnist/: MNIST's dummy examples, three lost test digits, nist all of them),
whose digests, and MNIST's dummy files' (whose labels QMNIST's train and first test rows must equal), are
registered for each test in place of upstream's. The real label files in ../shared/data/qmnist/ (beside the
checkout) are parsed where present, for the ranges issue 33 observed. QMNIST is not in TFDS: what the
prepared splits hold is compared with what torchvision's QMNIST returns, read as torchvision's
`read_sn3_pascalvincent_tensor` reads IDX files (torchvision/datasets/mnist.py; torchvision is not installed here).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import conftest
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import (
    DUMMY_SPLITS,
    REPO,
    assert_nothing_prepared,
    child_env,
    dummy_files,
    write_files,
    write_registry,
)
from etils import epath

from mnist_variants import ChecksumMismatchError, MalformedFileError, Mnist, Qmnist, data_sources, formats, verification
from mnist_variants.builder import check_mnist_labels, listed_max_sizes

FILES = dummy_files("qmnist")
MNIST_FILES = dummy_files("mnist")
# ../shared/data/qmnist beside the checkout (CI's clone), or beside a folder holding it (a git worktree of it).
SHARED = next(
    (
        folder / "shared" / "data" / "qmnist"
        for folder in REPO.parents
        if (folder / "shared" / "data" / "qmnist").is_dir()
    ),
    REPO.parent / "shared" / "data" / "qmnist",
)
UNREACHABLE = "http://127.0.0.1:9/unreachable/"
TRAIN_LABELS, TEST_LABELS, NIST_LABELS = (Qmnist.SPLIT_FILES[split]["labels"] for split in ("train", "test", "nist"))
TRAIN_IMAGES, NIST_IMAGES = Qmnist.SPLIT_FILES["train"]["images"], Qmnist.SPLIT_FILES["nist"]["images"]
EXTENDED = ("hsf", "writer", "digit_index", "nist_class", "nist_index", "duplicate")


def register(monkeypatch, tmp_path: Path, files: dict[str, bytes] = FILES, base_url: str = UNREACHABLE) -> None:
    """QMNIST's files' digests, and MNIST's dummy files' (whose labels QMNIST's must start with), for the test."""
    tsv = write_registry(tmp_path / "registry", Qmnist, files, base_url)
    monkeypatch.setattr(Qmnist, "_checksums_path", epath.Path(tsv))
    conftest.register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)


def offline(monkeypatch, tmp_path: Path, files: dict[str, bytes] = FILES, folder: str = "") -> Path:
    """The files, registered, in a manual dir (or its `folder`); no source answers."""
    register(monkeypatch, tmp_path, files)
    monkeypatch.setattr(Qmnist, "SOURCES", (UNREACHABLE,))
    write_files(tmp_path / "manual" / folder, files)
    return tmp_path / "manual"


def examples(builder, split: str) -> dict[str, np.ndarray]:
    return tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, batch_size=-1))


def torchvision_reads(data: bytes) -> np.ndarray:
    """An IDX file as torchvision's `read_sn3_pascalvincent_tensor` reads it: the type and dimension count from
    the magic, big-endian values, shaped by the header (after torchvision's own gzip/xz extraction)."""
    data = lzma.decompress(data) if data[:6] == formats.XZ_MAGIC else gzip.decompress(data)
    dims, kind = data[3], data[2]
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    dtype = {0x08: np.uint8, 0x0C: np.dtype(">i4")}[kind]
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * dims).reshape(shape)


def test_registered_with_its_splits_features_and_metadata(tmp_path):
    assert tfds.builder_cls(Qmnist.name) is Qmnist
    info = tfds.builder(Qmnist.name, data_dir=tmp_path).info
    assert info.supervised_keys == ("image", "label")
    assert info.features["image"].shape == (28, 28, 1) and info.features["image"].np_dtype == np.uint8
    assert info.features["label"].names == list("0123456789")
    assert {name: info.features[name].np_dtype for name in EXTENDED} == dict.fromkeys(EXTENDED, np.int32)
    assert set(info.features) == {"image", "label", *EXTENDED}  # column 7 (unused) is not stored
    assert "`test[:10000]` is MNIST's test set" in info.description and "`test[10000:]`" in info.description
    assert "Yadav, Chhavi and Bottou" in info.citation and "Cold Case: The Lost MNIST Digits" in info.citation
    assert info.redistribution_info.license.startswith("BSD") and info.homepage.endswith("facebookresearch/qmnist")
    assert Qmnist.MANUAL_SUBFOLDERS == ("QMNIST/raw",)


def test_the_label_files_are_registered_with_upstreams_sha256_size_and_content():
    registry = Qmnist.registry()
    for name in (TRAIN_LABELS, TEST_LABELS, NIST_LABELS):
        assert registry[name].download.size > 0 and len(registry[name].download.checksum) == 64
        assert f"{Qmnist.SOURCES[0]}{name}" in Qmnist.url_infos
    assert registry[TRAIN_LABELS].content.size == registry[TEST_LABELS].content.size == 12 + 60_000 * 32
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the upstream label files cannot be compared")
    for name in (TRAIN_LABELS, TEST_LABELS, NIST_LABELS):
        data = (SHARED / name).read_bytes()
        assert verification.is_registered_file(data, registry[name].download), name
        if name.endswith(".gz"):
            assert verification.is_registered_file(gzip.decompress(data), registry[name].content), name
        # with the md5 torchvision checks, as the shared folder's README lists them
        md5 = hashlib.md5(data).hexdigest()
        row = rf"\| {re.escape(name)} \| [\d,]+ \| {registry[name].download.checksum} \| {md5} \|"
        assert re.search(row, (SHARED / "README.md").read_text()), name


def test_the_image_files_are_listed_by_md5_git_blob_and_a_size_bound():
    """url, max_size, md5, git blob sha1, filename (the contract with the digests machinery); the bound is the
    uncompressed IDX file, which gzip and xz of it cannot exceed."""
    lines = (REPO / "checksums" / "mnist_variants_qmnist.digests.tsv").read_text().splitlines()
    rows = {fields[4]: fields for fields in (line.split("\t") for line in lines)}
    issue = (  # issue 33: md5 and git blob id of each, and the images each holds
        ("qmnist-train-images-idx3-ubyte.gz", 60_000, "ed72d4157d28c017586c42bc6afe6370",
         "43a075186d8418723380fb40fdd4d4b9a76effa9"),
        ("qmnist-test-images-idx3-ubyte.gz", 60_000, "1394631089c404de565df7b7aeaf9412",
         "d6d267b6ad716da3979256a1115d70bf914ddd58"),
        ("xnist-images-idx3-ubyte.xz", 402_953, "7f124b3b8ab81486c9d8c2749c17f834",
         "da014118ee256cd9edd2d0f272cc925c6ea3e539"),
    )  # fmt: skip
    assert rows == {
        name: [f"{Qmnist.SOURCES[0]}{name}", str(16 + count * 784), md5, blob, name] for name, count, md5, blob in issue
    }


def test_dummy_files_are_in_upstreams_formats():
    for name, data in FILES.items():
        assert data[:2] == formats.GZIP_MAGIC if name.endswith(".gz") else data[:6] == formats.XZ_MAGIC, name
        table = torchvision_reads(data)
        split = next(split for split, files in Qmnist.SPLIT_FILES.items() if name in files.values())
        assert len(table) == DUMMY_SPLITS["qmnist"][split], name
        assert table.shape[1:] == ((28, 28) if "images" in name else (8,)), name


def test_prepares_from_loopback_as_torchvision_reads_the_files(monkeypatch, tmp_path, file_server):
    """Every split and feature, downloaded once from 127.0.0.1: the image, `label` = torchvision's target (compat)
    and the extended features = columns 1-6 of its `compat=False` target; test[:n] is MNIST's test split."""
    file_server.serve_files("upstream", FILES)
    monkeypatch.setattr(Qmnist, "SOURCES", (f"{file_server.url}/upstream/",))
    register(monkeypatch, tmp_path, base_url=f"{file_server.url}/upstream/")
    builder = conftest.prepare(Qmnist, tmp_path)
    conftest.assert_prepared(builder, "qmnist")
    assert dict(file_server.sent) == {f"/upstream/{name}": len(data) for name, data in FILES.items()}
    for split, files in Qmnist.SPLIT_FILES.items():
        got, images, targets = (
            examples(builder, split),
            torchvision_reads(FILES[files["images"]]),
            torchvision_reads(FILES[files["labels"]]),
        )
        np.testing.assert_array_equal(got["image"][..., 0], images)
        np.testing.assert_array_equal(got["label"], targets[:, 0])
        for column, name in enumerate(EXTENDED, start=1):
            np.testing.assert_array_equal(got[name], targets[:, column], err_msg=f"{split} {name}")
        assert not targets[:, 7].any()
    mnist_test = torchvision_reads(MNIST_FILES["t10k-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(examples(builder, f"test[:{len(mnist_test)}]")["image"][..., 0], mnist_test)


@pytest.mark.parametrize("folder", ["", Qmnist.name, "QMNIST/raw"])
def test_a_manual_dir_works_offline(folder, monkeypatch, tmp_path, capsys):
    manual = offline(monkeypatch, tmp_path, folder=folder)
    conftest.assert_prepared(conftest.prepare(Qmnist, tmp_path, manual_dir=manual), "qmnist")
    out = capsys.readouterr().out
    for name in FILES:
        assert f"Using local copy of {name}: {manual / folder / name} (verified: the upstream file)" in out


def test_tfds_load_and_data_sources_open_give_the_extended_labels(monkeypatch, tmp_path):
    manual = offline(monkeypatch, tmp_path)
    config = {"download_config": tfds.download.DownloadConfig(manual_dir=manual)}
    loaded = tfds.as_numpy(tfds.load(Qmnist.name, split="nist", batch_size=-1, data_dir=tmp_path / "data",
                                     download_and_prepare_kwargs=config))  # fmt: skip
    source = data_sources.open(Qmnist.name, "nist", data_dir=tmp_path / "data")
    targets = torchvision_reads(FILES[NIST_LABELS])
    assert len(source) == len(targets) == DUMMY_SPLITS["qmnist"]["nist"]
    for index in (0, len(source) - 1):
        item = source[index]
        assert set(item) == {"image", "label", *EXTENDED}
        assert [int(item[name]) for name in ("label", *EXTENDED)] == targets[index, :7].tolist()
        np.testing.assert_array_equal(item["image"], loaded["image"][index])
    assert loaded["duplicate"].tolist() == targets[:, 6].tolist() and loaded["duplicate"].any()


# Refusals: each malformed file reaches the declaration's parser as verified bytes (the builder's _read_split,
# as the fetching machinery hands a split over), and must be refused naming it.


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)


def raw(name: str) -> bytes:
    data = FILES[name]
    return lzma.decompress(data) if name.endswith(".xz") else gzip.decompress(data)


def table(name: str) -> np.ndarray:
    return np.array(torchvision_reads(FILES[name]), dtype=np.int32)


def recompressed(name: str, content: bytes) -> bytes:
    """`content` compressed as upstream's `name` is (gzip or xz)."""
    return (gz if name.endswith(".gz") else xz)(content)


def with_value(name: str, row: int, column: int, value) -> bytes:
    """The label file with one value changed (`value` may be a function of the old one)."""
    rows = table(name)
    rows[row, column] = value(rows[row, column]) if callable(value) else value
    return recompressed(name, formats.encode_idx_int32_table(rows))


def rows_of(name: str, rows: slice | tuple) -> bytes:
    return recompressed(name, formats.encode_idx_int32_table(table(name)[rows]))


def next_digit(digit: int) -> int:
    return (digit + 1) % 10


def read_split(split: str, changes: dict[str, bytes]) -> dict:
    files = {
        role: verification.Verdict(
            epath.Path("/upstream") / name, name, True, "verified", changes.get(name, FILES[name])
        )
        for role, name in Qmnist.SPLIT_FILES[split].items()
    }
    return Qmnist(data_dir="/nonexistent")._read_split(files)


def with_header(name: str, header: bytes) -> bytes:
    return recompressed(name, header + raw(name)[len(header) :])


def nist_images_of_28x27() -> bytes:
    return xz(formats.encode_idx(torchvision_reads(FILES[NIST_IMAGES])[:, :, :27]))


def xz_damaged() -> bytes:
    return FILES[NIST_IMAGES][:100] + bytes(50) + FILES[NIST_IMAGES][150:]


def xz_promising_13_million_images() -> bytes:
    return xz(struct.pack(">4I", 0x803, 13_000_000, 28, 28))


WRONG_MAGIC = struct.pack(">I", 0x00000D02)
ONE_DIMENSION = "IDX magic number 0x00000801, expected 0x00000c02"
NOT_MNISTS = "labels are not MNIST's"
# Each: the split, the file changed, how, and what the refusal must say.
REFUSALS = {
    "wrong_magic": ("train", TRAIN_LABELS, lambda: with_header(TRAIN_LABELS, WRONG_MAGIC),
                    "0x00000d02, expected 0x00000c02 (label rows, big-endian int32, 2 dimensions)"),
    "one_dimensional_labels": ("test", TEST_LABELS, lambda: gz(formats.encode_idx(table(TEST_LABELS)[:, 0])),
                               ONE_DIMENSION),
    "seven_columns": ("train", TRAIN_LABELS, lambda: rows_of(TRAIN_LABELS, np.s_[:, :7]), "rows of 7, expected 8"),
    "images_of_28x27": ("nist", NIST_IMAGES, nist_images_of_28x27, "images of 28x27, expected 28x28"),
    "labels_cut_short": ("train", TRAIN_LABELS, lambda: gz(raw(TRAIN_LABELS)[:-5]), "only 379 bytes follow"),
    "gzip_cut_short": ("train", TRAIN_IMAGES, lambda: FILES[TRAIN_IMAGES][:-100], "gzip stream is cut short"),
    "xz_cut_short": ("nist", NIST_LABELS, lambda: FILES[NIST_LABELS][:-20], "xz stream is cut short"),
    "xz_corrupt": ("nist", NIST_IMAGES, xz_damaged, "corrupt xz stream"),
    "xz_trailing_content": ("nist", NIST_LABELS, lambda: xz(raw(NIST_LABELS) + bytes(32)), "trailing garbage: more"),
    "xz_trailing_stream": ("nist", NIST_LABELS, lambda: FILES[NIST_LABELS] * 2, "trailing garbage after the xz stream"),
    "xz_promise_beyond_nist": ("nist", NIST_IMAGES, xz_promising_13_million_images,
                               "(10192000000 bytes) but this file's content is at most 315,915,168 bytes"),
    "counts_disagree": ("test", TEST_LABELS, lambda: rows_of(TEST_LABELS, np.s_[:-1]),
                        "holds 8 images but /upstream/qmnist-test-labels-idx2-int.gz holds 7 labels"),
    "column_7_not_zero": ("nist", NIST_LABELS, lambda: with_value(NIST_LABELS, 3, 7, 1),
                          "column 7, unused upstream, holds 1 at row 3 (1 such rows): not a label table"),
    "label_out_of_range": ("nist", NIST_LABELS, lambda: with_value(NIST_LABELS, 2, 0, 10),
                           "label 10 at index 2 is outside 0..9"),
    "train_labels_not_mnists": ("train", TRAIN_LABELS, lambda: with_value(TRAIN_LABELS, 11, 0, next_digit),
                                f"its first 12 {NOT_MNISTS} train-labels-idx1-ubyte.gz"),
    "test_labels_not_mnists": ("test", TEST_LABELS, lambda: with_value(TEST_LABELS, 0, 0, next_digit),
                               f"its first 5 {NOT_MNISTS} t10k-labels-idx1-ubyte.gz"),
}  # fmt: skip


@pytest.mark.parametrize("refusal", REFUSALS, ids=list(REFUSALS))
def test_a_malformed_file_is_refused_naming_it(refusal, monkeypatch, tmp_path):
    split, name, make, problem = REFUSALS[refusal]
    conftest.register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    with pytest.raises(MalformedFileError) as raised:
        split_arrays = read_split(split, {name: make()})
        for _ in split_arrays["image"].batches:  # a damaged image body shows where it is reached
            pass
    assert str(raised.value).startswith(f"/upstream/{name}") or f"/upstream/{name}" in str(raised.value)
    assert problem in str(raised.value)


def test_a_test_split_shorter_than_mnists_test_set_is_not_qmnists(monkeypatch, tmp_path):
    """Images and labels cut together to 4 rows (counts agree): MNIST's dummy test set has 5, so not QMNIST's."""
    conftest.register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    test_images = Qmnist.SPLIT_FILES["test"]["images"]
    images = gz(formats.encode_idx(torchvision_reads(FILES[test_images])[:4]))
    with pytest.raises(MalformedFileError) as raised:
        read_split("test", {test_images: images, TEST_LABELS: rows_of(TEST_LABELS, np.s_[:4])})
    assert str(raised.value) == (
        f"/upstream/{TEST_LABELS}: its first 4 {NOT_MNISTS} t10k-labels-idx1-ubyte.gz (5 labels, sha256"
        f" {Mnist.registry()['t10k-labels-idx1-ubyte.gz'].content.checksum} in IDX form), so not QMNIST's"
    )


def test_the_untouched_dummy_splits_read(monkeypatch, tmp_path):
    """The refusals' control: the same path, unchanged files, reads every split."""
    conftest.register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    for split, count in DUMMY_SPLITS["qmnist"].items():
        arrays = read_split(split, {})
        assert len(arrays["image"]) == len(arrays["label"]) == count
        assert sum(len(batch) for batch in arrays["image"].batches) == count


def test_labels_not_mnists_fail_the_preparation_and_nothing_is_written(monkeypatch, tmp_path):
    files = {**FILES, TRAIN_LABELS: REFUSALS["train_labels_not_mnists"][2]()}
    manual = offline(monkeypatch, tmp_path, files)
    with pytest.raises(MalformedFileError, match=re.escape("not MNIST's train-labels-idx1-ubyte.gz (12 labels")):
        conftest.prepare(Qmnist, tmp_path, manual_dir=manual)
    assert_nothing_prepared(tmp_path)


def xz_bomb(promised_images: int, zeros: int) -> bytes:
    """An xz stream: an IDX image header promising `promised_images`, then `zeros` zero bytes (128 MiB in 20 KiB)."""
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0)
    parts = [compressor.compress(struct.pack(">4I", 0x803, promised_images, 28, 28))]
    block = bytes(1 << 24)
    parts += [compressor.compress(block) for _ in range(zeros >> 24)]
    return b"".join([*parts, compressor.flush()])


def images_read(data: bytes) -> int:
    """The images `data` yields read as nist's image file is, within its listed bound."""
    bound = listed_max_sizes(Qmnist.name)[NIST_IMAGES]
    return sum(len(batch) for batch in formats.read_idx_images_in_batches(data, NIST_IMAGES, 1 << 14, bound).batches)


def test_an_xz_bomb_is_refused_with_bounded_memory(monkeypatch, tmp_path):
    """128 MiB of zeros behind a header promising 12 images: inflating stops one byte past the promise."""
    bomb = xz_bomb(12, 128 << 20)
    assert len(bomb) < 64 << 10
    conftest.register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedFileError, match="trailing garbage: more data after the 12 images"):
            images_read(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the promised 9,408 bytes and the decoder's slices of input, not 128 MiB


def test_an_xz_stream_is_read_only_within_a_bound():
    """xz has no ratio bound (unlike deflate's 1032): without a bound for its content, an xz file is read as raw
    bytes, and refused by its magic (as every reader did before QMNIST)."""
    with pytest.raises(MalformedFileError, match="IDX magic number 0xfd377a58, expected 0x00000803"):
        formats.read_idx_images_in_batches(FILES[NIST_IMAGES], NIST_IMAGES)
    assert images_read(FILES[NIST_IMAGES]) == DUMMY_SPLITS["qmnist"]["nist"]


def test_a_small_xz_promising_much_allocates_nothing_by_the_promise(monkeypatch, tmp_path):
    """A 0.1 KB xz whose header promises 400,000 images (313.6 MB, within nist's bound) but holds none: refused as
    cut short, having allocated what it held, not the promise (the whole content was once inflated into one
    buffer of the header's size)."""
    promise = xz(struct.pack(">4I", 0x803, 400_000, 28, 28))
    assert len(promise) < 200
    conftest.register_dummy_checksums(monkeypatch, tmp_path, Mnist, MNIST_FILES)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedFileError, match=r"header promises 400000 images \(313600000 bytes\) but only 0"):
            images_read(promise)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_the_real_label_files_parse_with_the_observed_ranges():
    """Issue 33's observed ranges (QMNIST's README states looser ones), and column 0 against MNIST's registered
    label digests (upstream's, not the dummy's): train all 60,000, test's first 10,000."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the real label files are read from beside the checkout)")
    tables = {name: formats.read_idx_label_table((SHARED / name).read_bytes(), name, 8, 10, 12 + 402_953 * 32)
              for name in (TRAIN_LABELS, TEST_LABELS, NIST_LABELS)}  # fmt: skip
    train, test, nist = tables[TRAIN_LABELS], tables[TEST_LABELS], tables[NIST_LABELS]
    assert (len(train), len(test), len(nist)) == (60_000, 60_000, 402_953)

    def ranges(rows: np.ndarray, column: int) -> tuple[int, int]:
        return int(rows[:, column].min()), int(rows[:, column].max())

    columns = dict(zip(("label", *EXTENDED, "unused"), range(8), strict=True))
    for rows in tables.values():
        assert ranges(rows, columns["label"]) == (0, 9) and ranges(rows, columns["nist_class"]) == (30, 39)
        assert ranges(rows, columns["unused"]) == (0, 0)
    assert ranges(train, columns["hsf"]) == (0, 4) and ranges(train, columns["writer"]) == (0, 2349)
    assert ranges(train, columns["digit_index"]) == (0, 130) and ranges(train, columns["nist_index"]) == (0, 252_174)
    assert ranges(train, columns["duplicate"]) == (0, 0)
    assert ranges(test, columns["writer"]) == (326, 2599) and ranges(test, columns["nist_index"]) == (35_000, 281_769)
    assert ranges(nist, columns["hsf"]) == (0, 7) and ranges(nist, columns["writer"]) == (0, 4099)
    assert ranges(nist, columns["nist_index"]) == (0, 402_952) and ranges(nist, columns["duplicate"]) == (0, 223_124)
    assert int(np.count_nonzero(nist[:, columns["duplicate"]])) == 3
    mnists = Mnist.registry()
    check_mnist_labels(train[:, 0], TRAIN_LABELS, "train-labels-idx1-ubyte.gz", mnists, "QMNIST", leading=True)
    check_mnist_labels(test[:, 0], TEST_LABELS, "t10k-labels-idx1-ubyte.gz", mnists, "QMNIST", leading=True)
    with pytest.raises(MalformedFileError, match=re.escape("not MNIST's t10k-labels-idx1-ubyte.gz")):
        check_mnist_labels(test[1:, 0], TEST_LABELS, "t10k-labels-idx1-ubyte.gz", mnists, "QMNIST", leading=True)


def test_qmnists_label_file_given_as_mnists_is_named(monkeypatch, tmp_path):
    """Cross-refusal (issue 33 req 11): upstream's QMNIST train label file under MNIST's name is named as QMNIST's."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: no upstream QMNIST label file to give")
    monkeypatch.setattr(Mnist, "SOURCES", (UNREACHABLE,))
    write_files(tmp_path / "manual", {"train-labels-idx1-ubyte.gz": (SHARED / TRAIN_LABELS).read_bytes()})
    with pytest.raises(ChecksumMismatchError, match=f"is QMNIST's {TRAIN_LABELS}, not MNIST's train-labels-idx1"):
        conftest.prepare(Mnist, tmp_path, manual_dir=tmp_path / "manual")


def test_mnists_label_file_given_as_qmnists_is_named(monkeypatch, tmp_path):
    manual = offline(monkeypatch, tmp_path)
    write_files(manual, {TRAIN_LABELS: MNIST_FILES["train-labels-idx1-ubyte.gz"]})
    with pytest.raises(
        ChecksumMismatchError, match=f"is MNIST's train-labels-idx1-ubyte.gz, not QMNIST's {TRAIN_LABELS}"
    ):
        conftest.prepare(Qmnist, tmp_path, manual_dir=manual)


def test_the_writers_example_splits_by_writer_offline(tmp_path):
    """examples/qmnist_writers.py in its own process, from a torchvision root given as the manual dir."""
    manual = tmp_path / "manual"
    write_files(manual / "QMNIST" / "raw", FILES)
    tsvs = {
        Qmnist.name: write_registry(tmp_path / "q", Qmnist, FILES, UNREACHABLE),
        Mnist.name: write_registry(tmp_path / "m", Mnist, MNIST_FILES, UNREACHABLE),
    }
    registry = {name: {"sources": [UNREACHABLE], "checksums": str(tsv)} for name, tsv in tsvs.items()}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    env = {**os.environ, **child_env(), "MNIST_VARIANTS_TEST_REGISTRY": str(tmp_path / "registry.json")}
    command = [sys.executable, "-c", "import registered_dummies, runpy, sys; sys.argv = sys.argv[1:];"
               " runpy.run_path(sys.argv[0], run_name='__main__')", str(REPO / "examples" / "qmnist_writers.py"),
               "--manual_dir", str(manual), "--data_dir", str(tmp_path / "data")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    writers = table(TRAIN_LABELS)[:, 2]
    per_writer = {int(writer): int((writers == writer).sum()) for writer in np.unique(writers)}
    assert f"train: 12 digits of {len(per_writer)} writers, 1 writers held out" in result.stdout, result.stdout
    unseen = re.search(r"^unseen writers: fit on (\d+) digits of (\d+) writers, tested on (\d+) digits of 1 other"
                       r" writers, accuracy ([\d.]+)$", result.stdout, re.M)  # fmt: skip
    random = re.search(r"^random split: fit on (\d+) digits, tested on (\d+) digits \((\d+) by writers of the fit"
                       r" digits\), accuracy ([\d.]+)$", result.stdout, re.M)  # fmt: skip
    assert unseen and random, result.stdout
    fit, fit_writers, tested = int(unseen[1]), int(unseen[2]), int(unseen[3])
    assert tested in per_writer.values() and fit + tested == 12 and fit_writers == len(per_writer) - 1
    assert (int(random[1]), int(random[2])) == (fit, tested) and 0 <= int(random[3]) <= tested
    assert 0 <= float(unseen[4]) <= 1 and 0 <= float(random[4]) <= 1


def test_the_dummy_train_and_test_writers_are_disjoint_as_upstreams():
    """As in upstream's files (539 train writers, 535 test, none shared: checked on them where present)."""
    tables = {name: table(name) for name in (TRAIN_LABELS, TEST_LABELS)}
    if SHARED.is_dir():
        tables.update({f"upstream {name}": torchvision_reads((SHARED / name).read_bytes())
                       for name in (TRAIN_LABELS, TEST_LABELS)})  # fmt: skip
    for train, test in ((TRAIN_LABELS, TEST_LABELS), (f"upstream {TRAIN_LABELS}", f"upstream {TEST_LABELS}")):
        if train in tables:
            assert not set(tables[train][:, 2].tolist()) & set(tables[test][:, 2].tolist()), train
    if SHARED.is_dir():
        counts = [len(np.unique(tables[f"upstream {name}"][:, 2])) for name in (TRAIN_LABELS, TEST_LABELS)]
        assert counts == [539, 535]


def test_shuffle_files_raises_and_the_documented_ways_to_shuffle_work(monkeypatch, tmp_path):
    """Examples stay in file order (`test[:10000]` is MNIST's test set), so TFDS refuses `shuffle_files=True`;
    the description and notes say so and name `ds.shuffle(...)`, tried here."""
    builder = conftest.prepare(Qmnist, tmp_path, manual_dir=offline(monkeypatch, tmp_path))
    in_order = examples(builder, "nist")["nist_index"].tolist()
    with pytest.raises(ValueError, match="disable_shuffling"):
        builder.as_dataset(split="nist", shuffle_files=True)
    shuffled = [int(row["nist_index"]) for row in tfds.as_numpy(builder.as_dataset(split="nist").shuffle(64, seed=3))]
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order
    for text in (builder.info.description, (REPO / "docs" / "notes" / "qmnist.md").read_text()):
        assert "`shuffle_files=True` raises" in text and "ds.shuffle(" in text, text
