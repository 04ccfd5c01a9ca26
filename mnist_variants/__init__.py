"""TFDS builders for Binarized MNIST and Fashion-MNIST.

Importing this package registers `mnist_variants_binarized_mnist` and
`mnist_variants_fashion_mnist` with TFDS, beside (not instead of) TFDS's own
`binarized_mnist` and `fashion_mnist`.
"""

from importlib import metadata

from mnist_variants.binarized_mnist import BinarizedMnist
from mnist_variants.errors import (
    ChecksumMismatchError,
    DownloadFailedError,
    MalformedFileError,
    MnistVariantsError,
    WrongFileError,
)
from mnist_variants.fashion_mnist import FashionMnist

__version__ = metadata.version("mnist-variants")

__all__ = [
    "BinarizedMnist",
    "ChecksumMismatchError",
    "DownloadFailedError",
    "FashionMnist",
    "MalformedFileError",
    "MnistVariantsError",
    "WrongFileError",
]
