"""Examples per second through the loaders PyTorch and JAX users use, side by side, on full-size Fashion-MNIST.

    python benchmarks/loaders_benchmark.py [--rounds 3] [--files DIR] [--torchvision_python PATH]

It writes the full-size upstream files once (the same synthetic files as prepare_benchmark.py,
in `--files`), prepares them as TFRecord and as ArrayRecord, then per round runs every
contender in a fresh process, in a rotated order: two shuffled passes over the 60,000 train
examples in batches of 256, timed separately (the first includes starting the workers, the
second shows the steady state; workers persist between passes). Contenders:

- tf.data: `as_dataset` over TFRecord, `shuffle(10_000)`, `batch`, `prefetch(AUTOTUNE)`.
- `tfds.data_source` in a DataLoader, 0 workers and 2 (spawned: forked ones crash), decoding
  with PIL and with OpenCV (TFDS takes OpenCV when it is installed; hidden here for PIL).
- `mnist_variants.data_sources.open` in a DataLoader, 0 and 2 (forked) workers; the time to
  open it (read and decode the split once) is reported on its own.
- Grain: `MapDataset.source(...).shuffle().batch()` with 2 worker processes, over both sources.
- torchvision's own `FashionMNIST` on the same files (a torchvision root), 0 and 2 workers with
  `ToTensor()`, if `--torchvision_python` names an interpreter that has torchvision (it does not
  import beside torch 2.13.0's CPU wheel; see the README).
Medians over rounds are printed as a Markdown table, with each contender's peak resident memory: its own, plus
its workers' where they are spawned (Grain's, and DataLoader's with spawn: each holds its own copy of what it
reads); forked workers share their parent's pages and are not added (`workers_peak_mib`).

    python benchmarks/loaders_benchmark.py --memory 697932 [--rounds 3] [--memory_format tfrecord]

measures only `data_sources.open`'s memory: Fashion-MNIST-format files of that many synthetic train images (EMNIST
byclass's count) prepared as ArrayRecord (or TFRecord, read without tf.data), then, per round in a fresh
process, resident memory before `open`, its peak (VmHWM: `peak_memory_mib` says why not ru_maxrss), and the
bytes the split holds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # testing.py, conftest.py: files, server, registry
import peak_memory  # benchmarks/peak_memory.py: VmHWM, the peak resident memory of a process alone
import results  # benchmarks/results.py: the Markdown and JSON output

NAME = "mnist_variants_fashion_mnist"
COUNTS = {"train": 60_000, "test": 10_000}
BATCH = 256
CONTENDERS = {
    "tf.data (TFRecord)": ("tfdata", "tfrecord"),
    "tfds.data_source, DataLoader 0 workers, PIL": ("torch-tfds-0", "pil"),
    "tfds.data_source, DataLoader 0 workers, OpenCV": ("torch-tfds-0", "cv2"),
    "tfds.data_source, DataLoader 2 workers (spawn), PIL": ("torch-tfds-2", "pil"),
    "tfds.data_source, DataLoader 2 workers (spawn), OpenCV": ("torch-tfds-2", "cv2"),
    "data_sources.open, DataLoader 0 workers": ("torch-ours-0", "none"),
    "data_sources.open, DataLoader 2 workers (fork)": ("torch-ours-2", "none"),
    # The same over tfds.load's TFRecord preparation (read without tf.data), as where only that exists.
    "data_sources.open over TFRecord, DataLoader 0 workers": ("torchtf-ours-0", "none"),
    "tfds.data_source, Grain 2 workers, OpenCV": ("grain-tfds", "cv2"),
    "data_sources.open, Grain 2 workers": ("grain-ours", "none"),
    "torchvision FashionMNIST, DataLoader 0 workers": ("torchvision-0", "none"),
    "torchvision FashionMNIST, DataLoader 2 workers (fork)": ("torchvision-2", "none"),
}


def two_passes(batches_of_a_pass) -> dict:
    """Seconds of two passes of `batches_of_a_pass()` (an iterable of batches with a `label` entry)."""
    figures = {}
    for number in (1, 2):
        started, count = time.perf_counter(), 0
        for batch in batches_of_a_pass():
            count += len(batch["label"]) if isinstance(batch, dict) else len(batch[1])
        figures[f"pass{number}"] = time.perf_counter() - started
        assert count == COUNTS["train"], count
    return figures


def peak_memory_mib() -> dict:
    """Peak resident memory of this process (VmHWM), in MiB; spawned workers are added by `child`.

    Not ru_maxrss (`peak_memory` says why). Nor the workers' RUSAGE_CHILDREN, for the same reason: Grain's
    spawned workers reported exactly their parent's peak (444 MiB), and loaders with no workers 432 to 537 MiB
    from helper processes their libraries start.
    """
    return {"peak_mib": peak_memory.peak_mib()}


def workers_peak_mib() -> float:
    """The sum of this process's children's peak resident memory (VmHWM), read while they are alive, in MiB.

    For spawned workers only (Grain's, DataLoader's with spawn): each unpickles its own copy of the source, so
    their memory adds to the parent's. Forked workers share the parent's pages, which VmHWM counts again:
    `peak_memory.helpers_peak_mib` leaves them out (same command line), and skips a worker that ends meanwhile.
    """
    return peak_memory.helpers_peak_mib(os.getpid())


def open_memory(data_dir: str) -> dict:
    """In a fresh process: resident memory before `data_sources.open`, its peak, and what the split holds."""
    from mnist_variants import data_sources

    before = peak_memory.status_mib("VmRSS")
    started = time.perf_counter()
    source = data_sources.open(NAME, "train", data_dir=data_dir)
    seconds = time.perf_counter() - started
    held = sum(array.nbytes for array in source.arrays.values()) / 2**20
    return {"examples": len(source), "before_mib": before, "held_mib": held, "open_s": seconds, **peak_memory_mib()}


def child(mode: str, decoder: str, data_dir: str) -> dict:
    """In a fresh process: one contender's two passes (and, for ours, the time to open the source)."""
    if mode == "open-memory":
        return open_memory(data_dir)
    figures = contender(mode, decoder, data_dir) | peak_memory_mib()
    figures["peak_mib"] += figures.pop("workers_mib", 0.0)
    return figures


