"""Both builders through TFDS's own test harness, plus their registration and metadata."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_DATA, DUMMY_SPLITS

import mnist_variants


def dummy_downloads(builder_cls, folder: str) -> dict[str, str]:
    """What the harness's mocked `download` returns: each upstream file's dummy, by file name.

    The harness also points the manual dir at EXAMPLE_DIR; the dummy files sit in folders
    not named after the datasets, so the builders do not find them there (their sha256
    are not upstream's) and go through the download path, which the harness checks.
    """
    return {name: f"{folder}/{name}" for name in builder_cls.upstream_filenames()}


class FashionMnistTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = mnist_variants.FashionMnist
    EXAMPLE_DIR = DUMMY_DATA
    SPLITS = DUMMY_SPLITS["fashion_mnist"]
    DL_DOWNLOAD_RESULT = dummy_downloads(DATASET_CLASS, "fashion_mnist")


class BinarizedMnistTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = mnist_variants.BinarizedMnist
    EXAMPLE_DIR = DUMMY_DATA
    SPLITS = DUMMY_SPLITS["binarized_mnist"]
    DL_DOWNLOAD_RESULT = dummy_downloads(DATASET_CLASS, "binarized_mnist")


def test_importing_registers_both_names():
    assert tfds.builder_cls("mnist_variants_fashion_mnist") is mnist_variants.FashionMnist
    assert tfds.builder_cls("mnist_variants_binarized_mnist") is mnist_variants.BinarizedMnist
    assert {"mnist_variants_fashion_mnist", "mnist_variants_binarized_mnist"} <= set(
        tfds.list_builders(with_community_datasets=False)
    )


def test_fashion_mnist_schema_and_metadata(tmp_path):
    info = tfds.builder("mnist_variants_fashion_mnist", data_dir=tmp_path).info
    assert str(info.version) == "1.0.0" and "1.0.0" in mnist_variants.FashionMnist.RELEASE_NOTES
    assert info.features["image"].shape == (28, 28, 1) and info.features["image"].np_dtype == np.uint8
    assert info.features["label"].names == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    ]  # fmt: skip
    assert set(info.features) == {"image", "label"}
    assert info.supervised_keys == ("image", "label")
    assert "Zalando" in info.description and info.homepage == "https://github.com/zalandoresearch/fashion-mnist"
    assert "1708.07747" in info.citation and info.citation.lstrip().startswith("@article{")
    assert info.redistribution_info.license == "MIT"


def test_binarized_mnist_schema_and_metadata(tmp_path):
    info = tfds.builder("mnist_variants_binarized_mnist", data_dir=tmp_path).info
    assert str(info.version) == "1.0.0" and "1.0.0" in mnist_variants.BinarizedMnist.RELEASE_NOTES
    assert set(info.features) == {"image"}
    assert info.features["image"].shape == (28, 28, 1) and info.features["image"].np_dtype == np.uint8
    assert info.supervised_keys is None
    assert "Salakhutdinov" in info.description and info.homepage
    assert "@inproceedings{salakhutdinov2008quantitative," in info.citation


def test_registered_checksums_are_tfds_own(tmp_path):
    """Our checksums/ agrees, file for file, with the sha256 and sizes in TFDS's registry."""
    for ours, theirs in (
        ("mnist_variants_fashion_mnist", "fashion_mnist"),
        ("mnist_variants_binarized_mnist", "binarized_mnist"),
    ):
        tfds_registry = {
            info.filename: (info.checksum, info.size) for info in tfds.builder_cls(theirs).url_infos.values()
        }
        ours_registry = {
            info.filename: (info.checksum, info.size) for info in tfds.builder_cls(ours).url_infos.values()
        }
        assert ours_registry == tfds_registry and len(ours_registry) in (3, 4)


COEXISTENCE_SCRIPT = """
import tensorflow_datasets as tfds
# TFDS's own builders look up metadata in its GCS bucket when made (before TFDS 4.9.5), which retries
# for minutes through the tests' refusing proxy; TFDS 4.9.5+ has this switch off by default.
tfds.core.utils.gcs_utils._is_gcs_disabled = True
{first}
{second}
for name in ("mnist", "fashion_mnist", "binarized_mnist"):
    module = type(tfds.builder(name)).__module__
    assert module.startswith("tensorflow_datasets."), (name, module)
for name in ("mnist_variants_fashion_mnist", "mnist_variants_binarized_mnist"):
    assert type(tfds.builder(name)).__module__.startswith("mnist_variants."), name
print("ok")
"""


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours_first", "tfds_first"])
def test_coexists_with_tfds_builtins(ours_first, tmp_path):
    """In a fresh interpreter, either import order: TFDS's own builders still answer to their names."""
    ours, theirs = (
        "import mnist_variants",
        "tfds.builder_cls('fashion_mnist'); tfds.list_builders(with_community_datasets=False)",
    )
    script = COEXISTENCE_SCRIPT.format(first=ours if ours_first else theirs, second=theirs if ours_first else ours)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_import_logs_no_warning(tmp_path):
    script = """
import logging, warnings
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.DEBUG)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import mnist_variants
    mnist_variants.FashionMnist.url_infos
problems = [r.getMessage() for r in records if r.levelno >= logging.WARNING] + [str(w.message) for w in caught]
print(problems)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    assert "deprecat" not in result.stderr.lower()
