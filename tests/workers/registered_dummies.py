"""Imported by worker processes (and `tfds build --imports`): points builders at a test's sources and checksums.

The test writes a JSON file {builder name: {"sources": [base URL, ...], "checksums": TSV path}}
and names it in MNIST_VARIANTS_TEST_REGISTRY; without it, importing this changes nothing.
"""

from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds
from etils import epath

import mnist_variants  # noqa: F401 - registers the builders

REGISTRY_ENV = "MNIST_VARIANTS_TEST_REGISTRY"

if os.environ.get(REGISTRY_ENV):
    for name, entry in json.loads(epath.Path(os.environ[REGISTRY_ENV]).read_text()).items():
        builder_cls = tfds.builder_cls(name)
        builder_cls.SOURCES = tuple(entry["sources"])
        builder_cls._checksums_path = epath.Path(entry["checksums"])
