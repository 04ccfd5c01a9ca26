"""EMNIST (Cohen, Afshar, Tapson & van Schaik, 2017): NIST Special Database 19 in MNIST's format, six configs.

All six come in one archive, `gzip.zip` (535.7 MiB), downloaded once for all of them; each config
reads its four members out of it. Unlike TFDS's `emnist`, no config carries an example count, so
`letters` holds all 124,800 / 20,800 examples, and the label names are the characters, checked
against the archive's own `emnist-<config>-mapping.txt`.
"""

from __future__ import annotations

import string

import tensorflow_datasets as tfds

from mnist_variants.builder import LabelledIdxBuilder, VariantConfig
from mnist_variants.formats import UNUSED_CLASS
from mnist_variants.locations import Archive

CITATION = """\
@article{cohen_afshar_tapson_schaik_2017,
    title={EMNIST: Extending MNIST to handwritten letters},
    DOI={10.1109/ijcnn.2017.7966217},
    journal={2017 International Joint Conference on Neural Networks (IJCNN)},
    author={Cohen, Gregory and Afshar, Saeed and Tapson, Jonathan and Schaik, Andre Van},
    year={2017}
}
"""

DIGITS = tuple(string.digits)
# ByMerge and Balanced merge the 15 letters whose upper and lower case look alike (c i j k l m o p s u v w x y z).
MERGED = (*DIGITS, *string.ascii_uppercase, *"abdefghnqrt")


def config(name: str, class_names: tuple[str, ...], description: str) -> VariantConfig:
    """EMNIST's config `name`: its four files, members `gzip/emnist-<name>-...` of gzip.zip, and its classes."""
    return VariantConfig(
        name=name,
        description=description,
        split_files={
            split: {
                "images": f"emnist-{name}-{split}-images-idx3-ubyte.gz",
                "labels": f"emnist-{name}-{split}-labels-idx1-ubyte.gz",
            }
            for split in (tfds.Split.TRAIN, tfds.Split.TEST)
        },
        class_names=class_names,
        class_codes=f"emnist-{name}-mapping.txt",
    )


class Emnist(LabelledIdxBuilder):
    """EMNIST: handwritten digits and letters of NIST SD 19 as 28x28 images, in six configs."""

    name = "mnist_variants_emnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: upstream gzip.zip read in memory; the examples of TFDS's emnist 3.1.0 (all of"
        " them for letters), labels named by their characters."
    }
    BUILDER_CONFIGS = [
        config("byclass", (*DIGITS, *string.ascii_uppercase, *string.ascii_lowercase), "EMNIST ByClass: 62 classes"),
        config("bymerge", MERGED, "EMNIST ByMerge: 47 classes, 15 letters' cases merged"),
        config("balanced", MERGED, "EMNIST Balanced: 47 classes, as ByMerge, the same number of examples each"),
        config(
            "letters",
            (UNUSED_CLASS, *string.ascii_lowercase),
            "EMNIST Letters: 26 classes, upper and lower case merged; labels 1-26, 0 unused",
        ),
        config("digits", DIGITS, "EMNIST Digits: 10 classes, 28,000 examples each"),
        config("mnist", DIGITS, "EMNIST MNIST: 10 classes, MNIST's split sizes"),
    ]

    TITLE = "EMNIST"
    SOURCES = (
        "https://biometrics.nist.gov/cs_links/EMNIST/",
        "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/",  # the old URL: now a 110 KiB HTML page
    )
    SPLIT_FILES = {}  # each config's own
    ARCHIVE = Archive(filename="gzip.zip", folder="gzip/")
    MANUAL_SUBFOLDERS = ("EMNIST/raw",)  # a torchvision root given as the manual dir: it keeps gzip.zip there
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: to prepare without network, put upstream's gzip.zip (535.7 MiB) in the
    manual dir, in its `mnist_variants_emnist/` subfolder or in `EMNIST/raw/` (torchvision's
    root). It is verified by its sha256; files extracted from it cannot be, and are not used.
    """

    DESCRIPTION = (
        "The EMNIST dataset: handwritten character digits and letters derived from NIST Special"
        " Database 19, converted to 28x28 grayscale images in the format of MNIST. Labels keep"
        " upstream's values; class names are the characters (letters: 1-26 are a-z, upper and lower"
        " case merged, 0 is unused).\n\n"
        "Images are as stored upstream, which is transposed (mirrored and rotated): to see a"
        " character upright, swap its rows and columns, `ds.map(lambda x: {**x, 'image':"
        " tf.transpose(x['image'], [1, 0, 2])})`, or `images.transpose(0, 2, 1, 3)` for a numpy batch."
    )
    HOMEPAGE = "https://www.nist.gov/itl/products-and-services/emnist-dataset"
    CITATION = CITATION
