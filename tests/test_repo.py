"""The repository keeps its promises: README commands are CI's, dummy data is the script's, ruff is clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import DUMMY_DATA, REPO


def test_ci_runs_the_readme_test_command():
    ci_commands = [
        line for line in (REPO / ".ci/run").read_text().splitlines() if line.startswith("python3 -m venv .venv ")
    ]
    readme = (REPO / "README.md").read_text()
    assert len(ci_commands) == 1 and f"\n{ci_commands[0]}\n" in readme
    install = ci_commands[0].rsplit(" && ", 1)[0]
    assert f"\n{install} && .venv/bin/tfds build mnist_variants_fashion_mnist --imports mnist_variants\n" in readme


def test_dummy_data_is_what_the_script_writes(tmp_path):
    copy = tmp_path / "dummy_data"
    copy.mkdir()
    shutil.copy(DUMMY_DATA / "generate.py", copy / "generate.py")
    subprocess.run([sys.executable, str(copy / "generate.py")], check=True, capture_output=True, timeout=300)
    committed = {
        p.relative_to(DUMMY_DATA): p.read_bytes()
        for p in DUMMY_DATA.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    }
    generated = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.suffix != ".py"}
    assert committed.keys() == generated.keys() and committed == generated
    assert max(len(data) for data in committed.values()) < 64 * 1024  # tiny, never upstream files


def test_minimum_versions_are_the_declared_lower_bounds():
    """.ci/minimum-versions.txt pins exactly the lower bounds setup.py declares for the main dependencies."""
    setup = (REPO / "setup.py").read_text()
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (REPO / ".ci/minimum-versions.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    )
    for name in ("tensorflow", "tensorflow-datasets", "numpy", "filelock", "urllib3", "requests"):
        lower = re.search(rf'"{re.escape(name)}>=([\d.]+)', setup)[1]
        assert pins[name].split(".")[: len(lower.split("."))] == lower.split("."), (name, pins[name], lower)


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff comes with the [test] extra"
    result = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
