"""Damaged upstream files stop preparation with an error naming the file, and leave no prepared dataset.

A header, a label file or a count is refused before anything is written; a damaged image body
may be found once TFDS writes the first batches (builder.ImageFeed): every split fails there.

Each damaged file is downloaded from a loopback server through the builders' real download path
(registered as upstream's, so it passes verification and reaches the parser). On the dummy data
by default; `pytest --full-size` damages full-size generated files instead.
"""

from __future__ import annotations

import gzip
import re
import struct

import pytest
import testing
from conftest import assert_nothing_prepared, dummy_files, prepare, serve_from

from mnist_variants import BinarizedMnist, FashionMnist, MalformedFileError
from mnist_variants import builder as builder_module

FULL_SIZE = {
    FashionMnist: {"train": 60_000, "test": 10_000},
    BinarizedMnist: {"train": 50_000, "validation": 10_000, "test": 10_000},
}


@pytest.fixture(scope="module")
def upstream(request, tmp_path_factory) -> dict[type, dict[str, bytes]]:
    """Each builder's intact upstream files, by name: the dummy data, or full-size ones."""
    if not request.config.getoption("--full-size"):
        return {
            FashionMnist: dummy_files("fashion_mnist"),
            BinarizedMnist: dummy_files("binarized_mnist"),
        }
    files = {}
    for builder_cls, counts in FULL_SIZE.items():
        paths = testing.write_upstream_files(builder_cls, tmp_path_factory.mktemp(builder_cls.name), counts, seed=5)
        files[builder_cls] = {name: path.read_bytes() for name, path in paths.items()}
    return files


def regzip(data: bytes, change) -> bytes:
    return testing.gzip_bytes(change(gzip.decompress(data)))


def set_field(offset: int, value: int):
    return lambda raw: raw[:offset] + struct.pack(">I", value) + raw[offset + 4 :]


TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_LABELS, AMAT = "t10k-labels-idx1-ubyte.gz", "binarized_mnist_valid.amat"

# (builder, damaged file, how, a pattern of what the error says besides the file's path)
DAMAGE = {
    "wrong_magic": (FashionMnist, TRAIN_IMAGES, lambda f: f[TRAIN_LABELS], r"IDX magic number 0x00000801"),
    "not_28x28": (FashionMnist, TRAIN_IMAGES, lambda f: regzip(f[TRAIN_IMAGES], set_field(8, 27)), "images of 27x28"),
    "truncated_body": (FashionMnist, TRAIN_IMAGES, lambda f: regzip(f[TRAIN_IMAGES], lambda r: r[:-1]), "but only"),
    "trailing_garbage": (FashionMnist, TEST_LABELS, lambda f: regzip(f[TEST_LABELS], lambda r: r + b"\0"), "trailing"),
    "count_mismatch": (FashionMnist, TRAIN_LABELS, lambda f: f[TEST_LABELS],
                       r"holds \d+ images but \S+ holds \d+ labels"),
    "label_out_of_range": (FashionMnist, TEST_LABELS, lambda f: regzip(f[TEST_LABELS], lambda r: r[:-1] + b"\x0a"),
                           "label 10 at index"),
    "gzip_cut": (FashionMnist, TRAIN_IMAGES, lambda f: f[TRAIN_IMAGES][: len(f[TRAIN_IMAGES]) // 2], "cut short"),
    "gzip_corrupt": (FashionMnist, TRAIN_IMAGES, lambda f: f[TRAIN_IMAGES][:-8] + b"\xff" * 4 + f[TRAIN_IMAGES][-4:],
                     "corrupt gzip"),
    "claims_billions": (FashionMnist, TRAIN_IMAGES, lambda f: regzip(f[TRAIN_IMAGES], set_field(4, 2**32 - 1)),
                        "header promises 4294967295 images"),
    "amat_value_not_0_1": (BinarizedMnist, AMAT, lambda f: f[AMAT][:-2] + b"7\n", r"value 784 is b'7'"),
    "amat_wrong_count": (BinarizedMnist, AMAT, lambda f: f[AMAT][:-3] + b"\n", "783 values"),
    "amat_empty": (BinarizedMnist, AMAT, lambda f: b"", "empty file"),
}  # fmt: skip


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_file_fails_naming_it_and_leaves_nothing(case, upstream, request, monkeypatch, tmp_path, file_server):
    if not request.config.getoption("--full-size"):  # several batches, as the full-size files have (4 of 16,384)
        monkeypatch.setattr(builder_module, "SUBMISSION_IMAGES", 5)
    builder_cls, damaged, damage, problem = DAMAGE[case]
    files = dict(upstream[builder_cls])
    files[damaged] = damage(files)
    serve_from(monkeypatch, tmp_path, file_server, builder_cls, files, "upstream")
    file_server.serve_files("upstream", files)
    with pytest.raises(MalformedFileError) as raised:
        prepare(builder_cls, tmp_path)
    message = str(raised.value)
    # The error names the downloaded file (beside the others of the test: count_mismatch names two).
    assert re.search(rf"{re.escape(str(tmp_path / 'downloads'))}\S*/{re.escape(damaged)}\b", message), message
    assert re.search(problem, message), message
    if files[damaged]:  # an empty file is registered as empty: there is nothing to fetch
        assert f"/upstream/{damaged}" in file_server.requests  # it came through the download path
    assert_nothing_prepared(tmp_path, downloads=False)  # the verified downloads may stay, as a cache
