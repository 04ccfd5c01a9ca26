"""The examples run end to end on the dummy data through the installed builders, with no network."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_DATA, DUMMY_SPLITS, REPO, decompressed, dummy_files, worker_env, write_files
from PIL import Image

from mnist_variants import BinarizedMnist, FashionMnist, testing

# Runs an example as its own __main__ after registering a test's checksums (tests/workers/registered_dummies.py).
WITH_TEST_REGISTRY = (
    "import registered_dummies, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_example(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    launcher = [sys.executable, "-c", WITH_TEST_REGISTRY] if env else [sys.executable]
    result = subprocess.run(
        [*launcher, str(REPO / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},  # with the only_loopback proxies
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def prepared_data_dir(tmp_path_factory):
    """Both datasets prepared from the dummy files into one data_dir."""
    data_dir = tmp_path_factory.mktemp("data")
    for builder_cls, folder in ((FashionMnist, "fashion_mnist"), (BinarizedMnist, "binarized_mnist")):
        with testing.downloads_from(DUMMY_DATA / folder):
            builder_cls(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_train_fashion_mnist_offline_from_a_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    files = dummy_files("fashion_mnist")
    write_files(manual, decompressed(files))  # as keras and torchvision keep them
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    output = run_example(
        "train_fashion_mnist.py", "--manual_dir", str(manual), "--data_dir", str(tmp_path / "data"), "--epochs", "2",
        "--batch_size", "4", env=env,
    )  # fmt: skip
    epochs = re.findall(r"^epoch (\d+): loss ([\d.]+|nan|inf), accuracy ([\d.]+)$", output, re.MULTILINE)
    assert [int(epoch) for epoch, _, _ in epochs] == [1, 2], output
    for _, loss, accuracy in epochs:
        assert math.isfinite(float(loss)) and 0 <= float(accuracy) <= 1
    (loss, accuracy) = re.search(r"^test: loss (\S+), accuracy (\S+)$", output, re.MULTILINE).groups()
    assert math.isfinite(float(loss)) and 0 <= float(accuracy) <= 1
    prepared = tfds.builder(FashionMnist.name, data_dir=tmp_path / "data")
    assert {split: info.num_examples for split, info in prepared.info.splits.items()} == DUMMY_SPLITS["fashion_mnist"]


def test_binarized_mnist_nll(prepared_data_dir):
    output = run_example(
        "binarized_mnist_nll.py", "--data_dir", str(prepared_data_dir), "--components", "3", "--iterations", "4"
    )
    train = [float(nll) for nll in re.findall(r"^iteration \d+: train NLL ([\d.]+) nats$", output, re.MULTILINE)]
    assert len(train) == 4 and train[-1] <= train[0]  # EM never lowers the likelihood
    (nll, count) = re.search(r"^test NLL: ([\d.]+) nats per image \((\d+) images", output, re.MULTILINE).groups()
    assert math.isfinite(float(nll)) and float(nll) > 0
    assert int(count) == DUMMY_SPLITS["binarized_mnist"]["test"]


@pytest.mark.parametrize("name", [FashionMnist.name, BinarizedMnist.name])
def test_show_writes_a_grid_png(prepared_data_dir, tmp_path, name):
    out = tmp_path / "grid.png"
    run_example("show.py", name, "--data_dir", str(prepared_data_dir), "--out", str(out), "--rows", "2", "--cols", "3")
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG" and image.size == (3 * 300, 2 * 300)  # 3 inches per example at 100 dpi
