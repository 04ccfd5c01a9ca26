"""Imported by worker processes (and `tfds build --imports`): points builders at a test's sources and checksums.

The test writes a JSON file {builder name: {"sources": [base URL, ...], "checksums": TSV path}}
and names it in MNIST_VARIANTS_TEST_REGISTRY; without it, importing this changes nothing.

It also refuses to run on the checkout's `mnist_variants` where the package is installed for real (not
editable, as CI installs it): the tests' processes must use what pip installed, package data included.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

import mnist_variants

REGISTRY_ENV = "MNIST_VARIANTS_TEST_REGISTRY"
CHECKOUT = Path(__file__).resolve().parents[2]


def installed_editable() -> bool:
    """Whether pip installed mnist-variants in editable mode (then the installed package is the checkout)."""
    direct_url = metadata.distribution("mnist-variants").read_text("direct_url.json")
    return bool(direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


if not installed_editable() and Path(mnist_variants.__file__).resolve().is_relative_to(CHECKOUT):
    raise ImportError(f"imported the checkout's {mnist_variants.__file__}, not the installed mnist_variants")

if os.environ.get(REGISTRY_ENV):
    for name, entry in json.loads(epath.Path(os.environ[REGISTRY_ENV]).read_text()).items():
        builder_cls = tfds.builder_cls(name)
        builder_cls.SOURCES = tuple(entry["sources"])
        builder_cls._checksums_path = epath.Path(entry["checksums"])
