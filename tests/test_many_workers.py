"""Many workers, one dataset: real processes that prepare the same dataset into one data_dir at once.

Each worker is `tests/workers/prepare_worker.py` (or `tfds build`) in its own process; it
prints the split sizes and a digest of every example it reads. All must succeed with
identical data, exactly one may prepare, each other one says once that it waits, each file
is downloaded once, nothing incomplete is left, and no worker prints a traceback.

The workers provably overlap: the one preparing stops at a gate (tests/workers/registered_dummies.py)
until the test has seen every other worker waiting for it, or, without locks, preparing too.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import DUMMY_SPLITS, dummy_files, worker_env, write_files
from testing import FileServer
from workers.watched import Watched as Worker
from workers.watched import prepare_command as worker_command

from mnist_variants import BinarizedMnist, FashionMnist

DEADLINE_SECONDS = 240  # for a whole group of workers; they normally take 10-30 s
GATE_ENV = "MNIST_VARIANTS_TEST_GATE"  # tests/workers/registered_dummies.py
AT_THE_GATE = "At the gate: "  # a worker started preparing, and waits for the test to open the gate
WAITING = "Waiting for another process preparing"
SECOND = "prepared {} first; using its dataset"  # without locks: another worker's dataset got there first
KINDS = ("load", "builder", "build")  # tfds.load, builder.download_and_prepare(), `tfds build`


def tfds_build_command(name: str, data_dir: Path, *options: str) -> list[str]:
    tfds_cli = shutil.which("tfds", path=str(Path(sys.executable).parent))
    assert tfds_cli, "the tfds command line is installed with the [cli] extra"
    return [tfds_cli, "build", name, "--imports", "registered_dummies", "--data_dir", str(data_dir), *options]


def command(kind: str, name: str, data_dir: Path, *options: str) -> list[str]:
    if kind == "build":
        return tfds_build_command(name, data_dir, *options)
    return worker_command(name, data_dir, *options, "--api", kind)


def run_all(workers: list[Worker]) -> list[dict]:
    """Waits for every worker; each must succeed. The results of the prepare_worker ones."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    for worker in workers:
        worker.finish(max(1.0, deadline - time.monotonic()))
    for worker in workers:
        assert worker.process.returncode == 0, f"{worker.process.args}\n{worker.out[-3000:]}\n{worker.err[-3000:]}"
    return [worker.result() for worker in workers if "prepare_worker.py" in " ".join(worker.process.args)]


def gated(env: dict[str, str], tmp_path: Path) -> Path:
    """Makes the workers stop when they start preparing, until the returned path exists."""
    gate = tmp_path / "gate"
    env[GATE_ENV] = str(gate)
    return gate


def wait_for(condition, what: str, workers: list[Worker] = (), seconds: float = 120) -> None:
    """Until `condition()`; fails at once if a worker has ended with an error meanwhile."""
    deadline = time.monotonic() + seconds
    while not condition():
        for worker in workers:
            if worker.process.poll():
                pytest.fail(f"a worker failed while waiting for {what}:\n{worker.out[-2000:]}\n{worker.err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}:\n" + "\n".join(worker.out[-500:] for worker in workers))
        time.sleep(0.05)


def open_when_all_wait_for_one(gate: Path, workers: list[Worker]) -> None:
    """Opens the gate once one worker is preparing (at the gate) and every other one has said it waits."""
    wait_for(
        lambda: (
            sum(AT_THE_GATE in worker.out for worker in workers) == 1
            and sum(WAITING in worker.out for worker in workers) == len(workers) - 1
        ),
        "one worker preparing and the others waiting",
        workers,
    )
    gate.touch()


