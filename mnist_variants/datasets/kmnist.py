"""Kuzushiji-MNIST (Clanuwat et al., 2018): cursive Japanese characters, the other drop-in replacement for MNIST."""

from __future__ import annotations

import tensorflow_datasets as tfds

from mnist_variants.builder import MNIST_FILES, LabelledIdxBuilder

CITATION = """\
@online{clanuwat2018deep,
  author       = {Tarin Clanuwat and Mikel Bober-Irizar and Asanobu Kitamoto and Alex Lamb and Kazuaki Yamamoto
                  and David Ha},
  title        = {Deep Learning for Classical Japanese Literature},
  date         = {2018-12-03},
  year         = {2018},
  eprintclass  = {cs.CV},
  eprinttype   = {arXiv},
  eprint       = {cs.CV/1812.01718},
}
"""


class Kmnist(LabelledIdxBuilder):
    """Kuzushiji-MNIST: 70,000 28x28 grayscale images of ten Hiragana characters in cursive Kuzushiji."""

    name = "mnist_variants_kmnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: upstream IDX files, same examples and order as TFDS's kmnist."}

    TITLE = "Kuzushiji-MNIST"
    SOURCES = ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
    SPLIT_FILES = MNIST_FILES
    MANUAL_SUBFOLDERS = ("KMNIST/raw",)  # a torchvision root given as the manual dir

    # One character for each of the 10 rows of Hiragana, named as TFDS names them.
    CLASS_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    DESCRIPTION = (
        "Kuzushiji-MNIST is a drop-in replacement for the MNIST dataset (28x28 grayscale, 70,000"
        " images) in the original MNIST format: 60,000 train and 10,000 test images of cursive"
        " Japanese (Kuzushiji) characters, one character for each of the 10 rows of Hiragana."
    )
    HOMEPAGE = "http://codh.rois.ac.jp/kmnist/index.html.en"
    CITATION = CITATION
    LICENSE = "CC BY-SA 4.0"
