"""How bytes travel over HTTP: TFDS's transport, with time limits, resumed transfers and parallel ranges.

TFDS's downloader writes, hashes and counts (for its progress bars) whatever
`downloader._open_url(url)` yields: a context manager giving (response, iterator over
the body's blocks). Its own transport has no timeout, so a silent server hangs it
forever; it retries a refused connection for minutes; and a body cut mid-way costs the
whole file. While our files download, `bounded_http()` swaps in `open_url` below. It
keeps that contract, so TFDS still verifies every file against the registered sha256 and
size, caches it and shows progress, and it adds:

- time limits: an attempt gives up after `timeout` seconds without a byte (connecting included);
- resume: a transfer cut, or silent for the timeout, goes on from its last byte with a Range
  request to the same URL; a server that ignores Range (200, not 206) is read again from
  zero, the bytes already delivered skipped; a 206 for other bytes than asked is an error;
- parallel ranges: a large file from a server that accepts ranges comes over up to
  `connections` connections, each a contiguous part, delivered in order (as AWS's CLI and
  huggingface's hf_transfer do), since one connection is often capped well below the link;
- traps: an HTML page answered with status 200 is called an HTML page.

Why our own code: requests and urllib3 retry only until a body starts; resuming a body is
the caller's job (huggingface_hub's `http_get` does it the same way, with `resume_size`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import queue
import re
import threading
from collections.abc import Iterator

import requests
import tensorflow_datasets as tfds
import urllib3
from tensorflow_datasets.core.download import downloader as tfds_downloader

from mnist_variants import traps

TIMEOUT_ENV = "MNIST_VARIANTS_DOWNLOAD_TIMEOUT"
CONNECTIONS_ENV = "MNIST_VARIANTS_CONNECTIONS"
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_CONNECTIONS = 4
MIN_PART_BYTES = 4 << 20  # a file gets one connection per 4 MiB, up to `connections`
BLOCK_BYTES = 1 << 16
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# What a cut or a stall looks like from requests and urllib3 (a read timeout mid-body is a ConnectionError).
INTERRUPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)


class TransferError(tfds.download.DownloadError):
    """This source cannot deliver the file: the next source is tried."""


class _Interrupted(Exception):
    """The body ended before its last byte, or the server asked us to come back: worth another attempt."""


class _RangesRefused(Exception):
    """The server does not serve parts of the file: it is read over one connection."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """How long and how often a source is tried; the README states it in one sentence."""

    timeout: float = DEFAULT_TIMEOUT_SECONDS  # seconds an attempt waits for a byte
    fruitless_attempts: int = 3  # attempts in a row that bring no byte before the source is given up
    max_resumes: int = 8  # resumes, per transfer, after attempts that did bring bytes
    connections: int = DEFAULT_CONNECTIONS  # per file

    def pause(self, fruitless: int) -> float:
        """Seconds before the next attempt: 0.5 after progress or a first failure, 1 after a second."""
        return min(0.5 * 2 ** max(fruitless - 1, 0), 4.0)

    def worst_case_seconds(self) -> float:
        """The longest a silent source is tried before the next one."""
        pauses = sum(self.pause(n) for n in range(1, self.fruitless_attempts))
        return self.fruitless_attempts * self.timeout + pauses


def policy_from_env() -> Policy:
    """The policy, with MNIST_VARIANTS_DOWNLOAD_TIMEOUT and MNIST_VARIANTS_CONNECTIONS applied."""
    return Policy(
        timeout=_positive(TIMEOUT_ENV, float, DEFAULT_TIMEOUT_SECONDS),
        connections=_positive(CONNECTIONS_ENV, int, DEFAULT_CONNECTIONS),
    )


def _positive(name: str, kind: type, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        number = kind(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a {'whole ' if kind is int else ''}number") from None
    if number <= 0:
        raise ValueError(f"{name}={value!r} must be positive")
    return number


class _Stop:
    """Set when any of its events is: the whole download is cancelled, or just this file's parts."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; True as soon as it is set."""
        return self.events[0].wait(seconds) if len(self.events) == 1 else self._poll(seconds)

    def _poll(self, seconds: float) -> bool:
        for _ in range(max(1, round(seconds / 0.05))):
            if self.is_set() or self.events[0].wait(0.05):
                return True
        return self.is_set()


