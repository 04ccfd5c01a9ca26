"""Times `download_and_prepare` of our builders against TFDS's built-in ones and a floor builder.

    python benchmarks/prepare_benchmark.py [--rounds 3] [--files DIR] [--torchvision_python PATH]
                                           [--import_tensorflow_first]
    python benchmarks/prepare_benchmark.py --datasets mnist_corrupted --all_configs [--rounds 1] [--files DIR]

It writes full-size files in the exact upstream formats (synthetic images, Binarized
MNIST as Bernoulli samples) once, then, per round and per dataset, prepares with each
contender back to back, each in a fresh process: ours, TFDS's built-in, and a floor
builder (same schema and example count, one constant pre-encoded PNG, no parsing), the
least any GeneratorBasedBuilder can take. Downloads are served from the local files
(TFDS still extracts the built-in's gzip files), so the network is not timed. Then it
reads both prepared datasets back: a tf.data pass over the train split with decoding,
and a whole split loaded with batch_size=-1. Ratios are computed round by round and the
medians printed. Peak resident memory is each process's own (VmHWM; `peak_memory` says why not ru_maxrss).

TFDS imports TensorFlow lazily, inside `download_and_prepare`, so by default every contender's timed region
holds that import (a fresh process, as a user's first `tfds.load`); `--import_tensorflow_first` imports it in
each prepare process before the timing starts, so the ratios show the preparation alone. The tables say which.

`--all_configs` (MNIST-C only) times what issue 33 asks of it instead: all 16 configs prepared one after the
other in one fresh process, by TFDS's own `tfds build mnist_variants_mnist_corrupted` (`build_all_configs`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # testing.py, conftest.py: files, server, registry
import peak_memory  # benchmarks/peak_memory.py: VmHWM, the peak resident memory of a process alone
import results  # benchmarks/results.py: the Markdown and JSON output

DATASETS = {
    "fashion_mnist": ("mnist_variants:FashionMnist", "fashion_mnist", {"train": 60_000, "test": 10_000}),
    "binarized_mnist": (
        "mnist_variants:BinarizedMnist",
        "binarized_mnist",
        {"train": 50_000, "validation": 10_000, "test": 10_000},
    ),
    "mnist": ("mnist_variants:Mnist", "mnist", {"train": 60_000, "test": 10_000}),
    "kmnist": ("mnist_variants:Kmnist", "kmnist", {"train": 60_000, "test": 10_000}),
    # One config (the default, `identity`) of the 16 in mnist_c.zip; its labels are the generated MNIST's.
    "mnist_corrupted": ("mnist_variants:MnistCorrupted", "mnist_corrupted", {"train": 60_000, "test": 10_000}),
    # QMNIST is not in TFDS: its contenders are ours, the floor and torchvision's QMNIST (see `torchvision_load`),
    # on generated files (`write_qmnist`), timed apart for train+test and for nist as issue 33 req 10 states them.
    "qmnist": ("mnist_variants:Qmnist", None, {"train": 60_000, "test": 60_000}),
    "qmnist_nist": ("mnist_variants:Qmnist", None, {"nist": 402_953}),
}
CONTENDERS = ("ours", "builtin", "floor", "torchvision")
QMNIST_DATASETS = ("qmnist", "qmnist_nist")
FOLDERS = {"qmnist_nist": "qmnist"}  # datasets timed apart on the same files: the files' folder under --files


def builder_class(dataset: str, contender: str):
    import importlib

    import tensorflow_datasets as tfds

    ours_path, builtin_name, counts = DATASETS[dataset]
    module, name = ours_path.split(":")
    ours = getattr(importlib.import_module(module), name)
    if dataset in QMNIST_DATASETS:  # timed apart: TFDS prepares every split of a builder at once
        ours = only_splits(ours, tuple(counts))
    if contender == "ours":
        return ours
    if contender == "builtin":
        return tfds.builder_cls(builtin_name)
    return floor_builder(ours, counts)


def floor_builder(ours, counts: dict[str, int]):
    """Same features and example counts as `ours`; yields one constant pre-encoded PNG."""
    import numpy as np
    import tensorflow_datasets as tfds

    from mnist_variants import png_codec

    constant_png = png_codec.encode_png(np.zeros((28, 28), np.uint8))

    class Floor(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = f"floor_{ours.name}"
        VERSION = ours.VERSION

        def _info(self):
            info = ours(data_dir=self.data_dir_root).info  # same features and order (QMNIST keeps file order)
            return tfds.core.DatasetInfo(builder=self, features=info.features, disable_shuffling=info.disable_shuffling)

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(count) for split, count in counts.items()}

        def _generate_examples(self, count):
            extra = {name: 0 for name in self.info.features if name != "image"}  # label, QMNIST's integers
            for index in range(count):
                yield index, {"image": constant_png, **extra}

    return Floor


def register_files(builder_cls, files: str, scratch: str) -> None:
    """Registers the generated files' sha256 and size in place of upstream's, as a mirror's would be."""

    from etils import epath
    from tensorflow_datasets.core.download import checksums

    infos = {}
    for name in builder_cls.upstream_filenames():  # streamed by TFDS: a copy held here would count in the peak
        infos[builder_cls.SOURCES[0] + name] = checksums.compute_url_info(Path(files) / name)
    tsv = epath.Path(scratch) / f"{builder_cls.name}.tsv"
    checksums.save_url_infos(tsv, infos)
    builder_cls._checksums_path = tsv


