"""The right files or a clear no: local copies verified by content, traps named, other tools' caches used.

The dummy files stand in for upstream's: their digests are registered the way upstream's
are (the download's for every file, the decompressed content's for the label files only).
"""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
import testing
from conftest import (
    FASHION_FILES,
    REPO,
    assert_nothing_prepared,
    assert_prepared,
    decompressed,
    prepare,
    serve_from,
    write_files,
)
from etils import epath

from mnist_variants import (
    ChecksumMismatchError,
    DownloadFailedError,
    FashionMnist,
    WrongFileError,
    verification,
)
from mnist_variants.verification import Verdict

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84\nsize 26421880\n"  # noqa: E501


@pytest.fixture
def fashion(monkeypatch, tmp_path, file_server) -> str:
    """Fashion-MNIST's sources on the loopback server, which has none of the files; returns its base URL."""
    (base,) = serve_from(monkeypatch, tmp_path, file_server, FashionMnist, FASHION_FILES, "s3")
    return base


def examples(builder: tfds.core.DatasetBuilder) -> dict[str, list]:
    return {
        split: [
            (e["image"].tobytes(), int(e["label"]))
            for e in tfds.as_numpy(builder.as_dataset(split, shuffle_files=False))
        ]
        for split in builder.info.splits
    }


def recompressed(files: dict[str, bytes]) -> dict[str, bytes]:
    """Upstream's content, gzipped again with other settings (another level, a name, a timestamp)."""
    return {
        name: gzip.compress(gzip.decompress(data), compresslevel=9, mtime=1_700_000_000) for name, data in files.items()
    }


def test_recompressed_upstream_content_is_verified_by_content(fashion, tmp_path, file_server, capsys):
    files = recompressed(FASHION_FILES)
    assert all(files[name] != FASHION_FILES[name] for name in files)
    write_files(tmp_path / "manual", files)
    builder = prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")
    assert_prepared(builder, "fashion_mnist")
    out = capsys.readouterr().out
    assert "train-labels-idx1-ubyte.gz (verified: upstream's content, recompressed)" in out
    assert f"WARNING: using {tmp_path / 'manual' / 'train-images-idx3-ubyte.gz'}" in out
    assert "NOT verified against upstream" in out and "train-labels-idx1-ubyte.gz of the same split verifies" in out
    assert file_server.requests == []
    reference = tmp_path / "reference"
    write_files(reference / "manual", FASHION_FILES)
    assert examples(builder) == examples(prepare(FashionMnist, reference, manual_dir=reference / "manual"))


