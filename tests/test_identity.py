"""Our builders yield exactly what TFDS's built-in builders yield from the same upstream files.

Same decoded pixels, same labels, same split sizes, same order with shuffle_files=False.
On the dummy data by default; `pytest --full-size` repeats it on full-size generated files.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import DUMMY_DATA, DUMMY_SPLITS, register_dummy_checksums, serve_from

from mnist_variants import BinarizedMnist, FashionMnist, Kmnist, Mnist, MnistCorrupted, fetching, formats

# (our builder, TFDS's builder, folder of its dummy data, full-size split counts as upstream)
CASES = [
    (FashionMnist, "fashion_mnist", "fashion_mnist", {"train": 60_000, "test": 10_000}),
    (BinarizedMnist, "binarized_mnist", "binarized_mnist", {"train": 50_000, "validation": 10_000, "test": 10_000}),
    (Mnist, "mnist", "mnist", {"train": 60_000, "test": 10_000}),
    (Kmnist, "kmnist", "kmnist", {"train": 60_000, "test": 10_000}),
]


def _prepare_ours(builder_cls: type, data_dir) -> tfds.core.DatasetBuilder:
    """Through our real download path: the files come from a loopback server (the test points SOURCES at it)."""
    builder = builder_cls(data_dir=data_dir)
    builder.download_and_prepare()
    return builder


def _prepare_theirs(builder_cls: type, data_dir, files_dir, counts: dict[str, int]) -> tfds.core.DatasetBuilder:
    """TFDS's builder on the same files: its public `download` gets the local copies, and `download_and_extract`
    hands them to TFDS's own (public) `extract`, so TFDS's extraction of the gzipped files still runs."""

    def local_files(dl_manager, urls):
        return tfds.core.utils.map_nested(lambda url: files_dir / url.rsplit("/", 1)[-1], urls)

    def local_files_extracted(dl_manager, urls):
        return dl_manager.extract(local_files(dl_manager, urls))

    # TFDS's MNIST-family builders read a hard-coded number of examples (60,000 / 10,000);
    # TFDS's own mnist_test sets these same constants to its dummy data's counts.
    with (
        mock.patch.object(tfds.download.DownloadManager, "download", local_files),
        mock.patch.object(tfds.download.DownloadManager, "download_and_extract", local_files_extracted),
        mock.patch.multiple(
            "tensorflow_datasets.image_classification.mnist",
            _TRAIN_EXAMPLES=counts["train"],
            _TEST_EXAMPLES=counts["test"],
        ),
    ):
        builder = builder_cls(data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def _examples(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
    dataset = builder.as_dataset(split=split, shuffle_files=False, batch_size=-1)
    return tfds.as_numpy(dataset)


@pytest.mark.parametrize(("ours", "theirs_name", "folder", "full_counts"), CASES, ids=[c[1] for c in CASES])
def test_same_examples_as_tfds_builtin(
    ours, theirs_name, folder, full_counts, request, monkeypatch, tmp_path, file_server
):
    if request.config.getoption("--full-size"):
        files_dir, counts = tmp_path / "files", full_counts
        testing.write_upstream_files(ours, files_dir, counts, seed=7)
    else:
        files_dir, counts = DUMMY_DATA / folder, DUMMY_SPLITS[folder]
    files = {path.name: path.read_bytes() for path in files_dir.iterdir()}

    theirs_cls = tfds.builder_cls(theirs_name)
    assert theirs_cls.__module__.startswith("tensorflow_datasets."), theirs_cls
    serve_from(monkeypatch, tmp_path, file_server, ours, files, "upstream")
    file_server.serve_files("upstream", files)
    mine = _prepare_ours(ours, tmp_path / "ours")
    assert dict(file_server.sent) == {f"/upstream/{name}": len(data) for name, data in files.items()}
    builtin = _prepare_theirs(theirs_cls, tmp_path / "theirs", files_dir, counts)

    assert mine.info.features.keys() == builtin.info.features.keys()
    assert set(mine.info.splits) == set(builtin.info.splits) == set(counts)
    for split, count in counts.items():
        assert mine.info.splits[split].num_examples == builtin.info.splits[split].num_examples == count
        ours_examples, theirs_examples = _examples(mine, split), _examples(builtin, split)
        for feature in builtin.info.features:
            assert ours_examples[feature].dtype == theirs_examples[feature].dtype, feature
            np.testing.assert_array_equal(
                ours_examples[feature], theirs_examples[feature], err_msg=f"{split}/{feature}"
            )
        assert len(ours_examples["image"]) == count


# MNIST-C: 16 configs of 70,000 examples. Preparing each twice (ours, TFDS's) at full size would take far longer
# than CI allows, so every config's examples are compared in memory: the arrays our builder hands to its example
# generation (through its own fetching and parsing) against what TFDS's own example generation yields from the
# extracted members, key for key. The PNG round trip and the order of writing are the same code for every
# config: one config (`fog`) is also prepared whole by both builders and read back in order. On the dummy
# archive, test_mnist_corrupted.py prepares both builders for every config.
MNIST_C_FULL_SIZE = {"train": 60_000, "test": 10_000}
MNIST_C_PREPARED_WHOLE = "fog"


def _mnist_c_ours_in_memory(config: str, manual_dir, tmp_path) -> dict[str, dict[str, np.ndarray]]:
    """Each split's arrays as our builder hands them to its example generation: the manual dir's archive
    verified and its members read by our fetching, parsed by the builder."""
    builder = MnistCorrupted(config=config, data_dir=tmp_path / "data")
    dl_manager = tfds.download.DownloadManager(
        download_dir=tmp_path / "downloads",
        manual_dir=manual_dir,
        manual_dir_instructions=builder.MANUAL_DOWNLOAD_INSTRUCTIONS,
    )
    return {split: builder._read_split(files) for split, files in fetching.Fetch(builder.wanted(), dl_manager).splits()}


def _mnist_c_tfds_generated(config: str, extracted, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The keys and examples TFDS's mnist_corrupted generates from the extracted members, in its order.

    Its `_generate_examples` is private to TFDS; calling it is what keeps a full-size comparison of 16
    configs inside CI's time (its public path encodes 1.1 million PNGs through TensorFlow)."""
    theirs = tfds.builder_cls("mnist_corrupted")
    assert theirs.__module__.startswith("tensorflow_datasets."), theirs
    builder = theirs(config=config, data_dir=extracted / "unused")
    keys, images, labels = [], [], []
    for key, example in builder._generate_examples(data_dir=str(extracted / "mnist_c"), is_train=split == "train"):
        keys.append(key)
        images.append(example["image"])
        labels.append(example["label"])
    return np.array(keys), {"image": np.stack(images), "label": np.array(labels)}


