"""Our builders yield exactly what TFDS's built-in builders yield from the same upstream files.

Same decoded pixels, same labels, same split sizes, same order with shuffle_files=False.
On the dummy data by default; `pytest --full-size` repeats it on full-size generated files.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_DATA, DUMMY_SPLITS

from mnist_variants import BinarizedMnist, FashionMnist, testing

# (our builder, TFDS's builder, folder of its dummy data, full-size split counts as upstream)
CASES = [
    (FashionMnist, "fashion_mnist", "fashion_mnist", {"train": 60_000, "test": 10_000}),
    (BinarizedMnist, "binarized_mnist", "binarized_mnist", {"train": 50_000, "validation": 10_000, "test": 10_000}),
]


def _prepare(builder_cls: type, data_dir, files_dir, counts: dict[str, int]) -> tfds.core.DatasetBuilder:
    # TFDS's MNIST-family builders read a hard-coded number of examples (60,000 / 10,000);
    # TFDS's own mnist_test sets these same constants to its dummy data's counts.
    with (
        testing.downloads_from(files_dir),
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
def test_same_examples_as_tfds_builtin(ours, theirs_name, folder, full_counts, request, tmp_path):
    if request.config.getoption("--full-size"):
        files_dir, counts = tmp_path / "files", full_counts
        testing.write_upstream_files(ours, files_dir, counts, seed=7)
    else:
        files_dir, counts = DUMMY_DATA / folder, DUMMY_SPLITS[folder]

    theirs_cls = tfds.builder_cls(theirs_name)
    assert theirs_cls.__module__.startswith("tensorflow_datasets."), theirs_cls
    mine = _prepare(ours, tmp_path / "ours", files_dir, counts)
    builtin = _prepare(theirs_cls, tmp_path / "theirs", files_dir, counts)

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
