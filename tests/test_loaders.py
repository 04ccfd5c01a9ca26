"""PyTorch's DataLoader and Grain over our data: every example arrives, equal to upstream's, with worker processes.

The loaders run in child processes with time limits (`run_loader`), each of which has read an
ArrayRecord file before its workers start, the situation in which forked DataLoader workers over
`tfds.data_source` crash (mnist_variants/data_sources.py says why). Tests that need torch or grain
are skipped, with the reason, when those are not installed (`pip install '.[loaders]'`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import REPO, register_dummy_checksums, worker_env
from PIL import Image

from mnist_variants import BinarizedMnist, FashionMnist, data_sources, formats, png_codec

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


# argv: output .npz. open() with no data_dir, in a HOME set by the test; says whether TensorFlow was imported.
DEFAULT_PLACES_RUN = r"""
import sys
import numpy as np
from mnist_variants import data_sources

source = data_sources.open("mnist_variants_fashion_mnist", "test")
np.savez(sys.argv[1], **source.arrays, tensorflow=np.array("tensorflow" in sys.modules))
"""


@pytest.mark.parametrize("prepared", [("tfrecord", "array_record"), ("tfrecord",)], ids=["both", "tfrecord_only"])
def test_open_reads_array_record_first_and_tfrecord_without_tensorflow(fashion, tmp_path, prepared):
    """With no data_dir: ArrayRecord's own folder first; `tfds.load`'s TFRecord folder only when it has none, read
    without tf.data (which imports TensorFlow and held 60x the split: README)."""
    home = tmp_path / "home"
    places = {"tfrecord": "tensorflow_datasets", "array_record": "tensorflow_datasets_array_record"}
    for file_format in prepared:
        shutil.copytree(fashion["tmp"] / file_format, home / places[file_format])
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TFDS_", "MNIST_VARIANTS_"))}
    result = subprocess.run(
        [sys.executable, "-c", DEFAULT_PLACES_RUN, str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**env, "HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(tmp_path / "out.npz") as arrays:
        assert not arrays["tensorflow"]
        assert_same_examples(arrays["image"], arrays["label"], fashion["upstream"]["test"])
    assert sorted(path.name for path in home.iterdir()) == sorted(places[f] for f in prepared)  # nothing prepared


@pytest.mark.parametrize("change", ["flip_a_pixel_byte", "cut"])
def test_a_damaged_tfrecord_file_is_refused(fashion, tmp_path, change):
    data_dir = tmp_path / "data"
    shutil.copytree(fashion["tmp"] / "tfrecord", data_dir)
    (path,) = data_dir.rglob("*-test.tfrecord-*")
    data = bytearray(path.read_bytes())
    if change == "cut":
        data = data[:-10]
    else:
        data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="cut or not TFRecord" if change == "cut" else "CRC-32C"):
        data_sources.open(FashionMnist.name, "test", data_dir=data_dir)


def test_decode_pngs_without_pil_or_opencv_and_with_them():
    images = testing.synthetic_images(20, seed=3)
    ours = [png_codec.encode_png(image) for image in images]
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


@needs("torch")
@pytest.mark.parametrize(
    "source, variable",
    [("ours", "TFDS_DATA_DIR"), ("tfds", "TFDS_DATA_DIR"), ("ours", "MNIST_VARIANTS_ARRAY_RECORD_DIR")],
)
def test_array_record_goes_where_tfds_data_dir_or_the_override_says(fashion, tmp_path, source, variable):
    """On a cluster TFDS_DATA_DIR points at shared scratch: ArrayRecord (data_sources.open's, and train_torch.py's
    tfds.data_source) goes beside it, or where MNIST_VARIANTS_ARRAY_RECORD_DIR says, never into $HOME."""
    home, shared = tmp_path / "home", tmp_path / "shared"
    home.mkdir()
    expected = shared.with_name("shared_array_record") if variable == "TFDS_DATA_DIR" else shared
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TFDS_", "MNIST_VARIANTS_"))}
    result = subprocess.run(
        [sys.executable, "-c", WITH_TEST_REGISTRY, str(REPO / "examples" / "train_torch.py"), "--manual_dir",
         str(fashion["tmp"] / "manual"), "--source", source, "--epochs", "1", "--num_workers", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**env, **fashion["env"], "HOME": str(home), variable: str(shared)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    prepared = tfds.builder(FashionMnist.name, data_dir=expected)
    assert prepared.info.file_format.value == "array_record"
    assert {split: info.num_examples for split, info in prepared.info.splits.items()} == COUNTS
    assert not [path for path in home.iterdir() if path.name.startswith("tensorflow_datasets")]


# ---------------------------------------------------------------- items are not the held split

# argv: data dir, start method ("none" for no workers), output .npz. A per-example transform that blanks a patch in
# place (random erasing as torchvision users write it for numpy inputs), in the dataset and in the collate_fn (the
# latter gets the items of `__getitems__`), for two epochs with persistent workers. Each item carries its index and
# its pixel sum as it arrived, before the transform: any write that reached the held split shows in epoch 2.
IN_PLACE_RUN = r"""
import sys
import numpy as np
import torch
from mnist_variants import data_sources