class _Transfer:
    """Bytes [start, end) of one URL over one connection at a time, resumed after cuts and stalls."""

    def __init__(
        self, url: str, policy: Policy, stop: _Stop, verify: bool, start: int = 0, end: int | None = None
    ) -> None:
        self.url, self.policy, self.stop, self.verify = url, policy, stop, verify
        self.start, self.position, self.end = start, start, end
        self.total: int | None = None  # the whole file's size, once known
        self.response: requests.Response | None = None
        self._skip = 0  # bytes to drop: a server that ignored Range sends the file from byte 0
        self._fruitless = self._resumes = 0
        self._session = requests.Session()  # no urllib3 retries: attempts are counted here

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def open(self) -> requests.Response:
        """Asks for the bytes from `position` on, again and again while failures may pass."""
        while True:
            mark = self.position
            try:
                self.response = self._request()
                return self.response
            except (_Interrupted, *INTERRUPTIONS) as error:
                self._failed(error, progressed=self.position > mark)

    def _request(self) -> requests.Response:
        headers = {"Accept-Encoding": "identity"}  # offsets in Range are the file's own bytes
        whole = self.end is None or self.end == self.total  # up to the end of the file: an open range
        if self.position or not whole:
            headers["Range"] = f"bytes={self.position}-{'' if whole else self.end - 1}"
        response = self._session.get(
            self.url, headers=headers, stream=True, timeout=self.policy.timeout, verify=self.verify
        )
        try:
            self._skip = self._check(response, asked_range="Range" in headers)
            if _encoded(response) and self.position:
                raise TransferError(
                    f"{self.url} sends an encoded body ({response.headers['Content-Encoding']}), not the file"
                )
        except BaseException:
            response.close()
            raise
        return response

    def _check(self, response: requests.Response, asked_range: bool) -> int:
        """Bytes to skip at the start of `response`; raises unless it carries what was asked."""
        status = response.status_code
        if status in RETRY_STATUSES:
            raise _Interrupted(f"HTTP {status} {response.reason}")
        if status not in (200, 206) or (status == 206 and not asked_range):
            raise TransferError(f"HTTP {status} {response.reason} for {self.url}")
        if "text/html" in response.headers.get("Content-Type", "").lower():
            raise TransferError(f"{self.url} answered with an HTML page (status {status}), not the file")
        if status == 200:
            if asked_range and self.start > 0:
                raise _RangesRefused(f"{self.url} answered a request for a part with the whole file")
            return self.position  # read again from zero, skipping what was delivered
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not found or int(found[1]) != self.position:
            raise TransferError(
                f"{self.url} answered a request for bytes {self.position}- with"
                f" {response.headers.get('Content-Range', 'no Content-Range')!r}"
            )
        if found[3] != "*":
            self.total = int(found[3])
        return 0

    def _failed(self, error: BaseException, progressed: bool) -> None:
        """Counts a failed attempt, pauses, and says what comes next; raises when the source is done."""
        if progressed:
            self._fruitless, self._resumes = 0, self._resumes + 1
        else:
            self._fruitless += 1
        reason = f"{type(error).__name__}: {error}"
        if self._fruitless >= self.policy.fruitless_attempts:
            raise TransferError(f"{self.url}: {self._fruitless} attempts in a row brought no data ({reason})")
        if self._resumes > self.policy.max_resumes:
            raise TransferError(f"{self.url}: interrupted {self._resumes} times ({reason})")
        if self.stop.wait(self.policy.pause(self._fruitless)):
            raise TransferError(f"{self.url}: cancelled")
        if self.position > 0:
            of = f" of {self.end or self.total:,}" if (self.end or self.total) else ""
            print(f"Resuming {self.name} from byte {self.position:,}{of} ({_short(reason)})", flush=True)
        else:
            print(f"Retrying {self.url} ({_short(reason)})", flush=True)

    def blocks(self) -> Iterator[bytes]:
        """The bytes, block by block, each exactly once and in order, whatever happened on the way."""
        try:
            while self.end is None or self.position < self.end:
                response = self.response if self.response is not None else self.open()
                mark = self.position
                try:
                    for block in _blocks_as_they_arrive(response):
                        if self.stop.is_set():
                            raise TransferError(f"{self.url}: cancelled")
                        if self._skip:
                            dropped = min(self._skip, len(block))
                            block, self._skip = block[dropped:], self._skip - dropped
                        if self.end is not None:
                            block = block[: self.end - self.position]
                        if block:
                            self.position += len(block)
                            yield block
                        if self.end is not None and self.position >= self.end:
                            return
                    if self.end is None:
                        return  # length unknown: the server's end of body is the end
                    raise _Interrupted(f"connection closed after byte {self.position:,} of {self.end:,}")
                except (_Interrupted, *INTERRUPTIONS) as error:
                    self._failed(error, progressed=self.position > mark)
                finally:
                    response.close()
                    self.response = None
        finally:
            self.close()

    def close(self) -> None:
        self._session.close()