def _mnist_c_tfds_prepared(config: str, extracted, data_dir) -> tfds.core.DatasetBuilder:
    """TFDS's mnist_corrupted prepared through its public path; its `download_and_extract` of the archive
    gets the folder this config's members were extracted to (as TFDS's own extraction lays them out)."""
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", lambda _, url: extracted):
        builder = tfds.builder_cls("mnist_corrupted")(config=config, data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def _mnist_c_archive(request, tmp_path) -> tuple[Path, dict[str, bytes], dict[str, int]]:
    """The archive (full-size generated with --full-size, else the dummy), MNIST's files whose labels it holds,
    and its split counts."""
    if not request.config.getoption("--full-size"):
        files = {path.name: path.read_bytes() for path in (DUMMY_DATA / "mnist").iterdir()}
        return DUMMY_DATA / "mnist_corrupted" / "mnist_c.zip", files, DUMMY_SPLITS["mnist_corrupted"]
    counts = MNIST_C_FULL_SIZE
    images = {split: testing.synthetic_images(count, seed=31 + i) for i, (split, count) in enumerate(counts.items())}
    labels = {split: testing.synthetic_labels(count, seed=41 + i) for i, (split, count) in enumerate(counts.items())}
    path = tmp_path / "archive" / "mnist_c.zip"
    path.parent.mkdir()
    with path.open("wb") as target:
        testing.write_mnist_c_archive(MnistCorrupted, target, images, labels, compresslevel=1)
    mnist_files = {
        files["labels"]: testing.gzip_bytes(formats.encode_idx(labels[split]))
        for split, files in Mnist.SPLIT_FILES.items()
    }
    return path, mnist_files, counts


def test_mnist_corrupted_every_config_yields_what_tfds_generates(request, monkeypatch, tmp_path):
    """MNIST-C, every config: the same keys and examples as TFDS's mnist_corrupted generates from the same archive
    (in memory, see above); `fog` prepared whole by both reads back as the same examples in the same order."""
    archive, mnist_files, counts = _mnist_c_archive(request, tmp_path)
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "mnist_c.zip").symlink_to(archive)
    register_dummy_checksums(monkeypatch, tmp_path, MnistCorrupted, {"mnist_c.zip": archive.read_bytes()})
    register_dummy_checksums(monkeypatch, tmp_path, Mnist, mnist_files)
    monkeypatch.setattr(MnistCorrupted, "SOURCES", ("http://127.0.0.1:9/unreachable/",))
    for config in [config.name for config in MnistCorrupted.BUILDER_CONFIGS]:
        extracted = tmp_path / "extracted" / config
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(extracted, [name for name in opened.namelist() if name.startswith(f"mnist_c/{config}/")])
        ours = _mnist_c_ours_in_memory(config, manual, tmp_path)
        for split, count in counts.items():
            keys, theirs = _mnist_c_tfds_generated(config, extracted, split)
            np.testing.assert_array_equal(keys, np.arange(count))  # ours are enumerate's: the same keys, so order
            assert len(ours[split]["image"]) == len(ours[split]["label"]) == count
            np.testing.assert_array_equal(ours[split]["image"], theirs["image"], err_msg=f"{config}/{split}/image")
            np.testing.assert_array_equal(ours[split]["label"], theirs["label"], err_msg=f"{config}/{split}/label")
        if config == MNIST_C_PREPARED_WHOLE:
            builder = MnistCorrupted(config=config, data_dir=tmp_path / "prepared")
            builder.download_and_prepare(
                download_dir=tmp_path / "downloads", download_config=tfds.download.DownloadConfig(manual_dir=manual)
            )
            builtin = _mnist_c_tfds_prepared(config, extracted, tmp_path / "theirs")
            for split, count in counts.items():  # read back in order: the order TFDS's keys give both
                assert builder.info.splits[split].num_examples == builtin.info.splits[split].num_examples == count
                ours_examples, theirs_examples = _examples(builder, split), _examples(builtin, split)
                for feature in builtin.info.features:
                    np.testing.assert_array_equal(
                        ours_examples[feature], theirs_examples[feature], err_msg=f"{config}/{split}/{feature}"
                    )
        shutil.rmtree(extracted)
