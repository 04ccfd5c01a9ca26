"""Times nothing-to-prepared-data through the real download path: ours against TFDS's built-in builders.

    python benchmarks/download_benchmark.py [--rounds 3] [--rate 4] [--files DIR] [--fault cut|stall]

Full-size files in the upstream formats (the same synthetic files as prepare_benchmark.py)
are served by an HTTP server on 127.0.0.1 that throttles every connection to `--rate`
MB/s (a slow upstream) and honours Range requests, as upstream servers do. Each round,
for each dataset, ours and TFDS's built-in builder each download and prepare into a fresh
data_dir in a fresh process, alternating who goes first. Both are pointed at the loopback
server and have the synthetic files' checksums registered, so each verifies what it gets
as it would upstream's. The figure is the whole process's wall time (start-up included,
the same for both); ratios are taken round by round and their medians printed, with the
bytes the server sent for each run.

With `--fault cut` (or `stall`) the first transfer of every file is cut (or goes silent)
half-way, as a reset connection or a stuck proxy would; only ours runs then (TFDS's built-in
builders neither retry a cut nor time out a stall), with a 5 s download timeout and one
connection per file, so that each file's transfer meets the fault.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # testing.py: made-up files, the server
import results  # benchmarks/results.py: the Markdown and JSON output
from prepare_benchmark import DATASETS, QMNIST_DATASETS, builder_class, generate, register_mnist_labels

CONTENDERS = ("ours", "builtin")
# Each timed beside TFDS's built-in builder: QMNIST has none (prepare_benchmark sets it beside torchvision).
WITH_BUILTIN = [dataset for dataset in DATASETS if dataset not in QMNIST_DATASETS]


def point_at(dataset: str, contender: str, base_url: str, files: Path, scratch: Path):
    """The contender's builder class, downloading from `base_url` with the files' checksums registered."""
    from etils import epath
    from tensorflow_datasets.core.download import checksums

    builder_cls = builder_class(dataset, contender)
    names = builder_class(dataset, "ours").upstream_filenames()
    infos = {}
    for name in names:
        data = (files / name).read_bytes()
        infos[base_url + name] = checksums.UrlInfo(
            size=len(data), checksum=hashlib.sha256(data).hexdigest(), filename=name
        )
    if contender == "ours":
        tsv = scratch / f"{builder_cls.name}.tsv"
        checksums.save_url_infos(epath.Path(tsv), infos)
        builder_cls.SOURCES = (base_url,)
        builder_cls._checksums_path = epath.Path(tsv)
        if dataset == "mnist_corrupted":  # its labels are checked against the generated MNIST's
            register_mnist_labels(str(files), str(scratch))
    elif dataset == "mnist_corrupted":  # TFDS's mnist_corrupted names its archive's whole URL
        sys.modules[builder_cls.__module__]._DOWNLOAD_URL = base_url + names[0]
        builder_cls.url_infos = infos
    elif hasattr(builder_cls, "URL"):  # TFDS's MNIST family: fashion_mnist, mnist, kmnist
        builder_cls.URL = base_url
        builder_cls.url_infos = infos
    else:
        sys.modules[builder_cls.__module__]._URL = base_url
        builder_cls.url_infos = infos
    return builder_cls


def child(dataset: str, contender: str, base_url: str, files: str, data_dir: str) -> dict:
    """In this (fresh) process: download and prepare once."""
    builder_cls = point_at(dataset, contender, base_url, Path(files), Path(data_dir))
    builder = builder_cls(data_dir=data_dir)
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == DATASETS[dataset][2]["train"]
    return {"examples": {split: info.num_examples for split, info in builder.info.splits.items()}}


def run(dataset: str, contender: str, server, files: Path, env: dict[str, str]) -> dict:
    """One run in a fresh process; its wall time and the bytes the server sent for it."""
    with tempfile.TemporaryDirectory(prefix="dl_bench_") as data_dir:
        server.sent.clear()
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, __file__, "--child", dataset, contender, f"{server.url}/{dataset}/", str(files), data_dir],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **env},
        )
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{dataset} {contender} failed:\n{result.stderr[-5000:]}")
    return {"seconds": seconds, "bytes": sum(server.sent.values())}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=4.0, help="MB/s per connection (default 4)")
    parser.add_argument("--files", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", nargs="+", default=WITH_BUILTIN, choices=WITH_BUILTIN)
    parser.add_argument("--fault", choices=("cut", "stall"), help="cut or stall each file's first transfer half-way")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    results.add_arguments(parser)
    return parser


def main() -> None:
    args = make_parser().parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from testing import FileServer

    generate(args.files, args.datasets)
    server = FileServer(bytes_per_second=args.rate * 1e6)
    tables = results.Results("benchmarks/download_benchmark.py")
    summary = []
    try:
        for dataset in args.datasets:
            folder = args.files / dataset
            files = {path.name: path.read_bytes() for path in folder.iterdir() if path.name != "complete"}
            server.serve_files(dataset, files)
            size = sum(len(data) for data in files.values())
            contenders = ("ours",) if args.fault else CONTENDERS
            # One connection per file, so that each file's one transfer meets the fault half-way.
            env = {"MNIST_VARIANTS_DOWNLOAD_TIMEOUT": "5", "MNIST_VARIANTS_CONNECTIONS": "1"} if args.fault else {}
            rounds = []
            for number in range(args.rounds):
                if args.fault:
                    server.serve_files(dataset, files, args.fault)  # each file's next first request
                order = contenders if number % 2 == 0 else contenders[::-1]
                figures = {contender: run(dataset, contender, server, folder, env) for contender in order}
                rounds.append(figures)
                print(
                    f"  {dataset} round {number + 1}: "
                    + ", ".join(
                        f"{c} {figures[c]['seconds']:.1f} s ({figures[c]['bytes'] / size:.2f}x bytes)" for c in order
                    ),
                    flush=True,
                )
            summary.append(report(dataset, rounds, size, args.rate, contenders, tables))
    finally:
        server.stop()
    columns = ["dataset", "ours", "built-in", "ours / built-in", "bytes sent / file bytes (ours, built-in)"]
    tables.table(f"All datasets ({args.rounds} rounds, medians; {args.rate:g} MB/s a connection)", columns, summary)
    tables.write(args)


def report(
    dataset: str, rounds: list[dict], size: int, rate: float, contenders: tuple[str, ...], tables: results.Results
) -> list[str]:
    """Prints the dataset's table of contenders; returns its row of the summary table."""

    def median(contender: str, key: str) -> float:
        return statistics.median(figures[contender][key] for figures in rounds)

    tables.table(
        f"{dataset}: {size / 1e6:.1f} MB of files, {rate:g} MB/s per connection, {len(rounds)} rounds, medians",
        ["contender", "nothing to prepared data", "bytes sent / file bytes"],
        [[c, f"{median(c, 'seconds'):.1f} s", f"{median(c, 'bytes') / size:.2f}x"] for c in contenders],
        {contender: [figures[contender] for figures in rounds] for contender in contenders},
    )
    seconds = [f"{median(c, 'seconds'):.1f} s" if c in contenders else "-" for c in ("ours", "builtin")]
    sent = ", ".join(f"{median(c, 'bytes') / size:.2f}x" if c in contenders else "-" for c in ("ours", "builtin"))
    ratio = "-"
    if "builtin" in contenders:
        ratio = f"{statistics.median(f['ours']['seconds'] / f['builtin']['seconds'] for f in rounds):.2f}x"
    return [dataset, *seconds, ratio, sent]


if __name__ == "__main__":
    main()
