"""Fits a mixture of multivariate Bernoullis to mnist_variants_binarized_mnist by EM and reports the
average test negative log-likelihood in nats, the way this dataset is evaluated (Salakhutdinov &
Murray 2008 report such figures for mixtures of Bernoullis, RBMs and DBNs).

    python examples/binarized_mnist_nll.py --components 50 --iterations 30
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow_datasets as tfds

import mnist_variants  # noqa: F401  (registers the builders)


def load(split: str, args: argparse.Namespace) -> np.ndarray:
    """A split as a (count, 784) float array of 0/1 pixels."""
    images = tfds.load(
        "mnist_variants_binarized_mnist",
        split=split,
        batch_size=-1,
        data_dir=args.data_dir,
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)},
    )["image"]
    return tfds.as_numpy(images).reshape(-1, 28 * 28).astype(np.float64)


def logsumexp(values: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    total = peak + np.log(np.exp(values - peak).sum(axis=axis, keepdims=True))
    return total if keepdims else total.squeeze(axis)


def log_likelihoods(x: np.ndarray, weights: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(count, components): log pi_k + log p(x | k) for a Bernoulli mixture."""
    return np.log(weights) + x @ np.log(means).T + (1 - x) @ np.log1p(-means).T


def fit(x: np.ndarray, components: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """EM with a Beta(2, 2) prior on every pixel mean, so no mean reaches 0 or 1."""
    rng = np.random.default_rng(seed)
    weights = np.full(components, 1 / components)
    means = rng.uniform(0.25, 0.75, (components, x.shape[1]))
    for iteration in range(1, iterations + 1):
        joint = log_likelihoods(x, weights, means)
        evidence = logsumexp(joint, axis=1, keepdims=True)
        responsibilities = np.exp(joint - evidence)
        counts = responsibilities.sum(axis=0)
        weights = (counts + 1) / (len(x) + components)
        means = (responsibilities.T @ x + 1) / (counts[:, None] + 2)
        print(f"iteration {iteration}: train NLL {-evidence.mean():.2f} nats")
    return weights, means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir")
    parser.add_argument("--manual_dir", help="folder with the upstream .amat files, to prepare without network")
    parser.add_argument("--components", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    weights, means = fit(load("train", args), args.components, args.iterations, args.seed)
    test = load("test", args)
    nll = -logsumexp(log_likelihoods(test, weights, means), axis=1).mean()
    print(f"test NLL: {nll:.2f} nats per image ({len(test)} images, {args.components} components)")


if __name__ == "__main__":
    main()
