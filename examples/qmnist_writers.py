"""A writer-disjoint evaluation on QMNIST: train on some writers' digits, test on writers the model never saw.

python examples/qmnist_writers.py                      # downloads QMNIST's files (train and test: 19 MB)
python examples/qmnist_writers.py --manual_dir /data   # offline: /data holds upstream's files (or QMNIST/raw/)

MNIST's own split shares writers between train and test. QMNIST's extended labels name each digit's NIST
writer (`writer`), so a split can keep writers apart: the model is fit on `train`, and tested on the digits
of `test` whose writers have no digit in `train` ("unseen writers") and on the others ("seen writers").
Prints both accuracies and how many digits and writers each side holds; the gap is what unseen
handwriting costs.
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow_datasets as tfds
from sklearn.linear_model import LogisticRegression

import mnist_variants  # noqa: F401  (registers the builders)

NAME = "mnist_variants_qmnist"


def load(split: str, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The split as numpy arrays: pixels flattened to [0, 1], labels, writers."""
    examples = tfds.as_numpy(
        tfds.load(
            NAME,
            split=split,
            batch_size=-1,
            data_dir=args.data_dir,
            download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)},
        )
    )
    images = examples["image"]
    return {
        "x": images.reshape(len(images), -1).astype(np.float32) / 255.0,
        "y": examples["label"],
        "writer": examples["writer"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="where TFDS keeps prepared data (default: TFDS's)")
    parser.add_argument("--manual_dir", help="a folder with QMNIST's upstream files")
    parser.add_argument("--train_limit", type=int, default=10_000, help="training images (0: all 60,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train, test = load("train", args), load("test", args)
    seen_writers = np.unique(train["writer"])
    if args.train_limit:
        chosen = np.random.default_rng(args.seed).permutation(len(train["y"]))[: args.train_limit]
        train = {key: values[chosen] for key, values in train.items()}
    classifier = LogisticRegression(max_iter=200).fit(train["x"], train["y"])
    unseen = ~np.isin(test["writer"], seen_writers)  # writers of none of train's 60,000 digits
    print(f"train: {len(train['y'])} digits of {len(np.unique(train['writer']))} writers")
    for title, chosen in (("seen writers", ~unseen), ("unseen writers", unseen)):
        if not chosen.any():
            print(f"{title}: no test digit")
            continue
        accuracy = float((classifier.predict(test["x"][chosen]) == test["y"][chosen]).mean())
        writers = len(np.unique(test["writer"][chosen]))
        print(f"{title}: {int(chosen.sum())} test digits of {writers} writers, accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