def test_decompressed_copies_say_what_was_verified(fashion, tmp_path, file_server, capsys):
    write_files(tmp_path / "manual", decompressed(FASHION_FILES))
    assert_prepared(prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual"), "fashion_mnist")
    out = capsys.readouterr().out
    assert f"{tmp_path / 'manual' / 't10k-labels-idx1-ubyte'} (verified: upstream's content, decompressed)" in out
    assert f"WARNING: using {tmp_path / 'manual' / 't10k-images-idx3-ubyte'} for t10k-images-idx3-ubyte.gz" in out
    assert file_server.requests == []


def other_datasets_labels(files: dict[str, bytes]) -> dict[str, bytes]:
    """MNIST's case: valid IDX label files under the same names, with other labels."""
    other = {}
    for name, data in decompressed(files).items():
        if "labels" in name:
            labels = np.frombuffer(data[8:], np.uint8)
            data = testing.encode_idx((labels + 1) % 10)
        other[name] = data
    return other


@pytest.mark.parametrize("compress", [False, True], ids=["decompressed", "gzipped"])
def test_another_datasets_labels_are_refused(fashion, tmp_path, file_server, compress):
    files = other_datasets_labels(FASHION_FILES)
    if compress:
        files = {f"{name}.gz": testing.gzip_bytes(data) for name, data in files.items()}
    write_files(tmp_path / "manual", files)
    with pytest.raises(ChecksumMismatchError, match=r"labels-idx1-ubyte(\.gz)? is not Fashion-MNIST's") as raised:
        prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")
    assert "MNIST" in str(raised.value) and "copied from any machine with network access" in str(raised.value)
    assert_nothing_prepared(tmp_path)
    assert file_server.requests == []


@pytest.mark.parametrize(
    ("content", "what", "advice"),
    [
        (LFS_POINTER, "a Git LFS pointer", "git lfs pull"),
        (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>", "an HTML page", "check the proxy"),
    ],
    ids=["git_lfs_pointer", "html_page"],
)
def test_traps_under_upstream_names_are_named(fashion, tmp_path, file_server, content, what, advice):
    files = dict(FASHION_FILES, **{"train-images-idx3-ubyte.gz": content})
    write_files(tmp_path / "manual", files)
    with pytest.raises(WrongFileError) as raised:
        prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")
    message = str(raised.value)
    assert f"{tmp_path / 'manual' / 'train-images-idx3-ubyte.gz'} is {what}, not the file" in message
    assert advice in message and "MalformedFileError" not in message
    assert_nothing_prepared(tmp_path)


def test_verified_files_in_the_keras_cache_are_used_offline(fashion, tmp_path, file_server, monkeypatch, capsys):
    keras_home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    write_files(keras_home / "datasets" / "fashion-mnist", FASHION_FILES)
    assert_prepared(prepare(FashionMnist, tmp_path), "fashion_mnist")
    out = capsys.readouterr().out
    assert f"from the keras cache {keras_home / 'datasets' / 'fashion-mnist'} (verified: the upstream file)" in out
    assert file_server.requests == []


def test_unverifiable_or_wrong_files_in_the_keras_cache_are_not_used(fashion, tmp_path, file_server, capsys):
    cache = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    write_files(cache, decompressed({"t10k-images-idx3-ubyte.gz": FASHION_FILES["t10k-images-idx3-ubyte.gz"]}))
    write_files(cache, {"train-labels-idx1-ubyte.gz": LFS_POINTER})
    file_server.serve_files("s3", FASHION_FILES)
    assert_prepared(prepare(FashionMnist, tmp_path), "fashion_mnist")
    out = capsys.readouterr().out
    assert f"Not using {cache / 't10k-images-idx3-ubyte'} from the keras cache: NOT verified" in out
    assert f"Not using {cache / 'train-labels-idx1-ubyte.gz'} from the keras cache" in out and "Git LFS" in out
    assert sorted(file_server.requests) == sorted(f"/s3/{name}" for name in FASHION_FILES)


def test_a_torchvision_root_is_a_manual_dir(fashion, tmp_path, file_server, capsys):
    raw = tmp_path / "torchvision" / "FashionMNIST" / "raw"
    write_files(raw, FASHION_FILES)  # torchvision keeps both forms
    write_files(raw, decompressed(FASHION_FILES))
    assert_prepared(prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "torchvision"), "fashion_mnist")
    assert f"{raw / 'train-images-idx3-ubyte.gz'} (verified: the upstream file)" in capsys.readouterr().out
    assert file_server.requests == []


def test_a_manual_dir_lacking_a_file_is_described_when_the_download_fails(fashion, tmp_path, file_server):
    manual = tmp_path / "manual"
    write_files(manual, {name: data for name, data in FASHION_FILES.items() if name != "t10k-labels-idx1-ubyte.gz"})
    with pytest.raises(DownloadFailedError) as raised:  # the server has no file: 404
        prepare(FashionMnist, tmp_path, manual_dir=manual)
    message = str(raised.value)
    assert f"{fashion}t10k-labels-idx1-ubyte.gz" in message and "404" in message
    assert f"Manual dir {manual}: found train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images" in message
    assert "missing t10k-labels-idx1-ubyte.gz" in message
    assert f"in {manual}, {manual / FashionMnist.name}, {manual / 'FashionMNIST' / 'raw'}" in message
    assert_nothing_prepared(tmp_path)


def test_an_unverified_copy_alone_in_its_split_is_refused(tmp_path):
    path = epath.Path(tmp_path / "t10k-images-idx3-ubyte")
    lone = Verdict(path, "t10k-images-idx3-ubyte.gz", False, "NOT verified")
    with pytest.raises(WrongFileError, match="no file of that split verifies"):
        verification.check_split([lone])
    verification.check_split([lone, Verdict(path, "t10k-labels-idx1-ubyte.gz", True, "verified")])


def test_sizes_are_said_in_plain_units():
    assert verification.plain_size(26_421_880) == "25.2 MiB (26,421,880 bytes)"
    assert verification.plain_size(5148) == "5.0 KiB (5,148 bytes)"
    assert verification.plain_size(600) == "600 bytes"


def test_the_real_label_digests_are_registered():
    """The decompressed content of upstream's label files, as computed from the upstream files."""
    registry = verification.load_registry(FashionMnist.url_infos, FashionMnist._checksums_path)
    contents = {name: (entry.content.checksum, entry.content.size) for name, entry in registry.items() if entry.content}
    assert contents == {
        "train-labels-idx1-ubyte.gz": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
        "t10k-labels-idx1-ubyte.gz": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
    }


def test_importing_from_the_repository_root_finds_the_checksums():
    script = (
        "import mnist_variants, pathlib; "
        "print(pathlib.Path(mnist_variants.__file__).parent.parent); "
        "print(len(mnist_variants.FashionMnist.url_infos))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    package_root, url_count = result.stdout.split()
    assert package_root == str(REPO)  # the source tree, not the installed copy
    assert int(url_count) == 12  # 4 files x 3 sources
