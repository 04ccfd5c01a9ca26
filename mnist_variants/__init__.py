"""TFDS builders for the MNIST-format family: Binarized MNIST, Fashion-MNIST, MNIST, Kuzushiji-MNIST, EMNIST, MNIST-C,
QMNIST.

Importing this package registers `mnist_variants_binarized_mnist`, `mnist_variants_fashion_mnist`,
`mnist_variants_mnist`, `mnist_variants_kmnist`, `mnist_variants_emnist` and
`mnist_variants_mnist_corrupted` with TFDS, beside (not instead of) TFDS's own `binarized_mnist`,
`fashion_mnist`, `mnist`, `kmnist`, `emnist` and `mnist_corrupted`; and `mnist_variants_qmnist`, which TFDS
does not have (torchvision's `QMNIST` does).
"""

from importlib import metadata

# data_sources warns before a PyTorch DataLoader forks workers over ArrayRecord, which crashes them (README).
from mnist_variants import data_sources  # noqa: F401
from mnist_variants.datasets.binarized_mnist import BinarizedMnist
from mnist_variants.datasets.emnist import Emnist
from mnist_variants.datasets.fashion_mnist import FashionMnist
from mnist_variants.datasets.kmnist import Kmnist
from mnist_variants.datasets.mnist import Mnist
from mnist_variants.datasets.mnist_corrupted import MnistCorrupted
from mnist_variants.datasets.qmnist import Qmnist
from mnist_variants.errors import (
    ChecksumMismatchError,
    DownloadFailedError,
    MalformedFileError,
    MnistVariantsError,
    WrongFileError,
)

__version__ = metadata.version("mnist-variants")

__all__ = [
    "BinarizedMnist",
    "ChecksumMismatchError",
    "DownloadFailedError",
    "Emnist",
    "FashionMnist",
    "Kmnist",
    "MalformedFileError",
    "Mnist",
    "MnistCorrupted",
    "MnistVariantsError",
    "Qmnist",
    "WrongFileError",
]
