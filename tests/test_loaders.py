"""PyTorch's DataLoader and Grain over our data: every example arrives, equal to upstream's, with worker processes.

The loaders run in child processes with time limits (`run_loader`), each of which has read an
ArrayRecord file before its workers start, the situation in which forked DataLoader workers over
`tfds.data_source` crash (mnist_variants/data_sources.py says why). Tests that need torch or grain
are skipped, with the reason, when those are not installed (`pip install '.[loaders]'`).
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import REPO, register_dummy_checksums, worker_env
from PIL import Image

from mnist_variants import BinarizedMnist, FashionMnist, data_sources, formats, png, testing

COUNTS = {"train": 150, "test": 30}
BATCH = 8


def needs(*modules: str) -> pytest.MarkDecorator:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} (pip install '.[loaders]')")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Generated Fashion-MNIST files (a manual dir), their checksums' registry, the upstream arrays, and the
    dataset prepared from them as ArrayRecord and as TFRecord (in this process)."""
    tmp = tmp_path_factory.mktemp("loaders")
    paths = testing.write_upstream_files(FashionMnist, tmp / "manual", COUNTS, seed=17)
    files = {name: path.read_bytes() for name, path in paths.items()}
    upstream = {}
    for split, names in FashionMnist.SPLIT_FILES.items():
        images = formats.read_idx_images(formats.gunzip(files[names["images"]]))
        labels = formats.read_idx_labels(formats.gunzip(files[names["labels"]]))
        upstream[str(split)] = (images.reshape(-1, 28, 28, 1), labels.astype(np.int64))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("KERAS_HOME", str(tmp / "keras_home"))  # nothing but the manual dir
        register_dummy_checksums(monkeypatch, tmp, FashionMnist, files)
        for file_format in ("array_record", "tfrecord"):
            FashionMnist(data_dir=tmp / file_format, file_format=file_format).download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=tmp / "manual")
            )
    env = worker_env(tmp, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    return {"tmp": tmp, "upstream": upstream, "data_dir": tmp / "array_record", "env": env}


def assert_same_examples(images: np.ndarray, labels: np.ndarray, upstream: tuple[np.ndarray, np.ndarray]) -> None:
    """The same examples as upstream's, each once, in any order (the loaders shuffle)."""
    assert images.dtype == np.uint8 and images.shape == upstream[0].shape
    assert labels.dtype == np.int64 and labels.shape == upstream[1].shape

    def keyed(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
        return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels, strict=True))

    assert keyed(images, labels) == keyed(*upstream)


# ---------------------------------------------------------------- data_sources.open, no loader


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_open_holds_every_example(fashion, file_format):
    """Each example once, in TFDS's order (which test_open_equals_tfds_data_source_example_by_example checks)."""
    for split, (images, labels) in fashion["upstream"].items():
        source = data_sources.open(FashionMnist.name, split, data_dir=fashion["tmp"] / file_format)
        assert len(source) == len(labels)
        assert_same_examples(source.arrays["image"], source.arrays["label"], (images, labels))
        example = source[-1]
        assert example["image"].shape == (28, 28, 1) and example["label"] == source.arrays["label"][-1]
        with pytest.raises(IndexError):
            source[len(labels)]


def test_open_equals_tfds_data_source_example_by_example(fashion):
    ours = data_sources.open(FashionMnist.name, "test", data_dir=fashion["data_dir"])
    theirs = tfds.data_source(FashionMnist.name, split="test", data_dir=fashion["data_dir"])
    assert len(ours) == len(theirs)
    for index in range(len(theirs)):
        np.testing.assert_array_equal(ours[index]["image"], theirs[index]["image"])
        assert ours[index]["label"] == theirs[index]["label"]


