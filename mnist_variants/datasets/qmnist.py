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
and 784 per image: 60,000, 60,000 and 402,953 images): gzip and xz of such data are never larger. Each image
file is inflated no further than its bound, each label file no further than as many rows as that bound allows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from mnist_variants import formats, verification
from mnist_variants.builder import (
    MNIST_FILES,
    SUBMISSION_IMAGES,
    LabelledIdxBuilder,
    check_mnist_labels,
    listed_max_sizes,
)
from mnist_variants.datasets import mnist

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
    # The label files whose first column starts with MNIST's labels (all of train's, test's first 10,000).
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
        " `ds.shuffle(buffer_size)` (train and test are one shard each, so reordering shards would shuffle"
        " nothing)."
    )
    HOMEPAGE = "https://github.com/facebookresearch/qmnist"
    CITATION = CITATION
    LICENSE = "BSD-style (QMNIST's repository: BSD License, Copyright (c) Facebook, Inc. and its affiliates)"
    INTEGER_FEATURES = EXTENDED_COLUMNS
    # As torchvision reads them: with TFDS's key hashing, `test[:10000]` would not be MNIST's test set.
    IN_FILE_ORDER = True

    def _read_split(self, files: Mapping[str, verification.Verdict]) -> dict[str, np.ndarray | formats.ImageBatches]:
        """IDX images (gzip or xz) and an IDX table of eight int32 columns a row; counts are the headers'.

        Each file is inflated within its own bound, as it is read (nothing inflated whole first): the images
        within the size the digests file bounds them to, the table within as many rows as that bound allows
        images (for train and test, the registered content size of their label files).
        """
        images_file, labels_file = files["images"], files["labels"]
        images_bound = listed_max_sizes(self.name)[images_file.name]
        images = formats.read_idx_images_in_batches(images_file.data, images_file.path, SUBMISSION_IMAGES, images_bound)
        most_images = (images_bound - formats.idx_bytes(3, 0, 0, 1)) // formats.IMAGE_SIDE**2
        table_bytes = formats.idx_bytes(2, most_images, LABEL_COLUMNS, 4)
        table = formats.read_idx_label_table(
            labels_file.data, labels_file.path, LABEL_COLUMNS, len(self.CLASS_NAMES), table_bytes
        )
        formats.check_same_count(images, images_file.path, table, labels_file.path)
        if mnist_labels := self.LABELS_OF.get(labels_file.name):
            mnist_registry = mnist.Mnist.registry()
            check_mnist_labels(table[:, 0], labels_file.path, mnist_labels, mnist_registry, self.TITLE, leading=True)
        extended = {name: table[:, column] for column, name in enumerate(EXTENDED_COLUMNS, start=1)}
        return {"image": images, "label": table[:, 0].astype(np.uint8), **extended}
