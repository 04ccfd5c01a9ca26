"""MNIST-C (Mu & Gilmer, 2019): MNIST's images under 15 corruptions, and unchanged (`identity`), 16 configs.

All 16 come in one archive, `mnist_c.zip` (235.2 MiB), downloaded once for all of them; each config reads
its four `.npy` members `mnist_c/<config>/{train,test}_{images,labels}.npy` out of it, parsed strictly
(no pickles). google-research/mnist-c's `corruptions.py` maps each MNIST image to one corrupted image, so
every config keeps MNIST's labels in MNIST's order: each label member is checked against MNIST's
registered label digests, and a member with other labels is refused as not MNIST-C's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from mnist_variants import formats, verification
from mnist_variants.builder import MNIST_FILES, LabelledIdxBuilder, VariantConfig, check_mnist_labels
from mnist_variants.datasets import mnist
from mnist_variants.locations import Archive

CITATION = """\
@article{mu2019mnist,
  title={MNIST-C: A Robustness Benchmark for Computer Vision},
  author={Mu, Norman and Gilmer, Justin},
  journal={arXiv preprint arXiv:1906.02337},
  year={2019}
}
"""

# TFDS's names and order; `identity` is MNIST itself.
CORRUPTIONS = (
    "identity",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)


def config(corruption: str) -> VariantConfig:
    """The config of one corruption: its four members `mnist_c/<corruption>/<split>_<role>.npy`."""
    return VariantConfig(
        name=corruption,
        description=f"Corruption method: {corruption}",
        split_files={
            split: {role: f"{corruption}/{split}_{role}.npy" for role in ("images", "labels")}
            for split in (tfds.Split.TRAIN, tfds.Split.TEST)
        },
        class_names=tuple("0123456789"),
    )


class MnistCorrupted(LabelledIdxBuilder):
    """MNIST-C: MNIST's train and test sets under 15 corruptions, each a config, and `identity`."""

    name = "mnist_variants_mnist_corrupted"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: upstream mnist_c.zip read in memory, the examples of TFDS's mnist_corrupted 1.0.0;"
        " labels checked against MNIST's."
    }
    BUILDER_CONFIGS = [config(corruption) for corruption in CORRUPTIONS]

    TITLE = "MNIST-C"
    SOURCES = ("https://zenodo.org/record/3239543/files/",)
    SPLIT_FILES = {}  # each config's own
    ARCHIVE = Archive(filename="mnist_c.zip", folder="mnist_c/")
    # Each split's labels are MNIST's: the label file of MNIST whose registered content they must equal.
    LABELS_OF = {f"{split}_labels.npy": files["labels"] for split, files in MNIST_FILES.items()}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: to prepare without network, put upstream's mnist_c.zip (235.2 MiB) in the
    manual dir or in its `mnist_variants_mnist_corrupted/` subfolder. It is verified by its
    sha256; the folders extracted from it cannot be (no digest of the images is known),
    and are not used.
    """

    DESCRIPTION = (
        "MNIST-C: a robustness benchmark made of MNIST's train and test images under 15 corruptions (noise,"
        " blur, affine transformations, fog, lines, edges), one config each, plus `identity`, MNIST itself."
        " Labels are MNIST's, in MNIST's order, and checked against them."
    )
    HOMEPAGE = "https://github.com/google-research/mnist-c"
    CITATION = CITATION
    LICENSE = "CC BY 4.0"

    def _read_split(self, files: Mapping[str, verification.Verdict]) -> dict[str, np.ndarray | formats.ImageBatches]:
        """`.npy` members rather than IDX files; the labels must be MNIST's, so counts are MNIST's too."""
        images, labels = files["images"], files["labels"]
        image_array = formats.read_npy_images(images.data, images.path)
        label_array = formats.read_npy_labels(labels.data, labels.path, len(self.class_names))
        formats.check_same_count(image_array, images.path, label_array, labels.path)
        mnist_labels = self.LABELS_OF[labels.name.rsplit("/", 1)[-1]]
        check_mnist_labels(label_array, labels.path, mnist_labels, mnist.Mnist.registry(), self.TITLE)
        return {"image": image_array, "label": label_array}
