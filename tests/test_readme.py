"""The README's and the docs pages' code runs as written: every block that claims to run is run here, offline.

The documents: README.md and the hand-written pages, docs/*.md and docs/notes/*.md (docs/datasets/ is
generated from the notes, so its blocks are theirs). A block or line that appears in several documents runs once.

Which blocks run (new blocks are picked up by the same rule, with no change here):
- every Python block, whatever its fence says (```` ```python ````, ```` ```py ````, ```` ```python3 ````),
  each pasted into a script of its own and run as `python block.py`, in document order, in one home
  folder: as a reader pasting it into a file would run it (spawned workers import that file again, so
  worker-starting code must sit under `if __name__ == "__main__":`). A block whose imports are not
  installed (torch, grain, jax: the `loaders` extra, which CI installs) is skipped, by name, not failed;
- every line of a ```` ```sh ```` block that starts with one of RUNNABLE_COMMANDS, in bash.
  Other shell lines (creating a venv, `pip install`, the benchmarks, the whole test suite)
  install from the network or take minutes; they stay illustrative.
A docs page's Python blocks run together, as one script in one process (a page's blocks follow on from one
another, and one process a page keeps the suite's time down); the README's run one a process, as above.
The one placeholder path, MANUAL_DIR (`/data/fashion`), is rewritten into a folder holding the Fashion-MNIST
files the mirror serves; a block or line naming it runs in a home of its own, and the loopback server must get
no request while it runs: the manual dir alone must be enough.
A block that must not run (a placeholder path, a sketch) is written with another fence
language (```` ```text ````), or as a shell line that starts with something else.

The README's Python blocks and the two examples that use default folders (`train_torch.py`:
`data_sources.open`; `train_fashion_mnist.py`: `tfds.load`) also run in several orders in one fresh
home each (test_defaults_never_collide_in_any_order): the file formats must never collide.

How they run offline with the registered upstream checksums: in a fresh home folder (so
`~/tensorflow_datasets` and the keras cache are empty) and working directory, with
`MNIST_VARIANTS_MIRROR` pointing at a loopback server that serves every dataset's dummy files, and a
`sitecustomize.py` that imports `tests/workers/registered_dummies.py`, which registers those
files' checksums and the mirror as the builders' only source in every Python process.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
import testing
from conftest import DUMMY_DATA, REPO, dummy_files, write_registry

from mnist_variants import FashionMnist

README = REPO / "README.md"
# The hand-written docs pages whose blocks run too (docs/datasets/<short>.md repeats docs/notes/<short>.md's).
PAGES = [*sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "docs" / "notes").glob("*.md"))]
MANUAL_DIR = "/data/fashion"  # the documents' example manual dir: Fashion-MNIST's upstream files
RUNNABLE_COMMANDS = ("tfds ", ".venv/bin/python examples/")
# Fashion-MNIST needs more than the dummy data's 12 train examples: the README indexes example 123.
FASHION_COUNTS = {"train": 300, "test": 60}
SECONDS = 900  # for all blocks; they normally take one to three minutes


PYTHON_FENCES = ("python", "py", "python3", "py3")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(match[1], match[2]) for match in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S)]


def runnable(text: str) -> tuple[list[str], list[str]]:
    """The Python blocks, each a script, and the shell lines that run."""
    blocks = code_blocks(text)
    python = [code for language, code in blocks if language.lower() in PYTHON_FENCES]
    shell = [
        line
        for language, code in blocks
        if language == "sh"
        for line in code.splitlines()
        if line.startswith(RUNNABLE_COMMANDS)
    ]
    return python, shell


def documents_runnable() -> tuple[list[str], list[str], list[str]]:
    """The README's Python blocks, one script a docs page (its blocks joined, those the README has left out),
    and the shell lines of all of them, each once, in document order."""
    readme_python, shell = runnable(README.read_text())
    pages_python = []
    for page in PAGES:
        python, page_shell = runnable(page.read_text())
        own = [code for code in python if code not in readme_python]
        if own:
            pages_python.append(f"# {page.relative_to(REPO)}\n" + "\n".join(own))
        shell += page_shell
    return readme_python, pages_python, list(dict.fromkeys(shell))


def with_manual_dir(code: str, manual_dir: Path) -> str:
    """`code` with the documents' placeholder manual dir replaced by a real one."""
    return code.replace(MANUAL_DIR, str(manual_dir))