def register_mnist_labels(files: str, scratch: str) -> None:
    """MNIST-C's labels are checked against MNIST's registered label digests: here, those of the generated MNIST
    files (beside `files`, in `mnist/`), whose labels the generated mnist_c.zip holds, registered as the tests
    register theirs (tests/conftest.py, as loaders_benchmark.py uses it)."""
    from conftest import write_registry
    from etils import epath

    from mnist_variants import Mnist

    names = [split_files["labels"] for split_files in Mnist.SPLIT_FILES.values()]
    labels = {name: (Path(files).parent / "mnist" / name).read_bytes() for name in names}
    Mnist._checksums_path = epath.Path(write_registry(Path(scratch), Mnist, labels, Mnist.SOURCES[0]))


def prepare(dataset: str, contender: str, files: str, data_dir: str, import_tensorflow_first: bool = False) -> dict:
    """In this (fresh) process: prepare once, return seconds and peak resident memory.

    Ours reads the files as a manual dir (verifying each by its sha256, as it does any local copy);
    the built-in gets them from TFDS's download step, replaced by a local copy (its own extraction runs).
    TFDS imports TensorFlow inside `download_and_prepare` (at its first write, ~3.4 s here), so the timed
    region holds that import, for every contender alike; `import_tensorflow_first` imports it before.
    """
    import tensorflow_datasets as tfds
    import testing

    if import_tensorflow_first:
        import tensorflow  # noqa: F401 (imported for its cost, outside the timed region)

    builder_cls = builder_class(dataset, contender)
    if contender == "ours":
        register_files(builder_cls, files, data_dir)
        if dataset in ("mnist_corrupted", *QMNIST_DATASETS):
            register_mnist_labels(files, data_dir)
    builder = builder_cls(data_dir=data_dir)
    config = tfds.download.DownloadConfig(manual_dir=files if contender == "ours" else None)
    with testing.downloads_from(files):
        started, cpu_started = time.perf_counter(), time.process_time()
        builder.download_and_prepare(download_dir=os.path.join(data_dir, "downloads"), download_config=config)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    for split, count in DATASETS[dataset][2].items():
        assert builder.info.splits[split].num_examples == count, (split, builder.info.splits[split].num_examples)
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_memory.peak_mib(),
        # CPU time of the prepare, its helpers' included (our PNG helper and checker, reaped by the end of the
        # prepare; nothing else here has children): a figure that a machine shared with other work changes far
        # less than wall time.
        "cpu_seconds": cpu_seconds + peak_memory.children_cpu_seconds(),
    }


