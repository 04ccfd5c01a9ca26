"""Shared storage as clusters have it: group-shared folders, planted entries, full and read-only disks, resumes.

Real processes, real users (a child made another uid with a shared gid, where the test runs as
root), real mounts (a small tmpfs, a read-only bind mount) and a loopback server; what needs
root is skipped, saying so, elsewhere. Every process has a timeout, every mount is undone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import testing
from conftest import (
    BINARIZED_FILES,
    FASHION_FILES,
    REPO,
    assert_prepared,
    prepare,
    serve_from,
    worker_env,
)

from mnist_variants import BinarizedMnist, FashionMnist, fetching, partials, preparation, shared_files

pytestmark = pytest.mark.usefixtures("short_timeout")

WORKER = REPO / "tests" / "workers" / "download_worker.py"
FAULTS = REPO / "tests" / "workers" / "faults.py"
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounts and other users are made by the test: needs root")
WORKER_SECONDS = 120
TRAIN = "binarized_mnist_train.amat"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leave_partial(folder: Path, name: str, data: bytes, received: int, source: str, **record_changes) -> Path:
    """A partial as a killed run leaves it, written by hand (as any process could): `received` bytes and its record."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.partial").write_bytes(data[:received] + bytes(len(data) - received))
    record = {"url": source, "size": len(data), "sha256": sha(data), "validator": None}
    record["spans"] = [[0, received, len(data)]]
    record.update(record_changes)
    (folder / f"{name}.partial.json").write_text(json.dumps(record))
    return folder / f"{name}.partial"


def run(command: list[str], env: dict[str, str], cwd: Path, **options) -> subprocess.CompletedProcess:
    """A worker process, bounded in time; its output whole (stdout and stderr together)."""
    try:
        return subprocess.run(
            command,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=WORKER_SECONDS,
            **options,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"worker still running after {WORKER_SECONDS} s:\n{(expired.output or b'')[-3000:]!r}")