def contender(mode: str, decoder: str, data_dir: str) -> dict:
    """One contender's two passes (and, for ours, the time to open the source)."""
    if decoder == "pil":
        sys.modules["cv2"] = None  # TFDS then decodes with PIL, as where OpenCV is not installed
    figures: dict = {}
    if mode.startswith("torchvision"):
        import torch
        from torchvision import datasets, transforms

        dataset = datasets.FashionMNIST(data_dir, train=True, download=False, transform=transforms.ToTensor())
        workers = int(mode[-1])
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0
        )
        return two_passes(lambda: loader)

    import tensorflow_datasets as tfds

    from mnist_variants import data_sources

    if mode == "tfdata":
        import tensorflow as tf

        builder = tfds.builder(NAME, data_dir=data_dir)

        def tf_pass():
            dataset = builder.as_dataset(split="train", shuffle_files=True).shuffle(10_000)
            return tfds.as_numpy(dataset.batch(BATCH).prefetch(tf.data.AUTOTUNE))

        return two_passes(tf_pass)
    if mode.endswith("ours") or "-ours-" in mode:
        started = time.perf_counter()
        source = data_sources.open(NAME, "train", data_dir=data_dir)
        figures["open"] = time.perf_counter() - started
    else:
        source = tfds.data_source(NAME, split="train", data_dir=data_dir)
    if mode.startswith("torch"):
        import torch

        workers = int(mode[-1])
        context = "spawn" if workers and "-tfds-" in mode else None
        loader = torch.utils.data.DataLoader(
            source,
            batch_size=BATCH,
            shuffle=True,
            num_workers=workers,
            multiprocessing_context=context,
            persistent_workers=workers > 0,
        )
        figures |= two_passes(lambda: loader)
        if context == "spawn":  # the persistent workers are still alive
            figures["workers_mib"] = workers_peak_mib()
        return figures
    import grain
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    dataset = grain.MapDataset.source(source).shuffle(seed=0).batch(BATCH)
    iterator = iter(dataset.repeat(2).to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=2)))
    batches_per_pass = -(-COUNTS["train"] // BATCH)

    def grain_pass():
        for _ in range(batches_per_pass):
            yield next(iterator)

    figures |= two_passes(grain_pass)
    figures["workers_mib"] = workers_peak_mib()  # Grain's workers are spawned, and alive until close()
    iterator.close()
    return figures


def in_fresh_process(python: str, *args: str) -> dict:
    result = subprocess.run(
        [python, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare(files: Path, root: Path) -> dict[str, Path]:
    """Full-size files written once; prepared as TFRecord and ArrayRecord; a torchvision root beside them."""

    import tensorflow_datasets as tfds
    import testing

    from mnist_variants import FashionMnist

    folder = files / "fashion_mnist"
    if not (folder / "complete").exists():
        print(f"writing full-size Fashion-MNIST files to {folder} ...", flush=True)
        testing.write_upstream_files(FashionMnist, folder, COUNTS, seed=11)  # as prepare_benchmark.py
        (folder / "complete").write_text("")
    # The generated files' digests stand in for upstream's (tests/conftest.py writes them as the tests do).
    from conftest import write_registry
    from etils import epath

    files_by_name = {path.name: path.read_bytes() for path in folder.glob("*.gz")}
    FashionMnist._checksums_path = epath.Path(
        write_registry(root / "registry", FashionMnist, files_by_name, FashionMnist.SOURCES[0])
    )
    dirs = {file_format: root / file_format for file_format in ("tfrecord", "array_record")}
    for file_format, data_dir in dirs.items():
        builder = FashionMnist(data_dir=data_dir, file_format=file_format)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=folder))
        assert builder.info.splits["train"].num_examples == COUNTS["train"]
    raw = root / "torchvision" / "FashionMNIST" / "raw"  # torchvision reads the decompressed files
    raw.mkdir(parents=True)
    for gz in folder.glob("*.gz"):
        (raw / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    dirs["torchvision"] = root / "torchvision"
    return dirs


def prepare_array_record(files: Path, root: Path, train: int, file_format: str = "array_record") -> Path:
    """Fashion-MNIST-format files with `train` synthetic train images, prepared as `file_format`; its data_dir."""
    import tensorflow_datasets as tfds
    import testing

    from mnist_variants import FashionMnist

    folder = files / f"fashion_mnist_{train}"
    if not (folder / "complete").exists():
        print(f"writing Fashion-MNIST files of {train:,} train images to {folder} ...", flush=True)
        testing.write_upstream_files(FashionMnist, folder, {"train": train, "test": 10}, seed=13)
        (folder / "complete").write_text("")
    from conftest import write_registry
    from etils import epath

    files_by_name = {path.name: path.read_bytes() for path in folder.glob("*.gz")}
    FashionMnist._checksums_path = epath.Path(
        write_registry(root / "registry_memory", FashionMnist, files_by_name, FashionMnist.SOURCES[0])
    )
    data_dir = files / f"{file_format}_{train}"
    if tfds.builder(FashionMnist.name, data_dir=data_dir).is_prepared():
        return data_dir
    started = time.perf_counter()
    FashionMnist(data_dir=data_dir, file_format=file_format).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=folder)
    )
    print(f"prepared in {time.perf_counter() - started:.0f} s", flush=True)
    return data_dir


