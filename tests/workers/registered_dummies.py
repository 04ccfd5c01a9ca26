"""Imported by worker processes (and `tfds build --imports`): points builders at a test's sources and checksums.

The test writes a JSON file {builder name: {"sources": [base URL, ...], "checksums": TSV path}}
and names it in MNIST_VARIANTS_TEST_REGISTRY; without it, importing this changes nothing.

With MNIST_VARIANTS_TEST_GATE=PATH, a worker that starts preparing (TFDS calls `_split_generators`,
inside our lock if there is one) prints `At the gate: NAME` and waits until PATH exists: the
many-workers tests open the gate only once every other worker is seen waiting (or, without
locks, preparing too), so the workers provably overlap instead of maybe running one by one.

It also refuses to run on the checkout's `mnist_variants` where the package is installed for real (not
editable, as CI installs it): the tests' processes must use what pip installed, package data included.
"""

from __future__ import annotations

import json
import os
import time
from importlib import metadata
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

import mnist_variants
from mnist_variants.builder import MnistVariantBuilder

REGISTRY_ENV = "MNIST_VARIANTS_TEST_REGISTRY"
GATE_ENV = "MNIST_VARIANTS_TEST_GATE"
GATE_SECONDS = 300  # a test that never opens the gate fails here, not at its own deadline
CHECKOUT = Path(__file__).resolve().parents[2]


def installed_editable() -> bool:
    """Whether pip installed mnist-variants in editable mode (then the installed package is the checkout)."""
    direct_url = metadata.distribution("mnist-variants").read_text("direct_url.json")
    return bool(direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


if not installed_editable() and Path(mnist_variants.__file__).resolve().is_relative_to(CHECKOUT / "mnist_variants"):
    raise ImportError(f"imported the checkout's {mnist_variants.__file__}, not the installed mnist_variants")

if os.environ.get(REGISTRY_ENV):
    for name, entry in json.loads(epath.Path(os.environ[REGISTRY_ENV]).read_text()).items():
        builder_cls = tfds.builder_cls(name)
        builder_cls.SOURCES = tuple(entry["sources"])
        builder_cls._checksums_path = epath.Path(entry["checksums"])

if os.environ.get(GATE_ENV):
    _split_generators = MnistVariantBuilder._split_generators

    def _at_the_gate(self, dl_manager):
        print(f"At the gate: {self.name}\n", end="", flush=True)  # one write: download threads print too
        gate, deadline = Path(os.environ[GATE_ENV]), time.monotonic() + GATE_SECONDS
        while not gate.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test did not open {gate} in {GATE_SECONDS} s")
            time.sleep(0.05)
        return _split_generators(self, dl_manager)

    MnistVariantBuilder._split_generators = _at_the_gate
