"""MNIST and Kuzushiji-MNIST beside the first two: TFDS's schema and registry, keras's mnist.npz, look-alike files.

MNIST, Kuzushiji-MNIST and Fashion-MNIST use the very same file names; each builder must
refuse the others' files by content and say whose they are. The files here are generated in
the upstream formats; their digests are registered for the test in place of upstream's.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import decompressed, prepare, register_dummy_checksums, write_files
from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import (
    ChecksumMismatchError,
    DownloadFailedError,
    FashionMnist,
    Kmnist,
    MalformedFileError,
    Mnist,
    formats,
)

COUNTS = {"train": 12, "test": 5}
NEW = [(Mnist, "mnist"), (Kmnist, "kmnist")]


def generated(builder_cls, tmp_path: Path, seed: int) -> dict[str, bytes]:
    paths = testing.write_upstream_files(builder_cls, tmp_path / f"generated-{builder_cls.name}", COUNTS, seed=seed)
    return {name: path.read_bytes() for name, path in paths.items()}


def examples(builder) -> dict[str, dict[str, np.ndarray]]:
    return {
        split: tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, batch_size=-1))
        for split in builder.info.splits
    }


def assert_same_examples(ours, reference) -> None:
    mine, theirs = examples(ours), examples(reference)
    assert mine.keys() == theirs.keys()
    for split in mine:
        for feature in theirs[split]:
            np.testing.assert_array_equal(mine[split][feature], theirs[split][feature], err_msg=f"{split}/{feature}")


@pytest.mark.parametrize(("ours", "builtin"), NEW, ids=[name for _, name in NEW])
def test_registered_beside_tfds_with_its_schema(ours, builtin, tmp_path):
    assert tfds.builder_cls(ours.name) is ours
    assert tfds.builder_cls(builtin).__module__.startswith("tensorflow_datasets.")  # TFDS's own stays
    mine = tfds.builder(ours.name, data_dir=tmp_path).info
    theirs = tfds.builder(builtin, data_dir=tmp_path).info
    assert str(mine.version) == "1.0.0"
    assert mine.supervised_keys == theirs.supervised_keys == ("image", "label")
    assert mine.features["image"].shape == theirs.features["image"].shape == (28, 28, 1)
    assert mine.features["image"].np_dtype == theirs.features["image"].np_dtype == np.uint8
    assert mine.features["label"].names == theirs.features["label"].names


def test_kmnist_labels_are_named_as_tfds_names_them(tmp_path):
    names = tfds.builder(Kmnist.name, data_dir=tmp_path).info.features["label"].names
    assert names == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]


@pytest.mark.parametrize(("ours", "builtin"), NEW, ids=[name for _, name in NEW])
def test_registered_checksums_are_tfds_registrys(ours, builtin):
    """Every source of a file has TFDS's sha256 and size for it (read from the installed TFDS)."""
    theirs = tfds_checksums.load_url_infos(epath.Path(tfds.__file__).parent / "url_checksums" / f"{builtin}.txt")
    by_name = {url.rsplit("/", 1)[-1]: info for url, info in theirs.items()}
    registered = tfds_checksums.load_url_infos(ours._checksums_path)
    for name in ours.upstream_filenames():
        for base in ours.SOURCES:
            info = registered[base + name]
            assert (info.size, info.checksum) == (by_name[name].size, by_name[name].checksum), (base, name)


def test_mnist_reads_keras_mnist_npz_offline_into_the_same_examples(monkeypatch, tmp_path, capsys):
    files = generated(Mnist, tmp_path, seed=21)
    npz = testing.keras_npz_bytes(Mnist, files)
    register_dummy_checksums(monkeypatch, tmp_path, Mnist, {**files, "mnist.npz": npz})
    monkeypatch.setattr(Mnist, "SOURCES", ("http://127.0.0.1:9/unreachable/",))
    write_files(tmp_path / "keras_home" / "datasets", {"mnist.npz": npz})  # KERAS_HOME is tmp_path/keras_home
    from_npz = prepare(Mnist, tmp_path / "npz")
    out = capsys.readouterr().out
    assert "verified: array x_train of keras's mnist.npz" in out and "Got " not in out
    write_files(tmp_path / "manual", files)
    from_idx = prepare(Mnist, tmp_path / "idx", manual_dir=tmp_path / "manual")
    assert_same_examples(from_npz, from_idx)