def test_open_prepares_from_a_manual_dir_and_reads_binarized_mnist(tmp_path, monkeypatch):
    counts = {"train": 6, "validation": 3, "test": 4}
    paths = testing.write_upstream_files(BinarizedMnist, tmp_path / "manual", counts, seed=5)
    register_dummy_checksums(monkeypatch, tmp_path, BinarizedMnist, {n: p.read_bytes() for n, p in paths.items()})
    source = data_sources.open(
        BinarizedMnist.name,
        "validation",
        data_dir=tmp_path / "data",
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=tmp_path / "manual")},
    )
    expected = formats.read_amat(paths["binarized_mnist_valid.amat"].read_bytes())
    assert set(source.arrays) == {"image"}
    assert sorted(image.tobytes() for image in source.arrays["image"]) == sorted(
        image.tobytes() for image in expected.reshape(-1, 28, 28, 1)
    )
    assert tfds.builder(BinarizedMnist.name, data_dir=tmp_path / "data").info.file_format.value == "array_record"


def test_decode_pngs_without_pil_or_opencv_and_with_them():
    images = testing.synthetic_images(20, seed=3)
    ours = [png.encode_png(image) for image in images]
    # PIL writes filtered rows (optimize picks filters): those go to a full decoder.
    filtered = []
    for image in images[:5]:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG", optimize=True)
        filtered.append(buffer.getvalue())
    np.testing.assert_array_equal(data_sources.decode_pngs(ours), images)
    np.testing.assert_array_equal(
        data_sources.decode_pngs(ours[:3] + filtered + ours[3:5]), images[[0, 1, 2, 0, 1, 2, 3, 4, 3, 4]]
    )
    np.testing.assert_array_equal(data_sources.decode_pngs(filtered), images[:5])
    with pytest.raises(ValueError, match="cannot decode"):
        data_sources.decode_pngs([ours[0][:-30] + bytes(30)])


# ---------------------------------------------------------------- loaders, in child processes

# argv: mode, data dir, output .npz. Reads one example through tfds.data_source first, as TFDS's docs and
# our README do: after that, forked DataLoader workers over tfds.data_source crash.
LOADER_RUN = r"""
import sys, warnings
import numpy as np
import tensorflow_datasets as tfds
from mnist_variants import data_sources

mode, data_dir, out = sys.argv[1:]
name = "mnist_variants_fashion_mnist"
tfds_source = tfds.data_source(name, split="train", data_dir=data_dir)
tfds_source[0]
source = data_sources.open(name, "train", data_dir=data_dir) if mode.endswith("ours") else tfds_source
batches = []
if mode.startswith("torch"):
    import torch
    context = "spawn" if mode == "torch-spawn-tfds" else "fork"
    loader = torch.utils.data.DataLoader(
        source, batch_size=BATCH, shuffle=True, num_workers=2, multiprocessing_context=context, timeout=120
    )
    try:
        batches = [{key: value.numpy() for key, value in batch.items()} for batch in loader]
    except RuntimeError as error:
        print("LOADER FAILED:", error)
else:
    import grain
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    pipeline = grain.MapDataset.source(source).shuffle(seed=1).batch(BATCH).to_iter_dataset()
    iterator = iter(pipeline.mp_prefetch(grain.MultiprocessingOptions(num_workers=2)))
    batches = [{key: np.array(value) for key, value in batch.items()} for batch in iterator]
    iterator.close()
np.savez(
    out,
    images=np.concatenate([b["image"] for b in batches]) if batches else np.zeros(0),
    labels=np.concatenate([b["label"] for b in batches]) if batches else np.zeros(0),
    sizes=np.array([len(b["label"]) for b in batches]),
)
""".replace("BATCH", str(BATCH))


