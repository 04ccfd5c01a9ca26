"""EMNIST at full size: ours against TFDS's built-in `emnist` and a floor builder, each in a fresh process.

    python benchmarks/emnist_benchmark.py [--rounds 1] [--files DIR] [--rate 4] [--download-config mnist]
                                          [--skip prepare build download]

It writes a full-size gzip.zip once (`testing.write_archive`: every config's members at upstream's
counts, synthetic images, about 480 MiB; into `benchmarks/data/emnist/`), then per round:

- prepare `byclass` (814,255 examples) from that local archive: ours (the archive as a manual dir,
  verified by its sha256), TFDS's built-in (its public `download_and_extract` handed the local
  file, so TFDS's own extraction of the zip and of the gzip members runs), and the floor (same
  schema and example count, one constant pre-encoded PNG: the least a GeneratorBasedBuilder takes);
  seconds, CPU seconds (the process, and its children: our PNG helper) and the process's peak
  resident memory;
- all six configs in one command, `tfds build mnist_variants_emnist --imports ...` with the archive
  as manual dir: total seconds, CPU seconds and the peak resident memory of the CLI's process;
- time to data: nothing to a prepared `--download-config` through the real download path from a
  loopback server throttled to `--rate` MB/s per connection, ours and the built-in, whole-process
  wall time (start-up included), alternating who goes first.
Ratios are taken round by round; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # testing.py: made-up files, the server
import peak_memory  # benchmarks/peak_memory.py: VmHWM, the peak resident memory of a process alone
import results  # benchmarks/results.py: the Markdown and JSON output
from prepare_benchmark import floor_builder, rotated, tfds_build

PREPARED = "byclass"


def register(archive: Path, url: str, scratch: Path) -> Path:
    """A checksums file registering the generated archive under `url`, as a mirror's would be."""
    scratch.mkdir(parents=True, exist_ok=True)
    from tensorflow_datasets.core.download import checksums

    info = checksums.compute_url_info(archive)  # streamed: the figures are not to count a copy made here
    tsv = scratch / "mnist_variants_emnist.tsv"
    tsv.write_text(f"{url}\t{info.size}\t{info.checksum}\tgzip.zip\n")
    return tsv


def builtin_from(archive: Path):
    """TFDS's emnist, its public `download_and_extract` handed the local archive (TFDS's `extract` runs)."""
    import tensorflow_datasets as tfds

    return mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", lambda dl_manager, url: dl_manager.extract(archive)
    )


def peak_rss() -> dict[str, float]:
    """Peak resident memory of this process (VmHWM), and the CPU seconds of it and of its children (a figure
    that a machine shared with other work changes far less than wall time). The children's peak is not
    measured: their ru_maxrss starts at this process's peak (`peak_memory` says why)."""
    children = peak_memory.children_cpu_seconds()
    return {
        "peak_rss_mib": peak_memory.peak_mib(),
        "cpu_seconds": peak_memory.cpu_seconds() - children,
        "children_cpu_seconds": children,
    }


def prepare(contender: str, archive: Path, data_dir: str) -> dict:
    """In this (fresh) process: prepare byclass once."""
    import tensorflow_datasets as tfds
    import testing
    from etils import epath

    from mnist_variants import Emnist

    counts = testing.EMNIST_COUNTS[PREPARED]
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    if contender == "ours":
        Emnist._checksums_path = epath.Path(register(archive, Emnist.SOURCES[0] + "gzip.zip", Path(data_dir)))
        builder = Emnist(config=PREPARED, data_dir=data_dir)
        config = tfds.download.DownloadConfig(manual_dir=str(archive.parent))
        patch = mock.patch.dict({})
    elif contender == "builtin":
        builder, patch = tfds.builder_cls("emnist")(config=PREPARED, data_dir=data_dir), builtin_from(archive)
    else:
        builder, patch = floor_builder(Emnist, counts)(data_dir=data_dir), mock.patch.dict({})
    with patch:
        started = time.perf_counter()
        builder.download_and_prepare(download_dir=os.path.join(data_dir, "downloads"), download_config=config)
        seconds = time.perf_counter() - started
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == counts
    return {"seconds": seconds, **peak_rss()}


