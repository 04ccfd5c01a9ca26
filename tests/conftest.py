"""Shared fixtures: where the dummy data lives, the --full-size option, a loopback HTTP server."""

from __future__ import annotations

import gzip
import http.server
import threading
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


def assert_nothing_prepared(tmp_path: Path) -> None:
    """No file at all under the test's data dir (TFDS may leave empty folders)."""
    leftovers = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
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


class FileServer:
    """A loopback HTTP server whose answer for each path a test sets: bytes, a status, a stall or a cut body."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes | int]] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                kind, payload = server.routes.get(self.path, ("status", 404))
                if kind == "stall":
                    server.release.wait(60)  # Say nothing until the test ends.
                    return
                if kind == "status":
                    self.send_error(payload)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # "cut": the promised length, then only half the body and a closed connection.
                self.wfile.write(payload[: len(payload) // 2] if kind == "cut" else payload)
                if kind == "cut":
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def serve(self, path: str, kind: str, payload: bytes | int = b"") -> None:
        self.routes[path] = (kind, payload)

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