def read(dataset: str, contender: str, data_dir: str) -> dict:
    """In this (fresh) process: a decoding tf.data pass over train, then a whole split at once."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = builder_class(dataset, contender)(data_dir=data_dir)
    split = next(iter(DATASETS[dataset][2]))  # train, or QMNIST's nist
    pipeline = builder.as_dataset(split=split, shuffle_files=False).batch(1024).prefetch(tf.data.AUTOTUNE)
    started = time.perf_counter()
    count = sum(int(tf.shape(batch["image"])[0]) for batch in pipeline)
    pass_seconds = time.perf_counter() - started
    started = time.perf_counter()
    whole = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    load_seconds = time.perf_counter() - started
    assert count == len(whole["image"]) == DATASETS[dataset][2][split]
    return {"examples_per_second": count / pass_seconds, "load_seconds": load_seconds}


def build_all_configs(files: Path, scratch: Path) -> dict:
    """`tfds build mnist_variants_mnist_corrupted`, the real CLI in a fresh process: it builds every config, one
    after the other in that process (TFDS's `build.py` makes a builder per `BUILDER_CONFIGS` entry when no
    config is named, `--num_processes` 1), each from the manual dir. The generated archive's digests (and
    those of the generated MNIST labels MNIST-C's are checked against) are registered as `prepare()` does:
    written here, set in the CLI's process by an `--imports` module. Returns whole-process wall seconds
    (start-up and TensorFlow's import included), CPU seconds (its helpers' included) and its peak resident
    memory (VmHWM, read as it exits by `peak_memory`'s wrapper), and its helpers' (the PNG helper and checker,
    processes of their own: the largest sum of their VmHWM at once, sampled by `peak_memory.run_measured`)."""
    from mnist_variants import Mnist, MnistCorrupted

    folder = files / "mnist_corrupted"
    register_files(MnistCorrupted, str(folder), str(scratch))
    register_mnist_labels(str(folder), str(scratch))
    checksums = {"MnistCorrupted": MnistCorrupted._checksums_path, "Mnist": Mnist._checksums_path}
    data_dir = scratch / "data"
    figures = tfds_build(MnistCorrupted.name, checksums, folder, data_dir, scratch)
    figures["examples"] = built_examples(data_dir / MnistCorrupted.name)
    expected = {config.name: 70_000 for config in MnistCorrupted.BUILDER_CONFIGS}
    assert figures["examples"] == expected, figures["examples"]
    return figures


def tfds_build(
    name: str, checksums: Mapping[str, os.PathLike], manual_dir: Path, data_dir: Path, scratch: Path
) -> dict:
    """`tfds build NAME` (every config) through `peak_memory`'s wrapper: whole-process wall seconds, CPU seconds
    (its children's included) and its peak resident memory (VmHWM of the CLI's process, read as it exits).

    `checksums` (a class of `mnist_variants` by name -> its checksums file) are set in the CLI's process, as
    `prepare()` sets them in its own, by an `--imports` module written to `scratch`."""
    imports = "benchmark_registry"
    (scratch / f"{imports}.py").write_text(
        "from etils import epath\n\nimport mnist_variants\n\n"
        + "".join(
            f"mnist_variants.{cls}._checksums_path = epath.Path({os.fspath(path)!r})\n"
            for cls, path in checksums.items()
        )
    )
    arguments = ["build", name, "--imports", imports, "--manual_dir", str(manual_dir), "--data_dir", str(data_dir)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(scratch), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    started = time.perf_counter()
    # Bounded: a hung build fails the benchmark, its processes killed, instead of waiting for ever.
    figures = peak_memory.run_measured("tensorflow_datasets.scripts.cli.main", arguments, env, timeout=BUILD_SECONDS)
    return {**figures, "seconds": time.perf_counter() - started}


BUILD_SECONDS = 3 * 3600  # EMNIST's six configs took 701 s on a loaded machine; MNIST-C's sixteen 40 s


def built_examples(folder: Path) -> dict[str, int]:
    """Examples per config that TFDS recorded in each built config's dataset_info.json."""
    examples = {}
    for info in sorted(folder.glob("*/*/dataset_info.json")):
        splits = json.loads(info.read_text())["splits"]
        examples[info.parent.parent.name] = sum(int(n) for split in splits for n in split["shardLengths"])
    return examples


ALL_CONFIGS_COLUMNS = [
    "round", "wall", "CPU (process + its helpers)", "peak RSS (VmHWM) of the process", "of its helpers at once",
    "examples",
]  # fmt: skip


def report_all_configs(rounds: list[dict], tables: results.Results) -> None:
    """The table of `--all_configs`: one row a round."""
    rows = [
        [
            str(number + 1),
            f"{figures['seconds']:.1f} s",
            f"{figures['cpu_seconds']:.1f} s",
            f"{figures['peak_rss_mib']:,.0f} MiB",
            f"{figures['helpers_peak_rss_mib']:,.0f} MiB",
            f"{sum(figures['examples'].values()):,}",
        ]
        for number, figures in enumerate(rounds)
    ]
    tables.table(
        "mnist_corrupted, all 16 configs in one `tfds build` process (fresh; start-up and TensorFlow's import timed)",
        ALL_CONFIGS_COLUMNS,
        rows,
        rounds,
    )


def in_fresh_process(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def generate(files: Path, datasets: list[str]) -> None:
    import testing

    for dataset, (_, _, counts) in DATASETS.items():
        folder = files / dataset
        wanted = {FOLDERS.get(name, name) for name in datasets} | {"mnist"}  # MNIST-C's and QMNIST's are MNIST's
        if dataset not in wanted:
            continue  # generated when asked for (QMNIST's 402,953 images, xz-compressed, take minutes)
        if not (folder / "complete").exists():
            print(f"writing full-size {dataset} files to {folder} ...", flush=True)
            if dataset == "mnist_corrupted":
                write_mnist_c(folder, files / "mnist")
            elif dataset in QMNIST_DATASETS:
                write_qmnist(folder, files / "mnist")
            else:
                testing.write_upstream_files(builder_class(dataset, "ours"), folder, counts, seed=11)
            (folder / "complete").write_text("")


def write_mnist_c(folder: Path, mnist: Path) -> None:
    """A full-size mnist_c.zip made of the generated MNIST's images and labels (every config, deflated)."""
    import testing

    from mnist_variants import MnistCorrupted

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / MnistCorrupted.ARCHIVE.filename).open("wb") as target:
        testing.write_mnist_c_of_mnist(
            MnistCorrupted, {path.name: path.read_bytes() for path in mnist.iterdir()}, target
        )


def only_splits(builder_cls, splits: tuple[str, ...]):
    """`builder_cls` preparing only `splits` of its SPLIT_FILES (not registered, not in its family)."""

    class Split(builder_cls, skip_registration=True):
        name = builder_cls.name  # else TFDS names it after this class
        SPLIT_FILES = {split: builder_cls.SPLIT_FILES[split] for split in splits}

    return Split


def write_qmnist(folder: Path, mnist: Path) -> None:
    """QMNIST's six files at full size (the dummy data's writers, `testing.qmnist_file_bytes`): train is the
    generated MNIST's train split, test its test split then 50,000 more, nist 402,953 images; label tables of
    eight int32 columns (writers 0-2349 / 326-2599 / 0-4099, as upstream's ranges). The nist files are xz at
    preset 6 (upstream's use a 64 MiB dictionary: inflating costs about the same)."""
    import numpy as np
    import testing

    from mnist_variants import Mnist, formats

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    splits = {}
    for split, files in Mnist.SPLIT_FILES.items():
        images = formats.read_idx_images((mnist / files["images"]).read_bytes())[..., 0]
        splits[split] = (images, formats.read_idx_labels((mnist / files["labels"]).read_bytes()))
    lost = 50_000
    test_images, test_labels = splits["test"]
    splits["test"] = (
        np.concatenate([test_images, testing.synthetic_images(lost, 12)[..., 0]]),
        np.concatenate([test_labels, rng.integers(0, 10, lost).astype(np.uint8)]),
    )
    nist = DATASETS["qmnist_nist"][2]["nist"]
    splits["nist"] = (testing.synthetic_images(nist, 13)[..., 0], rng.integers(0, 10, nist).astype(np.uint8))
    writers = {"train": (0, 2350), "test": (326, 2600), "nist": (0, 4100)}
    tables = {split: testing.qmnist_table(labels, writers[split], 0, rng) for split, (_, labels) in splits.items()}
    files = testing.qmnist_file_bytes({split: images for split, (images, _) in splits.items()}, tables)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def torchvision_load(dataset: str, files: str, scratch: str, python: str) -> dict:
    """torchvision's QMNIST on the same files, in its own venv and a fresh process: `extract_archive` of each file
    into `<root>/QMNIST/raw/` (what `QMNIST(download=True)` does once the files are there, after its md5 check,
    which generated files fail), then `QMNIST(root, what=..., compat=False)` for each split: it parses the raw IDX
    files into tensors in memory (current torchvision saves no .pt files; it reads `processed/<what>.pt` only if an
    old version left one). First use = extract + load; every later use = load. `python`: a Python with torchvision."""
    whats = ("train", "test") if dataset == "qmnist" else ("nist",)
    code = f"""
import json, os, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import peak_memory  # standard library only: VmHWM, not the ru_maxrss this process inherits from its parent
started = time.perf_counter()
from torchvision.datasets import QMNIST
from torchvision.datasets.utils import extract_archive
imported = time.perf_counter()
raw = os.path.join({scratch!r}, "QMNIST", "raw")
os.makedirs(raw, exist_ok=True)
for what in {whats!r}:
    for url, _ in QMNIST.resources[what]:
        extract_archive(os.path.join({files!r}, url.rsplit("/", 1)[-1]), raw)
extracted, cpu_started = time.perf_counter(), time.process_time()
counts = {{what: len(QMNIST({scratch!r}, what=what, compat=False)) for what in {whats!r}}}
loaded, cpu_loaded = time.perf_counter(), time.process_time()
counts = {{what: len(QMNIST({scratch!r}, what=what, compat=False)) for what in {whats!r}}}
print(json.dumps({{"import_seconds": imported - started, "extract_seconds": extracted - imported,
                  "load_seconds": loaded - extracted, "second_load_seconds": time.perf_counter() - loaded,
                  "load_cpu_seconds": cpu_loaded - cpu_started, "counts": counts,
                  "peak_rss_mib": peak_memory.peak_mib()}}))
"""
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torchvision's QMNIST failed:\n{result.stderr[-5000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures.pop("counts") == {what: DATASETS[dataset][2][what] for what in whats}
    figures["seconds"] = figures["extract_seconds"] + figures["load_seconds"]  # its first use, import aside
    figures["cpu_seconds"] = figures["load_cpu_seconds"]  # of the load only (the extraction's is not measured)
    return figures


# What the tables' titles say of TensorFlow's import, by `--import_tensorflow_first`.
MODES = {
    False: "fresh processes, TensorFlow's import timed (TFDS imports it at the first write)",
    True: "TensorFlow imported before the timed region: --import_tensorflow_first",
}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument(
        "--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS,
        help="ours and the floor only: more rounds of the tight ratio in the same time",
    )  # fmt: skip
    parser.add_argument(
        "--child", nargs=4, metavar=("ACTION", "DATASET", "CONTENDER", "DATA_DIR"), help=argparse.SUPPRESS
    )
    # torchvision cannot be imported beside the project's torch 2.13.0 (CPU): it runs from a venv of its own.
    parser.add_argument(
        "--torchvision_python", help="a Python with torch and torchvision, for torchvision's QMNIST rows (else skipped)"
    )
    parser.add_argument(
        "--import_tensorflow_first", action="store_true",
        help="import TensorFlow in each prepare process before timing (default: its import is timed, as TFDS does"
        " it at the first write)",
    )  # fmt: skip
    parser.add_argument(
        "--all_configs", action="store_true",
        help="mnist_corrupted only: instead of the contenders, time all 16 configs in one `tfds build` process",
    )  # fmt: skip
    results.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.all_configs and args.datasets != ["mnist_corrupted"]:
        parser.error("--all_configs builds MNIST-C's 16 configs: give it with --datasets mnist_corrupted")
    if args.all_configs and args.import_tensorflow_first:
        parser.error("--all_configs times the whole `tfds build` process, TensorFlow's import included")
    return args


def main() -> None:
    args = parse_arguments()
    if args.child:
        action, dataset, contender, data_dir = args.child
        if action == "prepare":
            folder = str(args.files / FOLDERS.get(dataset, dataset))
            figures = prepare(dataset, contender, folder, data_dir, args.import_tensorflow_first)
        else:
            figures = read(dataset, contender, data_dir)
        print(json.dumps(figures))
        return

    generate(args.files, args.datasets)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    tables = results.Results("benchmarks/prepare_benchmark.py")
    if args.all_configs:
        rounds = []
        for number in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="bench_all_configs_") as scratch:
                rounds.append(build_all_configs(args.files, Path(scratch)))
            print(f"  all configs, round {number + 1}: {rounds[-1]}", flush=True)
        report_all_configs(rounds, tables)
        tables.write(args)
        return
    summary = []
    mode = MODES[args.import_tensorflow_first]
    for dataset in args.datasets:
        contenders = contenders_of(dataset, args.contenders, args.torchvision_python)
        rounds = [
            run_round(args.files, dataset, number, contenders, args.torchvision_python, args.import_tensorflow_first)
            for number in range(args.rounds)
        ]
        summary.append(report(dataset, rounds, contenders, tables, mode))
    tables.table(f"All datasets ({args.rounds} rounds, medians; ratios round by round; {mode})", SUMMARY, summary)
    tables.write(args)


