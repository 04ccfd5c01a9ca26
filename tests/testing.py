"""Files in the exact upstream formats, made up, and a loopback server that misbehaves, for tests and benchmarks.

Not part of the installed package: users are not meant to import it. The tests find it on their path (pytest puts
tests/ there, beside conftest.py); the benchmarks and dummy_data/generate.py put tests/ on sys.path themselves.

The images are synthetic but shaped like the real ones (a textured, shaded article or
blob on a black background, not uniform noise), so they compress and encode like
MNIST. Binarized MNIST files hold Bernoulli samples of such images, as upstream did.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import hashlib
import http.server
import io
import lzma
import re
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np
import promise
from etils import epath

from mnist_variants import Qmnist, formats
from mnist_variants.builder import MNIST_FILES, MnistVariantBuilder
from mnist_variants.formats import encode_idx


def encode_amat(images: np.ndarray) -> bytes:
    """`.amat` text: one image a line, its 784 pixels 0/1 separated by single spaces."""
    values = images.reshape(len(images), -1).astype(np.uint8) + ord("0")
    lines = np.full((len(images), 2 * values.shape[1]), ord(" "), dtype=np.uint8)
    lines[:, 0::2] = values
    lines[:, -1] = ord("\n")
    return lines.tobytes()


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A NumPy `.npz` archive of `arrays`, as `np.savez_compressed` writes it but reproducible to the byte."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), npy.getvalue(),
                             zipfile.ZIP_DEFLATED)  # fmt: skip
    return buffer.getvalue()


def keras_npz_bytes(builder_cls: type[MnistVariantBuilder], files: Mapping[str, bytes]) -> bytes:
    """The `.npz` keras keeps for `builder_cls`, holding the arrays of its upstream `files`."""
    npz, arrays = builder_cls.KERAS_NPZ, {}
    for split, roles in npz.arrays.items():
        for role, key in roles.items():
            data = files[builder_cls.SPLIT_FILES[split][role]]
            parsed = formats.read_idx_images(data)[..., 0] if role == "images" else formats.read_idx_labels(data)
            arrays[key] = parsed
    return encode_npz(arrays)


# EMNIST's split sizes upstream (the paper's, and what each file's header says).
EMNIST_COUNTS = {
    "byclass": {"train": 697_932, "test": 116_323},
    "bymerge": {"train": 697_932, "test": 116_323},
    "balanced": {"train": 112_800, "test": 18_800},
    "letters": {"train": 124_800, "test": 20_800},
    "digits": {"train": 240_000, "test": 40_000},
    "mnist": {"train": 60_000, "test": 10_000},
}


def class_codes(class_names: Sequence[str]) -> bytes:
    """An EMNIST mapping file for `class_names`: `label code` a line; a lower-case name whose upper case is no
    class of its own stands for both (`label upper lower`, as emnist-letters-mapping.txt); "N/A" is left out."""
    lines = []
    for label, name in enumerate(class_names):
        if name == formats.UNUSED_CLASS:
            continue
        merged = name.islower() and name.upper() not in class_names
        codes = (ord(name.upper()), ord(name)) if merged else (ord(name),)
        lines.append(" ".join(map(str, (label, *codes))))
    return ("\n".join(lines) + "\n").encode()


def write_zip(
    target: BinaryIO | epath.PathLike,
    members: Iterable[tuple[str, bytes]],
    folder: str = "",
    compresslevel: int | None = None,
) -> None:
    """A zip of `members` (name, bytes), deflated, with fixed timestamps (reproducible to the byte), as upstream's
    gzip.zip and mnist_c.zip: a directory entry for `folder`, then each member under it; an empty member (a
    folder entry) is stored, as theirs are. Members are written as they come; a low `compresslevel` makes a
    full-size archive in seconds, not minutes."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as archive:
        if folder:
            archive.writestr(zipfile.ZipInfo(folder, date_time=(1980, 1, 1, 0, 0, 0)), b"")
        for name, data in members:
            info = zipfile.ZipInfo(folder + name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if data else zipfile.ZIP_STORED
            archive.writestr(info, data, compresslevel=compresslevel)


def emnist_members(
    builder_cls: type[MnistVariantBuilder], counts: Mapping[str, Mapping[str, int]], seed: int = 0
) -> Iterator[tuple[str, bytes]]:
    """Every member of an EMNIST-shaped archive (no folder): per config in `counts`, its four gzipped IDX files
    with made-up images and labels in the config's range, and its mapping file. Configs with the same counts
    get the same images, as upstream's byclass and bymerge do; one config's files are held at a time."""
    shared: dict[tuple[str, int], bytes] = {}
    for config in builder_cls.BUILDER_CONFIGS:
        if config.name not in counts:
            continue
        names = config.class_names
        used = np.array([label for label, name in enumerate(names) if name != formats.UNUSED_CLASS], np.uint8)
        for index, (split, files) in enumerate(config.split_files.items()):
            count = counts[config.name][split]
            key = (split, count)
            if key not in shared:
                shared.clear()  # keeps one split's images: bymerge follows byclass
                shared[key] = gzip_bytes(encode_idx(synthetic_images(count, seed * 100 + count % 97 + index)[..., 0]))
            rng = np.random.default_rng(seed * 1000 + len(names) * 10 + index)
            yield files["images"], shared[key]
            yield files["labels"], gzip_bytes(encode_idx(rng.choice(used, count)))
        yield config.class_codes, class_codes(names)


def write_archive(
    builder_cls: type[MnistVariantBuilder],
    directory: epath.PathLike,
    counts: Mapping[str, Mapping[str, int]] | None = None,
    seed: int = 0,
) -> epath.Path:
    """Writes the archive of `builder_cls` (EMNIST's gzip.zip) with generated members; full-size by default."""
    archive = builder_cls.ARCHIVE
    path = epath.Path(directory) / archive.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_zip(target, emnist_members(builder_cls, counts or EMNIST_COUNTS, seed), archive.folder)
    return path


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with a fixed timestamp, so generated files are reproducible to the byte."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def synthetic_images(count: int, seed: int) -> np.ndarray:
    """(count, 28, 28, 1) uint8: shaded, striped ellipses and boxes on black, MNIST-like statistics."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : formats.IMAGE_SIDE, 0 : formats.IMAGE_SIDE].astype(np.float32)
    images = np.empty((count, *formats.IMAGE_SHAPE), dtype=np.uint8)
    for start in range(0, count, 4096):
        n = min(4096, count - start)

        def draw(low: float, high: float, n: int = n) -> np.ndarray:
            return rng.uniform(low, high, (n, 1, 1)).astype(np.float32)

        cx, cy, rx, ry, angle = draw(10, 18), draw(10, 18), draw(3, 11), draw(3, 11), draw(0, np.pi)
        u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        v = (ys - cy) * np.cos(angle) - (xs - cx) * np.sin(angle)
        ellipse = (u / rx) ** 2 + (v / ry) ** 2
        box = (np.abs(xs - draw(8, 20)) < draw(2, 9)) & (np.abs(ys - draw(8, 20)) < draw(2, 12))
        box &= rng.random((n, 1, 1)) < 0.5
        stripes = draw(0, 40) * np.sin(draw(0.3, 2.0) * (xs * np.cos(angle) + ys * np.sin(angle)))
        shade = draw(70, 220) + draw(-4, 4) * (xs - cx) + draw(-4, 4) * (ys - cy) + stripes
        shade += rng.normal(0, 10, (n, formats.IMAGE_SIDE, formats.IMAGE_SIDE)).astype(np.float32)
        shade *= np.clip(1.5 * (1 - ellipse), 0, 1) + box  # soft edges on the ellipse
        inside = (ellipse < 1) | box
        images[start : start + n, ..., 0] = np.where(inside, np.clip(shade, 0, 255), 0).astype(np.uint8)
    return images


def synthetic_labels(count: int, seed: int, num_classes: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, count).astype(np.uint8)


def bernoulli_binarize(images: np.ndarray, seed: int) -> np.ndarray:
    """Each pixel 1 with probability intensity/255, as Salakhutdinov & Murray binarized MNIST."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) * 255 < images).astype(np.uint8)


def upstream_file_bytes(filename: str, role: str, count: int, seed: int) -> bytes:
    """The bytes of one upstream file with `count` made-up items, in the format its name says."""
    if role == "labels":
        data = encode_idx(synthetic_labels(count, seed))
    elif filename.endswith(".amat"):
        return encode_amat(bernoulli_binarize(synthetic_images(count, seed), seed + 1))
    else:
        data = encode_idx(synthetic_images(count, seed)[..., 0])
    return gzip_bytes(data) if filename.endswith(".gz") else data


def write_upstream_files(
    builder_cls: type[MnistVariantBuilder], directory: epath.PathLike, counts: Mapping[str, int], seed: int = 0
) -> dict[str, epath.Path]:
    """Writes every upstream file of `builder_cls` with counts[split] items each; returns their paths."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split_seed, (split, files) in enumerate(builder_cls.SPLIT_FILES.items(), start=seed * 100):
        for role, filename in files.items():
            paths[filename] = directory / filename
            paths[filename].write_bytes(upstream_file_bytes(filename, role, counts[split], split_seed))
    return paths


@contextlib.contextmanager
def downloads_from(directory: epath.PathLike) -> Iterator[None]:
    """Within it, every TFDS download of a URL returns the file of the same name in `directory`.

    It replaces only the fetching step, so TFDS's own extraction (for builders
    that call `download_and_extract`) still runs and is measured.
    """
    from unittest import mock

    from tensorflow_datasets.core.download import download_manager

    directory = epath.Path(directory)

    def local_file(self, resource) -> promise.Promise:
        url = getattr(resource, "url", resource)
        path = directory / url.rsplit("/", 1)[-1]
        if not path.exists():
            raise FileNotFoundError(f"{url}: no {path.name} in {directory}")
        return promise.Promise.resolve(path)

    # TFDS's per-URL step (cache or download): `_download_or_get_cache` since TFDS 4.9.5, `_download` before.
    per_url = (
        "_download_or_get_cache" if hasattr(download_manager.DownloadManager, "_download_or_get_cache") else "_download"
    )
    with mock.patch.object(download_manager.DownloadManager, per_url, local_file):
        yield


def serve_on_loopback(
    handler: type[http.server.BaseHTTPRequestHandler],
) -> tuple[http.server.ThreadingHTTPServer, str, threading.Thread]:
    """A threading HTTP server on a free port of 127.0.0.1, serving in a daemon thread; and its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}", thread