class Erased(torch.utils.data.Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return erase(self.source[index], index)


def erase(item, index):
    item["arrived"] = int(item["image"].sum())
    item["index"] = index
    item["image"][11:17, 11:17] = 0
    return item


def erase_batch(items):
    # __getitems__'s items do not say their index: their sums are checked as a multiset
    return torch.utils.data.default_collate([erase(item, -1) for item in items])


if __name__ == "__main__":
    data_dir, context, out = sys.argv[1:]
    source = data_sources.open("mnist_variants_fashion_mnist", "train", data_dir=data_dir)
    held = source.arrays["image"].copy()
    workers = 0 if context == "none" else 2
    options = dict(batch_size=16, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    if workers:
        options.update(multiprocessing_context=context, timeout=120)
    per_item = torch.utils.data.DataLoader(Erased(source), **options)
    per_batch = torch.utils.data.DataLoader(source, collate_fn=erase_batch, **options)
    indices, arrived, batch_sums = [], [], []
    for epoch in range(2):
        for batch in per_item:
            indices.append(batch["index"].numpy())
            arrived.append(batch["arrived"].numpy())
        for batch in per_batch:
            batch_sums.append(batch["arrived"].numpy())
    np.savez(out, indices=np.concatenate(indices), arrived=np.concatenate(arrived),
             batch_sums=np.concatenate(batch_sums), held_before=held, held_after=source.arrays["image"])
"""


@needs("torch")
@pytest.mark.parametrize("context", ["none", "fork", "spawn"])
def test_in_place_transforms_leave_the_held_split_unchanged(fashion, tmp_path, context):
    """Two epochs of an in-place transform see the examples as they are stored, in every worker and the parent."""
    script = tmp_path / "in_place.py"  # a file, not -c: spawned workers import the transform from it
    script.write_text(IN_PLACE_RUN)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, str(script), str(fashion["data_dir"]), context, str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as arrays:
        stored_sums = arrays["held_before"].reshape(COUNTS["train"], -1).sum(axis=1)
        # The transform ran on every example of both epochs, through both paths.
        assert sorted(arrays["indices"]) == sorted(list(range(COUNTS["train"])) * 2)
        assert len(arrays["batch_sums"]) == 2 * COUNTS["train"]
        np.testing.assert_array_equal(arrays["arrived"], stored_sums[arrays["indices"]])
        assert sorted(arrays["batch_sums"]) == sorted(np.concatenate([stored_sums, stored_sums]))
        np.testing.assert_array_equal(arrays["held_after"], arrays["held_before"])
        # The generated images are not blank in the middle, where the transform blanks: it did change the items it got.
        assert (arrays["held_before"][:, 11:17, 11:17].reshape(COUNTS["train"], -1).sum(axis=1) > 0).mean() > 0.9


def test_the_held_arrays_refuse_writes(fashion):
    source = data_sources.open(FashionMnist.name, "test", data_dir=fashion["data_dir"])
    with pytest.raises(ValueError, match="read-only"):
        source.arrays["image"][0, 0, 0] = 1
    item = source[0]
    item["image"][:] = 0  # a copy: the held example is untouched
    assert source.arrays["image"][0].any()
    items = source.__getitems__([0, 1, -1])
    items[0]["image"][:] = 0
    assert source.arrays["image"][0].any() and items[1]["image"].any()
    # As __getitems__ says: rows of one copy of the batch, none of the held arrays.
    assert items[0]["image"].base is items[2]["image"].base
    assert not np.shares_memory(items[0]["image"], source.arrays["image"])
    np.testing.assert_array_equal(items[2]["image"], source.arrays["image"][-1])
    with pytest.raises(IndexError, match="out of range"):
        source.__getitems__([0, COUNTS["test"]])


def test_the_callers_arrays_stay_writable():
    images, labels = np.zeros((3, 28, 28, 1), np.uint8), np.arange(3)
    source = data_sources.InMemorySource({"image": images, "label": labels})
    images //= 2  # the caller's array: still writable
    images[0] = 1
    labels += 1
    assert source[0]["image"].max() == 1 and source[2]["label"] == 3  # the source holds views of them
    with pytest.raises(ValueError, match="read-only"):
        source.arrays["image"][0] = 2


# ---------------------------------------------------------------- what open() reads: colour, malformed records


class ColourImagesForTest(tfds.core.GeneratorBasedBuilder):
    """A dataset shaped like TFDS's svhn_cropped: RGB images (32, 32, 3), 10 classes; images from COLOUR_IMAGES."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(  # not dataset_info_from_configs: it looks for metadata beside a package
            builder=self,
            features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(32, 32, 3)), "label": tfds.features.ClassLabel(num_classes=10)}
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index, image in enumerate(colour_images()):
            yield index, {"image": image, "label": index % 10}


