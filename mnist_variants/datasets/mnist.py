"""MNIST (LeCun, Cortes & Burges): the handwritten digits every variant here is measured against."""

from __future__ import annotations

import tensorflow_datasets as tfds

from mnist_variants.builder import MNIST_FILES, LabelledIdxBuilder
from mnist_variants.locations import KerasNpz

CITATION = """\
@article{lecun2010mnist,
  title={MNIST handwritten digit database},
  author={LeCun, Yann and Cortes, Corinna and Burges, CJ},
  journal={ATT Labs [Online]. Available: http://yann.lecun.com/exdb/mnist},
  volume={2},
  year={2010}
}
"""


class Mnist(LabelledIdxBuilder):
    """MNIST: 70,000 28x28 grayscale images of handwritten digits 0-9."""

    name = "mnist_variants_mnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: upstream IDX files, same examples and order as TFDS's mnist 3.0.1."}

    TITLE = "MNIST"
    SOURCES = (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TFDS's copy
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's
        "http://yann.lecun.com/exdb/mnist/",  # the original; often 403 or silent for years at a time
    )
    SPLIT_FILES = MNIST_FILES
    MANUAL_SUBFOLDERS = ("MNIST/raw",)  # a torchvision root given as the manual dir
    # keras.datasets.mnist.load_data() keeps one file, checked by keras against the same sha256.
    KERAS_NPZ = KerasNpz(
        folder="datasets",
        filename="mnist.npz",
        arrays={
            tfds.Split.TRAIN: {"images": "x_train", "labels": "y_train"},
            tfds.Split.TEST: {"images": "x_test", "labels": "y_test"},
        },
    )

    CLASS_NAMES = tuple("0123456789")
    DESCRIPTION = (
        "The MNIST database of handwritten digits: a training set of 60,000 examples and a test"
        " set of 10,000 examples, 28x28 grayscale images of the digits 0-9, size-normalised and"
        " centred. Labels are the digits."
    )
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    CITATION = CITATION
