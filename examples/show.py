"""Writes a labelled grid of examples of a split to a PNG file, to look at the data.

python examples/show.py mnist_variants_fashion_mnist --out fashion.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed

import tensorflow_datasets as tfds

import mnist_variants  # noqa: F401  (registers the builders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["mnist_variants_fashion_mnist", "mnist_variants_binarized_mnist"])
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--split", default="train")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--data_dir")
    parser.add_argument("--manual_dir", help="folder with the upstream files, to prepare without network")
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