def missing_imports(code: str) -> list[str]:
    """The top-level modules `code` imports that are not installed here."""
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    return sorted(module for module in modules if importlib.util.find_spec(module) is None)


def test_the_rule_finds_the_blocks_that_claim_to_run():
    python, shell = runnable(README.read_text())
    assert any('tfds.data_source(\n    "mnist_variants_fashion_mnist"' in block for block in python)
    assert any("grain.MapDataset.source(train)" in block for block in python)  # fenced py before
    assert any(line.startswith("tfds build mnist_variants_binarized_mnist") for line in shell)
    assert not any("pip install" in line for line in shell)
    readme_python, pages_python, all_shell = documents_runnable()
    assert any('tf.transpose(x["image"], [1, 0, 2])' in script for script in pages_python)  # docs/notes/emnist.md
    assert f"tfds build mnist_variants_fashion_mnist --imports mnist_variants --manual_dir {MANUAL_DIR}" in all_shell
    assert any(line.startswith("tfds build mnist_variants_emnist") for line in all_shell)
    assert len(all_shell) == len(set(all_shell)) and set(shell) <= set(all_shell)
    assert any(MANUAL_DIR in code for code in readme_python)
    assert runnable("```py\nprint(1)\n```\n```Python\nprint(2)\n```\n```text\nprint(3)\n```\n")[0] == [
        "print(1)\n",
        "print(2)\n",
    ]


def run_blocks(blocks: list[str], workdir: Path, env: dict[str, str]) -> list[str]:
    """Runs each block as `python block_N.py` in `workdir`; returns the stdout of each (skipped ones: None)."""
    outputs = []
    for number, code in enumerate(blocks):
        if missing_imports(code):
            outputs.append(None)
            continue
        script = workdir / f"block_{number}.py"
        script.write_text(code)
        ran = subprocess.run(
            [sys.executable, script.name], cwd=workdir, env=env, capture_output=True, text=True, timeout=SECONDS
        )
        assert ran.returncode == 0, f"{code}\n{ran.stdout[-3000:]}\n{ran.stderr[-5000:]}"
        outputs.append(ran.stdout)
    return outputs


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


def workdir_for(tmp_path: Path, name: str) -> Path:
    """A working directory that is not the repository (the snippets run wherever the package is installed),
    with what the shell lines name relative to the repository root."""
    workdir = tmp_path / name
    workdir.mkdir()
    for entry in (".venv", "examples"):
        (workdir / entry).symlink_to(REPO / entry)
    return workdir


