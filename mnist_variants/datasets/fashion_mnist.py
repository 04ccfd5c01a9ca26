"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): Zalando's article images, a drop-in replacement for MNIST."""

from __future__ import annotations

import tensorflow_datasets as tfds

from mnist_variants.builder import MNIST_FILES, LabelledIdxBuilder

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

CITATION = """\
@article{xiao2017fashion,
  author        = {Han Xiao and Kashif Rasul and Roland Vollgraf},
  title         = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  journal       = {CoRR},
  volume        = {abs/1708.07747},
  year          = {2017},
  url           = {http://arxiv.org/abs/1708.07747},
  archivePrefix = {arXiv},
  eprint        = {1708.07747},
}
"""


class FashionMnist(LabelledIdxBuilder):
    """Fashion-MNIST: 70,000 28x28 grayscale images of Zalando articles in 10 classes."""

    name = "mnist_variants_fashion_mnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: upstream IDX files, same examples and order as TFDS's fashion_mnist."}

    TITLE = "Fashion-MNIST"
    SOURCES = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # where keras.datasets gets them
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    SPLIT_FILES = MNIST_FILES
    MANUAL_SUBFOLDERS = ("FashionMNIST/raw",)  # a torchvision root given as the manual dir
    KERAS_CACHE_FOLDER = "datasets/fashion-mnist"  # keras.datasets.fashion_mnist.load_data() keeps them there

    CLASS_NAMES = CLASS_NAMES
    DESCRIPTION = (
        "Fashion-MNIST is a dataset of Zalando's article images: a training set of 60,000"
        " examples and a test set of 10,000 examples. Each example is a 28x28 grayscale image"
        " associated with a label from 10 classes. It is meant as a drop-in replacement for"
        " MNIST for benchmarking machine learning algorithms: same image size, same format,"
        " same train/test split sizes."
    )
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
    CITATION = CITATION
    LICENSE = "MIT"
