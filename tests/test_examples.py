"""The examples run end to end on the dummy data through the installed builders, with no network, and learn.

Each example runs in its own process from the test's folder; the data comes from a manual dir
or is downloaded from a loopback server through the builders' real download path. The dummy
data carries a learnable signal (dummy_data/generate.py), so the models must beat chance by far.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_SPLITS, REPO, child_env, decompressed, dummy_files, worker_env, write_files
from PIL import Image

from mnist_variants import BinarizedMnist, FashionMnist

# Runs an example as its own __main__ after registering a test's checksums (tests/workers/registered_dummies.py).
WITH_TEST_REGISTRY = (
    "import registered_dummies, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
FOLDERS = {FashionMnist: "fashion_mnist", BinarizedMnist: "binarized_mnist"}
# Fashion-MNIST's dummy test split has 5 examples: chance gets 0.1 of them right; a model that learned the
# drawn-in labels gets at least 4.
MIN_TEST_ACCURACY = 0.8
# Average test NLL in nats per image: 784 ln 2 = 543 for coin flips (a model that learned nothing, or EM that
# never moves its means from their start: about 560); a 3-component mixture fit to the dummy train split: 240.
MAX_TEST_NLL = 300


def run_example(script: str, *args: str, env: dict[str, str], cwd) -> str:
    result = subprocess.run(
        [sys.executable, "-c", WITH_TEST_REGISTRY, str(REPO / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},  # with the only_loopback proxies
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def served(tmp_path, file_server, builder_cls) -> dict[str, str]:
    """The environment for an example that downloads `builder_cls`'s dummy files from the loopback server."""
    files = dummy_files(FOLDERS[builder_cls])
    file_server.serve_files("upstream", files)
    return worker_env(tmp_path, builder_cls, files, [f"{file_server.url}/upstream/"])


def assert_each_file_downloaded_once(file_server, builder_cls) -> None:
    files = dummy_files(FOLDERS[builder_cls])
    assert dict(file_server.sent) == {f"/upstream/{name}": len(data) for name, data in files.items()}


def test_train_fashion_mnist_offline_from_a_manual_dir_learns_the_labels(tmp_path):
    manual = tmp_path / "manual"
    files = dummy_files("fashion_mnist")
    write_files(manual, decompressed(files))  # as keras and torchvision keep them
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    output = run_example(
        "train_fashion_mnist.py", "--manual_dir", str(manual), "--data_dir", str(tmp_path / "data"), "--epochs", "10",
        "--batch_size", "4", env=env, cwd=tmp_path,
    )  # fmt: skip
    epochs = re.findall(r"^epoch (\d+): loss ([\d.]+|nan|inf), accuracy ([\d.]+)$", output, re.MULTILINE)
    assert [int(epoch) for epoch, _, _ in epochs] == list(range(1, 11)), output
    losses = [float(loss) for _, loss, _ in epochs]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0] / 4, output
    (loss, accuracy) = re.search(r"^test: loss (\S+), accuracy (\S+)$", output, re.MULTILINE).groups()
    assert math.isfinite(float(loss)) and float(accuracy) >= MIN_TEST_ACCURACY, output
    prepared = tfds.builder(FashionMnist.name, data_dir=tmp_path / "data")
    assert {split: info.num_examples for split, info in prepared.info.splits.items()} == DUMMY_SPLITS["fashion_mnist"]