@dataclasses.dataclass
class Route:
    """What the server answers for one path: `data` (or an error `status`), and faults to apply in turn.

    Each request takes the next fault from `faults` (none left, or None: a clean answer):
    "cut" sends the headers and half the body, then closes; "stall" sends half the body, then
    nothing until the test ends; "silent" sends nothing at all; "headers" sends the headers, then
    nothing; "burst" sends the headers and 2 KiB of the body at once, then nothing; "trickle" sends the
    headers, then a byte every 0.3 s; "trickle-headers" sends even the
    status line and headers a byte every 0.3 s; "trickle-sniff" answers 200 with a wrong Content-Length
    (64 GiB) and trickles the body that a client reads to name the answer; "trickle-chunks" answers
    chunked and trickles the first chunk-size line (a chunk extension runs to 64 KiB); "slow" sends at 1 MB/s;
    "html" answers 200 with an HTML page; "whole" answers a Range request with 200 and the whole
    file, as a server that ignores Range; "lie" answers a Range request with 206 and the file
    from byte 0 (a request without Range gets the right file); "garble" answers with every byte
    of the body inverted, whatever was asked; "garble-ranges" does so for a Range request only
    (a request without Range gets the right file); "claim" announces a 64 GiB file (Content-Length, or
    Content-Range's total); "no-length" answers 200 with the whole file and no Content-Length, closing the
    connection at its end; "no-length-cut" does so after half the body (a cut that looks like the end);
    "unknown-total" answers a Range request with Content-Range's total "*" (size not stated); "chunked" answers
    200 with the whole file, chunked (no length).
    The answer carries a strong ETag of `data` (`etag`), and an If-Range that differs from it
    gets the whole file, as HTTP says.
    """

    data: bytes = b""
    status: int = 200
    faults: list[str | None] = dataclasses.field(default_factory=list)
    honour_range: bool = True
    etag: str | None = None

    def __post_init__(self) -> None:
        if self.etag is None:
            self.etag = f'"{hashlib.sha256(self.data).hexdigest()[:16]}"'


