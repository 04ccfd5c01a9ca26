"""How bytes travel over HTTP: one file from one source into its partial download, within stated limits.

`fetch(url, partial, ...)` fills what the partial (partials.py) still lacks. Everything it
relies on comes from the registry, never from the server: the file's size fixes the parts and
every range; a Content-Length or Content-Range that disagrees ends the source at once. Each
connection asks for a closed range, so no server sends more than that part, and writes what it
receives at the part's offset in the partial file, so memory stays at one block per connection
whatever a server sends or how unevenly the parts arrive.

- Time limits (the README states them in one sentence): an attempt waits at most `timeout`
  seconds for the next byte, and gives up when it brought less than `MIN_BYTES_PER_TIMEOUT`
  in `timeout` seconds (a trickle); a source is given up after `fruitless_attempts` attempts
  in a row that brought no byte or trickled, or after `max_resumes` resumes of one part.
- Resume: a cut or stalled part goes on from its last byte. With the server's validator
  (a strong ETag, else Last-Modified) sent back as `If-Range`, a file that changed behind the
  same URL comes whole (200) and is read from zero instead of being spliced.
- A server that ignores Range answers 200 with the whole file: the first connection then
  reads it all from zero; a later part that gets the whole file keeps only its own bytes.
- Cancelling (another file failed, Ctrl-C) shuts the sockets down, so a blocked read ends now.

Why our own code: requests and urllib3 retry only until a body starts; resuming a body, and
ranges in parallel, are the caller's job (huggingface_hub's `http_get` resumes the same way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator

import requests
import urllib3

from mnist_variants import traps
from mnist_variants.partials import Partial, Span
from mnist_variants.verification import plain_size

TIMEOUT_ENV = "MNIST_VARIANTS_DOWNLOAD_TIMEOUT"
CONNECTIONS_ENV = "MNIST_VARIANTS_CONNECTIONS"
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_CONNECTIONS = 4
MIN_PART_BYTES = 4 << 20  # a file gets one connection per 4 MiB, up to `connections`
MIN_BYTES_PER_TIMEOUT = 1 << 10  # an attempt that brings less in `timeout` seconds trickles
BLOCK_BYTES = 1 << 16
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# What a cut or a stall looks like from requests and urllib3 (a read timeout mid-body is a ConnectionError).
INTERRUPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    OSError,  # a socket shut down by a cancellation, or reset by the peer
)


class TransferError(Exception):
    """This source cannot deliver the file: the next source is tried."""


class Cancelled(TransferError):
    """The download was stopped from outside (another file failed, or the user interrupted)."""


class _Interrupted(Exception):
    """The body ended before its last byte, or the server asked us to come back: worth another attempt."""


class _Trickle(_Interrupted):
    """Bytes came, but too few to ever finish: counts as an attempt that brought nothing."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """How long and how often a source is tried; the README states it in one sentence."""

    timeout: float = DEFAULT_TIMEOUT_SECONDS  # seconds an attempt waits for a byte
    fruitless_attempts: int = 3  # attempts in a row that bring no byte (or trickle) before the source is given up
    max_resumes: int = 8  # resumes, per part, after attempts that did bring bytes
    connections: int = DEFAULT_CONNECTIONS  # per file

    def pause(self, fruitless: int) -> float:
        """Seconds before the next attempt: 0.5 after progress or a first failure, 1 after a second."""
        return min(0.5 * 2 ** max(fruitless - 1, 0), 4.0)

    def silent_source_seconds(self) -> float:
        """The longest a source that sends nothing is tried before the next one (3 x timeout + 1.5 s)."""
        pauses = sum(self.pause(n) for n in range(1, self.fruitless_attempts))
        return self.fruitless_attempts * self.timeout + pauses

    def trickling_source_seconds(self) -> float:
        """The longest a source that trickles is tried: each attempt ends within 2 x timeout."""
        return self.silent_source_seconds() + self.fruitless_attempts * self.timeout


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


def parts(size: int, connections: int) -> list[tuple[int, int]]:
    """[start, end) of each part: one per MIN_PART_BYTES, at most `connections`, the first from byte 0."""
    count = max(1, min(connections, size // MIN_PART_BYTES))
    bounds = [size * index // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


class Cancel:
    """Stops transfers from outside: set, it shuts down every open response so blocked reads end now."""

    def __init__(self, parent: Cancel | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._open: set[requests.Response] = set()
        self._children: list[Cancel] = []
        if parent is not None:
            parent._adopt(self)

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def set(self) -> None:
        with self._lock:
            self._event.set()
            responses, children = list(self._open), list(self._children)
        for response in responses:
            _shut_down(response)
        for child in children:
            child.set()

    def _adopt(self, child: Cancel) -> None:
        with self._lock:
            self._children.append(child)
            cancelled = self._event.is_set()
        if cancelled:
            child.set()

    @contextlib.contextmanager
    def watching(self, response: requests.Response) -> Iterator[None]:
        with self._lock:
            self._open.add(response)
            cancelled = self._event.is_set()
        try:
            if cancelled:
                _shut_down(response)
            yield
        finally:
            with self._lock:
                self._open.discard(response)


def _shut_down(response: requests.Response) -> None:
    with contextlib.suppress(Exception):  # already closed or released: nothing is blocked on it
        response.raw.shutdown()


class _Connection:
    """One part of the file over one connection at a time, resumed after cuts and stalls."""

    def __init__(
        self,
        url: str,
        partial: Partial,
        span: Span,
        policy: Policy,
        cancel: Cancel,
        progress: Callable[[int], None],
        first: bool,
    ) -> None:
        self.url, self.partial, self.span, self.policy = url, partial, span, policy
        self.cancel, self.progress = cancel, progress
        self.whole_file = False  # the server answered the first request with the whole file (200)
        self.may_restart = first  # until the other parts start, a whole-file answer may restart the partial
        self._skip = 0  # bytes of a whole-file answer before this part
        self._fruitless = self._resumes = 0
        self._session = requests.Session()  # no urllib3 retries: attempts are counted here

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def open(self) -> requests.Response:
        """Asks for the part's missing bytes, again while failures may pass; raises TransferError when not."""
        while True:
            try:
                return self._request()
            except (_Interrupted, *INTERRUPTIONS) as error:
                if self.cancel.is_set():
                    raise Cancelled(f"{self.url}: cancelled") from None
                self._failed(error, progressed=False)

    def _request(self) -> requests.Response:
        span, size = self.span, self.partial.identity.size
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={span.position}-{span.end - 1}"}
        if self.partial.validator:
            headers["If-Range"] = self.partial.validator
        response = self._session.get(self.url, headers=headers, stream=True, timeout=self.policy.timeout)
        try:
            self._check(response, size)
        except BaseException:
            response.close()
            raise
        return response

    def _check(self, response: requests.Response, size: int) -> None:
        """Raises unless `response` carries this part, or the whole file, of the registered size."""
        status, span = response.status_code, self.span
        if status in RETRY_STATUSES:
            raise _Interrupted(f"HTTP {status} {response.reason}")
        if status not in (200, 206):
            raise TransferError(f"HTTP {status} {response.reason} for {self.url}")
        if "text/html" in response.headers.get("Content-Type", "").lower():
            raise TransferError(f"{self.url} answered with an HTML page (status {status}), not the file")
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise TransferError(
                f"{self.url} sends an encoded body ({response.headers['Content-Encoding']}), not the file"
            )
        length = response.headers.get("Content-Length")
        if status == 200:
            if length is not None and length.strip() != str(size):
                # A page served without text/html (EMNIST's old URL answers 110 KiB of it) is named as what it is.
                if trap := _sniff(response):
                    raise TransferError(f"{self.url} answered with {trap} (status {status}), not the file")
                raise TransferError(f"{self.url} claims {_bytes(length)} for the file; registered: {plain_size(size)}")
            self._take_whole_file()
        else:
            found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
            if found and found[3].isdigit() and int(found[3]) != size:
                if span.position == 0 and (trap := _sniff(response)):  # a page, with ranges served
                    raise TransferError(f"{self.url} answered with {trap} (status {status}), not the file")
                raise TransferError(
                    f"{self.url} says the file has {plain_size(int(found[3]))}; registered: {plain_size(size)}"
                )
            if not found or found[3] != str(size):
                raise TransferError(
                    f"{self.url} answered a request for bytes {span.position}-{span.end - 1} of"
                    f" {plain_size(size)} with Content-Range {response.headers.get('Content-Range', '(none)')!r}"
                )
            first, last = int(found[1]), int(found[2])
            if first != span.position or last >= span.end or last < first:
                raise TransferError(
                    f"{self.url} answered a request for bytes {span.position}-{span.end - 1} with bytes {first}-{last}"
                )
            if length is not None and length.strip() != str(last - first + 1):
                raise TransferError(f"{self.url} claims {_bytes(length)} for bytes {first}-{last}")
            self._skip = 0
        if self.partial.validator is None:
            self.partial.set_validator(_validator(response))

    def _take_whole_file(self) -> None:
        """A 200 answer: before the other parts start, the file is read from zero over this connection;
        once they run, this part keeps its own bytes of the body and drops the rest."""
        if not self.may_restart:
            self._skip = self.span.position
            return
        self.whole_file, self._skip = True, 0
        if self.partial.received or len(self.partial.spans) > 1:
            changed = "changed since the partial was started" if self.partial.validator else "ignores ranges"
            _say(f"{self.url} sent the whole file ({changed}): reading {self.name} from zero")
            self.span = self.partial.restart_whole()
            self.partial.validator = None  # the new answer's, taken below

    def _failed(self, error: BaseException, progressed: bool) -> None:
        """Counts a failed attempt, pauses, and says what comes next; raises when the source is done."""
        if progressed:
            self._fruitless, self._resumes = 0, self._resumes + 1
        else:
            self._fruitless += 1
        reason = f"{type(error).__name__}: {error}"
        if self._fruitless >= self.policy.fruitless_attempts:
            raise TransferError(f"{self.url}: {self._fruitless} attempts in a row brought no data ({_short(reason)})")
        if self._resumes > self.policy.max_resumes:
            raise TransferError(f"{self.url}: interrupted {self._resumes} times ({_short(reason)})")
        if self.cancel.wait(self.policy.pause(self._fruitless)):
            raise Cancelled(f"{self.url}: cancelled")
        span = self.span
        if span.position > span.start:  # only where bytes were really received
            _say(f"Resuming {self.name} from byte {span.position:,} of {span.end:,} ({_short(reason)})")
        else:
            _say(f"Retrying {self.url} from byte {span.position:,} ({_short(reason)})")

    def run(self, response: requests.Response | None = None) -> None:
        """Receives the part into the partial, whatever happens on the way; raises TransferError if it cannot."""
        try:
            while not self.span.done:
                if response is None:
                    response = self.open()
                self.partial.responses += 1
                mark = self.span.position
                try:
                    with self.cancel.watching(response):
                        self._receive(response)
                    if not self.span.done:
                        raise _Interrupted(f"connection closed after byte {self.span.position:,}")
                except (_Interrupted, *INTERRUPTIONS) as error:
                    if self.cancel.is_set():
                        raise Cancelled(f"{self.url}: cancelled") from None
                    self._failed(error, progressed=self.span.position > mark and not isinstance(error, _Trickle))
                finally:
                    response.close()
                    response = None
        finally:
            self._session.close()

    def _receive(self, response: requests.Response) -> None:
        """Writes the body's blocks at the span's position until the span is done or the body ends."""
        window_start, window_bytes = time.monotonic(), 0
        for block in _blocks_as_they_arrive(response):
            if self.cancel.is_set():
                raise Cancelled(f"{self.url}: cancelled")
            if self._skip:
                dropped = min(self._skip, len(block))
                block, self._skip = block[dropped:], self._skip - dropped
            if self.span.position == 0 and block:
                _refuse_trap(block, self.url)
            before = self.span.position
            self.partial.write(self.span, block)
            self.progress(self.span.position - before)
            if self.span.done:
                return
            window_bytes += len(block)
            now = time.monotonic()
            if now - window_start >= self.policy.timeout:
                if window_bytes < MIN_BYTES_PER_TIMEOUT:
                    raise _Trickle(f"{window_bytes} bytes in {now - window_start:.0f} s")
                window_start, window_bytes = now, 0