class _Part:
    """One later part of a file, fetched on its own connection in a thread, queued for in-order delivery."""

    def __init__(self, url: str, policy: Policy, stop: _Stop, verify: bool, start: int, end: int) -> None:
        self.transfer = _Transfer(url, policy, stop, verify, start, end)
        self.started = threading.Event()
        self.refused: BaseException | None = None  # why this part could not start
        self._blocks: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True, name=f"range-{start}").start()

    def _run(self) -> None:
        try:
            self.transfer.open()
        except BaseException as error:  # noqa: BLE001 - any failure to start: the file goes over one connection
            self.refused = error
            self.transfer.close()
            self.started.set()
            return
        self.started.set()
        try:
            for block in self.transfer.blocks():
                self._blocks.put(block)
            self._blocks.put(None)
        except BaseException as error:  # noqa: BLE001 - handed to the reader, who raises it
            self._blocks.put(error)

    def blocks(self) -> Iterator[bytes]:
        while (block := self._blocks.get()) is not None:
            if isinstance(block, BaseException):
                raise block
            yield block


def parts(size: int, connections: int) -> list[tuple[int, int]]:
    """[start, end) of each part: one per MIN_PART_BYTES, at most `connections`, the first from byte 0."""
    count = max(1, min(connections, size // MIN_PART_BYTES))
    bounds = [size * index // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _sniffed(blocks: Iterator[bytes], url: str) -> Iterator[bytes]:
    """The blocks, after checking that the first is not an HTML page or a Git LFS pointer."""
    first = next(blocks, b"")
    trap = traps.recognise(first[: traps.SNIFF_BYTES])
    if trap:
        raise TransferError(f"{url} answered with {trap} (status 200), not the file")
    if first:
        yield first
    yield from blocks


@contextlib.contextmanager
def open_url(url: str, policy: Policy, stop: threading.Event, verify: bool = True):
    """Same contract as TFDS's `downloader._open_url`: yields (response, iterator over the body's blocks)."""
    first = _Transfer(url, policy, _Stop(stop), verify)
    response = first.open()
    size = _content_length(response)
    first.end = first.total = size
    done_with_parts = threading.Event()  # the file is read, failed, or goes over one connection
    later: list[_Part] = []
    if size and response.headers.get("Accept-Ranges", "").lower() == "bytes":
        spans = parts(size, policy.connections)
        later = [_Part(url, policy, _Stop(stop, done_with_parts), verify, *span) for span in spans[1:]]
        for part in later:
            part.started.wait()
        if any(part.refused for part in later):  # parts are an optimisation: in any doubt, one connection
            done_with_parts.set()
            later = []
        elif later:
            first.end = spans[0][1]
    try:
        yield response, _sniffed(itertools.chain(first.blocks(), *(part.blocks() for part in later)), url)
    finally:
        done_with_parts.set()
        response.close()


def _encoded(response: requests.Response) -> bool:
    """Whether the body is encoded (gzip, ...) although we asked for the file's own bytes."""
    return response.headers.get("Content-Encoding", "identity").lower() != "identity"


def _blocks_as_they_arrive(response: requests.Response) -> Iterator[bytes]:
    """The body in blocks of whatever has arrived (read1): on a cut, nothing received is lost.

    requests' `iter_content(n)` waits to fill n bytes and drops them when the connection breaks.
    """
    if _encoded(response):
        return response.iter_content(BLOCK_BYTES)
    return iter(lambda: response.raw.read1(BLOCK_BYTES, decode_content=False), b"")


def _content_length(response: requests.Response) -> int | None:
    if _encoded(response):
        return None  # the length is of the encoded body, not of the file
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _short(reason: str, limit: int = 160) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


_transport_lock = threading.Lock()


@contextlib.contextmanager
def bounded_http(policy: Policy) -> Iterator[threading.Event]:
    """While active, TFDS's downloader fetches http(s) URLs with `open_url`; set the event to cancel them all."""
    original_open_url = tfds_downloader._open_url
    stop = threading.Event()

    def open_any_url(url: str, **kwargs):
        if url.startswith(("http://", "https://")):
            return open_url(url, policy, stop, **kwargs)
        return original_open_url(url, **kwargs)

    with _transport_lock:
        tfds_downloader._open_url = functools.wraps(original_open_url)(open_any_url)
        try:
            yield stop
        finally:
            stop.set()  # a part still running after its file failed stops now
            tfds_downloader._open_url = original_open_url
