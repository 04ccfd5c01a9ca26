"""What unseen writers cost: a writer-disjoint split of QMNIST against a random split of the same sizes.

python examples/qmnist_writers.py                      # downloads and prepares QMNIST (see the cost below)
python examples/qmnist_writers.py --manual_dir /data   # offline: /data holds upstream's six files (or QMNIST/raw/)
python examples/qmnist_writers.py --split nist         # NIST SD 19's 402,953 digits (1.3 GB as float32)

QMNIST's extended labels name each digit's NIST writer (`writer`). In upstream's files, `train` and `test`
have no writer in common (539 and 535 writers), so a model fit on `train` meets only unseen writers on `test`,
and nothing to compare that with. Here one split is divided by writer: a share of its writers is held out,
the model is fit on the other writers' digits and tested on the held-out writers' digits. A random split of
the same sizes (test digits drawn from every writer) is fit and tested alike; the gap between the two
accuracies is what unseen handwriting costs.

Cost: the builder prepares its three splits together, whichever one is asked for: it fetches upstream's six
files (the label files 1.9 MB; the image files' sizes are published nowhere, the nist one's bound is its
uncompressed 301 MiB) and writes 522,953 examples, `nist`'s 402,953 included. Later runs read the prepared data.
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow_datasets as tfds
from sklearn.linear_model import LogisticRegression

import mnist_variants  # noqa: F401  (registers the builders)

NAME = "mnist_variants_qmnist"


def load(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The split as numpy arrays: pixels flattened to [0, 1], labels, writers."""
    examples = tfds.as_numpy(
        tfds.load(
            NAME,
            split=args.split,
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


def accuracy(digits: dict[str, np.ndarray], fit: np.ndarray, test: np.ndarray) -> float:
    """Accuracy on the `test` rows of a model fit on the `fit` rows."""
    classifier = LogisticRegression(max_iter=200).fit(digits["x"][fit], digits["y"][fit])
    return float((classifier.predict(digits["x"][test]) == digits["y"][test]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="where TFDS keeps prepared data (default: TFDS's)")
    parser.add_argument("--manual_dir", help="a folder with QMNIST's upstream files")
    parser.add_argument("--split", default="train", choices=("train", "test", "nist"), help="the digits to divide")
    parser.add_argument("--held_out", type=float, default=0.2, help="share of the writers held out for testing")
    parser.add_argument("--fit_limit", type=int, default=10_000, help="most digits to fit on (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    digits = load(args)
    rng = np.random.default_rng(args.seed)
    writers = np.unique(digits["writer"])
    held_out = rng.permutation(writers)[: max(1, round(args.held_out * len(writers)))]
    unseen = np.flatnonzero(np.isin(digits["writer"], held_out))  # the held-out writers' digits
    fit = rng.permutation(np.setdiff1d(np.arange(len(digits["y"])), unseen))
    fit = fit[: args.fit_limit] if args.fit_limit else fit
    # The random split: as many test digits and fit digits, drawn from every writer.
    shuffled = rng.permutation(len(digits["y"]))
    random_test, random_fit = shuffled[: len(unseen)], shuffled[len(unseen) :][: len(fit)]
    shared = np.isin(digits["writer"][random_test], digits["writer"][random_fit])

    fit_writers = len(np.unique(digits["writer"][fit]))
    print(f"{args.split}: {len(digits['y'])} digits of {len(writers)} writers, {len(held_out)} writers held out")
    print(
        f"unseen writers: fit on {len(fit)} digits of {fit_writers} writers, tested on {len(unseen)} digits"
        f" of {len(held_out)} other writers, accuracy {accuracy(digits, fit, unseen):.4f}"
    )
    print(
        f"random split: fit on {len(random_fit)} digits, tested on {len(random_test)} digits"
        f" ({int(shared.sum())} by writers of the fit digits), accuracy {accuracy(digits, random_fit, random_test):.4f}"
    )


if __name__ == "__main__":
    main()
