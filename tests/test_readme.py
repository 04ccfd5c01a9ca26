"""The README's code runs as written: every block that claims to run is run here, verbatim, offline.

Which blocks run (new blocks are picked up by the same rule, with no change here):
- every ```` ```python ```` block, all of them in document order in one fresh interpreter, as a
  reader pasting them into one session would (a later block may use an earlier one's imports);
- every line of a ```` ```sh ```` block that starts with one of RUNNABLE_COMMANDS, in bash.
  Other shell lines (creating a venv, `pip install`, the benchmarks, the whole test suite)
  install from the network or take minutes; they stay illustrative.
A block that must not run (a placeholder path, a sketch) is written with another fence
language (```` ```text ````), or as a shell line that starts with something else.

How they run offline with the registered upstream checksums: in a fresh home folder (so
`~/tensorflow_datasets` and the keras cache are empty) and working directory, with
`MNIST_VARIANTS_MIRROR` pointing at a loopback server that serves every dataset's dummy files, and a
`sitecustomize.py` that imports `tests/workers/registered_dummies.py`, which registers those
files' checksums and the mirror as the builders' only source in every Python process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_DATA, REPO, dummy_files, write_registry

from mnist_variants import FashionMnist, testing

README = REPO / "README.md"
RUNNABLE_COMMANDS = ("tfds ", ".venv/bin/python examples/")
# Fashion-MNIST needs more than the dummy data's 12 train examples: the README indexes example 123.
FASHION_COUNTS = {"train": 300, "test": 60}
SECONDS = 900  # for all blocks; they normally take one to three minutes


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(match[1], match[2]) for match in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S)]


def runnable(text: str) -> tuple[str, list[str]]:
    """All python blocks as one program, and the shell lines that run."""
    blocks = code_blocks(text)
    python = "\n".join(code for language, code in blocks if language == "python")
    shell = [
        line
        for language, code in blocks
        if language == "sh"
        for line in code.splitlines()
        if line.startswith(RUNNABLE_COMMANDS)
    ]
    return python, shell


def test_the_rule_finds_the_blocks_that_claim_to_run():
    python, shell = runnable(README.read_text())
    assert 'tfds.data_source(\n    "mnist_variants_fashion_mnist"' in python
    assert any(line.startswith("tfds build mnist_variants_binarized_mnist") for line in shell)
    assert not any("pip install" in line for line in shell)


@pytest.fixture
def mirror(tmp_path, file_server) -> dict[str, str]:
    """The environment under which README code runs offline: fresh home, loopback mirror, test checksums.

    The mirror holds every dataset of dummy_data/ in `<mirror>/<registered name>/`, as a user's mirror
    does (MNIST, Kuzushiji-MNIST and Fashion-MNIST share file names); Fashion-MNIST generated, larger.
    """
    url = f"{file_server.url}/mirror/"
    registry = {}
    for folder in sorted(path.name for path in DUMMY_DATA.iterdir() if path.is_dir()):
        builder_cls = tfds.builder_cls(f"mnist_variants_{folder}")
        if builder_cls is FashionMnist:
            generated = testing.write_upstream_files(FashionMnist, tmp_path / "generated", FASHION_COUNTS, seed=5)
            files = {name: path.read_bytes() for name, path in generated.items()}
        else:
            files = dummy_files(folder)
        file_server.serve_files(f"mirror/{builder_cls.name}", files)
        source = f"{url}{builder_cls.name}/"
        tsv = write_registry(tmp_path / "registry" / builder_cls.name, builder_cls, files, source)
        registry[builder_cls.name] = {"sources": [source], "checksums": str(tsv)}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import registered_dummies  # noqa: F401\n")
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "KERAS_HOME": str(home / ".keras"),
        "MNIST_VARIANTS_MIRROR": url,
        "MNIST_VARIANTS_TEST_REGISTRY": str(tmp_path / "registry.json"),
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "tests" / "workers")]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def test_every_runnable_block_runs_as_written(tmp_path, mirror):
    python, shell = runnable(README.read_text())
    workdir = tmp_path / "work"  # not the repository: the snippets run wherever the package is installed
    workdir.mkdir()
    for name in (".venv", "examples"):  # what the shell lines name, relative to the repository root
        (workdir / name).symlink_to(REPO / name)
    env = {**os.environ, **mirror}  # with the only_loopback proxies
    ran = subprocess.run(
        [sys.executable, "-c", python], cwd=workdir, env=env, capture_output=True, text=True, timeout=SECONDS
    )
    assert ran.returncode == 0, f"{python}\n{ran.stdout[-3000:]}\n{ran.stderr[-5000:]}"
    assert re.search(rf"^{FASHION_COUNTS['train']} \d$", ran.stdout, re.M), ran.stdout  # len(source), a label
    array_record = Path(mirror["HOME"]) / "tensorflow_datasets_array_record" / FashionMnist.name
    assert list(array_record.rglob("*.array_record*")), "the data source was not prepared as ArrayRecord"
    for line in shell:
        ran = subprocess.run(
            ["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True, timeout=SECONDS
        )
        assert ran.returncode == 0, f"{line}\n{ran.stdout[-3000:]}\n{ran.stderr[-5000:]}"