def rotated(contenders: list[str], number: int) -> list[str]:
    """The contenders in round `number`'s order: who goes first rotates from round to round, so neither a warm
    page cache nor a machine that speeds up or slows down favours one."""
    turn = number % len(contenders)
    return contenders[turn:] + contenders[:turn]


def contenders_of(dataset: str, asked: list[str], torchvision_python: str | None) -> list[str]:
    """The contenders asked for that the dataset has: QMNIST has no TFDS built-in, the others no torchvision
    here (and torchvision only with `--torchvision_python`)."""
    if dataset in QMNIST_DATASETS:
        if "torchvision" in asked and not torchvision_python:
            print("  no --torchvision_python: torchvision's QMNIST is left out", flush=True)
        has = {"ours", "floor", *(("torchvision",) if torchvision_python else ())}
    else:
        has = {"ours", "builtin", "floor"}
    return [contender for contender in asked if contender in has]


def run_round(
    files: Path,
    dataset: str,
    number: int,
    contenders: list[str],
    torchvision_python: str | None = None,
    import_tensorflow_first: bool = False,
) -> dict[str, dict]:
    """Prepares with each contender back to back, then reads ours and the built-in's, in `rotated` order."""
    first = ["--import_tensorflow_first"] if import_tensorflow_first else []
    figures = {}
    order = rotated(contenders, number)
    with tempfile.TemporaryDirectory(prefix="bench_") as root:
        for contender in order:
            if contender == "torchvision":
                folder = files / FOLDERS.get(dataset, dataset)
                figures[contender] = torchvision_load(dataset, str(folder), f"{root}/{contender}", torchvision_python)
                continue
            figures[contender] = in_fresh_process(
                "--files", str(files), *first, "--child", "prepare", dataset, contender, f"{root}/{contender}"
            )
        readers = [contender for contender in order if contender in ("ours", "builtin")]
        for contender in readers:
            figures[contender] |= in_fresh_process(
                "--files", str(files), "--child", "read", dataset, contender, f"{root}/{contender}"
            )
    print(
        f"  {dataset} round {number + 1}: prepare "
        + ", ".join(
            f"{name} {figures[name]['seconds']:.2f} s ({figures[name]['cpu_seconds']:.2f} s CPU)" for name in order
        )
        + "; read "
        + ", ".join(f"{name} {figures[name]['examples_per_second']:,.0f} ex/s" for name in readers),
        flush=True,
    )
    return figures