def test_every_runnable_block_runs_as_written(tmp_path, mirror, file_server):
    readme_python, pages_python, shell = documents_runnable()
    manual_dir = tmp_path / "generated"  # the Fashion-MNIST files the mirror serves (fixture `mirror`)
    offline = [code for code in [*readme_python, *shell] if MANUAL_DIR in code]
    workdir = workdir_for(tmp_path, "work")
    env = {**os.environ, **mirror}  # with the only_loopback proxies
    readme_online = [code for code in readme_python if code not in offline]
    outputs = run_blocks(readme_online, workdir, env)
    assert any(re.search(rf"^{FASHION_COUNTS['train']} \d$", out or "", re.M) for out in outputs), outputs
    array_record = Path(mirror["HOME"]) / "tensorflow_datasets_array_record" / FashionMnist.name
    assert list(array_record.rglob("*.array_record*")), "the data source was not prepared as ArrayRecord"
    page_outputs = run_blocks(pages_python, workdir, env)
    for line in (line for line in shell if line not in offline):
        run_line(line, workdir, env)
    for code in offline:  # in a home of its own, where nothing is prepared yet: the manual dir alone must do
        home = tmp_path / f"offline_home_{offline.index(code)}"
        home.mkdir()
        offline_env = {**env, "HOME": str(home), "KERAS_HOME": str(home / ".keras")}
        requests = len(file_server.range_requests)
        if code in shell:
            run_line(with_manual_dir(code, manual_dir), workdir, offline_env)
        else:
            assert run_blocks([with_manual_dir(code, manual_dir)], workdir, offline_env) != [None]
        assert file_server.range_requests[requests:] == [], f"a request with a manual dir:\n{code}"
        assert list((home / "tensorflow_datasets" / FashionMnist.name).rglob("*.tfrecord*")), code
    if not missing_imports("import torch"):  # the last unit of the README-first order (ORDERS)
        run_example("train_torch", workdir, env)
    blocks, ran = [*readme_online, *pages_python], [*outputs, *page_outputs]
    skipped = [code.splitlines()[0] for code, out in zip(blocks, ran, strict=True) if out is None]
    if skipped:
        missing = sorted({module for code in blocks for module in missing_imports(code)})
        pytest.skip(f"blocks not run, {', '.join(missing)} not installed (pip install '.[loaders]'): {skipped}")


def run_line(line: str, workdir: Path, env: dict[str, str]) -> None:
    ran = subprocess.run(["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True, timeout=SECONDS)
    assert ran.returncode == 0, f"{line}\n{ran.stdout[-3000:]}\n{ran.stderr[-5000:]}"


# The examples that use default folders, with their defaults but for a short run: each unit is one or more runs.
EXAMPLES = {
    "train_torch": [
        ["train_torch.py", "--epochs", "1"],  # data_sources.open
        ["train_torch.py", "--epochs", "1", "--source", "tfds", "--num_workers", "0"],  # tfds.data_source
    ],
    "train_fashion_mnist": [["train_fashion_mnist.py", "--epochs", "1"]],  # tfds.load
}
UNITS = ("readme", *EXAMPLES)


# Every order of UNITS (3! = 6) but the README-first one that test_every_runnable_block_runs_as_written runs (its
# shell lines run train_fashion_mnist.py after the blocks, then it runs train_torch.py): a unit meets what the units
# before it prepared, in which format, in which folder, and that depends on their order too, not only on which
# ran. About 40 s an order on a quiet machine (39 s measured for one, -n 0): all six cost about 2 minutes more
# than the three that covered every ordered pair.
ORDERS = [order for order in itertools.permutations(UNITS) if order != ("readme", "train_fashion_mnist", "train_torch")]


@pytest.mark.parametrize("order", ORDERS, ids="-then-".join)
def test_defaults_never_collide_in_any_order(tmp_path, mirror, order):
    """The README's Python blocks (in their order) and both examples, in this order, in one fresh home: whichever
    prepares first, none meets a file format it cannot read (`tfds.load` on ArrayRecord, `tfds.data_source` on
    TFRecord). Skipped where torch or grain is not installed (the minimum-versions run of CI)."""
    python = [with_manual_dir(code, tmp_path / "generated") for code in runnable(README.read_text())[0]]
    missing = sorted({module for code in [*python, "import torch"] for module in missing_imports(code)})
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (pip install '.[loaders]')")
    workdir = workdir_for(tmp_path, "work")
    env = {**os.environ, **mirror}
    for unit in order:
        if unit == "readme":
            run_blocks(python, workdir, env)
            continue
        run_example(unit, workdir, env, after=order[: order.index(unit)])


def run_example(unit: str, workdir: Path, env: dict[str, str], after: tuple[str, ...] = ("readme",)) -> None:
    for script, *args in EXAMPLES[unit]:
        ran = subprocess.run(
            [sys.executable, str(REPO / "examples" / script), *args],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=SECONDS,
        )  # fmt: skip
        assert ran.returncode == 0, f"{script} {args} after {after}\n{ran.stderr[-5000:]}"
        assert re.search(r"^test.*accuracy", ran.stdout, re.M | re.I), ran.stdout