def build_all(archive: Path, data_dir: str) -> dict:
    """In this (fresh) process: `tfds build mnist_variants_emnist` (every config), timed; its peak resident memory
    (VmHWM) and CPU seconds are read as it exits by `peak_memory`'s wrapper, in the CLI's own process (after
    the CLI exits its VmHWM is gone, and its ru_maxrss would start at this process's peak)."""
    scratch = Path(data_dir)
    tsv = register(archive, "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", scratch)
    figures = tfds_build("mnist_variants_emnist", {"Emnist": tsv}, archive.parent, scratch / "data", scratch)
    built = sorted(path.parent.name for path in (scratch / "data" / "mnist_variants_emnist").glob("*/1.0.0"))
    assert len(built) == 6, built
    return figures


def download(contender: str, config_name: str, base_url: str, archive: Path, data_dir: str) -> dict:
    """In this (fresh) process: nothing to prepared data, downloading from `base_url`."""
    import tensorflow_datasets as tfds
    from etils import epath
    from tensorflow_datasets.core.download import checksums

    from mnist_variants import Emnist

    url = base_url + "gzip.zip"
    if contender == "ours":
        Emnist.SOURCES = (base_url,)
        Emnist._checksums_path = epath.Path(register(archive, url, Path(data_dir)))
        builder = Emnist(config=config_name, data_dir=data_dir)
    else:
        builtin = tfds.builder_cls("emnist")
        registered = checksums.load_url_infos(epath.Path(register(archive, url, Path(data_dir))))
        builtin.URL = url
        builtin.url_infos = registered
        builder = builtin(config=config_name, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return peak_rss()


def in_fresh_process(*args: str) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-5000:]}")
    return {"wall_seconds": wall, **json.loads(result.stdout.strip().splitlines()[-1])}


def generate(files: Path) -> Path:
    import testing

    from mnist_variants import Emnist

    archive = files / "emnist" / "gzip.zip"
    if not archive.exists():
        print(f"writing a full-size gzip.zip to {archive} (minutes) ...", flush=True)
        written = testing.write_archive(Emnist, files / "emnist.incomplete", seed=11)
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, archive)
    return archive


def run_round(archive: Path, args: argparse.Namespace, number: int) -> dict[str, dict]:
    figures: dict[str, dict] = {}
    files = str(args.files)
    with tempfile.TemporaryDirectory(prefix="emnist_bench_") as root:
        if "prepare" not in args.skip:
            for contender in rotated(args.contenders, number):
                figures[contender] = in_fresh_process(
                    "--files", files, "--child", "prepare", contender, f"{root}/{contender}"
                )
                shutil.rmtree(f"{root}/{contender}", ignore_errors=True)
                print(f"  round {number + 1}: prepare {PREPARED}, {contender}: {figures[contender]}", flush=True)
        if "build" not in args.skip:
            os.makedirs(f"{root}/build")
            figures["build"] = in_fresh_process("--files", files, "--child", "build", "-", f"{root}/build")
            shutil.rmtree(f"{root}/build", ignore_errors=True)
            print(f"  round {number + 1}: tfds build, all six configs: {figures['build']}", flush=True)
        if "download" not in args.skip:
            import testing

            server = testing.FileServer(bytes_per_second=args.rate * 1e6)
            server.serve("/nist/gzip.zip", archive.read_bytes())
            try:
                for contender in ("ours", "builtin")[:: 1 if number % 2 == 0 else -1]:
                    server.sent.clear()
                    figures[f"download_{contender}"] = in_fresh_process(
                        "--files", files, "--download-config", args.download_config, "--child", "download",
                        contender, f"{root}/dl_{contender}", f"{server.url}/nist/",
                    )  # fmt: skip
                    figures[f"download_{contender}"]["bytes_sent"] = sum(server.sent.values())
                    shutil.rmtree(f"{root}/dl_{contender}", ignore_errors=True)
                    print(
                        f"  round {number + 1}: download, {contender}: {figures[f'download_{contender}']}", flush=True
                    )
            finally:
                server.stop()
    return figures


