"""Binarized MNIST: the fixed binarization of MNIST of Salakhutdinov & Murray (ICML 2008)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from mnist_variants import formats
from mnist_variants.builder import DatasetInfo, MnistVariantBuilder
from mnist_variants.verification import Verdict

CITATION = """\
@inproceedings{salakhutdinov2008quantitative,
  title        = {On the quantitative analysis of deep belief networks},
  author       = {Salakhutdinov, Ruslan and Murray, Iain},
  booktitle    = {Proceedings of the 25th international conference on Machine learning},
  pages        = {872--879},
  year         = {2008},
  organization = {ACM}
}
"""


class BinarizedMnist(MnistVariantBuilder):
    """Binarized MNIST: 70,000 28x28 images with pixels 0/1, for evaluating generative models."""

    name = "mnist_variants_binarized_mnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: upstream .amat files, same examples and order as TFDS's binarized_mnist."
    }

    TITLE = "Binarized MNIST"
    SOURCES = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",)
    SPLIT_FILES = {
        tfds.Split.TRAIN: {"images": "binarized_mnist_train.amat"},
        tfds.Split.VALIDATION: {"images": "binarized_mnist_valid.amat"},
        tfds.Split.TEST: {"images": "binarized_mnist_test.amat"},
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return DatasetInfo(
            builder=self,
            description=(
                "A fixed binarization of the MNIST digits, first used by Salakhutdinov & Murray"
                " (2008): each pixel was sampled once as Bernoulli(intensity), and the samples are kept"
                " so that likelihoods reported by different papers are comparable. Splits: 50,000"
                " train, 10,000 validation, 10,000 test. Used to evaluate generative models of images,"
                " so labels are not provided. Pixel values are 0 and 1."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=formats.IMAGE_SHAPE, dtype=np.uint8),
                }
            ),
            homepage="http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
            citation=CITATION,
        )

    def _read_split(self, files: Mapping[str, Verdict]) -> dict[str, np.ndarray]:
        return {"image": formats.read_amat(files["images"].data, files["images"].path)}