def fetch(url: str, partial: Partial, policy: Policy, cancel: Cancel, progress: Callable[[int], None]) -> None:
    """Fills the partial's missing bytes from `url`; raises TransferError (or Cancelled) if this source cannot.

    The first missing part is asked for first; once the server has answered it with that part
    (206), the other parts start, each on its own connection.
    """
    if not partial.spans:
        partial.plan(parts(partial.identity.size, policy.connections))
    missing = partial.missing()
    if not missing:
        return
    this_source = Cancel(cancel)
    first = _Connection(url, partial, missing[0], policy, this_source, progress, first=True)
    response = first.open()
    if first.whole_file or len(missing) == 1:
        first.run(response)
        return
    first.may_restart = False
    failures: list[BaseException] = []

    def run(connection: _Connection, response: requests.Response | None = None) -> None:
        try:
            connection.run(response)
        except BaseException as error:  # noqa: BLE001 - any failure of a part fails the source; reported below
            failures.append(error)
            this_source.set()  # the other parts stop now

    threads = [
        threading.Thread(
            target=run,
            args=(_Connection(url, partial, span, policy, this_source, progress, first=False),),
            name=f"part-{span.start}",
            daemon=True,
        )
        for span in missing[1:]
    ]
    for thread in threads:
        thread.start()
    try:
        run(first, response)
    finally:
        for thread in threads:
            thread.join()
        partial.save()
    if failures:
        real = [failure for failure in failures if not isinstance(failure, Cancelled)]
        raise (real or failures)[0]


