"""`locking.hold` with real processes and threads: turns, a killed holder, and mounts whose `flock` fails.

Workers are `tests/workers/lock_worker.py`, under `tests/workers/faults.py` where `flock` is made to
fail (ENOLCK: NFS without a lock daemon; ENOSYS: Lustre without `-o flock`; EOPNOTSUPP) or to take
POSIX locks as Linux's NFS client does. Run the file with `PYTHONPATH=<a filelock 3.12.0 folder>`
too: the lowest filelock `setup.py` declares behaves differently on every one of these errnos.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import sys
import time
from pathlib import Path

import filelock
import pytest
from conftest import REPO, worker_env
from workers.watched import Watched, generated_files, prepare_command

from mnist_variants import FashionMnist, locking

WORKERS = REPO / "tests" / "workers"
DEADLINE_SECONDS = 60  # for one lock worker; each normally takes 1-3 s (start-up included)
NO_LOCK_ERRNOS = ("ENOLCK", "ENOSYS", "EOPNOTSUPP")


class LockWorker(Watched):
    """A lock_worker.py process (under faults.py with `--flock FLOCK` if given)."""

    def __init__(self, tmp_path: Path, number: int, lock_file: Path, *options: str, flock: str | None = None) -> None:
        faults = [str(WORKERS / "faults.py"), "--flock", flock] if flock else []
        command = [sys.executable, *faults, str(WORKERS / "lock_worker.py"), str(lock_file), *options]
        env = {"PYTHONPATH": os.pathsep.join([str(WORKERS), os.environ.get("PYTHONPATH", "")])}
        super().__init__(tmp_path, f"lock{number}", command, env)

    def finish(self, seconds: float = DEADLINE_SECONDS) -> int:
        status = super().finish(seconds)
        assert status == 0 and "DONE" in self.out, f"{self.out}\n{self.err[-3000:]}"
        return status

    def intervals(self) -> list[tuple[str, bool, float, float]]:
        """(thread, held, entered, left) of every turn the worker took."""
        entered, turns = {}, []
        for line in self.out.splitlines():
            kind, *fields = line.split() or [""]
            if kind == "ENTER":
                entered[fields[0]] = (fields[1] == "True", float(fields[2]))
            elif kind == "LEAVE":
                held, start = entered.pop(fields[0])
                turns.append((f"{self.process.pid}/{fields[0]}", held, start, float(fields[1])))
        return turns


@pytest.fixture
def workers():
    started: list[LockWorker] = []
    yield started
    for worker in started:
        worker.stop()


def assert_one_at_a_time(turns: list[tuple[str, bool, float, float]]) -> None:
    turns = sorted(turns, key=lambda turn: turn[2])
    assert all(held for _, held, _, _ in turns), turns
    for before, after in itertools.pairwise(turns):
        assert before[3] <= after[2], f"{before} and {after} overlap"


def test_processes_take_turns_and_each_waiter_says_so_once(tmp_path, workers):
    lock_file = tmp_path / "data" / "name" / "1.0.0.lock"  # its folder does not exist yet
    workers += [LockWorker(tmp_path, number, lock_file, "--seconds", "0.4", "--times", "2") for number in range(3)]
    for worker in workers:
        worker.finish()
        assert f"FILELOCK {filelock.__version__}" in worker.out  # the version this test runs with
    assert_one_at_a_time([turn for worker in workers for turn in worker.intervals()])
    for worker in workers:
        assert worker.out.count("Waiting") <= 2 and "Warning" not in worker.err, worker.err


@pytest.mark.parametrize("flock", [None, "posix"], ids=["flock", "nfs-posix-locks"])
def test_threads_of_one_process_take_turns(tmp_path, workers, flock):
    """With POSIX locks (NFS) the file lock alone would let every thread in at once."""
    lock_file = tmp_path / "1.0.0.lock"
    workers.append(LockWorker(tmp_path, 0, lock_file, "--threads", "4", "--seconds", "0.2", flock=flock))
    workers[0].finish()
    turns = workers[0].intervals()
    assert len(turns) == 4
    assert_one_at_a_time(turns)


def test_lines_of_threads_taking_turns_stay_whole(tmp_path, workers):
    """Each line the worker and the package print is one write: 8 threads taking 30 quick turns each print
    ENTER, LEAVE and waiting lines at once, and none shares a line with another (a CI run once parsed
    '1168.032567184Waiting' as a time)."""
    workers.append(
        LockWorker(tmp_path, 0, tmp_path / "1.0.0.lock", "--threads", "8", "--times", "30", "--seconds", "0")
    )
    workers[0].finish()
    assert "Waiting" in workers[0].out  # the threads did wait on each other
    for line in workers[0].out.splitlines():
        assert line in ("DONE", f"FILELOCK {filelock.__version__}") or (line.split() or [""])[0] in (
            "ENTER",
            "LEAVE",
            "Waiting",
        ), line
        assert line.count("Waiting") <= 1 and line.count("ENTER") + line.count("LEAVE") <= 1, line
    assert len(workers[0].intervals()) == 8 * 30


@pytest.mark.parametrize("flock", [None, "posix"], ids=["flock", "nfs-posix-locks"])
def test_a_killed_holder_lets_a_waiting_process_take_over(tmp_path, workers, flock):
    lock_file = tmp_path / "1.0.0.lock"
    holder = LockWorker(tmp_path, 0, lock_file, "--seconds", "600", flock=flock)
    workers.append(holder)
    holder.wait_for("ENTER 0 True")
    waiter = LockWorker(tmp_path, 1, lock_file, "--seconds", "0", flock=flock)
    workers.append(waiter)
    waiter.wait_for("Waiting 0")
    assert "ENTER" not in waiter.out
    killed = time.monotonic()
    holder.process.send_signal(signal.SIGKILL)
    waiter.finish()
    assert float(waiter.out.split("ENTER 0 True ")[1].split()[0]) - killed < 10


@pytest.mark.parametrize("error", NO_LOCK_ERRNOS)
def test_without_flock_workers_go_side_by_side_with_one_warning(tmp_path, workers, error):
    """Nobody waits where locks fail, so a holder killed (on this or another host) blocks no one."""
    lock_file = tmp_path / "1.0.0.lock"
    first = LockWorker(tmp_path, 0, lock_file, "--seconds", "600", flock=error)
    workers.append(first)
    first.wait_for("ENTER 0 False")
    second = LockWorker(tmp_path, 1, lock_file, "--seconds", "0.2", "--times", "3", "--threads", "2", flock=error)
    workers.append(second)
    second.finish()  # while the first still "holds" it
    assert (
        second.out.count("ENTER") == 6
        and "True" not in second.out
        and "Waiting" not in second.out.replace("Waiting 0", "").replace("Waiting 1", "")
    )
    assert second.err.count("NoLocksWarning") == 1, second.err
    assert errno.errorcode[getattr(errno, error)] in second.err and str(lock_file.parent) in second.err
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(DEADLINE_SECONDS)
    third = LockWorker(tmp_path, 2, lock_file, "--seconds", "0", flock=error)
    workers.append(third)
    third.finish()
    assert "ENTER 0 False" in third.out


def test_threads_take_turns_where_flock_fails(tmp_path, workers):
    """Side by side across processes, but threads of one process still take turns (they share its memory)."""
    workers.append(LockWorker(tmp_path, 0, tmp_path / "x.lock", "--threads", "3", "--seconds", "0.2", flock="ENOLCK"))
    workers[0].finish()
    turns = sorted(workers[0].intervals(), key=lambda turn: turn[2])
    assert len(turns) == 3 and not any(held for _, held, _, _ in turns)
    for before, after in itertools.pairwise(turns):
        assert before[3] <= after[2]


def test_remote_paths_are_not_locked_but_threads_take_turns(tmp_path):
    with locking.hold("gs://bucket/data/name/1.0.0.lock", "Waiting") as held:
        assert held is False
    assert not list(tmp_path.iterdir())


def test_a_lock_beside_a_download_is_a_plain_file_lock(tmp_path, capsys):
    """The other use of `hold`: a partial download's lock file, in a folder that may not exist yet."""
    lock_file = tmp_path / "downloads" / "train-images-idx3-ubyte.gz.lock"
    with locking.hold(lock_file, "Waiting for the download") as held:
        assert held
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(str(lock_file)).acquire(timeout=0.2)  # another open file: flock excludes it
    assert lock_file.exists() and "Waiting" not in capsys.readouterr().out


@pytest.mark.parametrize("error", ["ENOLCK", "ENOSYS"])
def test_preparations_on_a_mount_without_flock_go_side_by_side_and_all_succeed(tmp_path, error):
    """As the README says: no lock, one warning each, every worker gets the same dataset."""
    counts = {"train": 3000, "test": 600}
    files = generated_files(FashionMnist, tmp_path / "generated", counts)
    env = worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])
    workers = [
        Watched(
            tmp_path,
            f"worker{api}",
            prepare_command(
                FashionMnist.name, tmp_path / "data", "--manual_dir", str(tmp_path / "generated"), "--api", api,
                faults=("--flock", error),
            ),
            env,
        )
        for api in ("load", "builder")
    ]  # fmt: skip
    try:
        results = [worker.result() for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
    assert results[0] == results[1] and results[0]["splits"] == counts
    for worker in workers:
        assert worker.err.count("NoLocksWarning") == 1 and "Waiting" not in worker.out, worker.err[-3000:]
