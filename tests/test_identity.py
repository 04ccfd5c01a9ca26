"""Our builders yield exactly what TFDS's built-in builders yield from the same upstream files.

Same decoded pixels, same labels, same split sizes, same order with shuffle_files=False.
On the dummy data by default; `pytest --full-size` repeats it on full-size generated files.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_DATA, DUMMY_SPLITS, serve_from

from mnist_variants import BinarizedMnist, FashionMnist, Kmnist, Mnist, testing

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