def test_binarized_mnist_nll_downloads_and_fits(tmp_path, file_server):
    env = served(tmp_path, file_server, BinarizedMnist)
    output = run_example(
        "binarized_mnist_nll.py", "--data_dir", str(tmp_path / "data"), "--components", "3", "--iterations", "4",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert_each_file_downloaded_once(file_server, BinarizedMnist)
    train = [float(nll) for nll in re.findall(r"^iteration \d+: train NLL ([\d.]+) nats$", output, re.MULTILINE)]
    assert len(train) == 4 and train[-1] < MAX_TEST_NLL < train[0], output  # EM learned in its first steps
    (nll, count) = re.search(r"^test NLL: ([\d.]+) nats per image \((\d+) images", output, re.MULTILINE).groups()
    assert 0 < float(nll) < MAX_TEST_NLL, output
    assert int(count) == DUMMY_SPLITS["binarized_mnist"]["test"]


@pytest.mark.parametrize("builder_cls", [FashionMnist, BinarizedMnist], ids=lambda cls: cls.name)
def test_show_downloads_and_writes_a_grid_png(tmp_path, file_server, builder_cls):
    env = served(tmp_path, file_server, builder_cls)
    out = tmp_path / "grid.png"
    run_example(
        "show.py", builder_cls.name, "--data_dir", str(tmp_path / "data"), "--out", str(out), "--rows", "2",
        "--cols", "3", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert_each_file_downloaded_once(file_server, builder_cls)
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG" and image.size == (3 * 300, 2 * 300)  # 3 inches per example at 100 dpi


def test_compare_classifiers_side_by_side_offline(tmp_path):
    """MNIST, Fashion-MNIST and Kuzushiji-MNIST from one manual dir (`<dir>/<registered name>/`), one table."""
    from conftest import child_env, write_registry

    from mnist_variants import Kmnist, Mnist

    registry = {}
    for builder_cls, folder in ((Mnist, "mnist"), (FashionMnist, "fashion_mnist"), (Kmnist, "kmnist")):
        files = dummy_files(folder)
        write_files(tmp_path / "manual" / builder_cls.name, files)
        tsv = write_registry(tmp_path / "registry", builder_cls, files, "http://127.0.0.1:9/unused/")
        registry[builder_cls.name] = {"sources": ["http://127.0.0.1:9/unused/"], "checksums": str(tsv)}
    (tmp_path / "family.json").write_text(json.dumps(registry))
    env = {**child_env(), "MNIST_VARIANTS_TEST_REGISTRY": str(tmp_path / "family.json")}
    output = run_example(
        "compare_classifiers.py", "--manual_dir", str(tmp_path / "manual"), "--data_dir", str(tmp_path / "data"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    rows = re.findall(r"^\| (mnist_variants_\w+) \| ([^|]+) \| ([\d.]+) \| ([\d.]+) \|$", output, re.MULTILINE)
    assert {(name, classifier.strip()) for name, classifier, _, _ in rows} == {
        (name, classifier)
        for name in ("mnist_variants_mnist", "mnist_variants_fashion_mnist", "mnist_variants_kmnist")
        for classifier in ("logistic regression", "random forest", "MLP (256)")
    }, output
    # The dummy images carry their labels; from 12 training images a random forest gets 3 of 5 test images right
    # where chance gets 0.5 (3 or more right by chance: less than 1%); the others get at least 4.
    for name, classifier, accuracy, _ in rows:
        assert float(accuracy) >= (0.6 if classifier == "random forest" else MIN_TEST_ACCURACY), (name, classifier)


def run_show(tmp_path, *args: str) -> str:
    """examples/show.py as a user runs it (it registers the dummy data's checksums itself for --docs)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "show.py"), "--images", str(tmp_path / "images"), *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **child_env()}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_show_draws_the_docs_figures_from_dummy_data_one_row_a_config(tmp_path):
    """--docs prepares each builder (every config) from dummy_data/ offline and draws small greyscale grids."""
    output = run_show(tmp_path, "--docs", "--only", "mnist_variants_mnist", "mnist_variants_emnist")
    heights = {}
    for short in ("mnist", "emnist"):
        path = tmp_path / "images" / f"{short}.png"
        assert f"wrote {path}" in output, output
        assert path.stat().st_size < 100_000  # committed under docs/images: kept small
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "L"
            heights[short] = image.size[1]
    assert heights["emnist"] > 4 * heights["mnist"]  # six rows, one a config, against one
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == ["emnist.png", "mnist.png"]
    for short in ("mnist", "emnist"):  # drawn the same way each time: a committed figure that differs is stale
        assert_same_figure(tmp_path / "images" / f"{short}.png", "--docs")


def test_show_draws_the_performance_chart_from_the_pages_tables(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text(
        "## Prepare time\n\n| dataset | ours | built-in |\n|---|---|---|\n| MNIST | 11.33 s | 31.51 s |\n\n"
        "## Time to data over a slow network\n\n| dataset | ours | built-in |\n|---|---|---|\n"
        "| MNIST | 17.4 s | 34.8 s |\n| KMNIST | 16 s | 31.8 s |\n\n## Other\n\n| X | 1 s | 2 s |\n"
    )
    output = run_show(tmp_path, "--performance", "--page", str(page))
    assert "prepare, ours / built-in: MNIST 11.33 s / 31.51 s\n" in output, output
    assert "time to data, ours / built-in: MNIST 17.4 s / 34.8 s, KMNIST 16 s / 31.8 s\n" in output, output
    with Image.open(tmp_path / "images" / "performance.png") as image:
        assert image.format == "PNG"
    run_show(tmp_path, "--performance")  # the committed page's tables, drawn the same way each time
    assert_same_figure(tmp_path / "images" / "performance.png", "--performance")


# The committed figures' matplotlib: another version draws other pixels from the same data (3.10.9, CI's
# minimum-versions venv, differs in 11,172 of the chart's pixels), so only this one can tell a stale figure.
FIGURES_DRAWN_WITH = "3.11.2"


def test_the_committed_figures_say_which_matplotlib_drew_them():
    with Image.open(REPO / "docs" / "images" / "performance.png") as image:
        assert image.text.get("Software", "").startswith(f"Matplotlib version{FIGURES_DRAWN_WITH},"), image.text


def assert_same_figure(drawn: Path, how: str) -> None:
    """`drawn` has the committed figure's bytes, where this matplotlib is the one that drew the committed ones."""
    import matplotlib

    if matplotlib.__version__ != FIGURES_DRAWN_WITH:
        pytest.skip(
            f"the committed figures were drawn by matplotlib {FIGURES_DRAWN_WITH}, here {matplotlib.__version__}"
        )
    committed = REPO / "docs" / "images" / drawn.name
    assert drawn.read_bytes() == committed.read_bytes(), (
        f"{committed.relative_to(REPO)} is stale: run examples/show.py {how} --images docs/images"
    )


def test_loaders_benchmark_memory_mode_writes_its_table(tmp_path):
    """`loaders_benchmark.py --memory N --markdown F --json F` writes the memory table, headed by the machine."""
    markdown, figures = tmp_path / "memory.md", tmp_path / "memory.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loaders_benchmark.py"), "--memory", "200", "--rounds", "1",
         "--memory_format", "tfrecord", "--files", str(tmp_path / "files"), "--markdown", str(markdown),
         "--json", str(figures)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **child_env()}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    text = markdown.read_text()
    heading = text.splitlines()[0]
    assert heading.startswith("`benchmarks/loaders_benchmark.py --memory 200"), heading
    for part in (
        " cores, ",
        " GiB memory, load average ",
        ", Python 3.",
        ", tensorflow 2.",
        ", tensorflow-datasets 4.",
    ):
        assert part in heading, heading  # the machine, on every table of docs/performance.md
    assert "| 1 | tfrecord | 200 |" in text, text
    tables = json.loads(figures.read_text())["tables"]
    assert [row[:3] for row in tables[0]["rows"]] == [["1", "tfrecord", "200"]]