def colour_images() -> np.ndarray:
    """12 RGB images whose three channels differ everywhere (red bright, blue dark), so any reordering shows."""
    rng = np.random.default_rng(11)
    images = rng.integers(0, 60, (12, 32, 32, 3), dtype=np.uint8)
    images[..., 0] += 190
    images[..., 1] += 95
    return images


@needs("cv2")
def test_decode_pngs_gives_colour_and_alpha_pngs_in_rgb_order_through_opencv():
    """decode_pngs sends PNGs other than the builders' to OpenCV first, which decodes to BGR(A)."""
    images = colour_images()[:4]
    with_alpha = np.concatenate([images, np.full((4, 32, 32, 1), 200, np.uint8)], axis=-1)
    for pixels in (images, with_alpha):  # PIL takes (h, w, 3) as RGB, (h, w, 4) as RGBA
        pngs = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
        np.testing.assert_array_equal(data_sources.decode_pngs(pngs), pixels)


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_open_gives_colour_images_in_rgb_as_tfds_data_source_does(tmp_path, file_format):
    data_dir = tmp_path / file_format
    source = data_sources.open(ColourImagesForTest.name, "train", data_dir=data_dir, file_format=file_format)
    labels = [index % 10 for index in range(12)]
    assert_same_examples(source.arrays["image"], source.arrays["label"], (colour_images(), np.array(labels)))
    if file_format == "array_record":  # TFDS decodes with OpenCV where it is installed, as in the loaders extra
        theirs = tfds.data_source(ColourImagesForTest.name, split="train", data_dir=data_dir)
        for index in range(len(theirs)):
            np.testing.assert_array_equal(source[index]["image"], theirs[index]["image"])


