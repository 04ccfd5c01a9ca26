"""Shared fixtures: where the dummy data lives, the --full-size option, a loopback HTTP server."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DUMMY_DATA = REPO / "dummy_data"
# Split sizes of the dummy data (dummy_data/generate.py writes them).
DUMMY_SPLITS = {
    "fashion_mnist": {"train": 12, "test": 5},
    "binarized_mnist": {"train": 10, "validation": 4, "test": 4},
}


def dummy_files(folder: str) -> dict[str, bytes]:
    """The dummy upstream files of one dataset, by file name."""
    return {path.name: path.read_bytes() for path in (DUMMY_DATA / folder).iterdir()}


def decompressed(files: dict[str, bytes]) -> dict[str, bytes]:
    """Gzipped files as keras and torchvision keep them: decompressed, without `.gz`."""
    return {name.removesuffix(".gz"): gzip.decompress(data) for name, data in files.items()}


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def write_registry(directory: Path, builder_cls, files: dict[str, bytes], base_url: str) -> Path:
    """Checksums of `files` in TFDS's format, shaped as upstream's: the download's digest of every file,
    and the decompressed content's digest of the label files only (the images' are not known upstream)."""
    directory.mkdir(parents=True, exist_ok=True)
    labels = {
        files_of_split["labels"] for files_of_split in builder_cls.SPLIT_FILES.values() if "labels" in files_of_split
    }

    def line(name: str, data: bytes, filename: str) -> str:
        return f"{base_url}{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{filename}\n"

    tsv = directory / f"{builder_cls.name}.tsv"
    tsv.write_text("".join(line(name, data, name) for name, data in files.items()))
    contents = {name: gzip.decompress(data) for name, data in files.items() if name in labels}
    (directory / f"{builder_cls.name}.decompressed.tsv").write_text(
        "".join(line(name, data, name.removesuffix(".gz")) for name, data in contents.items())
    )
    return tsv


def worker_env(tmp_path: Path, builder_cls, files: dict[str, bytes], sources: list[str]) -> dict[str, str]:
    """The environment that makes worker processes (tests/workers) use `sources` and the checksums of `files`."""
    tsv = write_registry(tmp_path / "registry", builder_cls, files, sources[0])
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({builder_cls.name: {"sources": sources, "checksums": str(tsv)}}))
    return {
        "MNIST_VARIANTS_TEST_REGISTRY": str(registry),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "workers"), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def assert_nothing_prepared(tmp_path: Path) -> None:
    """No file under the test's data dir but the preparation lock (TFDS may leave empty folders)."""
    leftovers = [path for path in (tmp_path / "data").rglob("*") if path.is_file() and path.suffix != ".lock"]
    assert not leftovers, leftovers


# Port 9 on loopback: nothing listens there, so a connection is refused at once.
CLOSED_LOOPBACK_PORT = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test (or a process it starts) fetches over HTTP, it never leaves this machine:
    loopback is reached directly, every other address through a proxy that refuses."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, CLOSED_LOOPBACK_PORT)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full-size",
        action="store_true",
        help="also compare with TFDS's builders on full-size generated files (minutes)",
    )


@dataclasses.dataclass
class Route:
    """What the server answers for one path: `data` (or an error `status`), and faults to apply in turn.

    Each request takes the next fault from `faults` (none left: a clean answer):
    "cut" sends the headers and half the body, then closes; "stall" sends half the body,
    then nothing until the test ends; "silent" sends nothing at all; "html" answers 200
    with an HTML page; "lie" answers a Range request with 206 and the file from byte 0.
    """

    data: bytes = b""
    status: int = 200
    faults: list[str] = dataclasses.field(default_factory=list)
    honour_range: bool = True


class FileServer:
    """A loopback HTTP server whose answer for each path a test sets; it counts the bytes it sends."""

    def __init__(self, bytes_per_second: float | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.sent: collections.Counter[str] = collections.Counter()
        self.release = threading.Event()
        self.bytes_per_second = bytes_per_second
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path, Route(status=404))
                fault = route.faults.pop(0) if route.faults else None
                if fault == "silent":
                    server.release.wait(60)  # Say nothing until the test ends.
                    return
                if fault == "html":
                    self._answer(200, b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "text/html")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                start = self._range_start(route, len(route.data))
                body = route.data if fault == "lie" else route.data[start:]
                self.send_response(206 if start is not None else 200)
                if start is not None:
                    self.send_header("Content-Range", f"bytes {start}-{len(route.data) - 1}/{len(route.data)}")
                self.send_header("Accept-Ranges", "bytes" if route.honour_range else "none")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(route.data) - (start or 0)))
                self.end_headers()
                if fault in ("cut", "stall"):
                    self._send(body[: len(body) // 2])
                    if fault == "stall":
                        server.release.wait(60)
                    self.close_connection = True
                    return
                self._send(body[: len(route.data) - (start or 0)])

            def _range_start(self, route: Route, size: int) -> int | None:
                header = self.headers.get("Range", "")
                if not (route.honour_range and header.startswith("bytes=") and header.endswith("-")):
                    return None
                start = int(header[len("bytes=") : -1])
                return start if 0 <= start < size else None

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._send(body)

            def _send(self, body: bytes) -> None:
                step = 1 << 16
                started = time.monotonic()
                try:
                    for offset in range(0, len(body), step):
                        chunk = body[offset : offset + step]
                        self.wfile.write(chunk)
                        server.sent[self.path] += len(chunk)
                        if server.bytes_per_second:
                            ahead = (offset + len(chunk)) / server.bytes_per_second - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                except OSError:  # the client went away
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def serve(self, path: str, data: bytes = b"", *faults: str, status: int = 200, honour_range: bool = True) -> None:
        self.routes[path] = Route(data, status, list(faults), honour_range)

    def serve_files(self, folder: str, files: dict[str, bytes], *faults: str) -> None:
        """Every file under /folder/, each with the same faults."""
        for name, data in files.items():
            self.serve(f"/{folder}/{name}", data, *faults)

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """An HTTP server on 127.0.0.1, stopped at the end of the test."""
    server = FileServer()
    try:
        yield server
    finally:
        server.stop()