def memory_rounds(files: Path, train: int, rounds: int, file_format: str, tables: results.Results) -> None:
    """Peak memory of `data_sources.open` on a split of `train` images (EMNIST byclass's 697,932 by default),
    one row a round, as a table of `tables` (so --markdown and --json write it)."""
    rows, all_figures = [], []
    with tempfile.TemporaryDirectory(prefix="loaders_memory_") as root:
        data_dir = prepare_array_record(files, Path(root), train, file_format)
        for number in range(rounds):
            figures = in_fresh_process(sys.executable, "open-memory", "none", str(data_dir))
            figures["peak_over_held"] = figures["peak_mib"] / figures["held_mib"]
            figures["growth_over_held"] = (figures["peak_mib"] - figures["before_mib"]) / figures["held_mib"]
            print(f"  round {number + 1}: {json.dumps({k: round(v, 2) for k, v in figures.items()})}", flush=True)
            all_figures.append(figures)
            rows.append(
                [
                    str(number + 1),
                    file_format,
                    f"{figures['examples']:,}",
                    f"{figures['held_mib']:,.0f}",
                    f"{figures['before_mib']:,.1f}",
                    f"{figures['open_s']:.1f}",
                    f"{figures['peak_mib']:,.0f}",
                    f"{figures['peak_over_held']:.2f}x",
                ]
            )
    tables.table(
        f"Memory of data_sources.open, prepared as {file_format}: peak resident memory (VmHWM) of a fresh process",
        ["round", "prepared as", "images", "held MiB", "before open MiB", "open, s", "peak MiB", "peak / held"],
        rows,
        all_figures,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--torchvision_python", help="a Python with torch and torchvision, for torchvision's rows")
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), help="run only these contenders")
    parser.add_argument(
        "--memory",
        type=int,
        metavar="EXAMPLES",
        help="measure only data_sources.open's peak memory, on a generated split of this many images (697932)",
    )
    parser.add_argument("--memory_format", choices=("array_record", "tfrecord"), default="array_record")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DECODER", "DATA_DIR"), help=argparse.SUPPRESS)
    results.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    tables = results.Results("benchmarks/loaders_benchmark.py")
    if args.memory:
        memory_rounds(args.files, args.memory, args.rounds, args.memory_format, tables)
        tables.write(args)
        return
    contenders = {name: spec for name, spec in CONTENDERS.items() if not args.only or name in args.only}
    if not args.torchvision_python:
        contenders = {name: spec for name, spec in contenders.items() if not spec[0].startswith("torchvision")}
    print(f"machine: {results.machine()}")
    rounds: dict[str, list[dict]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="loaders_bench_") as root:
        dirs = prepare(args.files, Path(root))
        names = list(contenders)
        for number in range(args.rounds):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                mode, decoder = contenders[name]
                python = args.torchvision_python if mode.startswith("torchvision") else sys.executable
                data_dir = dirs[
                    "torchvision"
                    if mode.startswith("torchvision")
                    else "tfrecord"
                    if mode == "tfdata" or mode.startswith("torchtf")
                    else "array_record"
                ]
                figures = in_fresh_process(python, mode, decoder, str(data_dir))
                rounds[name].append(figures)
                print(
                    f"  round {number + 1}: {name}: {json.dumps({k: round(v, 2) for k, v in figures.items()})}",
                    flush=True,
                )
    rows = []
    for name, figures in rounds.items():
        first = statistics.median(COUNTS["train"] / f["pass1"] for f in figures)
        second = statistics.median(COUNTS["train"] / f["pass2"] for f in figures)
        opened = f"{statistics.median(f['open'] for f in figures):.2f}" if "open" in figures[0] else ""
        peak = statistics.median(f["peak_mib"] for f in figures)
        rows.append([name, f"{first:,.0f}", f"{second:,.0f}", opened, f"{peak:,.0f}"])
    tables.table(
        f"{args.rounds} rounds, medians; examples/s = 60,000 / seconds of a pass (batches of {BATCH})",
        ["loader", "first pass, examples/s", "second pass, examples/s", "open, s", "peak MiB"],
        rows,
        rounds,
    )
    tables.write(args)


if __name__ == "__main__":
    main()