def rewrite_record(data_dir: Path, split: str, index: int, change) -> None:
    """Rewrites record `index` of the split's one ArrayRecord file: `change(example)` edits the tf.train.Example."""
    from array_record.python import array_record_module
    from tensorflow_datasets.proto import tf_example_pb2

    (path,) = data_dir.rglob(f"*-{split}.array_record-*")
    reader = array_record_module.ArrayRecordReader(str(path))
    records = list(reader.read_all())
    reader.close()
    example = tf_example_pb2.Example.FromString(records[index])
    records[index] = change(example) or example.SerializeToString()
    path.unlink()
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")  # as TFDS writes them
    for record in records:
        writer.write(record)
    writer.close()


def without_label(example):
    del example.features.feature["label"]


def two_labels(example):
    example.features.feature["label"].int64_list.value.append(3)


def label_as_bytes(example):
    example.features.feature["label"].ClearField("int64_list")
    example.features.feature["label"].bytes_list.value.append(b"3")


def no_image_value(example):
    example.features.feature["image"].bytes_list.ClearField("value")


def not_a_png(example):
    example.features.feature["image"].bytes_list.value[0] = b"\x89PNG but not one"


def broken_png(example):
    """A PNG header of the right size, then pixels no decoder reads."""
    data = example.features.feature["image"].bytes_list.value[0]
    example.features.feature["image"].bytes_list.value[0] = data[:33] + bytes(len(data) - 33)


def not_an_example(example):
    return b"\xff\xff\xff not a protocol buffer"


@pytest.mark.parametrize(
    "change, message",
    [
        (without_label, "record 7 has no feature 'label'"),
        (two_labels, "record 7: feature 'label' has 2 values, not 1"),
        (label_as_bytes, "record 7: feature 'label' is a bytes_list, not a int64_list"),
        (no_image_value, "record 7: feature 'image' has 0 values, not 1"),
        (not_a_png, "record 7: feature 'image': an image whose header gives no size"),
        (broken_png, "record 7: feature 'image': cannot decode the image"),
        (not_an_example, "record 7 is not a tf.train.Example"),
    ],
    ids=lambda value: getattr(value, "__name__", "message"),
)
def test_a_malformed_record_is_refused_by_index_and_feature(fashion, tmp_path, change, message):
    data_dir = tmp_path / "data"
    shutil.copytree(fashion["data_dir"], data_dir)
    rewrite_record(data_dir, "test", 7, change)
    with pytest.raises(ValueError, match=re.escape(f"{FashionMnist.name} test: {message}")):
        data_sources.open(FashionMnist.name, "test", data_dir=data_dir)
    data_sources.open(FashionMnist.name, "train", data_dir=data_dir)  # the other split's file is untouched


def planted_png(height: int, width: int, colour_type: int, inflated: int) -> bytes:
    """A PNG whose header says height x width and whose one IDAT inflates to `inflated` zero bytes."""
    deflater, parts = zlib.compressobj(1), []
    for start in range(0, inflated, 1 << 24):
        parts.append(deflater.compress(bytes(min(1 << 24, inflated - start))))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        png_codec.PNG_SIGNATURE
        + png_codec._chunk(b"IHDR", header)
        + png_codec._chunk(b"IDAT", b"".join(parts) + deflater.flush())
        + png_codec._IEND_CHUNK
    )


