"""Pre-emption loses nothing: a worker killed mid-download leaves its bytes, and the next worker resumes them.

Real worker processes (tests/workers/download_worker.py) download from a throttled loopback
server; the test kills one (SIGKILL, or SIGINT as Ctrl-C does) once a good part of the largest
file is on disk, starts another on the same data_dir, counts the bytes the server sent in all
and compares the data with a preparation from the same files that never went over the network.
Also: a partial left for another registered file, a file that changed behind the same URL
(If-Range), two data_dirs sharing one download dir, and memory while a slow part holds back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testing
from conftest import REPO, child_env, worker_env
from testing import FileServer

from mnist_variants import BinarizedMnist, http_transport, partials

WORKER = REPO / "tests" / "workers" / "download_worker.py"
DEADLINE_SECONDS = 180
# Train is 18.8 MB: four parts of 4.7 MB (or one), at 4 MB/s per connection from the server; the victims of
# the resume test get 1 MB/s, so that from 40% on disk to the whole file there are 2.8 s or more to signal them
# in (at 4 MB/s over 4 connections, 0.7 s: on a loaded CI machine one victim finished its download first).
VICTIM_BYTES_PER_SECOND = 1e6
COUNTS = {"train": 12_000, "validation": 600, "test": 600}
TRAIN = "binarized_mnist_train.amat"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("files")
    paths = testing.write_upstream_files(BinarizedMnist, folder, COUNTS, seed=11)
    return {name: path.read_bytes() for name, path in paths.items()}


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> dict:
    """The result of a preparation from a manual dir: what every worker must end up with."""
    folder = tmp_path_factory.mktemp("reference")
    manual = folder / "manual"
    manual.mkdir()
    for name, data in files.items():
        (manual / name).write_bytes(data)
    env = worker_env(folder, BinarizedMnist, files, ["http://127.0.0.1:9/unused/"])
    return finished(start(folder, env, folder / "data", "--manual_dir", str(manual)))


def start(tmp_path: Path, env: dict[str, str], data_dir: Path, *options: str) -> subprocess.Popen:
    log = tmp_path / f"worker-{time.monotonic_ns()}.out"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), BinarizedMnist.name, "--data_dir", str(data_dir), *options],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=tmp_path,
        )
    worker.log = log
    return worker


def output(worker: subprocess.Popen) -> str:
    return worker.log.read_text(errors="replace")


def finished(worker: subprocess.Popen) -> dict:
    try:
        worker.wait(DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail(f"worker still running at the deadline:\n{output(worker)[-3000:]}")
    text = output(worker)
    results = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert worker.returncode == 0 and results, text[-4000:]
    return json.loads(results[-1].removeprefix("RESULT "))


def received(record: Path) -> int:
    """Bytes a partial download's progress record counts, or 0 while there is none."""
    try:
        return sum(position - start for start, position, _ in json.loads(record.read_text())["spans"])
    except (FileNotFoundError, ValueError):
        return 0


def wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def link() -> FileServer:
    server = FileServer(bytes_per_second=4e6)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("kill", "connections"),
    [(signal.SIGKILL, "1"), (signal.SIGKILL, "4"), (signal.SIGINT, "4"), (signal.SIGTERM, "1")],
    ids=["SIGKILL-1", "SIGKILL-4", "SIGINT-4", "SIGTERM-1"],
)
def test_the_next_worker_resumes_what_a_killed_one_downloaded(tmp_path, files, reference, link, kill, connections):
    link.serve_files("upstream", files)
    link.bytes_per_second = VICTIM_BYTES_PER_SECOND
    env = worker_env(tmp_path, BinarizedMnist, files, [f"{link.url}/upstream/"])
    env[http_transport.CONNECTIONS_ENV] = connections
    data_dir = tmp_path / "data"
    record = data_dir / "downloads" / BinarizedMnist.name / f"{TRAIN}.partial.json"
    victim = start(tmp_path, env, data_dir)
    size = len(files[TRAIN])
    wait_for(lambda: received(record) >= 0.4 * size, "the victim to receive 40% of the train file")
    presses = signal_until_it_ends(victim, kill)
    print(f"the victim ended after {presses} {kill.name}")
    link.bytes_per_second = 4e6  # the successor's link
    left = received(record)
    assert 0.4 * size <= left < size and victim.returncode != 0, output(victim)[-3000:]

    successor = start(tmp_path, env, data_dir)
    assert finished(successor) == reference
    said = output(successor)
    resumed = re.findall(rf"Resuming {TRAIN} from byte ([\d,]+) \(left by an earlier run\)", said)
    assert len(resumed) == 1 and int(resumed[0].replace(",", "")) >= left, said[-3000:]
    total = sum(len(data) for data in files.values())
    print(f"bytes sent / file bytes: {sum(link.sent.values()) / total:.3f} (left {left:,} of {size:,})")
    assert sum(link.sent.values()) <= 1.1 * total, (dict(link.sent), total)
    assert not [path for path in record.parent.iterdir() if ".partial" in path.name]  # done: the partials went


