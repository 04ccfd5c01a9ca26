"""Writes the dummy data: a few made-up examples per split, in the exact upstream formats.

Run from anywhere: `python dummy_data/generate.py`. Deterministic, so the committed
files only change when this script does. Each dataset is one declaration in DATASETS, or in
ARCHIVES where upstream ships its files as members of one archive (EMNIST's gzip.zip: every
config's four files and its label-to-character mapping, under `gzip/`). MNIST-C's mnist_c.zip holds
MNIST's dummy images (shifted a pixel further right, and darkened, in each config after `identity`) and
MNIST's dummy labels, which its builder checks against MNIST's registered ones. QMNIST's train split is
MNIST's dummy train split, its test split MNIST's dummy test split then three "lost" digits, and its nist
split all of them, with extended labels (`qmnist_files`); train and test writers are disjoint, as upstream's.

The data carries something to learn, so the examples' tests can tell a model that learned from
one that did not: in a labelled dataset each image has its label drawn in (a white square in
one of ten cells of a 4x4 grid, one cell per class, over the article dimmed to a quarter), and
every class of a test split is in the train split; Binarized MNIST's images are Bernoulli samples of shapes on
black, which a mixture of Bernoullis models far better than coin flips (543 nats per image).
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnist_variants import BinarizedMnist, Emnist, FashionMnist, Kmnist, Mnist, MnistCorrupted, formats
from mnist_variants.builder import MnistVariantBuilder

# The made-up files (tests/testing.py) are not in the installed package: the repository's tests/ goes on the path.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
import testing

HERE = Path(__file__).resolve().parent
CELL, MARK = 7, 5  # a label's square: MARK pixels a side, in a cell of CELL


@dataclasses.dataclass(frozen=True)
class Dummy:
    """One dataset's dummy files: its builder (which names the files), items per split, a seed."""

    builder_cls: type[MnistVariantBuilder]
    counts: Mapping[str, int]  # the tests state these same counts as the split sizes they expect (conftest)
    seed: int
    num_classes: int = 10


DATASETS = {
    "fashion_mnist": Dummy(FashionMnist, {"train": 12, "test": 5}, seed=13),
    "binarized_mnist": Dummy(BinarizedMnist, {"train": 10, "validation": 4, "test": 4}, seed=15),
    "mnist": Dummy(Mnist, {"train": 12, "test": 5}, seed=17),
    "kmnist": Dummy(Kmnist, {"train": 12, "test": 5}, seed=19),
}


@dataclasses.dataclass(frozen=True)
class DummyArchive:
    """One archive's dummy members: its builder (which names the archive, configs and files), items per split."""

    builder_cls: type[MnistVariantBuilder]
    counts: Mapping[str, int]  # the same for every config; conftest states them too
    seed: int


ARCHIVES = {
    "emnist": DummyArchive(Emnist, {"train": 16, "test": 6}, seed=23),
}