@contextlib.contextmanager
def address_space_limited_to(extra: int):
    """This process may map at most `extra` bytes more than it has now (RLIMIT_AS), for the block's duration."""
    mapped = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def set_image(data: bytes):
    def change(example):
        example.features.feature["image"].bytes_list.value[0] = data

    return change


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param((60000, 60000, 0, 100), id="grayscale_header_of_60000x60000"),
        pytest.param((28, 28, 0, 1 << 30), id="28x28_inflating_to_1_GiB"),
        pytest.param((60000, 60000, 2, 100), id="colour_header_of_60000x60000"),
    ],
)
def test_a_planted_png_cannot_make_open_allocate_beyond_the_features_shape(fashion, tmp_path, planted):
    """A record of a few hundred bytes (or 1 MB) claims gigabytes: open() refuses it, or decodes the feature's
    shape only, within 768 MiB more address space than it started with."""
    height, width, colour_type, inflated = planted
    if colour_type == 2:
        data_dir, name = tmp_path / "colour", ColourImagesForTest.name
        data_sources.open(name, "train", data_dir=data_dir)  # prepares it
    else:
        data_dir, name = tmp_path / "data", FashionMnist.name
        shutil.copytree(fashion["data_dir"], data_dir)
    split = "train" if colour_type == 2 else "test"
    rewrite_record(data_dir, split, 7, set_image(planted_png(height, width, colour_type, inflated)))
    if colour_type != 2:
        data_sources.open(name, "train", data_dir=data_dir)  # TFDS's threads started before the limit, as for colour
    with address_space_limited_to(768 << 20):
        try:
            source = data_sources.open(name, split, data_dir=data_dir)
        except ValueError as error:
            assert f"record 7: feature 'image': a PNG of {height}x{width}, not " in str(error)
        else:
            assert (height, width) == (28, 28) and source[7]["image"].shape == (28, 28, 1)


# ---------------------------------------------------------------- the fork warning through wrappers

# argv: data dir. Forks one DataLoader worker over each wrapper, with nothing for it to read (so that it does not
# crash), and prints whether ForkedArrayRecordWarning was given.
WRAPPED_RUN = r"""
import sys, warnings
import tensorflow_datasets as tfds
import torch
from torch.utils.data import ChainDataset, ConcatDataset, DataLoader, IterableDataset, Subset
from mnist_variants import data_sources

name = "mnist_variants_fashion_mnist"
theirs = tfds.data_source(name, split="train", data_dir=sys.argv[1])
ours = data_sources.open(name, "train", data_dir=sys.argv[1])


class Stream(IterableDataset):
    def __init__(self, source):
        self.source = source

    def __iter__(self):
        return iter(())


class Holder(torch.utils.data.Dataset):
    def __init__(self, **attributes):
        self.__dict__.update(attributes)

    def __len__(self):
        return 1


class Slotted(torch.utils.data.Dataset):
    __slots__ = ("source",)

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return 1


class Op:
    def __init__(self, index):
        self.index = index


info = tfds.builder(name, data_dir=sys.argv[1]).info
cases = {
    "concat": ConcatDataset([ours, theirs]),
    "subset_of_concat": Subset(ConcatDataset([ConcatDataset([ours]), theirs]), [0]),
    "chain": ChainDataset([Stream(ours), Stream(theirs)]),
    "own_wrapper": Stream(theirs),
    "concat_of_ours": ConcatDataset([ours, Subset(ours, [1])]),
    "chain_of_ours": ChainDataset([Stream(ours)]),
    "dict_of_theirs": Holder(sources={"train": theirs}),
    "ours_and_a_dataset_info": Holder(source=ours, info=info),
    "theirs_then_300_ops": Holder(source=theirs, transforms=[Op(index) for index in range(300)]),
    "slots": Slotted(theirs),
}
for case, dataset in cases.items():
    options = dict(num_workers=1, multiprocessing_context="fork", timeout=60)
    if not isinstance(dataset, IterableDataset):
        options["sampler"] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(DataLoader(dataset, **options))
    print(case, any(issubclass(w.category, data_sources.ForkedArrayRecordWarning) for w in caught))
"""


@needs("torch")
def test_the_fork_warning_sees_through_wrappers(fashion):
    result = subprocess.run(
        [sys.executable, "-c", WRAPPED_RUN, str(fashion["data_dir"])],
        capture_output=True, text=True, timeout=300, cwd=fashion["tmp"],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    warned = dict(line.split() for line in result.stdout.splitlines() if line.split()[-1] in ("True", "False"))
    assert warned == {
        "concat": "True",
        "subset_of_concat": "True",
        "chain": "True",
        "own_wrapper": "True",
        "concat_of_ours": "False",
        "chain_of_ours": "False",
        "dict_of_theirs": "True",
        "ours_and_a_dataset_info": "False",
        "theirs_then_300_ops": "True",
        "slots": "True",
    }