def run_loader(fashion: dict, mode: str, timeout: float = 300) -> tuple[dict[str, np.ndarray], str]:
    out = fashion["tmp"] / f"{mode}.npz"
    result = subprocess.run(
        [sys.executable, "-c", LOADER_RUN, mode, str(fashion["data_dir"]), str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "default"},
        cwd=fashion["tmp"],  # a crashed worker's core file, if any, lands in the test's folder
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as arrays:
        return dict(arrays), result.stdout + result.stderr


def assert_shuffled_batches(arrays: dict[str, np.ndarray], fashion: dict) -> None:
    """Every train example once, in full batches but the last, not in the order the source holds them."""
    assert_same_examples(arrays["images"], arrays["labels"], fashion["upstream"]["train"])
    full, last = divmod(COUNTS["train"], BATCH)
    assert list(arrays["sizes"]) == [BATCH] * full + ([last] if last else [])
    stored = data_sources.open(FashionMnist.name, "train", data_dir=fashion["data_dir"]).arrays["image"]
    assert not np.array_equal(arrays["images"], stored)


@needs("torch")
def test_torch_forked_workers_over_open(fashion):
    arrays, output = run_loader(fashion, "torch-fork-ours")
    assert_shuffled_batches(arrays, fashion)
    assert "ForkedArrayRecordWarning" not in output


@needs("torch")
def test_torch_spawned_workers_over_tfds_data_source(fashion):
    arrays, output = run_loader(fashion, "torch-spawn-tfds")
    assert_shuffled_batches(arrays, fashion)
    assert "ForkedArrayRecordWarning" not in output


@needs("torch")
def test_torch_forked_workers_over_tfds_data_source_are_warned_about(fashion):
    """Not our crash to fix (riegeli's), but never an unexplained one: a warning names both ways out first."""
    _, output = run_loader(fashion, "torch-fork-tfds")
    warning = output[output.index("ForkedArrayRecordWarning") :]
    assert "segmentation fault" in warning and 'multiprocessing_context="spawn"' in warning
    assert "mnist_variants.data_sources.open(name, split)" in warning


@needs("grain")
@pytest.mark.parametrize("mode", ["grain-ours", "grain-tfds"])
def test_grain_workers(fashion, mode):
    arrays, _ = run_loader(fashion, mode)
    assert_shuffled_batches(arrays, fashion)


# ---------------------------------------------------------------- the examples, offline from a manual dir

# Runs an example as its own __main__ after registering a test's checksums (tests/workers/registered_dummies.py).
WITH_TEST_REGISTRY = (
    "import registered_dummies, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize(
    "script, modules", [("train_torch.py", ("torch",)), ("train_grain.py", ("grain", "jax"))], ids=["torch", "grain"]
)
def test_example_trains_offline_from_a_manual_dir(fashion, tmp_path, script, modules):
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (pip install '.[loaders]')")
    result = subprocess.run(
        [sys.executable, "-c", WITH_TEST_REGISTRY, str(REPO / "examples" / script), "--manual_dir",
         str(fashion["tmp"] / "manual"), "--data_dir", str(tmp_path / "data"), "--epochs", "2", "--batch_size", "16",
         "--num_workers", "2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, **fashion["env"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    epochs = re.findall(r"^epoch (\d+): loss (\S+), accuracy (\S+), (\d+) examples", result.stdout, re.MULTILINE)
    assert [int(epoch) for epoch, *_ in epochs] == [1, 2], result.stdout
    for _, loss, accuracy, count in epochs:
        assert math.isfinite(float(loss)) and 0 <= float(accuracy) <= 1 and int(count) == COUNTS["train"]
    loss, accuracy, count = re.search(
        r"^test: loss (\S+), accuracy (\S+), (\d+) examples$", result.stdout, re.M
    ).groups()
    assert math.isfinite(float(loss)) and 0 <= float(accuracy) <= 1 and int(count) == COUNTS["test"]
    prepared = tfds.builder(FashionMnist.name, data_dir=tmp_path / "data")
    assert prepared.info.file_format.value == "array_record"
    assert {split: info.num_examples for split, info in prepared.info.splits.items()} == COUNTS
    assert not list(Path(tmp_path).glob("core*"))
