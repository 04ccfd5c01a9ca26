"""QMNIST (Yadav & Bottou, 2019): MNIST reconstructed from NIST SD 19, with the 50,000 lost test digits and writers.

Three splits from upstream's six files (the source torchvision uses): `train` is MNIST's train set one for one,
`test` holds MNIST's 10,000 test digits then the 50,000 "lost" ones, and `nist` all 402,953 digits of NIST SD 19.
Each label file is a table of eight big-endian int32 columns per image (QMNIST's README names them); all but the
unused eighth become named integer features. Measured on the real files, train's first column is MNIST's train
labels and test's first 10,000 rows MNIST's test labels, so both are checked against MNIST's registered label
digests, and a file with other labels is refused as not QMNIST's.

Sizes: the label files' sizes and sha256 are known and registered (`checksums/mnist_variants_qmnist.tsv`); the
image files are known only by their md5 and git blob id, with a bound on their size
(`checksums/mnist_variants_qmnist.digests.tsv`). Each bound is the uncompressed IDX file (16 header bytes
and 784 per image: 60,000, 60,000 and 402,953 images): gzip and xz of such data are never larger.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from mnist_variants import formats, verification
from mnist_variants.builder import MNIST_FILES, SUBMISSION_IMAGES, LabelledIdxBuilder
from mnist_variants.datasets import mnist
from mnist_variants.errors import MalformedFileError

CITATION = """\
@incollection{qmnist-2019,
  title = {Cold Case: The Lost MNIST Digits},
  author = {Yadav, Chhavi and Bottou, L\\'{e}on},
  booktitle = {Advances in Neural Information Processing Systems 32},
  year = {2019},
  publisher = {Curran Associates, Inc.},
}
"""

# The label files' columns after the first (the digit), as QMNIST's README names them; the eighth is unused.
EXTENDED_COLUMNS = {
    "hsf": "NIST HSF series of the digit's form (0-4 for train and test, 0-7 for nist)",
    "writer": "NIST writer id",
    "digit_index": "index of the digit among this writer's digits",
    "nist_class": "NIST class code (30-39: the digit's ASCII code in hex)",
    "nist_index": "global NIST digit index",
    "duplicate": "0, or the NIST index of the digit this one duplicates",
}
LABEL_COLUMNS = 1 + len(EXTENDED_COLUMNS) + 1  # the digit, the named ones, the unused one
# No QMNIST file can hold more digits than NIST SD 19 holds characters (814,255: EMNIST ByClass's train and
# test together), so no content is larger than an IDX file of that many images: the bound on inflating xz.
MOST_CONTENT_BYTES = 16 + 814_255 * formats.IMAGE_SIDE * formats.IMAGE_SIDE


class Qmnist(LabelledIdxBuilder):
    """QMNIST: MNIST's train set, its test set with the 50,000 lost digits, and all NIST digits, with writers."""

    name = "mnist_variants_qmnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: upstream's six files, splits train, test and nist, the extended labels as named"
        " integer features; labels checked against MNIST's."
    }

    TITLE = "QMNIST"
    SOURCES = ("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",)  # torchvision's
    SPLIT_FILES = {
        tfds.Split.TRAIN: {"images": "qmnist-train-images-idx3-ubyte.gz", "labels": "qmnist-train-labels-idx2-int.gz"},
        tfds.Split.TEST: {"images": "qmnist-test-images-idx3-ubyte.gz", "labels": "qmnist-test-labels-idx2-int.gz"},
        "nist": {"images": "xnist-images-idx3-ubyte.xz", "labels": "xnist-labels-idx2-int.xz"},
    }
    # The label files whose first column starts with MNIST's labels: the MNIST label file they must equal.
    LABELS_OF = {
        "qmnist-train-labels-idx2-int.gz": MNIST_FILES[tfds.Split.TRAIN]["labels"],
        "qmnist-test-labels-idx2-int.gz": MNIST_FILES[tfds.Split.TEST]["labels"],
    }
    MANUAL_SUBFOLDERS = ("QMNIST/raw",)  # a torchvision root given as the manual dir: it keeps the files there
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: to prepare without network, put upstream's six files (qmnist-{train,test}-*.gz,
    xnist-*.xz) in the manual dir, in its `mnist_variants_qmnist/` subfolder or in `QMNIST/raw/`
    (torchvision's root). Each is verified by its digests.
    """

    CLASS_NAMES = tuple("0123456789")
    DESCRIPTION = (
        "QMNIST: MNIST reconstructed from NIST Special Database 19, 28x28 grayscale digits. `train` (60,000)"
        " matches MNIST's train set one for one. `test` (60,000): `test[:10000]` is MNIST's test set"
        " reconstructed, `test[10000:]` the 50,000 test digits MNIST lost. `nist` (402,953) holds every digit of"
        " NIST SD 19. Beside the digit (`label`), each image carries its extended labels: "
        + "; ".join(f"`{name}`: {doc}" for name, doc in EXTENDED_COLUMNS.items())
        + ". With `writer`, a model can be evaluated on writers it never saw. Examples are in file order (so"
        " `test[:10000]` is MNIST's test set): `shuffle_files=True` raises (TFDS's ordering guard); shuffle with"
        " `ds.shuffle(buffer_size)`, or pass `read_config=tfds.ReadConfig(enable_ordering_guard=False)` to"
        " allow `shuffle_files=True` (it then reorders shards only, not the examples within one)."
    )
    HOMEPAGE = "https://github.com/facebookresearch/qmnist"
    CITATION = CITATION
    LICENSE = "BSD-style (QMNIST's repository: BSD License, Copyright (c) Facebook, Inc. and its affiliates)"
    INTEGER_FEATURES = EXTENDED_COLUMNS
    # As torchvision reads them: with TFDS's key hashing, `test[:10000]` would not be MNIST's test set.
    IN_FILE_ORDER = True

    def _read_split(self, files: Mapping[str, verification.Verdict]) -> dict[str, np.ndarray | formats.ImageBatches]:
        """IDX images (gzip or xz) and an IDX table of eight int32 columns a row; counts are the headers'."""
        images_file, labels_file = files["images"], files["labels"]
        images = formats.read_idx_images_in_batches(content(images_file), images_file.path, SUBMISSION_IMAGES)
        table = formats.read_idx_int32_table(content(labels_file), labels_file.path, LABEL_COLUMNS)
        formats.check_same_count(images, images_file.path, table, labels_file.path)
        check_label_table(table, labels_file.path, len(self.CLASS_NAMES))
        if mnist_labels := self.LABELS_OF.get(labels_file.name):
            check_mnist_labels(table[:, 0], labels_file.path, mnist_labels)
        extended = {name: table[:, column] for column, name in enumerate(EXTENDED_COLUMNS, start=1)}
        return {"image": images, "label": table[:, 0].astype(np.uint8), **extended}


def content(verdict: verification.Verdict) -> bytes | bytearray:
    """The verified bytes, inflated here if xz (bounded by the IDX header's promise); gzip is the IDX readers'."""
    if bytes(verdict.data[: len(formats.XZ_MAGIC)]) == formats.XZ_MAGIC:
        return formats.unxz_idx(verdict.data, verdict.path, MOST_CONTENT_BYTES)
    return verdict.data


def check_label_table(table: np.ndarray, source: formats.Source, num_classes: int) -> None:
    """The digit column holds 0..num_classes-1 and the unused last column is 0 in every row."""
    digits = table[:, 0]
    if (outside := np.flatnonzero((digits < 0) | (digits >= num_classes))).size:
        raise MalformedFileError(
            f"{source}: label {digits[outside[0]]} at row {outside[0]} is outside 0..{num_classes - 1}"
            f" ({outside.size} such labels)"
        )
    if (used := np.flatnonzero(table[:, -1])).size:
        raise MalformedFileError(
            f"{source}: column {table.shape[1] - 1}, unused upstream, holds {table[used[0], -1]} at row {used[0]}"
            f" ({used.size} such rows): not QMNIST's label table"
        )


def check_mnist_labels(digits: np.ndarray, source: formats.Source, mnist_labels: str) -> None:
    """The first digits must be MNIST's `mnist_labels`, compared as its decompressed file, whose digest is
    registered (8 bytes of header, then one byte a label)."""
    registered = mnist.Mnist.registry()[mnist_labels].content
    count = int(registered.size) - 8
    if len(digits) < count or not verification.is_registered_file(formats.encode_idx(digits[:count]), registered):
        raise MalformedFileError(
            f"{source}: its first {min(count, len(digits)):,} labels are not MNIST's {mnist_labels}"
            f" ({count:,} labels, sha256 {registered.checksum} in IDX form), so not QMNIST's"
        )
