"""Trains a small Keras CNN on mnist_variants_fashion_mnist through tfds.load and tf.data.

python examples/train_fashion_mnist.py --epochs 5
python examples/train_fashion_mnist.py --manual_dir /data/fashion   # offline, from local files
"""

from __future__ import annotations

import argparse

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

import mnist_variants  # noqa: F401  (registers the builders)


def load(split: str, args: argparse.Namespace, training: bool) -> tf.data.Dataset:
    dataset = tfds.load(
        "mnist_variants_fashion_mnist",
        split=split,
        as_supervised=True,
        data_dir=args.data_dir,
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)},
    )
    dataset = dataset.map(lambda image, label: (tf.cast(image, tf.float32) / 255.0, label), tf.data.AUTOTUNE).cache()
    if training:
        dataset = dataset.shuffle(10_000, seed=args.seed)
    return dataset.batch(args.batch_size).prefetch(tf.data.AUTOTUNE)


def model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="where TFDS keeps prepared datasets (default ~/tensorflow_datasets)")
    parser.add_argument("--manual_dir", help="folder with the upstream files, to prepare without network")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    train, test = load("train", args, training=True), load("test", args, training=False)
    classifier = model()
    classifier.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    report = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: print(
            f"epoch {epoch + 1}: loss {logs['loss']:.4f}, accuracy {logs['accuracy']:.4f}", flush=True
        )
    )
    classifier.fit(train, epochs=args.epochs, callbacks=[report], shuffle=False, verbose=0)  # tf.data shuffles
    test_loss, test_accuracy = classifier.evaluate(test, verbose=0)
    print(f"test: loss {test_loss:.4f}, accuracy {test_accuracy:.4f}")


if __name__ == "__main__":
    main()