def _refuse_trap(block: bytes, url: str) -> None:
    """The file's first bytes must not be an HTML page or a Git LFS pointer (served with status 200)."""
    trap = traps.recognise(block[: traps.SNIFF_BYTES])
    if trap:
        raise TransferError(f"{url} answered with {trap} (status 200), not the file")


def _sniff(response: requests.Response) -> str | None:
    """What the body is, if its first bytes show it is no data file (traps.recognise); None if they do not."""
    try:
        head = response.raw.read(traps.SNIFF_BYTES, decode_content=False)
    except INTERRUPTIONS:
        return None
    return traps.recognise(head or b"")


def _validator(response: requests.Response) -> str | None:
    """What If-Range may carry: a strong ETag (a weak one, W/..., is not allowed there), else Last-Modified."""
    etag = response.headers.get("ETag", "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified") or None


def _blocks_as_they_arrive(response: requests.Response) -> Iterator[bytes]:
    """The body in blocks of whatever has arrived (read1): on a cut, nothing received is lost.

    requests' `iter_content(n)` waits to fill n bytes and drops them when the connection breaks.
    """
    return iter(lambda: response.raw.read1(BLOCK_BYTES, decode_content=False), b"")


def _say(message: str) -> None:
    """One line in one write: print() writes the text and its line end apart, so the parts' threads and the
    caller's could share a line (as tests/test_locks.py once saw of locking's lines)."""
    print(message + "\n", end="", flush=True)


def _bytes(length: str) -> str:
    return plain_size(int(length)) if length.strip().isdigit() else repr(length)


def _short(reason: str, limit: int = 160) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
