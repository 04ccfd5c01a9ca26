"""The repository keeps its promises: README commands are CI's, dummy data is the script's, ruff is clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from conftest import DUMMY_DATA, REPO, child_env


def readme_test_command() -> list[str]:
    """The steps of the README's test command (its `## Tests` section), in order."""
    tests_section = (REPO / "README.md").read_text().split("\n## Tests\n", 1)[1]
    command = re.search(r"^python3 -m venv \.venv && .*$", tests_section, re.MULTILINE)[0]
    return command.split(" && ")


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command one step a line, in order; the README's install line is its start."""
    steps = readme_test_command()
    ci_lines = (REPO / ".ci/run").read_text().splitlines()
    start = ci_lines.index(steps[0])
    assert ci_lines[start : start + len(steps)] == steps
    # The main job's command installs no more than the tests do (they add the loaders: torch, grain, jax).
    readme = (REPO / "README.md").read_text()
    main_job = re.search(
        r"^python3 -m venv \.venv && \.venv/bin/pip install '\.\[([\w,]+)\]' && "
        r"\.venv/bin/tfds build mnist_variants_fashion_mnist --imports mnist_variants$",
        readme,
        re.MULTILINE,
    )
    tested = re.search(r"install '\.\[([\w,]+)\]'", steps[1])
    assert main_job and tested and set(main_job[1].split(",")) <= set(tested[1].split(","))


# Stands in for python3 (first on PATH) and for the pip, pytest and python of the venvs it "creates":
# records each call as the script wrote it, fails the one named in CI_FAIL, installs nothing.
FAKE_TOOL = """#!/bin/bash
case "$0" in */fakebin/*) name=$(basename "$0") ;; *) name=$0 ;; esac
call="$name${*:+ $*}"
echo "$call" >> "$CI_LOG"
cat > /dev/null  # a here-document, if any
if [ "$call" = "$CI_FAIL" ]; then exit 3; fi
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    for tool in pip pytest python; do cp "$0" "$3/bin/$tool"; done
fi
"""


def run_ci_copy(tmp_path: Path, fail: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Runs a copy of .ci/run with stand-in tools; returns the result and the calls made, in order."""
    copy = tmp_path / f"repo{len(list(tmp_path.iterdir()))}"
    (copy / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci/run", copy / ".ci/run")
    fakebin = tmp_path / "fakebin"
    if not fakebin.exists():
        fakebin.mkdir()
        (fakebin / "python3").write_text(FAKE_TOOL)
        (fakebin / "python3").chmod(0o755)
    log = copy / "calls.log"
    env = {"PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}", "CI_LOG": str(log), "CI_FAIL": fail, "CI": "true"}
    result = subprocess.run(
        ["bash", str(copy / ".ci/run")], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    return result, log.read_text().splitlines() if log.exists() else []


def side_by_side(step: str) -> bool:
    """The two steps of .ci/run that run at once: the minimum-versions install (in the background) and the
    full-size comparison. Their calls may come in either order."""
    return step.startswith(".venv-minimum/bin/pip install") or "--full-size" in step


def test_every_failing_step_of_ci_fails_ci(tmp_path):
    """Each step of .ci/run, made to fail in turn, stops the script with a non-zero exit; nothing after it runs
    (but the one step that runs beside it)."""
    result, steps = run_ci_copy(tmp_path, fail="")
    assert result.returncode == 0, result.stderr
    readme_steps = [step.replace("'", "") for step in readme_test_command()]
    assert steps[: len(readme_steps)] == readme_steps  # the README's test command comes first
    assert sum(map(side_by_side, steps)) == 2  # full-size files at the newest versions, the minimum install
    assert steps[-1].startswith(".venv-minimum/bin/pytest")  # and the minimum-versions run last
    in_order = [step for step in steps if not side_by_side(step)]
    for number, step in enumerate(steps):
        result, calls = run_ci_copy(tmp_path, fail=step)
        assert result.returncode != 0, f"CI passed although `{step}` failed"
        assert step in calls
        before = [earlier for earlier in steps[: number + 1] if not side_by_side(earlier)]
        assert [call for call in calls if not side_by_side(call)] == before, f"CI went on after `{step}` failed"
        assert in_order[: len(before)] == before


def test_dummy_data_is_what_the_script_writes(tmp_path):
    copy = tmp_path / "dummy_data"
    copy.mkdir()
    shutil.copy(DUMMY_DATA / "generate.py", copy / "generate.py")
    path = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))  # tests/testing.py
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run([sys.executable, str(copy / "generate.py")], check=True, capture_output=True, timeout=300, env=env)
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


def test_tools_that_decide_pass_or_fail_are_pinned():
    """ruff, pytest and pytest-xdist are pinned exactly in the test extra (README, Tests), and installed so."""
    extra = re.search(r'"test": \[([^]]*)\]', (REPO / "setup.py").read_text())[1]
    for tool in ("ruff", "pytest", "pytest-xdist"):
        pinned = re.search(rf'"{tool}==([^"]+)"', extra)
        assert pinned, f"{tool} is not pinned exactly in setup.py's test extra"
        assert metadata.version(tool) == pinned[1], (tool, metadata.version(tool), pinned[1])


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff comes with the [test] extra"
    result = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


WHERE_FROM = """
import os, registered_dummies, mnist_variants
from mnist_variants import builder
print(mnist_variants.__file__, builder.checksums_dir(), os.getcwd(), registered_dummies.installed_editable(), sep="\\n")
"""


def test_processes_started_by_tests_run_the_installed_package_outside_the_checkout():
    """As CI installs it (not editable), the package and its checksums come from site-packages, not the checkout."""
    env = {**os.environ, **child_env()}
    result = subprocess.run([sys.executable, "-c", WHERE_FROM], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    package, checksums, cwd, editable = result.stdout.splitlines()[-4:]
    assert not Path(cwd).resolve().is_relative_to(REPO)
    assert (Path(checksums) / "mnist_variants_fashion_mnist.tsv").is_file()
    if editable == "True":  # a developer's `pip install -e`: the installed package is the checkout
        assert Path(package).resolve().is_relative_to(REPO)
        return
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    for path in (package, checksums):
        # CI's venv lies inside the checkout: what matters is that nothing comes from the checkout's own folders.
        assert Path(path).resolve().is_relative_to(site_packages), path
        assert not Path(path).resolve().is_relative_to(REPO / "mnist_variants"), path
        assert not Path(path).resolve().is_relative_to(REPO / "checksums"), path