def result(worker: subprocess.CompletedProcess) -> dict:
    lines = [line for line in worker.stdout.splitlines() if line.startswith("RESULT ")]
    assert worker.returncode == 0 and lines, worker.stdout[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@contextlib.contextmanager
def mounted(*arguments: str, target: Path) -> Iterator[Path]:
    """`mount ARGUMENTS TARGET`, unmounted when done; the test fails if something still holds it (a leaked
    descriptor), after a lazy unmount that cleans up anyway."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *arguments, str(target)], check=True, timeout=30)
    busy = ""
    try:
        yield target
    finally:
        unmount = subprocess.run(["umount", str(target)], capture_output=True, text=True, timeout=30)
        if unmount.returncode:
            busy = unmount.stderr.strip()
            subprocess.run(["umount", "-l", str(target)], timeout=30)
    assert not busy, f"{target} could not be unmounted: {busy}"


@contextlib.contextmanager
def read_only_view(folder: Path, target: Path) -> Iterator[Path]:
    """`folder` bind-mounted read-only at `target`."""
    with mounted("--bind", str(folder), target=target):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True, timeout=30)
        yield target


@pytest.fixture
def public_folder() -> Iterator[Path]:
    """A folder every user can reach (the test's own tmp_path is root's alone), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="mnist_variants-shared-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_user(uid: int, gid: int, command: list[str]) -> list[str]:
    """`command` run as user `uid` of the one group `gid`.

    The interpreter may live where only root may enter (here /root/.pyenv, 0700): the child keeps
    the right to read and search any folder (CAP_DAC_READ_SEARCH) and nothing else; writing is
    checked as for any user, and writing is what these tests are about.
    """
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to run a child as another user")
    ids = [f"--reuid={uid}", f"--regid={gid}", f"--groups={gid}"]
    return ["setpriv", *ids, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--", *command]


def with_umask(umask: int):
    """A preexec_fn that sets the child's umask (setpriv has no option for it; exec keeps it)."""
    return lambda: os.umask(umask)


# ---- progress records (issue 31, requirement 4) ----

BAD_RECORDS = {
    "a float position": {"spans": [[0, 4000.0, 9000]]},
    "a negative position": {"spans": [[0, -5, 9000]]},
    "a position beyond its part": {"spans": [[0, 9001, 9000]]},
    "a bool for a position": {"spans": [[0, True, 9000]]},
    "parts that do not reach the end": {"spans": [[0, 10, 4000]]},
    "a size as text": {"size": "9000"},
    "a sha256 as a number": {"sha256": 12345},
    "a URL as a list": {"url": ["http://127.0.0.1/x"]},
    "a validator as a number": {"validator": 7},
    "spans as an object": {"spans": {"0": [0, 10, 9000]}},
    "no spans": {"spans": []},
}


@pytest.mark.parametrize("change", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_a_bad_progress_record_is_removed_with_one_line_and_never_saved_back(tmp_path, change):
    data = os.urandom(9000)
    path = leave_partial(tmp_path, "f.bin", data, 100, "http://127.0.0.1:9/f.bin", **change)
    identity = partials.Identity(len(data), sha(data))
    partial, note = partials.Partial.resume_or_start(path, identity, "http://127.0.0.1:9/f.bin")
    assert note and "\n" not in note and "progress record" in note, note
    assert not partial.spans and not partial.inherited
    assert not path.exists() and not partial.record.exists()  # discarded, not written back


def test_a_record_that_is_not_json_or_too_large_is_removed(tmp_path):
    data = os.urandom(9000)
    identity = partials.Identity(len(data), sha(data))
    too_deep = "[" * 20000  # under RECORD_LIMIT; json.loads raised RecursionError (review finding 2)
    for text, said in (
        ("{not json", "not JSON"),
        (" " * (partials.RECORD_LIMIT + 10), "larger than"),
        (too_deep, "not JSON"),
    ):
        path = leave_partial(tmp_path, "f.bin", data, 100, "u")
        partial = partials.Partial(path, identity)
        partial.record.write_text(text)
        _, note = partials.Partial.resume_or_start(path, identity, "u")
        assert said in note and not partial.record.exists()


def test_a_float_position_in_a_real_record_costs_only_that_partial(monkeypatch, tmp_path, file_server, capsys):
    """Found in issue 31: `4719592.0` passed, then every run failed with a bare TypeError."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    data = BINARIZED_FILES[TRAIN]
    folder = tmp_path / "downloads" / BinarizedMnist.name
    leave_partial(folder, TRAIN, data, 100, "x", spans=[[0, 100.0, len(data)]])
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    said = [line for line in capsys.readouterr().out.splitlines() if "progress record" in line]
    assert len(said) == 1 and "span 0 holds float 100.0" in said[0], said
    assert not (folder / f"{TRAIN}.partial.json").exists()


# ---- any source resumes (requirement 3) ----


def test_a_flat_mirror_resumes_the_partial_an_earlier_run_left(monkeypatch, tmp_path, file_server, capsys):
    """Found 4: `<mirror>/<dataset>/<file>` answers 404, `<mirror>/<file>` has it: the bytes received stay."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    monkeypatch.setenv(fetching.MIRROR_ENV, f"{file_server.url}/flat")
    file_server.serve_files("flat", BINARIZED_FILES)  # no /flat/<dataset>/ folder: 404 there
    data = BINARIZED_FILES[TRAIN]
    folder = tmp_path / "downloads" / BinarizedMnist.name
    received = len(data) * 2 // 5
    leave_partial(folder, TRAIN, data, received, f"{file_server.url}/upstream/{TRAIN}")
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    assert f"/flat/{BinarizedMnist.name}/{TRAIN}" in file_server.requests  # the 404 came first
    assert file_server.sent[f"/flat/{TRAIN}"] == len(data) - received
    assert not file_server.sent[f"/upstream/{TRAIN}"]
    out = capsys.readouterr().out
    assert f"Removing {folder / (TRAIN + '.partial')}" not in out
    assert out.count(f"Resuming {TRAIN} from byte {received:,} (left by an earlier run)") == 1
    assert "Going on with" not in out  # review finding 8: it named the URL that answered 404


def test_a_partial_of_another_size_is_thrown_away(monkeypatch, tmp_path, file_server, capsys):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    data = BINARIZED_FILES[TRAIN]
    folder = tmp_path / "downloads" / BinarizedMnist.name
    leave_partial(folder, TRAIN, data + b"x", 100, f"{file_server.url}/upstream/{TRAIN}")
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    assert "a partial of another file (its registered size or sha256 differ)" in capsys.readouterr().out
    assert file_server.sent[f"/upstream/{TRAIN}"] == len(data)


# ---- planted entries (requirement 2) ----


@pytest.mark.parametrize("plant", ["symlinks and FIFOs", "a symlink to /dev/zero"])
def test_entries_planted_in_the_download_dir_are_moved_aside_never_followed(tmp_path, file_server, plant):
    """Found 2: symlinks were followed out of the folder; a FIFO blocked for ever; /dev/zero was read until
    MemoryError."""
    file_server.serve_files("upstream", FASHION_FILES)
    env = worker_env(tmp_path, FashionMnist, FASHION_FILES, [f"{file_server.url}/upstream/"])
    folder = tmp_path / "data" / "downloads" / FashionMnist.name
    folder.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_bytes(b"not to be truncated")
    if plant == "symlinks and FIFOs":
        (folder / "train-images-idx3-ubyte.gz.partial").symlink_to(outside / "created")  # dangling
        (folder / "train-labels-idx1-ubyte.gz.lock").symlink_to(outside / "kept")
        os.mkfifo(folder / "t10k-images-idx3-ubyte.gz.partial.json")
        os.mkfifo(folder / "t10k-labels-idx1-ubyte.gz")
    else:
        (folder / "t10k-labels-idx1-ubyte.gz").symlink_to("/dev/zero")
    worker = run(
        [sys.executable, str(WORKER), FashionMnist.name, "--data_dir", str(tmp_path / "data")],
        env,
        tmp_path,
    )
    assert result(worker)["splits"] == {"train": 12, "test": 5}
    assert not (outside / "created").exists() and (outside / "kept").read_bytes() == b"not to be truncated"
    assert "Moved aside" in worker.stdout
    for name, data in FASHION_FILES.items():
        final = folder / name
        assert stat.S_ISREG(os.lstat(final).st_mode) and final.read_bytes() == data
    assert all(not path.is_symlink() or path.name.endswith(shared_files.ASIDE_SUFFIX) for path in folder.iterdir())


# Peak growth as VmHWM (reset first) over the RSS before, as conftest.peak_growth_mib measures it in this process
# (the worker runs in a child, which has tests/workers on its path, not conftest): not ru_maxrss, which Linux
# carries across exec, so a child of a large pytest worker starts at that worker's peak and growth below it went
# unseen.
MEMORY_PROBE = """
import re, sys
import registered_dummies
import tensorflow  # imported by TFDS's writer anyway: its memory is not the prepare's growth
import tensorflow_datasets as tfds
def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1])
builder = tfds.builder(sys.argv[1], data_dir=sys.argv[2])
try:
    with open("/proc/self/clear_refs", "w") as file:  # closed within: a refused write raises here
        file.write("5")  # VmHWM := VmRSS (Linux 4.0+)
except OSError as error:
    sys.exit(f"PEAK_SKIP cannot reset the peak memory here ({error})")
before = status("VmRSS")
builder.download_and_prepare()
print("PEAK_GROWTH_KIB", status("VmHWM") - before, flush=True)
"""


def test_an_impostor_earlier_download_is_read_no_further_than_its_size(tmp_path, file_server):
    """Found 3: a 1.5 GiB file under a download's name raised peak memory by 1.5 GiB before it was refused."""
    file_server.serve_files("upstream", BINARIZED_FILES)
    env = worker_env(tmp_path, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    folder = tmp_path / "data" / "downloads" / BinarizedMnist.name
    folder.mkdir(parents=True)
    with (folder / TRAIN).open("wb") as impostor:
        impostor.truncate(3 << 29)  # 1.5 GiB, sparse
    worker = run([sys.executable, "-c", MEMORY_PROBE, BinarizedMnist.name, str(tmp_path / "data")], env, tmp_path)
    if "PEAK_SKIP" in worker.stdout:  # stderr comes with stdout (`run`)
        pytest.skip(worker.stdout.split("PEAK_SKIP ", 1)[1].strip())
    growth = [int(line.split()[1]) for line in worker.stdout.splitlines() if line.startswith("PEAK_GROWTH_KIB")]
    assert worker.returncode == 0 and growth, worker.stdout[-3000:]
    print(f"peak resident memory grew by {growth[0] / 1024:.0f} MiB preparing past a 1.5 GiB impostor")
    assert growth[0] < 512 << 10
    assert (folder / TRAIN).read_bytes() == BINARIZED_FILES[TRAIN]


# ---- full and read-only disks (requirements 4 and 5) ----


def large_binarized_files(tmp_path: Path) -> dict[str, bytes]:
    """Binarized MNIST files whose train file (9.4 MB) does not fit a 2 MiB disk."""
    paths = testing.write_upstream_files(
        BinarizedMnist, tmp_path / "large", {"train": 6000, "validation": 30, "test": 30}, seed=5
    )
    return {name: path.read_bytes() for name, path in paths.items()}


@needs_root
def test_a_full_disk_stops_the_download_at_once_naming_the_folder(monkeypatch, tmp_path, file_server):
    """Found 5: every source was asked, the error blamed them, a temp record and a descriptor were left."""
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, files, "first", "second")
    monkeypatch.setenv(fetching.MIRROR_ENV, f"{file_server.url}/mirror")
    for folder in ("first", "second", "mirror", f"mirror/{BinarizedMnist.name}"):
        file_server.serve_files(folder, files)
    small = tmp_path / "small"
    with mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", target=small):
        builder = BinarizedMnist(data_dir=tmp_path / "data")
        with pytest.raises(shared_files.LocalDiskError) as raised:
            builder.download_and_prepare(download_dir=small)
        message = str(raised.value)
        assert "is full" in message and str(small / BinarizedMnist.name) in message
        assert f"{TRAIN} needs {len(files[TRAIN]):,} bytes there" in message
        asked = {path.rsplit("/", 1)[0] for path in file_server.requests if path.endswith(TRAIN)}
        assert asked == {f"/mirror/{BinarizedMnist.name}"}, file_server.requests  # no further source
        left = [path.name for path in (small / BinarizedMnist.name).iterdir()]
        assert not [name for name in left if ".json." in name], left  # no temporary record
        assert f"{TRAIN}.partial" in left  # the bytes written stay for the next run
    assert not os.path.ismount(small)  # `mounted` fails the test if a descriptor left open kept it busy


@needs_root
def test_a_full_disk_under_the_data_dir_fails_the_preparation_cleanly(monkeypatch, tmp_path, file_server):
    """TFDS's own ENOSPC: one OSError, nothing of ours held open (the lock is free, the disk unmounts)."""
    files = large_binarized_files(tmp_path)
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, files, "upstream")
    file_server.serve_files("upstream", files)
    small = tmp_path / "small"
    with mounted("-t", "tmpfs", "-o", "size=256k", "tmpfs", target=small):
        builder = BinarizedMnist(data_dir=small)
        # TFDS's own error: a RuntimeError at TFDS 4.9.10, TensorFlow's ResourceExhaustedError at 4.9.4 / TF 2.16.1.
        with pytest.raises((RuntimeError, tf.errors.ResourceExhaustedError), match=f"{small}.*No space left on device"):
            builder.download_and_prepare(download_dir=tmp_path / "downloads")
        with preparation.exclusive(builder.data_path, "again") as held:  # our lock was let go
            assert held
    assert not os.path.ismount(small)


@needs_root
def test_a_read_only_download_dir_whose_files_verify_is_used(monkeypatch, tmp_path, file_server, capsys):
    """Found 6: the lock was created before the verified file was looked at (EROFS)."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    downloads = tmp_path / "downloads"
    prepare(BinarizedMnist, tmp_path)
    for path in downloads.rglob("*.lock"):
        path.unlink()  # as a folder filled by hand, or by a tool without locks
    file_server.stop()  # nothing is downloaded now
    with read_only_view(downloads, tmp_path / "ro") as read_only:
        builder = BinarizedMnist(data_dir=tmp_path / "data2")
        builder.download_and_prepare(download_dir=read_only)
        assert_prepared(builder, "binarized_mnist")
    assert capsys.readouterr().out.count("downloaded earlier") == len(BINARIZED_FILES)


@needs_root
def test_a_read_only_download_dir_missing_a_file_says_so(monkeypatch, tmp_path, file_server):
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    (tmp_path / "downloads" / BinarizedMnist.name).mkdir(parents=True)
    (tmp_path / "downloads" / "extracted").mkdir()  # TFDS makes it in every download dir
    with read_only_view(tmp_path / "downloads", tmp_path / "ro") as read_only:
        with pytest.raises(shared_files.LocalDiskError, match="is read-only"):
            BinarizedMnist(data_dir=tmp_path / "data").download_and_prepare(download_dir=read_only)
    assert not file_server.requests


@needs_root
def test_a_complete_prepared_dataset_is_read_from_a_read_only_data_dir(monkeypatch, tmp_path, file_server):
    """Guards behaviour the package already had (it passes against bb855a5, before issue 30): the preparation
    lock is taken only when something is to be prepared, so a read-only data_dir must stay readable."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    prepare(BinarizedMnist, tmp_path)
    with read_only_view(tmp_path / "data", tmp_path / "ro") as read_only:
        builder = BinarizedMnist(data_dir=read_only)
        builder.download_and_prepare(download_dir=tmp_path / "downloads")
        examples = tfds.as_numpy(builder.as_dataset("test", batch_size=-1))
        assert len(examples["image"]) == 4


@needs_root
def test_a_user_who_may_not_write_the_download_dir_uses_its_verified_files(tmp_path, file_server, public_folder):
    """Found 6, as a non-root user on a root-owned 755 folder (EACCES on the lock before)."""
    file_server.serve_files("upstream", BINARIZED_FILES)
    env = worker_env(public_folder, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    downloads = public_folder / "downloads" / BinarizedMnist.name
    downloads.mkdir(parents=True)
    (public_folder / "downloads" / "extracted").mkdir()  # TFDS itself makes it in every download dir
    for name, data in BINARIZED_FILES.items():
        (downloads / name).write_bytes(data)
    data_dir = public_folder / "user_data"
    data_dir.mkdir()
    os.chown(data_dir, 65534, 65534)
    for folder in (public_folder / "downloads", downloads):
        folder.chmod(0o755)
    command = [sys.executable, str(WORKER), BinarizedMnist.name, "--data_dir", str(data_dir)]
    command += ["--download_dir", str(public_folder / "downloads")]
    worker = run(as_user(65534, 65534, command), env | {"HOME": str(data_dir)}, public_folder)
    assert result(worker)["splits"] == {"train": 10, "validation": 4, "test": 4}
    assert not file_server.requests
    assert sorted(path.name for path in downloads.iterdir()) == sorted(BINARIZED_FILES)


# ---- two users of one group-shared folder (requirement 1) ----

GROUP, ALICE, BOB = 47000, 47001, 47002


@needs_root
def test_two_users_of_a_group_shared_folder_use_each_others_files(tmp_path, file_server, public_folder):
    """Found 1: locks and partials were made 0o644, so the group's second user could use nothing the first left."""
    shared = public_folder / "datasets"
    shared.mkdir()
    os.chown(shared, 0, GROUP)
    shared.chmod(0o2775)
    data = BINARIZED_FILES[TRAIN]
    for name, content in BINARIZED_FILES.items():
        file_server.serve(f"/upstream/{name}", content, *(["cut"] * 9 if name == TRAIN else []))
    env = worker_env(public_folder, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    command = [sys.executable, str(WORKER), BinarizedMnist.name, "--data_dir", str(shared)]
    env |= {"HOME": str(shared)}
    first = run(as_user(ALICE, GROUP, command), env, public_folder, preexec_fn=with_umask(0o002))
    assert first.returncode != 0 and "interrupted 9 times" in first.stdout, first.stdout[-3000:]
    folder = shared / "downloads" / BinarizedMnist.name
    partial = folder / f"{TRAIN}.partial"
    assert partial.exists() and os.stat(partial).st_uid == ALICE
    for path in (partial, folder / f"{TRAIN}.lock", shared / BinarizedMnist.name / "1.0.0.lock"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o060 == 0o060, path  # the group reads and writes it
    received = json.loads((folder / f"{TRAIN}.partial.json").read_text())["spans"][0][1]
    assert 0 < received < len(data)
    file_server.serve(f"/upstream/{TRAIN}", data)
    sent_before = file_server.sent[f"/upstream/{TRAIN}"]
    second = run(as_user(BOB, GROUP, command), env, public_folder, preexec_fn=with_umask(0o002))
    assert result(second)["splits"] == {"train": 10, "validation": 4, "test": 4}
    said = second.stdout
    assert f"Resuming {TRAIN} from byte {received:,}" in said
    assert said.count("downloaded earlier") == len(BINARIZED_FILES) - 1
    assert file_server.sent[f"/upstream/{TRAIN}"] - sent_before == len(data) - received


# ---- nothing private outlives its run (requirement 6) ----


def dead_pid() -> int:
    """A pid no process has now (a child that ended and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def test_private_partials_of_dead_workers_are_removed_by_the_next_run(tmp_path, file_server):
    """Found 7: without working locks, a killed worker's `NAME.partial.<pid>-<random>` stayed for ever."""
    file_server.serve_files("upstream", BINARIZED_FILES)
    env = worker_env(tmp_path, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    folder = tmp_path / "data" / "downloads" / BinarizedMnist.name
    folder.mkdir(parents=True)
    host = socket.gethostname()
    dead = folder / f"{TRAIN}.partial.{dead_pid()}-0123abcd@{host}"
    alive = folder / f"{TRAIN}.partial.{os.getpid()}-0123abcd@{host}"
    elsewhere = folder / f"{TRAIN}.partial.{dead_pid()}-0123abcd@another-{host}"
    for path in (dead, alive, elsewhere):
        path.write_bytes(b"x" * 100)
        path.with_name(path.name + ".json").write_text("{}")
    command = [sys.executable, str(FAULTS), "--flock", "ENOLCK", str(WORKER), BinarizedMnist.name]
    worker = run([*command, "--data_dir", str(tmp_path / "data")], env, tmp_path)
    assert result(worker)["splits"] == {"train": 10, "validation": 4, "test": 4}
    assert not dead.exists() and not dead.with_name(dead.name + ".json").exists()
    assert alive.exists() and elsewhere.exists()  # a live process's; another host's, which this one cannot judge
    left = {path.name for path in folder.iterdir() if ".partial." in path.name}
    assert left == {alive.name, alive.name + ".json", elsewhere.name, elsewhere.name + ".json"}


def test_a_remote_download_dir_leaves_no_temporary_folder(tmp_path, file_server):
    """Found 7: where the download dir is remote (gs://), each file's mkdtemp folder was never removed."""
    file_server.serve_files("upstream", BINARIZED_FILES)
    env = worker_env(tmp_path, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, str(REPO / "tests" / "workers" / "prepare_worker.py"), BinarizedMnist.name]
    command += ["--data_dir", str(tmp_path / "data"), "--no_lock", "--api", "builder"]
    worker = run(command, env | {"TMPDIR": str(temporary)}, tmp_path)
    assert result(worker)["splits"] == {"train": 10, "validation": 4, "test": 4}
    assert not [path.name for path in temporary.iterdir() if path.name.startswith("mnist_variants-")]


# ---- hostile validators (review finding 1) ----


@pytest.mark.parametrize(
    "validator", ['"abc"\r\nX-Evil: 1', '"\u20ac"', " W/x", '"a" "b"'], ids=["CR LF", "not latin-1", "space", "two"]
)
def test_a_hostile_validator_in_a_record_costs_only_that_partial(monkeypatch, tmp_path, file_server, capsys, validator):
    """Review finding 1: a validator with CR/LF or non-latin-1 went out as If-Range, and every run failed."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    data = BINARIZED_FILES[TRAIN]
    folder = tmp_path / "downloads" / BinarizedMnist.name
    leave_partial(folder, TRAIN, data, 100, f"{file_server.url}/upstream/{TRAIN}", validator=validator)
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    said = [line for line in capsys.readouterr().out.splitlines() if "progress record" in line]
    assert len(said) == 1 and "validator" in said[0], said
    assert all(if_range is None for if_range in file_server.if_ranges)


@pytest.mark.parametrize("validator", ['"abc"', 'W/"x-1"', '""', "Sun, 06 Nov 1994 08:49:37 GMT"])
def test_a_valid_validator_is_resumed_with(tmp_path, validator):
    data = os.urandom(9000)
    path = leave_partial(tmp_path, "f.bin", data, 100, "http://127.0.0.1:9/f.bin", validator=validator)
    identity = partials.Identity(len(data), sha(data))
    partial, note = partials.Partial.resume_or_start(path, identity, "http://127.0.0.1:9/f.bin")
    assert not note and partial.validator == validator and partial.inherited == 100


def test_a_validator_a_server_sends_that_a_record_may_not_hold_is_not_kept(tmp_path):
    """What set_validator keeps, the next run's _read_record accepts (else the partial would be lost)."""
    data = os.urandom(9000)
    identity = partials.Identity(len(data), sha(data))
    partial = partials.Partial(tmp_path / "f.bin.partial", identity, "u")
    partial.plan([(0, len(data))])
    partial.set_validator('"caf\xe9"')  # obs-text: HTTP allows it in an ETag, If-Range may not carry it safely
    assert partial.validator is None
    partial.write(partial.spans[0], data[:100])
    partial.close()
    resumed, note = partials.Partial.resume_or_start(partial.path, identity, "u")
    assert not note and resumed.inherited == 100


@pytest.mark.parametrize("pid", ["99999999999999999999", "4294967296", "0", "-1"])
def test_a_planted_private_partial_with_an_odd_pid_is_left_alone(tmp_path, pid):
    """Review finding 3: a pid past what os.kill takes raised OverflowError at the start of every no-locks run."""
    host = socket.gethostname()
    planted = tmp_path / f"f.bin.partial.{pid}-0123abcd@{host}"
    planted.write_bytes(b"x")
    dead = tmp_path / f"f.bin.partial.{dead_pid()}-0123abcd@{host}"
    dead.write_bytes(b"x")
    partials.remove_dead_private(tmp_path, "f.bin")
    assert planted.exists() and not dead.exists()


def test_a_symlink_planted_as_the_datasets_folder_is_moved_aside(monkeypatch, tmp_path, file_server, capsys):
    """Review finding 4: `downloads/<dataset>` -> elsewhere was followed (O_NOFOLLOW guards only the last part
    of a path): the locks, partials and downloads went where the symlink pointed."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / TRAIN).write_bytes(BINARIZED_FILES[TRAIN])  # not to be used: it is not in the download dir
    (tmp_path / "downloads").mkdir()
    folder = tmp_path / "downloads" / BinarizedMnist.name
    folder.symlink_to(outside)
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    assert sorted(path.name for path in outside.iterdir()) == [TRAIN]
    assert not folder.is_symlink() and folder.is_dir()
    assert sorted(path.name for path in folder.iterdir() if not path.name.endswith(".lock")) == sorted(BINARIZED_FILES)
    assert f"Moved aside {folder}: a symlink, not a folder (now {folder}.not-a-file)" in capsys.readouterr().out
    assert file_server.sent[f"/upstream/{TRAIN}"] == len(BINARIZED_FILES[TRAIN])


def test_the_download_dir_itself_may_be_a_symlink(monkeypatch, tmp_path, file_server):
    """The user's own choice: `download_dir` -> a larger disk is followed (only what is inside is guarded)."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    file_server.serve_files("upstream", BINARIZED_FILES)
    (tmp_path / "disk").mkdir()
    (tmp_path / "downloads").symlink_to(tmp_path / "disk")
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    assert (tmp_path / "disk" / BinarizedMnist.name / TRAIN).read_bytes() == BINARIZED_FILES[TRAIN]


@needs_root
def test_an_entry_that_cannot_be_moved_aside_is_no_source_failure(tmp_path, file_server, public_folder):
    """Review finding 5: in a sticky folder, another user's dangling symlink under the partial's name cannot be
    moved aside; every source was blamed for it (no request made), and discard()'s EPERM hid even that."""
    shared = public_folder / "downloads"
    folder = shared / BinarizedMnist.name
    folder.mkdir(parents=True)
    for path in (shared, folder):
        path.chmod(0o1777)  # sticky: only an entry's owner may rename or remove it
    planted = folder / f"{TRAIN}.partial"
    planted.symlink_to("/nonexistent-target")  # root's
    for name, content in BINARIZED_FILES.items():
        file_server.serve(f"/first/{name}", content)
        file_server.serve(f"/second/{name}", content)
    bases = [f"{file_server.url}/first/", f"{file_server.url}/second/"]
    env = worker_env(public_folder, BinarizedMnist, BINARIZED_FILES, bases)
    data_dir = public_folder / "bob"
    data_dir.mkdir()
    os.chown(data_dir, BOB, GROUP)
    command = [sys.executable, str(WORKER), BinarizedMnist.name, "--data_dir", str(data_dir)]
    command += ["--download_dir", str(shared)]
    worker = run(as_user(BOB, GROUP, command), env | {"HOME": str(data_dir)}, public_folder)
    assert result(worker)["splits"] == {"train": 10, "validation": 4, "test": 4}
    assert "Could not get" not in worker.stdout
    said = [line for line in worker.stdout.splitlines() if str(planted) in line]
    assert len(said) == 1 and "private partial" in said[0], worker.stdout[-3000:]
    assert (
        file_server.sent[f"/first/{TRAIN}"] == len(BINARIZED_FILES[TRAIN]) and not file_server.sent[f"/second/{TRAIN}"]
    )
    assert planted.is_symlink() and (folder / TRAIN).read_bytes() == BINARIZED_FILES[TRAIN]
    assert not [path.name for path in folder.iterdir() if ".partial." in path.name]  # the private partial went


def test_dead_private_partials_go_even_when_every_file_is_verified(monkeypatch, tmp_path, file_server):
    """Review finding 6: they were looked for only once a download was needed."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "upstream")
    folder = tmp_path / "downloads" / BinarizedMnist.name
    folder.mkdir(parents=True)
    for name, data in BINARIZED_FILES.items():
        (folder / name).write_bytes(data)
    dead = folder / f"{TRAIN}.partial.{dead_pid()}-0123abcd@{socket.gethostname()}"
    dead.write_bytes(b"x" * 100)
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    assert not dead.exists() and not file_server.requests


def test_temporary_folders_of_dead_remote_runs_are_removed(tmp_path, file_server):
    """Review finding 6: a gs:// run killed mid-download left its temporary folder for ever."""
    file_server.serve_files("upstream", BINARIZED_FILES)
    env = worker_env(tmp_path, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    temporary = tmp_path / "tmp"
    host = socket.gethostname()
    dead = temporary / f"mnist_variants-{dead_pid()}@{host}-0123abcd"
    alive = temporary / f"mnist_variants-{os.getpid()}@{host}-0123abcd"
    elsewhere = temporary / f"mnist_variants-{dead_pid()}@another-{host}-0123abcd"
    for path in (dead, alive, elsewhere):
        path.mkdir(parents=True)
        (path / f"{TRAIN}.partial.1-0123abcd@{host}").write_bytes(b"x" * 100)
    command = [sys.executable, str(REPO / "tests" / "workers" / "prepare_worker.py"), BinarizedMnist.name]
    command += ["--data_dir", str(tmp_path / "data"), "--no_lock", "--api", "builder"]
    worker = run(command, env | {"TMPDIR": str(temporary)}, tmp_path)
    assert result(worker)["splits"] == {"train": 10, "validation": 4, "test": 4}
    assert sorted(path.name for path in temporary.iterdir()) == sorted([alive.name, elsewhere.name])


@needs_root
def test_a_group_member_takes_over_what_another_made_0644(tmp_path, file_server, public_folder, capsys):
    """Review finding 7: in a 2775 folder of the group, another user's 0644 lock (made under umask 022) could not be
    taken (flock needs only a read descriptor), and another user's 0644 partial failed the run
    ("... may not be written by this user") where the folder lets it be deleted and started afresh."""
    shared = public_folder / "datasets"
    shared.mkdir()
    os.chown(shared, 0, GROUP)
    shared.chmod(0o2775)
    folder = shared / "downloads" / BinarizedMnist.name
    folder.mkdir(parents=True)
    for path in (folder.parent, folder):
        os.chown(path, ALICE, GROUP)
        path.chmod(0o2775)
    data = BINARIZED_FILES[TRAIN]
    leave_partial(folder, TRAIN, data, len(data) // 3, "x")
    (folder / f"{TRAIN}.lock").write_bytes(b"")
    for path in folder.iterdir():
        os.chown(path, ALICE, GROUP)
        path.chmod(0o644)
    file_server.serve_files("upstream", BINARIZED_FILES)
    env = worker_env(public_folder, BinarizedMnist, BINARIZED_FILES, [f"{file_server.url}/upstream/"])
    command = [sys.executable, str(WORKER), BinarizedMnist.name, "--data_dir", str(shared)]
    bob = run(as_user(BOB, GROUP, command), env | {"HOME": str(shared)}, public_folder, preexec_fn=with_umask(0o002))
    assert result(bob)["splits"] == {"train": 10, "validation": 4, "test": 4}
    assert f"Removing {folder / (TRAIN + '.partial')}: unreadable (Permission denied)" in bob.stdout
    assert (folder / TRAIN).read_bytes() == data and os.stat(folder / TRAIN).st_uid == BOB
    assert file_server.sent[f"/upstream/{TRAIN}"] == len(data)


@needs_root
def test_a_lock_file_no_one_may_write_is_held_through_a_read_descriptor(public_folder):
    lock = public_folder / "f.bin.lock"
    lock.write_bytes(b"")
    os.chown(lock, ALICE, GROUP)
    lock.chmod(0o444)
    probe = "import sys; from mnist_variants import locking\n"
    probe += "with locking.hold(sys.argv[1], 'w') as held: print('HELD', held)"
    child = run(as_user(BOB, GROUP, [sys.executable, "-c", probe, str(lock)]), {}, public_folder)
    assert child.returncode == 0 and "HELD True" in child.stdout, child.stdout[-3000:]


def test_a_refused_write_names_the_file_not_the_folder():
    refused = PermissionError(13, "Permission denied", "/shared/d/f.bin.partial")
    message = str(shared_files.disk_error(refused, "/shared/d", "f.bin needs 9 bytes there"))
    assert message.startswith("/shared/d/f.bin.partial may not be written by this user (Permission denied)"), message


def test_the_validator_goes_back_only_to_the_source_that_sent_it(monkeypatch, tmp_path, file_server):
    """Review finding 9: another source (its own ETag) resumes with a plain Range and sends only the missing bytes;
    sent the first source's ETag as If-Range, it would rightly send the whole file."""
    serve_from(monkeypatch, tmp_path, file_server, BinarizedMnist, BINARIZED_FILES, "first", "second")
    file_server.serve_files("first", BINARIZED_FILES)
    file_server.serve_files("second", BINARIZED_FILES)
    data = BINARIZED_FILES[TRAIN]
    file_server.serve(f"/first/{TRAIN}", data, *["cut"] * 20)
    file_server.routes[f"/second/{TRAIN}"].etag = '"the-second-sources-own"'
    assert_prepared(prepare(BinarizedMnist, tmp_path), "binarized_mnist")
    asked = [
        (path, if_range) for (path, _), if_range in zip(file_server.range_requests, file_server.if_ranges, strict=True)
    ]
    first_etag = file_server.routes[f"/first/{TRAIN}"].etag
    assert (f"/first/{TRAIN}", first_etag) in asked  # resumed from its own source with its validator
    assert [if_range for path, if_range in asked if path == f"/second/{TRAIN}"] == [None]
    assert 0 < file_server.sent[f"/first/{TRAIN}"] < len(data)
    assert file_server.sent[f"/second/{TRAIN}"] == len(data) - file_server.sent[f"/first/{TRAIN}"]