def signal_until_it_ends(victim: subprocess.Popen, kill: signal.Signals) -> int:
    """Sends `kill` until the victim ends, as a user presses Ctrl-C again; returns how many were sent.

    Twice in CI trials (2026-11-25 and 26, both on a loaded machine) a SIGINT-4 victim went on to finish its
    download and preparation after one SIGINT: a KeyboardInterrupt raised where something swallows it (a bare
    `except:` such as TFDS's `is_notebook`, or a finalizer) is the suspicion, not verified. A second press stops it.
    """
    for presses in range(1, 6):
        victim.send_signal(kill)
        try:
            victim.wait(60 if kill != signal.SIGINT else 1)
            return presses
        except subprocess.TimeoutExpired:
            continue
    victim.wait(60)
    return presses


def leave_partial(folder: Path, url: str, data: bytes, received_bytes: int, sha256: str, validator: str) -> None:
    """A partial download as a killed process leaves it: the first `received_bytes` of `data`."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = partials.Partial(folder / f"{TRAIN}.partial", partials.Identity(len(data), sha256), url)
    partial.plan([(0, len(data))])
    partial.set_validator(validator)
    partial.write(partial.spans[0], data[:received_bytes])
    partial.close()


def test_a_partial_of_another_registered_file_is_not_resumed(tmp_path, files, reference, file_server):
    file_server.serve_files("upstream", files)
    env = worker_env(tmp_path, BinarizedMnist, files, [f"{file_server.url}/upstream/"])
    data_dir, data = tmp_path / "data", files[TRAIN]
    folder = data_dir / "downloads" / BinarizedMnist.name
    leave_partial(folder, f"{file_server.url}/upstream/{TRAIN}", data, len(data) // 2, "0" * 64, '"old"')
    worker = start(tmp_path, env, data_dir)
    assert finished(worker) == reference
    removed = f"Removing {folder / (TRAIN + '.partial')}: a partial of another file (its registered size or sha256"
    assert removed in output(worker)
    assert file_server.sent[f"/upstream/{TRAIN}"] == len(data)  # from zero


def test_a_file_changed_behind_the_same_url_is_sent_whole_not_spliced(tmp_path, files, reference, file_server):
    """The partial's validator goes back as If-Range; the server has another file now, so it answers 200."""
    data = files[TRAIN]
    changed = data[: len(data) // 2] + data[len(data) // 2 :].replace(b"1", b"0")
    file_server.serve(f"/upstream/{TRAIN}", changed)  # another ETag
    for name in files.keys() - {TRAIN}:
        file_server.serve(f"/upstream/{name}", files[name])
    file_server.serve_files("mirror", files)
    env = worker_env(tmp_path, BinarizedMnist, files, [f"{file_server.url}/upstream/", f"{file_server.url}/mirror/"])
    data_dir = tmp_path / "data"
    url = f"{file_server.url}/upstream/{TRAIN}"
    etag = testing.Route(data).etag
    leave_partial(data_dir / "downloads" / BinarizedMnist.name, url, data, len(data) // 2, sha(data), etag)
    worker = start(tmp_path, env, data_dir)
    assert finished(worker) == reference
    said = output(worker)
    asked = [(header, if_range) for (path, header), if_range in zip(file_server.range_requests, file_server.if_ranges,
             strict=True) if path == f"/upstream/{TRAIN}"]  # fmt: skip
    assert asked[0] == (f"bytes={len(data) // 2}-{len(data) - 1}", etag)
    assert f"{url} sent the whole file (changed since the partial was started)" in said
    assert f"Got {TRAIN} from {file_server.url}/mirror/" in said  # the changed file did not verify


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_two_data_dirs_sharing_a_download_dir_download_each_file_once(tmp_path, files, reference, link):
    link.serve_files("upstream", files)
    env = worker_env(tmp_path, BinarizedMnist, files, [f"{link.url}/upstream/"])
    downloads = tmp_path / "shared_downloads"
    workers = [start(tmp_path, env, tmp_path / f"data{number}", "--download_dir", str(downloads)) for number in (1, 2)]
    assert [finished(worker) for worker in workers] == [reference, reference]
    said = [output(worker) for worker in workers]
    assert any(f"Waiting for another process downloading {TRAIN}" in text for text in said), said
    assert sum(f"Using {TRAIN} downloaded earlier" in text for text in said) == 1
    assert dict(link.sent) == {f"/upstream/{name}": len(data) for name, data in files.items()}


MEMORY_PROBE = """
import hashlib, json, sys, threading
from pathlib import Path
from mnist_variants import http_transport, partials

def peak_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])

url, size, digest, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
before = peak_kib()
partial = partials.Partial(folder / "file.partial", partials.Identity(size, digest), url)
policy = http_transport.Policy(timeout=10, connections=4)
http_transport.fetch(url, partial, policy, http_transport.Cancel(), lambda count: None)
downloading = peak_kib()  # before the finished file is read back for its sha256
ok = hashlib.sha256(partial.read_all()).hexdigest() == digest
print(json.dumps({"before_kib": before, "peak_kib": downloading, "verified": ok}))
"""


def test_memory_stays_flat_while_a_slow_part_holds_back_the_others(tmp_path):
    """32 MiB over 4 connections, the first part slow: the other parts go to disk, not to memory."""
    data = os.urandom(32 << 20)
    server = FileServer(bytes_per_second=None)
    try:
        server.serve("/big", data, "slow")  # the first part's connection at 1 MB/s, the three others at full speed
        probe = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, f"{server.url}/big", str(len(data)), sha(data), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **child_env()},
            cwd=tmp_path,
        )
    finally:
        server.stop()
    assert probe.returncode == 0, probe.stderr[-3000:]
    figures = json.loads(probe.stdout.splitlines()[-1])
    grown_mib = (figures["peak_kib"] - figures["before_kib"]) / 1024
    print(f"peak resident memory grew by {grown_mib:.1f} MiB while downloading 32 MiB over 4 connections")
    assert figures["verified"] and grown_mib < 16, figures  # a block per connection, not the parts held back


