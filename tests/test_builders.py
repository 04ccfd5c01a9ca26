"""Both builders through TFDS's own test harness, plus their registration and metadata."""

from __future__ import annotations

import contextlib
import io
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import DUMMY_SPLITS, dummy_files, write_files, write_registry
from etils import epath

import mnist_variants
from mnist_variants import formats, png_codec, png_encoder
from mnist_variants.builder import ImageFeed


class ThroughTheManualDir(tfds.testing.DatasetBuilderTestCase):
    """TFDS's harness, with the dummy files in the manual dir it passes (EXAMPLE_DIR) and registered as upstream's.

    The harness mocks DownloadManager's `download`, `manual_dir` and `download_dir` (both EXAMPLE_DIR);
    our builders find every file in `<manual dir>/<registered name>/`, verify it by its registered
    sha256 and download nothing, which the test checks. EXAMPLE_DIR is a temporary copy, so
    nothing is written into dummy_data/.
    """

    FOLDER: str  # the dataset's folder in dummy_data/

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._folder = tempfile.TemporaryDirectory(prefix="example_dir-")
        root = Path(cls._folder.name)
        files = dummy_files(cls.FOLDER)
        write_files(root / "manual" / cls.DATASET_CLASS.name, files)
        cls.EXAMPLE_DIR = str(root / "manual")
        tsv = write_registry(root / "registry", cls.DATASET_CLASS, files, cls.DATASET_CLASS.SOURCES[0])
        cls._registered = mock.patch.object(cls.DATASET_CLASS, "_checksums_path", epath.Path(tsv))
        cls._registered.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls._registered.stop()
        cls._folder.cleanup()
        super().tearDownClass()

    def _download_and_prepare_as_dataset(self, builder) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            super()._download_and_prepare_as_dataset(builder)
        for name in builder.upstream_filenames():
            path = Path(self.EXAMPLE_DIR) / builder.name / name
            self.assertIn(f"Using local copy of {name}: {path} (verified: the upstream file)", out.getvalue())
        self.assertEmpty(self._download_urls, "the builder asked TFDS to download instead of using the manual dir")


class FashionMnistTest(ThroughTheManualDir):
    DATASET_CLASS = mnist_variants.FashionMnist
    FOLDER = "fashion_mnist"
    SPLITS = DUMMY_SPLITS["fashion_mnist"]


class BinarizedMnistTest(ThroughTheManualDir):
    DATASET_CLASS = mnist_variants.BinarizedMnist
    FOLDER = "binarized_mnist"
    SPLITS = DUMMY_SPLITS["binarized_mnist"]


class MnistTest(ThroughTheManualDir):
    DATASET_CLASS = mnist_variants.Mnist
    FOLDER = "mnist"
    SPLITS = DUMMY_SPLITS["mnist"]


class KmnistTest(ThroughTheManualDir):
    DATASET_CLASS = mnist_variants.Kmnist
    FOLDER = "kmnist"
    SPLITS = DUMMY_SPLITS["kmnist"]


del ThroughTheManualDir  # a base, not a test of its own


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


def test_the_image_feed_fails_every_split_at_its_next_image_when_a_body_is_found_damaged():
    """A body found damaged while TFDS writes (the feed's thread inflates ahead) fails the split being written at
    its next list of PNGs, even one already encoded, and every split not yet written."""
    train, test = testing.synthetic_images(6, seed=2), testing.synthetic_images(3, seed=3)
    go_on = threading.Event()

    def damaged_body():
        yield from (train[:2], train[2:4])
        go_on.wait(60)
        raise mnist_variants.MalformedFileError("train-images: corrupt gzip stream")

    feed = ImageFeed(png_encoder.PngEncoder())
    feed.add("train", formats.ImageBatches(6, damaged_body()))
    feed.add("test", test)
    feed.no_more_splits()
    train_pngs = feed.png_batches("train")
    assert next(train_pngs) == png_codec.encode_batch(train[:2, ..., 0])
    go_on.set()
    with pytest.raises(mnist_variants.MalformedFileError, match="corrupt gzip stream"):
        list(feed.png_batches("test"))
    with pytest.raises(mnist_variants.MalformedFileError, match="corrupt gzip stream"):
        next(train_pngs)  # the second batch's PNGs were submitted before the damage was found, yet are not handed on


def test_a_split_given_up_stops_the_image_feed_and_ends_the_helper():
    encoder = png_encoder.PngEncoder()
    assert encoder._helper is not None  # the helper process started
    feed = ImageFeed(encoder)
    endless = (testing.synthetic_images(2, seed=seed) for seed in itertools.count())
    feed.add("train", formats.ImageBatches(10**9, endless))
    feed.no_more_splits()
    train_pngs = feed.png_batches("train")
    next(train_pngs)
    train_pngs.close()  # as when TFDS's writer fails
    assert encoder._helper.wait(60) == 0  # the feed stopped and closed the encoder: the helper ended


def test_a_split_that_comes_short_is_an_error():
    feed = ImageFeed(png_encoder.PngEncoder())
    feed.add("train", formats.ImageBatches(5, iter([testing.synthetic_images(3, seed=1)])))
    feed.no_more_splits()
    with pytest.raises(png_encoder.EncoderError, match="train: the images stopped after 3 of 5"):
        list(feed.png_batches("train"))


def test_a_split_added_after_the_feed_failed_fails_at_once():
    """A split that arrives (downloaded) after another's body was found damaged is not left waiting for ever."""

    def damaged_body():
        raise mnist_variants.MalformedFileError("t10k: trailing garbage")
        yield

    feed = ImageFeed(png_encoder.PngEncoder())
    feed.add("test", formats.ImageBatches(3, damaged_body()))
    deadline = time.monotonic() + 30
    while feed.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    feed.add("train", testing.synthetic_images(4, seed=1))
    feed.no_more_splits()
    outcome: list[BaseException] = []
    consumer = threading.Thread(target=lambda: outcome.extend(raised(feed.png_batches("train"))), daemon=True)
    consumer.start()
    consumer.join(30)
    assert not consumer.is_alive(), "the train split's consumer is left waiting"
    assert [str(error) for error in outcome] == ["t10k: trailing garbage"]
    with pytest.raises(mnist_variants.MalformedFileError, match="trailing garbage"):
        feed.raise_failure()


def raised(iterator) -> list[BaseException]:
    """What consuming `iterator` raised: [] if it ended."""
    try:
        list(iterator)
    except BaseException as error:  # noqa: BLE001 - the test looks at it
        return [error]
    return []