def test_an_npz_that_does_not_verify_is_passed_over(monkeypatch, tmp_path, capsys):
    files = generated(Mnist, tmp_path, seed=22)
    register_dummy_checksums(
        monkeypatch, tmp_path, Mnist, {**files, "mnist.npz": testing.keras_npz_bytes(Mnist, files)}
    )
    monkeypatch.setattr(Mnist, "SOURCES", ("http://127.0.0.1:9/unreachable/",))
    other = testing.keras_npz_bytes(Mnist, generated(Mnist, tmp_path / "other", seed=23))
    write_files(tmp_path / "keras_home" / "datasets", {"mnist.npz": other})
    write_files(tmp_path / "manual", files)
    prepare(Mnist, tmp_path, manual_dir=tmp_path / "manual")
    assert "mnist.npz" not in capsys.readouterr().out  # every file was in the manual dir: the npz was not read
    (tmp_path / "manual" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DownloadFailedError, match=r"Could not download train-labels-idx1-ubyte\.gz"):
        prepare(Mnist, tmp_path / "again", manual_dir=tmp_path / "manual")
    assert f"Not using {tmp_path / 'keras_home' / 'datasets' / 'mnist.npz'} from the keras cache" in (
        capsys.readouterr().out
    )


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npz_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_shaped(shape: tuple[int, ...], body: bytes) -> bytes:
    """A uint8 .npy whose header claims `shape`, whatever `body` holds (what np.save would not write)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + body


KEYS = ["x_train", "y_train"]
GOOD = {"x_train.npy": npy(np.zeros((2, 28, 28), np.uint8)), "y_train.npy": npy(np.ones(2, np.uint8))}


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({**GOOD, "y_train.npy": npy(np.array([object()], dtype=object))}, r"holds Python objects .*refused"),
        ({**GOOD, "y_train.npy": npy(np.ones(2, np.int64))}, r"y_train\.npy\]: a int64 array, expected uint8"),
        ({**GOOD, "extra.npy": GOOD["y_train.npy"]}, r"expected exactly \['x_train.npy', 'y_train.npy'\]"),
        ({"x_train.npy": GOOD["x_train.npy"]}, r"expected exactly"),
        ({**GOOD, "y_train.npy": GOOD["y_train.npy"][:-1]}, r"cut short: its header describes 2 bytes .* holds 1"),
        ({**GOOD, "y_train.npy": npy_shaped((2**62,), b"\1\1")}, r"describes 4,611,686,018,427,387,904 bytes"),
        ({**GOOD, "y_train.npy": npy_shaped((-1, -2), b"\1\1")}, r"a negative dimension, shape \(-1, -2\)"),
        ({**GOOD, "y_train.npy": b"not an array"}, r"not a \.npy array"),
    ],
    ids=["pickled_objects", "int64", "extra_member", "missing_member", "cut_member", "overflow", "negative", "not_npy"],
)
def test_npz_is_read_strictly(members, problem):
    with pytest.raises(MalformedFileError, match=problem):
        formats.read_npz(npz_of(members), "mnist.npz", KEYS)
    with pytest.raises(MalformedFileError, match=r"not a readable \.npz archive"):
        formats.read_npz(b"PK\x03\x04 cut", "mnist.npz", KEYS)
    arrays = formats.read_npz(npz_of(GOOD), "mnist.npz", KEYS)
    assert arrays["x_train"].shape == (2, 28, 28) and arrays["y_train"].tolist() == [1, 1]


@pytest.fixture
def family(monkeypatch, tmp_path) -> dict[type, dict[str, bytes]]:
    """Generated files registered as each dataset's upstream files (download and label content digests)."""
    files = {cls: generated(cls, tmp_path, seed) for seed, cls in enumerate((FashionMnist, Mnist, Kmnist), 30)}
    for cls, its_files in files.items():
        register_dummy_checksums(monkeypatch, tmp_path, cls, its_files)
        monkeypatch.setattr(cls, "SOURCES", ("http://127.0.0.1:9/unreachable/",))
    return files


@pytest.mark.parametrize(
    ("builder_cls", "other", "title"),
    [(FashionMnist, Mnist, "MNIST"), (Mnist, Kmnist, "Kuzushiji-MNIST"), (Kmnist, FashionMnist, "Fashion-MNIST")],
    ids=["mnist_in_fashion", "kmnist_in_mnist", "fashion_in_kmnist"],
)
@pytest.mark.parametrize("form", ["gzipped", "decompressed"])
def test_another_datasets_files_are_refused_by_name(family, tmp_path, builder_cls, other, title, form):
    """The other dataset's labels under the same name: refused, naming the dataset they belong to."""
    theirs = family[other]
    mine = dict(family[builder_cls], **{"train-labels-idx1-ubyte.gz": theirs["train-labels-idx1-ubyte.gz"]})
    write_files(tmp_path / "manual", mine if form == "gzipped" else decompressed(mine))
    with pytest.raises(ChecksumMismatchError, match=rf"is {title}'s train-labels-idx1-ubyte.gz.*, not"):
        prepare(builder_cls, tmp_path, manual_dir=tmp_path / "manual")
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def test_another_datasets_decompressed_images_are_refused_where_their_content_is_known(family, tmp_path):
    """No digest of Kuzushiji-MNIST's decompressed images exists, but MNIST's are registered: recognised."""
    mnist_images = gzip.decompress(family[Mnist]["train-images-idx3-ubyte.gz"])
    tsv = Path(Mnist._checksums_path)
    contents = tsv.with_name(f"{Mnist.name}.decompressed.tsv")
    url = Mnist.SOURCES[0] + "train-images-idx3-ubyte.gz"
    digest = testing.hashlib.sha256(mnist_images).hexdigest()
    contents.write_text(contents.read_text() + f"{url}\t{len(mnist_images)}\t{digest}\ttrain-images-idx3-ubyte\n")
    files = decompressed(family[Kmnist])
    files["train-images-idx3-ubyte"] = mnist_images
    write_files(tmp_path / "manual", files)
    with pytest.raises(ChecksumMismatchError, match=r"is MNIST's train-images-idx3-ubyte.gz, decompressed, not"):
        prepare(Kmnist, tmp_path, manual_dir=tmp_path / "manual")


@pytest.mark.parametrize(("builder_cls", "root"), [(Mnist, "MNIST/raw"), (Kmnist, "KMNIST/raw")])
def test_a_torchvision_root_is_a_manual_dir(monkeypatch, tmp_path, builder_cls, root):
    files = generated(builder_cls, tmp_path, seed=40)
    register_dummy_checksums(monkeypatch, tmp_path, builder_cls, files)
    monkeypatch.setattr(builder_cls, "SOURCES", ("http://127.0.0.1:9/unreachable/",))
    write_files(tmp_path / "torchvision" / root, files)
    builder = prepare(builder_cls, tmp_path, manual_dir=tmp_path / "torchvision")
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == COUNTS
