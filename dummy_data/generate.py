"""Writes the dummy data: a few made-up examples per split, in the exact upstream formats.

Run from anywhere: `python dummy_data/generate.py`. Deterministic, so the committed
files only change when this script does.
"""

from pathlib import Path

from mnist_variants import BinarizedMnist, FashionMnist, testing

HERE = Path(__file__).resolve().parent

# The tests state these same counts as the split sizes they expect.
COUNTS = {
    "fashion_mnist": (FashionMnist, {"train": 12, "test": 5}),
    "binarized_mnist": (BinarizedMnist, {"train": 10, "validation": 4, "test": 4}),
}


def main() -> None:
    for folder, (builder_cls, counts) in COUNTS.items():
        for path in testing.write_upstream_files(builder_cls, HERE / folder, counts, seed=len(folder)).values():
            print(f"{path.relative_to(HERE)}: {path.stat().length} bytes")


if __name__ == "__main__":
    main()
