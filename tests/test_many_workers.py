"""Many workers, one dataset: real processes that prepare the same dataset into one data_dir at once.

Each worker is `tests/workers/prepare_worker.py` (or `tfds build`) in its own process; it
prints the split sizes and a digest of every example it reads. All must succeed with
identical data, exactly one may prepare, each file is downloaded once, nothing
incomplete is left, and no worker prints a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DUMMY_SPLITS, REPO, dummy_files, worker_env

from mnist_variants import BinarizedMnist, FashionMnist, testing
from mnist_variants.testing import FileServer

WORKERS = REPO / "tests" / "workers"
DEADLINE_SECONDS = 240  # for a whole group of workers; they normally take 10-30 s
FASHION_COUNTS = {"train": 3000, "test": 600}  # small generated files: preparations overlap


class Worker:
    """A worker process whose output goes to files, so a test can watch it while it runs."""

    def __init__(self, tmp_path: Path, number: int, command: list[str], env: dict[str, str]) -> None:
        self.out_path = tmp_path / f"worker{number}.out"
        self.err_path = tmp_path / f"worker{number}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, **env}, cwd=tmp_path)

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, deadline: float) -> int:
        try:
            return self.process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"worker still running at the deadline:\n{self.out[-2000:]}\n{self.err[-2000:]}")

    def result(self) -> dict:
        lines = [line for line in self.out.splitlines() if line.startswith("RESULT ")]
        assert self.process.returncode == 0 and lines, f"{self.out[-3000:]}\n{self.err[-3000:]}"
        return json.loads(lines[-1].removeprefix("RESULT "))


def worker_command(name: str, data_dir: Path, *options: str) -> list[str]:
    return [sys.executable, str(WORKERS / "prepare_worker.py"), name, "--data_dir", str(data_dir), *options]


def tfds_build_command(name: str, data_dir: Path, *options: str) -> list[str]:
    tfds_cli = shutil.which("tfds", path=str(Path(sys.executable).parent))
    assert tfds_cli, "the tfds command line is installed with the [cli] extra"
    return [tfds_cli, "build", name, "--imports", "registered_dummies", "--data_dir", str(data_dir), *options]


def run_all(workers: list[Worker]) -> list[dict]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    for worker in workers:
        worker.wait(deadline)
    return [worker.result() for worker in workers if "prepare_worker.py" in " ".join(worker.process.args)]


def assert_one_preparation(workers: list[Worker], marker: str) -> None:
    """Exactly one worker fetched the files; each waiting worker said so in one line; no traceback."""
    preparers = [worker for worker in workers if marker in worker.out]
    assert len(preparers) == 1, [worker.out for worker in workers]
    for worker in workers:
        assert worker.out.count("Waiting for another process") <= 1
        assert "Traceback" not in worker.out + worker.err, worker.err[-3000:]


def assert_nothing_incomplete(data_dir: Path) -> None:
    leftovers = [path for path in data_dir.rglob("*") if "incomplete" in path.name or ".tmp." in path.name]
    assert not leftovers, leftovers


def fashion_files(tmp_path: Path) -> dict[str, bytes]:
    paths = testing.write_upstream_files(FashionMnist, tmp_path / "generated", FASHION_COUNTS, seed=3)
    return {name: path.read_bytes() for name, path in paths.items()}


def test_workers_sharing_a_data_dir_all_get_the_same_data_from_one_preparation(tmp_path):
    files = fashion_files(tmp_path)
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    data_dir, manual = tmp_path / "data", tmp_path / "generated"
    name = FashionMnist.name
    commands = [
        worker_command(name, data_dir, "--manual_dir", str(manual), "--api", api)
        for api in ("load", "builder", "load", "builder", "load")
    ] + [tfds_build_command(name, data_dir, "--manual_dir", str(manual))]
    workers = [Worker(tmp_path, number, command, env) for number, command in enumerate(commands)]
    results = run_all(workers)
    assert len(results) == 5 and all(result == results[0] for result in results)
    assert results[0]["splits"] == FASHION_COUNTS
    assert_one_preparation(workers, "Using local copy of train-images-idx3-ubyte.gz")
    assert_nothing_incomplete(data_dir)
    assert (data_dir / name / "1.0.0.lock").exists()  # beside the version folder


def test_threads_of_one_process_share_one_preparation(tmp_path):
    files = fashion_files(tmp_path)
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    manual = str(tmp_path / "generated")
    worker = Worker(
        tmp_path, 0, worker_command(FashionMnist.name, tmp_path / "data", "--manual_dir", manual, "--threads", "4"), env
    )
    (result,) = run_all([worker])
    assert result["splits"] == FASHION_COUNTS
    assert worker.out.count("Using local copy of train-images-idx3-ubyte.gz") == 1
    assert_nothing_incomplete(tmp_path / "data")


def test_workers_downloading_together_fetch_each_file_once(tmp_path):
    files = dummy_files("binarized_mnist")
    server = FileServer()
    try:
        server.serve_files("upstream", files)
        env = worker_env(tmp_path, BinarizedMnist, files, [f"{server.url}/upstream/"])
        commands = [
            worker_command(BinarizedMnist.name, tmp_path / "data", "--api", api) for api in ("load", "builder") * 2
        ]
        workers = [Worker(tmp_path, number, command, env) for number, command in enumerate(commands)]
        results = run_all(workers)
        assert all(result == results[0] for result in results)
        assert results[0]["splits"] == DUMMY_SPLITS["binarized_mnist"]
        assert dict(server.sent) == {f"/upstream/{name}": len(data) for name, data in files.items()}
        assert_one_preparation(workers, "Got binarized_mnist_train.amat from")
        assert_nothing_incomplete(tmp_path / "data")
    finally:
        server.stop()


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_killed_preparer_is_replaced_by_a_waiting_worker(tmp_path):
    files = dummy_files("binarized_mnist")
    server = FileServer()
    try:
        # The first request of the train file stalls: the victim is caught mid-preparation.
        server.serve_files("upstream", files)
        server.serve("/upstream/binarized_mnist_train.amat", files["binarized_mnist_train.amat"], "stall")
        env = worker_env(tmp_path, BinarizedMnist, files, [f"{server.url}/upstream/"])
        env["MNIST_VARIANTS_DOWNLOAD_TIMEOUT"] = "120"  # the victim waits on the stall until killed
        data_dir = tmp_path / "data"
        dataset_folder = data_dir / BinarizedMnist.name
        victim = Worker(tmp_path, 0, worker_command(BinarizedMnist.name, data_dir), env)
        wait_for(lambda: "/upstream/binarized_mnist_train.amat" in server.requests, "the victim's download")
        abandoned = list(dataset_folder.glob("*incomplete*"))
        assert len(abandoned) == 1
        waiting = [Worker(tmp_path, number, worker_command(BinarizedMnist.name, data_dir), env) for number in (1, 2, 3)]
        wait_for(lambda: all("Waiting for another process" in w.out for w in waiting), "the workers to wait")
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(30)
        results = run_all(waiting)
        assert all(result == results[0] for result in results)
        assert results[0]["splits"] == DUMMY_SPLITS["binarized_mnist"]
        assert_one_preparation(waiting, "Got binarized_mnist_train.amat from")
        assert not abandoned[0].exists()
        assert_nothing_incomplete(data_dir)
    finally:
        server.stop()


def test_a_preparation_left_by_a_dead_worker_is_removed_by_the_next_one(tmp_path):
    files = fashion_files(tmp_path)
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    data_dir = tmp_path / "data"
    folder = data_dir / FashionMnist.name
    left = [folder / "incomplete.ABC123_1.0.0", folder / "1.0.0.incompleteQWE456"]  # TFDS 4.9.5+, 4.9.4
    for path in left:
        (path / "mnist_variants_fashion_mnist-train.tfrecord-00000-of-00001").mkdir(parents=True)
    other_version = [folder / "incomplete.XYZ789_0.9.0", folder / "0.9.0.incompleteZZZ999"]
    for path in other_version:
        path.mkdir()
    worker = Worker(
        tmp_path, 0, worker_command(FashionMnist.name, data_dir, "--manual_dir", str(tmp_path / "generated")), env
    )
    (result,) = run_all([worker])
    assert result["splits"] == FASHION_COUNTS
    for path in left:
        assert not path.exists() and f"Removing {path}" in worker.out
    assert all(path.exists() for path in other_version)  # another version's preparation is not this one's business


def test_without_file_locks_every_worker_still_succeeds(tmp_path):
    """As on gs:// data_dirs: workers prepare side by side; the first complete dataset is kept."""
    files = fashion_files(tmp_path)
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    data_dir, manual = tmp_path / "data", str(tmp_path / "generated")
    commands = [
        worker_command(FashionMnist.name, data_dir, "--manual_dir", manual, "--api", api, "--no_lock")
        for api in ("load", "builder", "load", "builder")
    ]
    workers = [Worker(tmp_path, number, command, env) for number, command in enumerate(commands)]
    results = run_all(workers)
    assert all(result == results[0] for result in results)
    assert results[0]["splits"] == FASHION_COUNTS
    for worker in workers:
        assert "Traceback" not in worker.out + worker.err, worker.err[-3000:]
    assert_nothing_incomplete(data_dir)
    assert not (data_dir / FashionMnist.name / "1.0.0.lock").exists()