def mark_place(label: int) -> tuple[int, int]:
    """Top-left corner of the square for `label`: cells of a 4x4 grid of 7-pixel cells, row by row (mod 16)."""
    label %= 16
    return 1 + CELL * (label // 4), 1 + CELL * (label % 4)


def draw_labels(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The images, dimmed to a quarter, with each one's label drawn in as a white square at its class's place."""
    images = images // 4
    for image, label in zip(images, labels, strict=True):
        row, col = mark_place(int(label))
        image[row : row + MARK, col : col + MARK] = 255
    return images


def labels_for(count: int, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`count` labels: each of `classes` once (while there is room), then drawn from them, in random order."""
    labels = np.concatenate([classes[:count], rng.choice(classes, max(0, count - len(classes)))])
    return rng.permutation(labels).astype(np.uint8)


def split_files(dummy: Dummy) -> dict[str, bytes]:
    """Every upstream file of `dummy`'s builder, by name."""
    classes = np.arange(dummy.num_classes)
    return labelled_files(dummy.builder_cls.SPLIT_FILES, dummy.counts, dummy.seed, classes)


def labelled_files(
    splits: Mapping[str, Mapping[str, str]], counts: Mapping[str, int], seed: int, classes: np.ndarray
) -> dict[str, bytes]:
    """The files of `splits` (split -> role -> name), with labels among `classes` drawn into the images."""
    files = {}
    # the first split (train) has all classes (while there is room); the others only what it has
    for index, (split, roles) in enumerate(splits.items()):
        count, split_seed = counts[split], seed * 100 + index
        if "labels" not in roles:  # unlabelled: the shapes themselves are what a model learns
            for role, name in roles.items():
                files[name] = testing.upstream_file_bytes(name, role, count, split_seed)
            continue
        rng = np.random.default_rng(split_seed)
        labels = labels_for(count, classes if index == 0 else rng.permutation(classes), rng)
        classes = np.unique(labels) if index == 0 else classes
        images = draw_labels(testing.synthetic_images(count, split_seed), labels)
        for role, name in roles.items():
            raw = testing.encode_idx(labels if role == "labels" else images[..., 0])
            files[name] = testing.gzip_bytes(raw) if name.endswith(".gz") else raw
    return files


def archive_bytes(dummy: DummyArchive) -> bytes:
    """The archive of `dummy`'s builder: each config's files and its mapping, as members under the archive's folder."""
    members = []
    for index, config in enumerate(dummy.builder_cls.BUILDER_CONFIGS):
        names = config.class_names
        classes = np.array([label for label, name in enumerate(names) if name != formats.UNUSED_CLASS])
        files = labelled_files(config.split_files, dummy.counts, dummy.seed * 10 + index, classes)
        members += [*files.items(), (config.class_codes, testing.class_codes(names))]
    buffer = io.BytesIO()
    testing.write_zip(buffer, members, dummy.builder_cls.ARCHIVE.folder)
    return buffer.getvalue()


def mnist_c_archive_bytes() -> bytes:
    """MNIST-C's mnist_c.zip: every config's `.npy` members, made of MNIST's dummy images and labels."""
    buffer = io.BytesIO()
    testing.write_mnist_c_of_mnist(MnistCorrupted, split_files(DATASETS["mnist"]), buffer)
    return buffer.getvalue()


QMNIST_LOST = 3  # test digits after MNIST's dummy test ones: conftest's DUMMY_SPLITS["qmnist"] counts them


def qmnist_files() -> dict[str, bytes]:
    """QMNIST's six files: gzip for train and test, xz for nist, IDX images and IDX int32 label tables (8 columns).

    Train and the first test digits are MNIST's dummy examples (QMNIST's builder checks those labels against
    MNIST's); nist holds every train and test digit, as upstream's holds every NIST digit.
    """
    mnist_files = split_files(DATASETS["mnist"])
    splits = {}
    for split, files in Mnist.SPLIT_FILES.items():
        images = formats.read_idx_images(mnist_files[files["images"]])[..., 0]
        splits[split] = (images, formats.read_idx_labels(mnist_files[files["labels"]]))
    rng = np.random.default_rng(29)
    lost_labels = labels_for(QMNIST_LOST, np.arange(10), rng)
    lost_images = draw_labels(testing.synthetic_images(QMNIST_LOST, 2900), lost_labels)[..., 0]
    test_images, test_labels = splits["test"]
    splits["test"] = (np.concatenate([test_images, lost_images]), np.concatenate([test_labels, lost_labels]))
    # Writers: train's 0-3, test's 4-6: disjoint, as upstream's are (539 train writers, 535 test, none shared).
    writer_ranges = {"train": (0, 4), "test": (4, 7)}
    tables, nist_index = {}, 0
    for split, (_, labels) in splits.items():
        tables[split] = testing.qmnist_table(labels, writer_ranges[split], nist_index, rng)
        nist_index += len(labels)
    nist_table = np.concatenate([tables["train"], tables["test"]])
    nist_table[-1, 6] = nist_table[1, 5]  # one duplicate (of the digit at NIST index 1), as upstream has three
    tables["nist"] = nist_table
    images = {split: split_images for split, (split_images, _) in splits.items()}
    images["nist"] = np.concatenate([images["train"], images["test"]])
    return testing.qmnist_file_bytes(images, tables)


def main() -> None:
    for folder, dummy in DATASETS.items():
        (HERE / folder).mkdir(exist_ok=True)
        for name, data in split_files(dummy).items():
            (HERE / folder / name).write_bytes(data)
            print(f"{folder}/{name}: {len(data)} bytes")
    for folder, dummy in ARCHIVES.items():
        (HERE / folder).mkdir(exist_ok=True)
        data = archive_bytes(dummy)
        (HERE / folder / dummy.builder_cls.ARCHIVE.filename).write_bytes(data)
        print(f"{folder}/{dummy.builder_cls.ARCHIVE.filename}: {len(data)} bytes")
    (HERE / "mnist_corrupted").mkdir(exist_ok=True)
    data = mnist_c_archive_bytes()
    (HERE / "mnist_corrupted" / MnistCorrupted.ARCHIVE.filename).write_bytes(data)
    print(f"mnist_corrupted/{MnistCorrupted.ARCHIVE.filename}: {len(data)} bytes")
    (HERE / "qmnist").mkdir(exist_ok=True)
    for name, data in qmnist_files().items():
        (HERE / "qmnist" / name).write_bytes(data)
        print(f"qmnist/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
