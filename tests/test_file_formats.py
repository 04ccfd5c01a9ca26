"""Both builders prepare as ArrayRecord too, and give random access through TFDS's data sources."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_SPLITS, dummy_files, serve_from

from mnist_variants import BinarizedMnist, FashionMnist

CASES = [(FashionMnist, "fashion_mnist"), (BinarizedMnist, "binarized_mnist")]


@pytest.mark.parametrize(("builder_cls", "folder"), CASES, ids=[folder for _, folder in CASES])
def test_array_record_random_access_matches_tfrecord(builder_cls, folder, monkeypatch, tmp_path, file_server):
    files = dummy_files(folder)
    serve_from(monkeypatch, tmp_path, file_server, builder_cls, files, "upstream")
    file_server.serve_files("upstream", files)
    builders = {}
    for file_format in ("tfrecord", "array_record"):  # through the real download path, from the loopback server
        builders[file_format] = builder_cls(data_dir=tmp_path / file_format, file_format=file_format)
        builders[file_format].download_and_prepare()
    assert builders["array_record"].info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert list((tmp_path / "array_record").rglob("*.array_record*"))

    sources = builders["array_record"].as_data_source()
    via_api = tfds.data_source(builder_cls.name, data_dir=tmp_path / "array_record")
    for split, count in DUMMY_SPLITS[folder].items():
        source = sources[split]
        assert len(source) == len(via_api[split]) == count
        sequential = tfds.as_numpy(builders["tfrecord"].as_dataset(split=split, shuffle_files=False, batch_size=-1))
        for index in reversed(range(count)):  # random access, not a stream
            example = source[index]
            assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8
            for feature, values in sequential.items():
                np.testing.assert_array_equal(example[feature], values[index], err_msg=f"{split}[{index}].{feature}")
        batch = source.__getitems__([count - 1, 0])
        np.testing.assert_array_equal(batch[1]["image"], sequential["image"][0])
