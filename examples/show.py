"""Draws examples of the datasets, and the performance chart of the docs.

python examples/show.py mnist_variants_fashion_mnist --out fashion.png   # a labelled grid of one split
python examples/show.py --docs                                         # docs/images/<short>.png, from dummy_data/
python examples/show.py --performance                                  # docs/images/performance.png

`--docs` prepares every registered builder (every config) from the repository's dummy data, offline, with
the dummy files' own checksums registered in place of upstream's, and draws a grid of each: the
repository holds no real images, so these figures are generated stand-ins that show layout, labels and
size, not the real data. `--performance` draws prepare time and time to data, ours beside TFDS's
built-ins, from the tables of docs/performance.md (pasted from the benchmarks' output).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed

import matplotlib.pyplot as plt
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

import mnist_variants  # noqa: F401  (registers the builders)
from mnist_variants.builder import MnistVariantBuilder

REPO = Path(__file__).resolve().parent.parent
PREFIX = "mnist_variants_"


def show_one(args: argparse.Namespace) -> None:
    """A labelled grid of one split, as TFDS draws it (tfds.show_examples)."""
    dataset, info = tfds.load(
        args.name,
        split=args.split,
        with_info=True,
        data_dir=args.data_dir,
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)},
    )
    figure = tfds.show_examples(dataset, info, rows=args.rows, cols=args.cols)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.rows}x{args.cols} examples of {args.name}[{args.split}] to {args.out}")


def register_dummy_checksums(cls: type[MnistVariantBuilder], files: dict[str, bytes], registry: Path) -> None:
    """Points the builder at checksums of the dummy files, shaped as upstream's, written by the tests' own
    `write_registry` (tests/conftest.py): one function, so the figures and the tests register the same digests.

    Imported from tests/ here only (as the benchmarks import tests/testing.py): `--docs` draws the repository's
    figures from its dummy data, for maintainers, who have the `test` extra. Why an attribute TFDS treats as
    private: `_checksums_path` is where TFDS and the builder read the registered checksums; the tests' workers
    swap it the same way (tests/workers/registered_dummies.py).
    """
    sys.path.append(str(REPO / "tests"))
    from conftest import write_registry

    cls._checksums_path = epath.Path(write_registry(registry, cls, files, cls.SOURCES[0]))


def draw_grid(rows: list[tuple[str, np.ndarray, list[str]]], title: str, out: Path) -> None:
    """One row of images a (row label, images, captions); small, grey, no axes."""
    cols = max(len(images) for _, images, _ in rows)
    figure, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.8, len(rows) * 0.95 + 0.3), squeeze=False)
    for row, (label, images, captions) in enumerate(rows):
        for col in range(cols):
            axis = axes[row][col]
            axis.set_xticks([])
            axis.set_yticks([])
            for side in axis.spines.values():
                side.set_visible(False)
            if col < len(images):
                axis.imshow(images[col][..., 0], cmap="gray_r", vmin=0, vmax=images[col].max() or 1)
                axis.set_title(captions[col], fontsize=7, pad=2)
        axes[row][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout(pad=0.2, rect=(0, 0, 1, 1 - 0.3 / figure.get_figheight()))  # room for the title
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=60)
    plt.close(figure)
    # Grey images on white: 8-bit greyscale keeps the committed PNG a few times smaller than RGBA.
    Image.open(buffer).convert("L").save(out, optimize=True)


def examples_of(builder: tfds.core.DatasetBuilder, count: int) -> tuple[np.ndarray, list[str]]:
    """The first `count` train examples' images and their captions (the label's name, if labelled)."""
    batch = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1))
    images = batch["image"][:count]
    label = builder.info.features["label"] if "label" in builder.info.features else None
    captions = [label.int2str(int(value)) for value in batch["label"][:count]] if label else [""] * len(images)
    return images, captions


def draw_docs_figures(names: list[str], out_dir: Path, count: int) -> list[Path]:
    """docs/images/<short>.png for each builder, prepared from dummy_data/ offline; one row a config."""
    families = [cls for cls in MnistVariantBuilder.FAMILY if not names or cls.name in names]
    written = []
    with tempfile.TemporaryDirectory() as work:
        registry = Path(work) / "registry"
        registry.mkdir()
        for cls in MnistVariantBuilder.FAMILY:  # all of them: MNIST-C's labels are checked against MNIST's
            folder = REPO / "dummy_data" / cls.name.removeprefix(PREFIX)
            if folder.is_dir():
                register_dummy_checksums(cls, {p.name: p.read_bytes() for p in folder.iterdir()}, registry)
        for cls in families:
            short = cls.name.removeprefix(PREFIX)
            configs = [config.name for config in cls.BUILDER_CONFIGS] or [None]
            rows = []
            for config in configs:
                builder = tfds.builder(cls.name, config=config, data_dir=str(Path(work) / "data"))
                manual_dir = str(REPO / "dummy_data" / short)
                builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
                rows.append((config or "train", *examples_of(builder, count)))
            out = out_dir / f"{short}.png"
            draw_grid(rows, f"{cls.TITLE}: generated dummy data, not real images", out)
            print(f"wrote {out} ({out.stat().st_size:,} bytes)")
            written.append(out)
    return written


def performance_figures(page: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """From docs/performance.md: {"prepare" | "time to data": {dataset: (ours s, built-in s)}}."""
    figures: dict[str, dict[str, tuple[float, float]]] = {"prepare": {}, "time to data": {}}
    section = None
    for line in page.read_text().splitlines():
        if line.startswith("## ") or line.startswith("### "):  # a subsection's tables have other columns
            section = {"## Prepare time": "prepare", "## Time to data over a slow network": "time to data"}.get(line)
        match = re.match(r"^\| ([^|]+?) \| ([\d.]+) s \| ([\d.]+) s \|", line)
        if section and match:
            figures[section][match[1]] = (float(match[2]), float(match[3]))
    return figures


def draw_performance(page: Path, out: Path) -> None:
    """Bars of seconds, ours beside the built-in, per dataset: prepare time and time to data."""
    figures = performance_figures(page)
    figure, axes = plt.subplots(1, len(figures), figsize=(9, 3))
    for axis, (what, by_dataset) in zip(axes, figures.items(), strict=True):
        names = list(by_dataset)
        positions = np.arange(len(names))
        ours = [by_dataset[name][0] for name in names]
        builtin = [by_dataset[name][1] for name in names]
        axis.bar(positions - 0.2, ours, 0.4, label="mnist_variants")
        axis.bar(positions + 0.2, builtin, 0.4, label="TFDS built-in")
        axis.set_xticks(positions, names, fontsize=7, rotation=15)
        axis.set_ylabel("seconds (lower is better)", fontsize=8)
        axis.set_title(what, fontsize=9)
        axis.legend(fontsize=7)
    for what, by_dataset in figures.items():
        drawn = ", ".join(f"{name} {ours:g} s / {builtin:g} s" for name, (ours, builtin) in by_dataset.items())
        print(f"{what}, ours / built-in: {drawn}")
    figure.tight_layout()
    figure.savefig(out, dpi=70)
    plt.close(figure)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=[cls.name for cls in MnistVariantBuilder.FAMILY])
    parser.add_argument("--out", help="PNG file to write (with a name)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--data_dir")
    parser.add_argument("--manual_dir", help="folder with the upstream files, to prepare without network")
    parser.add_argument("--docs", action="store_true", help="the docs' figures of every dataset, from dummy_data/")
    parser.add_argument("--only", nargs="*", default=[], help="with --docs: these registered names only")
    parser.add_argument("--performance", action="store_true", help="the docs' chart from docs/performance.md")
    parser.add_argument(
        "--images", type=Path, default=REPO / "docs" / "images", help="where --docs and --performance write"
    )
    parser.add_argument("--page", type=Path, default=REPO / "docs" / "performance.md", help="tables for --performance")
    args = parser.parse_args()
    if args.docs or args.performance:
        args.images.mkdir(parents=True, exist_ok=True)
        if args.docs:
            draw_docs_figures(args.only, args.images, count=8)
        if args.performance:
            draw_performance(args.page, args.images / "performance.png")
        return
    if not (args.name and args.out):
        parser.error("give a registered name and --out, or --docs / --performance")
    show_one(args)


if __name__ == "__main__":
    main()