class FileServer:
    """A loopback HTTP server whose answer for each path a test sets; it counts the bytes it sends."""

    def __init__(self, bytes_per_second: float | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.range_requests: list[tuple[str, str | None]] = []  # (path, Range header) of every request
        self.if_ranges: list[str | None] = []  # the If-Range header of every request
        self.request_times: list[float] = []  # time.monotonic() at every request
        self.sent: collections.Counter[str] = collections.Counter()
        self.active = self.most_active = 0  # answers being sent at once, now and at the most
        self._count_lock = threading.Lock()
        self.release = threading.Event()
        self.bytes_per_second = bytes_per_second
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server._count_lock:
                    server.active += 1
                    server.most_active = max(server.most_active, server.active)
                try:
                    self._get()
                finally:
                    with server._count_lock:
                        server.active -= 1

            def _get(self) -> None:
                with server._count_lock:
                    server.range_requests.append((self.path, self.headers.get("Range")))
                    server.if_ranges.append(self.headers.get("If-Range"))
                    server.request_times.append(time.monotonic())
                    route = server.routes.get(self.path, Route(status=404))
                    fault = route.faults.pop(0) if route.faults else None
                if fault == "silent":
                    server.release.wait(60)  # Say nothing until the test ends.
                    return
                if fault == "trickle-headers":
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(route.data)}\r\nX-Padding: {'x' * 200}\r\n\r\n"
                    self._trickle(head.encode())
                    return
                if fault == "html":
                    self._answer(200, b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "text/html")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                size = len(route.data)
                whole = ("whole", "trickle-sniff", "no-length", "no-length-cut", "chunked")
                start, end = self._range(route, size) if fault not in whole else (None, None)
                ranged = start is not None
                start, end = start or 0, end or size
                body = route.data[: end - start] if fault == "lie" else route.data[start:end]
                if fault == "garble" or (fault == "garble-ranges" and ranged):
                    body = (np.frombuffer(body, np.uint8) ^ 0xFF).tobytes()
                claimed = 1 << 36 if fault in ("claim", "trickle-sniff") else None
                self.send_response(206 if ranged else 200)
                if ranged:
                    total = "*" if fault == "unknown-total" else claimed or size
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
                self.send_header("Accept-Ranges", "bytes" if route.honour_range else "none")
                self.send_header("Content-Type", "application/octet-stream")
                if fault in ("trickle-chunks", "chunked"):
                    self.send_header("Transfer-Encoding", "chunked")
                elif fault in ("no-length", "no-length-cut"):
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(claimed if claimed and not ranged else len(body)))
                self.send_header("ETag", route.etag)
                self.end_headers()
                if fault in ("headers", "burst"):
                    if fault == "burst":
                        self._send(body[:2048])
                    server.release.wait(60)
                    self.close_connection = True
                    return
                if fault in ("trickle", "trickle-sniff"):
                    self._trickle(body)
                    return
                if fault == "trickle-chunks":
                    self._trickle(f"{len(body):x};{'x' * 200}\r\n".encode())
                    return
                if fault == "chunked":
                    for offset in range(0, len(body), 1 << 16):
                        chunk = body[offset : offset + (1 << 16)]
                        self._send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self._send(b"0\r\n\r\n")
                    return
                if fault in ("no-length", "no-length-cut"):
                    self._send(body[: len(body) // 2] if fault == "no-length-cut" else body)
                    self.close_connection = True
                    return
                if fault in ("cut", "stall"):
                    self._send(body[: len(body) // 2])
                    if fault == "stall":
                        server.release.wait(60)
                    self.close_connection = True
                    return
                self._send(body, 1_000_000 if fault == "slow" else server.bytes_per_second)

            def _range(self, route: Route, size: int) -> tuple[int | None, int | None]:
                """[start, end) asked by a Range header `bytes=a-` or `bytes=a-b` (if honoured), else (None, None)."""
                found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if not (route.honour_range and found and int(found[1]) < size) or if_range not in (None, route.etag):
                    return None, None
                return int(found[1]), min(int(found[2]) + 1, size) if found[2] else size

            def _trickle(self, data: bytes) -> None:
                """Up to 200 bytes of `data`, one every 0.3 s, then closes."""
                for byte in range(min(len(data), 200)):
                    if server.release.wait(0.3):
                        break
                    self._send(data[byte : byte + 1])
                self.close_connection = True

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._send(body)

            def _send(self, body: bytes, bytes_per_second: float | None = None) -> None:
                step = 1 << 16 if not bytes_per_second or bytes_per_second > 1e6 else 1 << 12
                started = time.monotonic()
                try:
                    for offset in range(0, len(body), step):
                        chunk = body[offset : offset + step]
                        self.wfile.write(chunk)
                        with server._count_lock:
                            server.sent[self.path] += len(chunk)
                        if bytes_per_second:
                            ahead = (offset + len(chunk)) / bytes_per_second - (time.monotonic() - started)
                            if ahead > 0 and server.release.wait(ahead):
                                break
                except OSError:  # the client went away
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._httpd, self.url, self._thread = serve_on_loopback(Handler)

    @property
    def requests(self) -> list[str]:
        """The path of every request, in order."""
        return [path for path, _ in self.range_requests]

    def serve(
        self, path: str, data: bytes = b"", *faults: str | None, status: int = 200, honour_range: bool = True
    ) -> None:
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


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as a `.npy` file, as `np.save` writes it (format 1.0, no pickles)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def mnist_c_members(
    builder_cls: type[MnistVariantBuilder], images: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> Iterator[tuple[str, bytes]]:
    """Every member of an MNIST-C-shaped archive (no folder): per config, a folder entry, then its four `.npy`
    files, images (n, 28, 28, 1) uint8 and labels uint8 as upstream's. Each config's images are `images`
    shifted right by the config's index and darkened (pixels >> index % 4: the dummy archive stays under 64 KiB);
    `identity`, the first, keeps them, and no two configs' are alike. One member is made at a time."""
    for index, config in enumerate(builder_cls.BUILDER_CONFIGS):
        yield f"{config.name}/", b""
        for split, files in config.split_files.items():
            yield files["images"], npy_bytes(np.roll(images[split], index, axis=2) >> (index % 4))
            yield files["labels"], npy_bytes(labels[split].astype(np.uint8))


def write_mnist_c_archive(
    builder_cls: type[MnistVariantBuilder],
    target: BinaryIO | epath.PathLike,
    images: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    compresslevel: int | None = None,
) -> None:
    """An MNIST-C-shaped archive (`mnist_c_members`), deflated as upstream's (235 MiB for 879 MB of members)."""
    write_zip(target, mnist_c_members(builder_cls, images, labels), builder_cls.ARCHIVE.folder, compresslevel)


def write_mnist_c_of_mnist(
    builder_cls: type[MnistVariantBuilder],
    mnist_files: Mapping[str, bytes],
    target: BinaryIO | epath.PathLike,
    compresslevel: int | None = None,
) -> None:
    """An MNIST-C-shaped archive made of MNIST's files (by upstream name: `mnist_files`), whose labels it holds."""
    images, labels = {}, {}
    for split, names in MNIST_FILES.items():
        images[split] = formats.read_idx_images(mnist_files[names["images"]])
        labels[split] = formats.read_idx_labels(mnist_files[names["labels"]])
    write_mnist_c_archive(builder_cls, target, images, labels, compresslevel)


def qmnist_table(labels: np.ndarray, writers: tuple[int, int], first_nist_index: int, rng) -> np.ndarray:
    """A QMNIST label table for `labels`: eight int32 columns, as upstream's README names them: the digit, an HSF
    series (0-4), a writer drawn from `writers` (low, high+1), the digit's index among its writer's, the NIST class
    code (30 + digit), a running NIST index from `first_nist_index`, no duplicate (0), the unused column (0)."""
    count = len(labels)
    drawn = rng.integers(*writers, count)
    table = np.zeros((count, 8), dtype=np.int32)
    table[:, 0] = labels
    table[:, 1] = rng.integers(0, 5, count)
    table[:, 2] = drawn
    # each digit's index among its writer's: its rank among the rows of the same writer, in file order
    order = np.argsort(drawn, kind="stable")
    starts = np.searchsorted(drawn[order], drawn[order])
    table[order, 3] = np.arange(count) - starts
    table[:, 4] = 30 + labels.astype(np.int32)
    table[:, 5] = first_nist_index + np.arange(count)
    return table


def qmnist_file_bytes(images: Mapping[str, np.ndarray], tables: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    """QMNIST's six files in upstream's formats from each split's (n, 28, 28) images and label table: IDX images
    and IDX int32 tables, gzip for train and test, xz for nist (one stream, CRC-64 check, as upstream's)."""
    files = {}
    for split, names in Qmnist.SPLIT_FILES.items():
        raw = {"images": encode_idx(images[split]), "labels": formats.encode_idx_int32_table(tables[split])}
        for role, name in names.items():
            if name.endswith(".gz"):
                files[name] = gzip_bytes(raw[role])
            else:  # deterministic: xz has no timestamp
                files[name] = lzma.compress(raw[role], format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    return files