def assert_one_preparation(workers: list[Worker], marker: str, preparer_waited: bool = False) -> Worker:
    """Exactly one worker fetched the files; every other one said once that it waits (the preparer too,
    if it had waited for one that died); no traceback. Returns the preparer."""
    preparers = [worker for worker in workers if marker in worker.out]
    assert len(preparers) == 1, [worker.out for worker in workers]
    for worker in workers:
        waited = worker is not preparers[0] or preparer_waited
        assert worker.out.count(WAITING) == waited, worker.out[-3000:]
        assert "Traceback" not in worker.out + worker.err, worker.err[-3000:]
    return preparers[0]


def assert_nothing_incomplete(data_dir: Path) -> None:
    leftovers = [path for path in data_dir.rglob("*") if "incomplete" in path.name or ".tmp." in path.name]
    assert not leftovers, leftovers


def manual_fashion(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment for workers that prepare Fashion-MNIST from a manual dir of the dummy files, and that dir."""
    files = dummy_files("fashion_mnist")
    write_files(tmp_path / "manual", files)
    return worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"]), tmp_path / "manual"


@pytest.mark.parametrize("first", KINDS)
def test_any_mix_of_workers_waits_for_one_preparation(tmp_path, first):
    """Whichever kind prepares (tfds.load, download_and_prepare, `tfds build`), each kind waits for it, then reads."""
    env, manual = manual_fashion(tmp_path)
    gate = gated(env, tmp_path)
    data_dir, name = tmp_path / "data", FashionMnist.name
    preparer = Worker(tmp_path, "worker0", command(first, name, data_dir, "--manual_dir", str(manual)), env)
    wait_for(lambda: AT_THE_GATE in preparer.out, "the first worker to start preparing", [preparer])
    others = [
        Worker(tmp_path, f"worker{number}", command(kind, name, data_dir, "--manual_dir", str(manual)), env)
        for number, kind in enumerate(KINDS, start=1)
    ]
    open_when_all_wait_for_one(gate, [preparer, *others])
    results = run_all([preparer, *others])
    assert len(results) == [first, *KINDS].count("load") + [first, *KINDS].count("builder")
    assert all(result == results[0] for result in results)
    assert results[0]["splits"] == DUMMY_SPLITS["fashion_mnist"]
    assert assert_one_preparation([preparer, *others], "Using local copy of train-images-idx3-ubyte.gz") is preparer
    assert_nothing_incomplete(data_dir)
    assert (data_dir / name / "1.0.0.lock").exists()  # beside the version folder


def test_threads_of_one_process_share_one_preparation(tmp_path):
    env, manual = manual_fashion(tmp_path)
    gate = gated(env, tmp_path)
    command = worker_command(FashionMnist.name, tmp_path / "data", "--manual_dir", str(manual), "--threads", "4")
    worker = Worker(tmp_path, "worker0", command, env)
    wait_for(
        lambda: worker.out.count(AT_THE_GATE) == 1 and worker.out.count(WAITING) == 3, "3 threads to wait", [worker]
    )
    gate.touch()
    (result,) = run_all([worker])
    assert result["splits"] == DUMMY_SPLITS["fashion_mnist"]
    assert worker.out.count("Using local copy of train-images-idx3-ubyte.gz") == 1
    assert worker.out.count(AT_THE_GATE) == 1 and worker.out.count(WAITING) == 3
    assert_nothing_incomplete(tmp_path / "data")


def test_workers_downloading_together_fetch_each_file_once(tmp_path):
    files = dummy_files("binarized_mnist")
    server = FileServer()
    try:
        server.serve_files("upstream", files)
        env = worker_env(tmp_path, BinarizedMnist, files, [f"{server.url}/upstream/"])
        gate = gated(env, tmp_path)
        workers = [
            Worker(tmp_path, f"worker{number}", command(kind, BinarizedMnist.name, tmp_path / "data"), env)
            for number, kind in enumerate(("load", "builder", "build", "load"))
        ]
        open_when_all_wait_for_one(gate, workers)
        results = run_all(workers)
        assert len(results) == 3 and all(result == results[0] for result in results)
        assert results[0]["splits"] == DUMMY_SPLITS["binarized_mnist"]
        assert dict(server.sent) == {f"/upstream/{name}": len(data) for name, data in files.items()}
        assert_one_preparation(workers, "Got binarized_mnist_train.amat from")
        assert_nothing_incomplete(tmp_path / "data")
    finally:
        server.stop()


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
        victim = Worker(tmp_path, "worker0", worker_command(BinarizedMnist.name, data_dir), env)
        wait_for(lambda: "/upstream/binarized_mnist_train.amat" in server.requests, "the victim's download")
        abandoned = list(dataset_folder.glob("*incomplete*"))
        assert len(abandoned) == 1
        waiting = [
            Worker(tmp_path, f"worker{number}", worker_command(BinarizedMnist.name, data_dir), env)
            for number in (1, 2, 3)
        ]
        wait_for(lambda: all(WAITING in w.out for w in waiting), "the workers to wait", waiting)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(30)
        results = run_all(waiting)
        assert all(result == results[0] for result in results)
        assert results[0]["splits"] == DUMMY_SPLITS["binarized_mnist"]
        assert_one_preparation(waiting, "Got binarized_mnist_train.amat from", preparer_waited=True)
        assert not abandoned[0].exists()
        assert_nothing_incomplete(data_dir)
    finally:
        server.stop()


def test_a_preparation_left_by_a_dead_worker_is_removed_by_the_next_one(tmp_path):
    env, manual = manual_fashion(tmp_path)
    data_dir = tmp_path / "data"
    folder = data_dir / FashionMnist.name
    left = [folder / "incomplete.ABC123_1.0.0", folder / "1.0.0.incompleteQWE456"]  # TFDS 4.9.5+, 4.9.4
    for path in left:
        (path / "mnist_variants_fashion_mnist-train.tfrecord-00000-of-00001").mkdir(parents=True)
    other_version = [folder / "incomplete.XYZ789_0.9.0", folder / "0.9.0.incompleteZZZ999"]
    for path in other_version:
        path.mkdir()
    worker = Worker(tmp_path, "worker0", worker_command(FashionMnist.name, data_dir, "--manual_dir", str(manual)), env)
    (result,) = run_all([worker])
    assert result["splits"] == DUMMY_SPLITS["fashion_mnist"]
    for path in left:
        assert not path.exists() and f"Removing {path}" in worker.out
    assert all(path.exists() for path in other_version)  # another version's preparation is not this one's business


def test_without_file_locks_workers_prepare_side_by_side_and_keep_the_first_dataset(tmp_path):
    """As on gs:// data_dirs: every worker prepares (all are seen at the gate before any goes on); the first
    complete dataset is kept, and each of the others says it found it there and uses it."""
    env, manual = manual_fashion(tmp_path)
    gate = gated(env, tmp_path)
    data_dir = tmp_path / "data"
    workers = [
        Worker(
            tmp_path, number, command(kind, FashionMnist.name, data_dir, "--manual_dir", str(manual), "--no_lock"), env
        )
        for number, kind in enumerate(("load", "builder", "load", "builder"))
    ]
    wait_for(lambda: all(AT_THE_GATE in worker.out for worker in workers), "every worker to prepare", workers)
    gate.touch()
    results = run_all(workers)
    assert all(result == results[0] for result in results)
    assert results[0]["splits"] == DUMMY_SPLITS["fashion_mnist"]
    kept = SECOND.format(data_dir / FashionMnist.name / "1.0.0")
    assert [kept in worker.out for worker in workers].count(True) == len(workers) - 1, [w.out for w in workers]
    for worker in workers:
        assert WAITING not in worker.out and "Traceback" not in worker.out + worker.err, worker.err[-3000:]
    assert_nothing_incomplete(data_dir)
    assert not (data_dir / FashionMnist.name / "1.0.0.lock").exists()
