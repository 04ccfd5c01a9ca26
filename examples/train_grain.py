"""Trains a small JAX classifier on a labelled mnist_variants dataset fed by a Grain pipeline with worker processes.

python examples/train_grain.py --epochs 3
python examples/train_grain.py --manual_dir /data/fashion --num_workers 2   # offline, from local files

The pipeline is the usual one: `grain.MapDataset.source(...)` over
`mnist_variants.data_sources.open(...)`, shuffled with a seed per epoch, batched, and read by
worker processes (`mp_prefetch`; Grain spawns them, so `tfds.data_source` would work as well,
decoding every example in every epoch). The model is a two-layer perceptron in plain JAX,
trained with SGD and momentum, on Fashion-MNIST (our one labelled variant).
Needs `pip install 'mnist-variants[loaders]'` (grain, jax).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from mnist_variants import data_sources

Params = dict[str, jax.Array]
DATASET = "mnist_variants_fashion_mnist"
SEED = 0  # of the initial weights and of each epoch's order (SEED + epoch)


def source(split: str, args: argparse.Namespace) -> data_sources.InMemorySource:
    """The split held decoded in this process; Grain's workers get a copy (they are spawned)."""
    prepare = {"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)}
    return data_sources.open(DATASET, split, data_dir=args.data_dir, download_and_prepare_kwargs=prepare)


def batches(examples: Sequence, args: argparse.Namespace, seed: int | None) -> Iterator[dict[str, np.ndarray]]:
    """One pass in batches of numpy arrays; shuffled when a seed is given; read by `--num_workers` processes."""
    dataset = grain.MapDataset.source(examples)
    if seed is not None:
        dataset = dataset.shuffle(seed=seed)
    pipeline = dataset.batch(args.batch_size).to_iter_dataset()
    if args.num_workers:
        pipeline = pipeline.mp_prefetch(grain.MultiprocessingOptions(num_workers=args.num_workers))
    iterator = iter(pipeline)
    try:
        yield from iterator
    finally:
        iterator.close()  # stops the workers now, not when the iterator is garbage-collected


def init(key: jax.Array, num_classes: int, hidden: int = 256) -> Params:
    first, second = jax.random.split(key)
    return {
        "w1": jax.random.normal(first, (28 * 28, hidden)) * jnp.sqrt(2 / (28 * 28)),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(second, (hidden, num_classes)) * jnp.sqrt(1 / hidden),
        "b2": jnp.zeros(num_classes),
    }


def logits(params: Params, images: jax.Array) -> jax.Array:
    flat = images.reshape(len(images), -1).astype(jnp.float32) / 255.0
    return jax.nn.relu(flat @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def loss_and_correct(params: Params, images: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    scores = logits(params, images)
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(scores), labels[:, None], axis=1))
    return loss, jnp.sum(jnp.argmax(scores, axis=1) == labels)


@jax.jit
def train_step(params: Params, velocity: Params, images: jax.Array, labels: jax.Array, rate: float = 0.05):
    (loss, correct), grads = jax.value_and_grad(loss_and_correct, has_aux=True)(params, images, labels)
    velocity = jax.tree_util.tree_map(lambda v, g: 0.9 * v + g, velocity, grads)
    params = jax.tree_util.tree_map(lambda p, v: p - rate * v, params, velocity)
    return params, velocity, loss, correct


evaluate = jax.jit(loss_and_correct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="where TFDS keeps prepared datasets (default ~/tensorflow_datasets)")
    parser.add_argument("--manual_dir", help="folder with the upstream files, to prepare without network")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the train split, each reshuffled")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_workers", type=int, default=2, help="Grain worker processes (0: read here)")
    args = parser.parse_args()
    # Grain reads absl flags (with their defaults) when it starts workers; this script parses its own arguments.
    flags.FLAGS.mark_as_parsed()

    train, test = source("train", args), source("test", args)
    num_classes = tfds.builder(DATASET, data_dir=args.data_dir).info.features["label"].num_classes
    params = init(jax.random.key(SEED), num_classes)
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    for epoch in range(1, args.epochs + 1):
        started, total_loss, correct, count = time.perf_counter(), 0.0, 0, 0
        for batch in batches(train, args, seed=SEED + epoch):
            params, velocity, loss, right = train_step(params, velocity, batch["image"], batch["label"])
            total_loss, correct, count = (
                total_loss + float(loss) * len(batch["label"]),
                correct + int(right),
                count + len(batch["label"]),
            )
            seconds = time.perf_counter() - started
        print(
            f"epoch {epoch}: loss {total_loss / count:.4f}, accuracy {correct / count:.4f}, "
            f"{count} examples in {seconds:.1f} s",
            flush=True,
        )
    total_loss, correct, count = 0.0, 0, 0
    for batch in batches(test, args, seed=None):
        loss, right = evaluate(params, batch["image"], batch["label"])
        total_loss, correct, count = (
            total_loss + float(loss) * len(batch["label"]),
            correct + int(right),
            count + len(batch["label"]),
        )
    print(f"test: loss {total_loss / count:.4f}, accuracy {correct / count:.4f}, {count} examples")


if __name__ == "__main__":
    main()