def test_ctrl_c_ends_a_preparation_whose_requests_wait_for_headers(tmp_path, files, file_server):
    """A real preparation, every request waiting for headers from a silent server, timeout 40 s: one SIGINT ends
    every request within the README's second (the worker stamps when the KeyboardInterrupt reached it and when
    its last download thread ended), not when the timeout runs out (40.3 s before, issue 31); the process then
    exits (the interpreter's exit, loosely bounded)."""
    file_server.serve_files("silent", files, *["silent"] * 9)
    env = {
        **worker_env(tmp_path, BinarizedMnist, files, [f"{file_server.url}/silent/"]),
        http_transport.TIMEOUT_ENV: "40",
    }
    victim = start(tmp_path, env, tmp_path / "data")
    try:
        wait_for(lambda: len(file_server.requests) >= len(files), "a request for every file", seconds=120)
        time.sleep(0.5)  # well into the wait for headers
        interrupted = time.monotonic()
        victim.send_signal(signal.SIGINT)
        victim.wait(20)
        seconds = time.monotonic() - interrupted
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    said = output(victim)
    assert victim.returncode != 0 and "KeyboardInterrupt" in said, said[-3000:]
    ended = re.findall(r"^REQUESTS_ENDED ([\d.]+)$", said, re.MULTILINE)
    assert ended and "INTERRUPT_CAUGHT" in said, said[-3000:]
    # 1 s as the README states, + 0.5 s for the signal's delivery and the worker's 10 ms polling on a loaded machine.
    assert float(ended[0]) - interrupted < 1.5, (float(ended[0]) - interrupted, said[-3000:])
    assert seconds < 20, seconds  # the interpreter's exit
    assert len(file_server.requests) == len(files)  # nothing was asked after the Ctrl-C