def report(rounds: list[dict], archive_size: int, tables: results.Results) -> None:
    def median(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rounds)

    def ratio(a: str, b: str, field: str) -> float:
        return statistics.median(r[a][field] / r[b][field] for r in rounds)

    title = f"{len(rounds)} round(s), medians; archive {archive_size / (1 << 20):.1f} MiB"
    prepared = [contender for contender in ("ours", "builtin", "floor") if contender in rounds[0]]
    other = []
    if prepared:
        # Children's peak RSS is not shown: Linux counts in it the parent's resident pages at fork (subprocess
        # forks, then execs), so it says how large the parent was, not the PNG helper.
        rows = [
            [
                contender,
                f"{median(contender, 'seconds'):.1f} s",
                f"{median(contender, 'cpu_seconds'):.1f} s + {median(contender, 'children_cpu_seconds'):.1f} s",
                f"{median(contender, 'peak_rss_mib'):,.0f} MiB",
            ]
            for contender in prepared
        ]
        columns = [f"prepare {PREPARED}", "wall", "CPU (process + its children)", "peak RSS of the process"]
        figures = {contender: [r[contender] for r in rounds] for contender in prepared}
        tables.table(title, columns, rows, figures)
        pairs = [("builtin", "ours"), ("ours", "floor"), ("builtin", "floor")]
        other += [[f"{a} / {b}", f"{ratio(a, b, 'seconds'):.2f}x"] for a, b in pairs if {a, b} <= set(prepared)]
    if "build" in rounds[0]:
        other += [
            ["tfds build, all six configs", f"{median('build', 'seconds'):.1f} s"],
            ["tfds build, peak RSS (VmHWM) of its process", f"{median('build', 'peak_rss_mib'):,.0f} MiB"],
            ["tfds build, of its helpers at once", f"{median('build', 'helpers_peak_rss_mib'):,.0f} MiB"],
        ]
    if "download_ours" in rounds[0]:
        other += [
            ["time to data, ours", f"{median('download_ours', 'wall_seconds'):.1f} s"],
            ["time to data, built-in", f"{median('download_builtin', 'wall_seconds'):.1f} s"],
            ["time to data, ours / built-in", f"{ratio('download_ours', 'download_builtin', 'wall_seconds'):.2f}x"],
            ["bytes sent / archive, ours", f"{median('download_ours', 'bytes_sent') / archive_size:.3f}x"],
            ["bytes sent / archive, built-in", f"{median('download_builtin', 'bytes_sent') / archive_size:.3f}x"],
        ]
    if other:
        tables.table(title, ["figure", "value"], other)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--files", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--rate", type=float, default=4.0, help="MB/s per connection")
    parser.add_argument("--download-config", default="mnist")
    parser.add_argument("--skip", nargs="*", default=[], choices=["prepare", "build", "download"])
    parser.add_argument("--contenders", nargs="+", default=["ours", "builtin", "floor"], help="prepared byclass")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    results.add_arguments(parser)
    args = parser.parse_args()

    archive = args.files / "emnist" / "gzip.zip"
    if args.child:
        action, contender, data_dir, *rest = args.child
        if action == "prepare":
            figures = prepare(contender, archive, data_dir)
        elif action == "build":
            figures = build_all(archive, data_dir)
        else:
            figures = download(contender, args.download_config, rest[0], archive, data_dir)
        print(json.dumps(figures))
        return

    archive = generate(args.files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    rounds = [run_round(archive, args, number) for number in range(args.rounds)]
    tables = results.Results("benchmarks/emnist_benchmark.py")
    report(rounds, archive.stat().st_size, tables)
    tables.write(args)


if __name__ == "__main__":
    main()
