"""Classic classifiers on MNIST, Fashion-MNIST and Kuzushiji-MNIST side by side, as Fashion-MNIST's own benchmark.

python examples/compare_classifiers.py                       # all three, 10,000 training images each
python examples/compare_classifiers.py --train_limit 0       # the whole training sets (slow)
python examples/compare_classifiers.py --manual_dir /data    # offline: /data/<registered name>/ holds each's files
python examples/compare_classifiers.py --corruption fog      # and MNIST-C: trained on identity, tested on fog too

Each dataset comes through `tfds.load(..., batch_size=-1)`; pixels are scaled to [0, 1] and
flattened. Prints one table: test accuracy and fit time per dataset and classifier. With
`--corruption`, MNIST-C is used as its robustness benchmark is: each classifier is fit on the
clean `identity` train split (MNIST's images) and tested on `identity`'s test split and on the
corruption's; the gap between the two rows is what the corruption costs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow_datasets as tfds
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

import mnist_variants  # noqa: F401  (registers the builders)
from mnist_variants.datasets.mnist_corrupted import CORRUPTIONS

DATASETS = ("mnist_variants_mnist", "mnist_variants_fashion_mnist", "mnist_variants_kmnist")
MNIST_C = "mnist_variants_mnist_corrupted"


def classifiers(seed: int) -> dict[str, object]:
    return {
        "logistic regression": LogisticRegression(max_iter=200),
        "random forest": RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed),
        "MLP (256)": MLPClassifier(hidden_layer_sizes=(256,), max_iter=50, random_state=seed),
    }


def load(name: str, split: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    images, labels = tfds.as_numpy(
        tfds.load(
            name,
            split=split,
            batch_size=-1,
            as_supervised=True,
            data_dir=args.data_dir,
            download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)},
        )
    )
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--train_limit", type=int, default=10_000, help="training images per dataset (0: all)")
    parser.add_argument("--data_dir", help="where TFDS keeps prepared data (default: TFDS's)")
    parser.add_argument("--manual_dir", help="a folder with each dataset's upstream files in <registered name>/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--corruption",
        choices=CORRUPTIONS,
        metavar="CONFIG",
        help=f"also MNIST-C: fit on `identity`, test on it and on this config, one of: {', '.join(CORRUPTIONS)}",
    )  # checked here, before any classifier is fitted
    args = parser.parse_args()

    print("| dataset | classifier | test accuracy | fit seconds |")
    print("|---|---|---|---|")
    for name in args.datasets:
        compare(name, load(name, "train", args), {name: load(name, "test", args)}, args)
    if args.corruption:
        clean = f"{MNIST_C}/identity"
        tests = {
            clean: load(clean, "test", args),
            f"{MNIST_C}/{args.corruption}": load(f"{MNIST_C}/{args.corruption}", "test", args),
        }
        compare(clean, load(clean, "train", args), tests, args)


def compare(name: str, train: tuple[np.ndarray, np.ndarray], tests: dict, args: argparse.Namespace) -> None:
    """Fits each classifier on `train` (at most --train_limit images) and prints its accuracy on each test set."""
    x_train, y_train = train
    if args.train_limit:
        chosen = np.random.default_rng(args.seed).permutation(len(x_train))[: args.train_limit]
        x_train, y_train = x_train[chosen], y_train[chosen]
    for title, classifier in classifiers(args.seed).items():
        started = time.perf_counter()
        classifier.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        for test_name, (x_test, y_test) in tests.items():
            accuracy = float((classifier.predict(x_test) == y_test).mean())
            shown = test_name if test_name == name else f"{test_name} (fit on {name.rsplit('/', 1)[-1]})"
            print(f"| {shown} | {title} | {accuracy:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