# The summary table of docs/performance.md, one row a dataset (examples/show.py --performance charts its seconds).
SUMMARY = [
    "dataset", "ours", "built-in", "floor", "built-in / ours", "ours / floor", "read throughput, ours / built-in",
    "`batch_size=-1` time, built-in / ours",
]  # fmt: skip


def report(
    dataset: str, rounds: list[dict], contenders: list[str], tables: results.Results, mode: str = MODES[False]
) -> list[str]:
    """Prints the dataset's table of contenders and its ratios; returns its row of the summary table. `mode`
    (one of `MODES`) goes into the title: whether TensorFlow's import was timed."""

    def median(contender: str, key: str) -> float:
        return statistics.median(r[contender][key] for r in rounds)

    def median_ratio(key: str, numerator: str, denominator: str) -> float:
        return statistics.median(r[numerator][key] / r[denominator][key] for r in rounds)

    rows = []
    for contender in contenders:
        reads = (
            [f"{median(contender, 'examples_per_second'):,.0f}", f"{median(contender, 'load_seconds'):.2f}"]
            if contender in ("ours", "builtin")
            else ["-", "-"]
        )
        seconds, cpu_seconds = f"{median(contender, 'seconds'):.2f}", f"{median(contender, 'cpu_seconds'):.2f}"
        rows.append([contender, seconds, cpu_seconds, *reads, f"{median(contender, 'peak_rss_mib'):,.0f}"])
    tables.table(
        f"{dataset} ({len(rounds)} rounds, medians; {mode})",
        ["contender", "prepare s", "prepare CPU s", "read: examples/s", "read: batch_size=-1 s", "peak RSS MiB"],
        rows,
        {contender: [r[contender] for r in rounds] for contender in contenders},
    )
    has = set(contenders)
    seconds = [f"{median(c, 'seconds'):.2f} s" if c in has else "-" for c in ("ours", "builtin", "floor")]
    builtin_ours = {"ours", "builtin"} <= has
    summary = [
        dataset,
        *seconds,
        f"{median_ratio('seconds', 'builtin', 'ours'):.2f}x" if builtin_ours else "-",
        f"{median_ratio('seconds', 'ours', 'floor'):.2f}x" if {"ours", "floor"} <= has else "-",
        f"{median_ratio('examples_per_second', 'ours', 'builtin'):.2f}x" if builtin_ours else "-",
        f"{median_ratio('load_seconds', 'builtin', 'ours'):.2f}x" if builtin_ours else "-",
    ]
    ratios = []
    if {"ours", "floor"} <= set(contenders):
        ratios.append(
            f"ours / floor {median_ratio('seconds', 'ours', 'floor'):.2f}x"
            f" (CPU {median_ratio('cpu_seconds', 'ours', 'floor'):.2f}x)"
        )
    if {"ours", "builtin"} <= set(contenders):
        ratios.append(
            f"built-in / ours {median_ratio('seconds', 'builtin', 'ours'):.2f}x;"
            f" read: ours / built-in throughput {median_ratio('examples_per_second', 'ours', 'builtin'):.2f}x,"
            f" batch_size=-1 built-in / ours time {median_ratio('load_seconds', 'builtin', 'ours'):.2f}x"
        )
    if "torchvision" in contenders:
        ratios.append(
            "torchvision's QMNIST: first use (extract + parse into memory)"
            f" {median('torchvision', 'seconds'):.2f} s, of which extract"
            f" {median('torchvision', 'extract_seconds'):.2f} s; each later use (parse)"
            f" {median('torchvision', 'second_load_seconds'):.2f} s;"
            f" its peak RSS {median('torchvision', 'peak_rss_mib'):.0f} MiB"
        )
    if "ours" in contenders:
        ratios.append(f"peak RSS of our prepare {median('ours', 'peak_rss_mib'):.0f} MiB")
    print(f"prepare ({mode}): {'; '.join(ratios)}\n", flush=True)
    return summary


if __name__ == "__main__":
    main()
