"""How bytes travel over HTTP: one file from one source into its partial download, within stated limits.

`fetch(url, partial, ...)` fills what the partial (partials.py) still lacks. Everything it
relies on comes from the registry, never from the server: the file's size fixes the parts and
every range; a Content-Length or Content-Range that disagrees ends the source at once. A file
known by its digests but not its size (QMNIST's images) has its size from the source's answer
to one request for byte 0 (`stated_size`), refused above the registered bound before any of the
body is read, and then held to as a registered one; a source that states no size (chunked, no
length) sends the file in one stream, cut one byte past the bound and refused there. Each
connection asks for a closed range, so no server sends more than that part, and writes what it
receives at the part's offset in the partial file, so memory stays at one block per connection
whatever a server sends or how unevenly the parts arrive.

- Time limits (the README states them in one sentence): one rule for every byte an attempt
  waits for, from its start: each `timeout` seconds must bring `MIN_BYTES_PER_TIMEOUT` bytes of
  the file, or a watchdog (`_Deadline`) shuts the attempt's socket down, whether it waits for
  response headers, the sniff of a page, a chunk's framing or the body. urllib3's read timeout
  bounds each `recv` alone, so a server sending a byte now and then in its headers or a
  chunk-size line (up to 64 KiB of them) would hold an attempt for as long as it likes. A
  source is given up after `fruitless_attempts` attempts in a row that brought no byte or ended
  on a time limit (a trickle, or silence after a burst), or after `max_resumes` resumes of one
  part after cuts.
- Resume: a cut or stalled part goes on from its last byte. With the server's validator
  (a strong ETag, else Last-Modified) sent back as `If-Range`, a file that changed behind the
  same URL comes whole (200) and is read from zero instead of being spliced.
- A server that ignores Range answers 200 with the whole file: the first connection then
  reads it all from zero; a later part that gets the whole file keeps only its own bytes.
- After pieced bytes failed their sha256, the refetch (`whole`) is a GET without Range: a server
  may lie on every range and still serve the whole file right.
- Cancelling (another file failed, Ctrl-C) shuts the sockets down, so a blocked read ends now,
  also one waiting for the response headers: the sockets are known from the moment they are
  made (`_WatchedAdapter`), a connecting one from before its TCP connect (`_watch_connects`).

Why our own code: requests and urllib3 retry only until a body starts; resuming a body, and
ranges in parallel, are the caller's job (huggingface_hub's `http_get` resumes the same way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import requests
import requests.adapters
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
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")  # first, last, and the total or "*"
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
    fruitless_attempts: int = 3  # attempts in a row that bring no byte or end on a time limit: the source is given up
    max_resumes: int = 8  # resumes, per part, after attempts cut off after bringing bytes
    connections: int = DEFAULT_CONNECTIONS  # per file

    def pause(self, fruitless: int) -> float:
        """Seconds before the next attempt: 0.5 after progress or a first failure, 1 after a second."""
        return min(0.5 * 2 ** max(fruitless - 1, 0), 4.0)

    def silent_source_seconds(self) -> float:
        """The longest a source that sends nothing is tried before the next one (3 x timeout + 1.5 s)."""
        pauses = sum(self.pause(n) for n in range(1, self.fruitless_attempts))
        return self.fruitless_attempts * self.timeout + pauses

    def trickling_source_seconds(self) -> float:
        """The longest a source that trickles, or falls silent after a burst, is tried: each attempt ends within
        2 x timeout (beyond any time it keeps up MIN_BYTES_PER_TIMEOUT)."""
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
    """Stops transfers from outside: set, it ends every attempt under way, so blocked reads end now."""

    def __init__(self, parent: Cancel | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._open: set[_Deadline] = set()
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
            attempts, children = list(self._open), list(self._children)
        for attempt in attempts:
            attempt.end("cancelled")
        for child in children:
            child.set()

    def _adopt(self, child: Cancel) -> None:
        with self._lock:
            self._children.append(child)
            cancelled = self._event.is_set()
        if cancelled:
            child.set()

    def watch(self, attempt: _Deadline) -> None:
        """Ends `attempt` when this is set (at once if it already is)."""
        with self._lock:
            self._open.add(attempt)
            cancelled = self._event.is_set()
        if cancelled:
            attempt.end("cancelled")

    def forget(self, attempt: _Deadline) -> None:
        with self._lock:
            self._open.discard(attempt)


class _Deadline:
    """One attempt's time limit: from its start, each `timeout` seconds must bring MIN_BYTES_PER_TIMEOUT
    bytes of the file, or its sockets are shut down, so whatever read is blocked ends there.

    A thread of its own watches the clock: a read stuck in http.client (a header line, a chunk-size
    line, the sniff's one read of 512 bytes) cannot check it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.why: str | None = None  # why the attempt was ended from outside, once it was
        self.trickled = False  # ended with some bytes in its last window: a trickle, not silence
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._window_end, self._window_bytes = time.monotonic() + timeout, 0
        self._over = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="download-deadline", daemon=True)
        self._thread.start()

    def received(self, count: int) -> None:
        with self._lock:
            self._window_bytes += count

    def watch(self, sock: socket.socket) -> None:
        """Shuts `sock` down with the attempt (at once if the attempt has ended)."""
        with self._lock:
            if self.why is None:
                self._sockets.append(sock)
                return
        _shut(sock)

    def end(self, why: str) -> None:
        with self._lock:
            if self.why is not None:
                return
            self.why, sockets = why, list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def close(self) -> None:
        """The attempt is over: its sockets (maybe kept alive for the next one) are no longer touched."""
        with self._lock:
            self.why = self.why or "over"
            self._sockets.clear()
        self._over.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._over.wait(max(0.0, self._window_end - time.monotonic())):
            with self._lock:
                if time.monotonic() < self._window_end:
                    continue
                got = self._window_bytes
                if got >= MIN_BYTES_PER_TIMEOUT:
                    self._window_end, self._window_bytes = self._window_end + self.timeout, 0
                    continue
                self.trickled = got > 0
            self.end(f"timed out: {'only ' + str(got) + ' bytes' if got else 'no byte'} in {self.timeout:g} s")
            return

    @property
    def expired(self) -> bool:
        """The attempt was ended by its time limit (not by a cancel, nor after it was over)."""
        return self.why not in (None, "over", "cancelled")

    def reason(self, error: BaseException) -> BaseException:
        """What ended the attempt: the deadline, where it did (the read's own error only says the socket closed)."""
        if self.why is None or self.why in ("over", "cancelled"):
            return error
        return _Trickle(self.why) if self.trickled else _Interrupted(self.why)


def _timed_out(error: BaseException) -> bool:
    """A read that waited out urllib3's timeout (requests wraps urllib3's error in its own ConnectionError)."""
    inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else None
    return any(isinstance(e, (TimeoutError, urllib3.exceptions.TimeoutError)) for e in (error, inner) if e)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing is blocked on it
        sock.shutdown(socket.SHUT_RDWR)


# The deadline of the request this thread is making, which the sockets it makes or reuses are watched for.
_making = threading.local()


def _watch_socket(sock: socket.socket | None) -> None:
    deadline = getattr(_making, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


def _watch_connects(event: str, args: tuple) -> None:
    """Audit hook (PEP 578): a socket this thread connects for a request is watched from before its TCP connect.

    urllib3 hands the socket over only once connected, so a cancel could not reach a connect under way (a
    SYN dropped, a host that does not answer) before its timeout; shutting a connecting socket down ends the
    connect at once (Linux). The hook is the one public place that sees the socket before connect() blocks:
    urllib3 makes it inside its own create_connection.
    """
    if event != "socket.connect":
        return
    deadline = getattr(_making, "deadline", None)
    if deadline is None:
        return
    if deadline.why is not None:  # cancelled (or timed out) before the connect began: it does not begin
        raise ConnectionAbortedError(f"request {deadline.why} before its connection was opened")
    deadline.watch(args[0])


@functools.cache
def _hook_connects() -> None:
    sys.addaudithook(_watch_connects)  # once per process: a hook cannot be removed


@functools.cache
def _watched_connection(connection_cls: type) -> type:
    """`connection_cls` telling this thread's deadline of every socket it makes or reuses."""

    class Watched(connection_cls):
        def _new_conn(self) -> socket.socket:
            # urllib3's step that makes the socket (in 1.26 and 2.x; socks' too); watching it from there
            # covers the TLS handshake as well, which runs before connect() returns.
            sock = super()._new_conn()
            _watch_socket(sock)
            return sock

        def request(self, *args, **kwargs) -> None:
            _watch_socket(self.sock)  # a kept-alive connection: made for an earlier attempt
            super().request(*args, **kwargs)

    Watched.__name__ = Watched.__qualname__ = f"Watched{connection_cls.__name__}"
    return Watched


@functools.cache
def _watched_pool(pool_cls: type) -> type:
    return type(
        f"Watched{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": _watched_connection(pool_cls.ConnectionCls)}
    )


def _watch_pools(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """Makes `manager`'s pools (direct, through a proxy, through SOCKS) use watched connections."""
    manager.pool_classes_by_scheme = {
        scheme: pool if pool.__name__.startswith("Watched") else _watched_pool(pool)
        for scheme, pool in manager.pool_classes_by_scheme.items()
    }
    return manager


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose sockets the attempt's deadline and Cancel can shut down, even before
    the response headers came (requests hands over no response until then). init_poolmanager and
    proxy_manager_for are requests' documented places for this; pool_classes_by_scheme and
    ConnectionCls are urllib3's public attributes."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs) -> urllib3.PoolManager:
        return _watch_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


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
        plain: bool = False,
        open_ended: bool = False,
    ) -> None:
        self.url, self.partial, self.span, self.policy = url, partial, span, policy
        self.plain = plain  # every request a GET without Range, for the whole file from byte 0
        # The server states no size: the body's end is the file's end, and the span ends one byte past the most
        # the file may have, so a body that reaches it is refused there.
        self.open_ended = open_ended
        self.cancel, self.progress = cancel, progress
        self.whole_file = False  # the server answered the first request with the whole file (200)
        self.answers = 0  # answers whose bytes this connection received
        self.may_restart = first  # until the other parts start, a whole-file answer may restart the partial
        self._skip = 0  # bytes of a whole-file answer before this part
        self._fruitless = self._resumes = 0
        self._session = requests.Session()  # no urllib3 retries: attempts are counted here
        adapter = _WatchedAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._deadline: _Deadline | None = None  # of the attempt under way
        _hook_connects()

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def open(self) -> requests.Response:
        """Asks for the part's missing bytes, again while failures may pass; raises TransferError when not."""
        while True:
            deadline = self._begin()
            try:
                return self._request()
            except (_Interrupted, *INTERRUPTIONS) as error:
                failure = deadline.reason(error)
            except BaseException:
                self._end()
                raise
            finally:
                _making.deadline = None
            self._end()
            if self.cancel.is_set():
                raise Cancelled(f"{self.url}: cancelled") from None
            self._failed(failure, progressed=False)

    def _begin(self) -> _Deadline:
        """A new attempt: its deadline runs from now, for this thread's request and the body it brings."""
        self._end()
        self._deadline = deadline = _Deadline(self.policy.timeout)
        self.cancel.watch(deadline)
        _making.deadline = deadline
        return deadline

    def _end(self) -> None:
        if self._deadline is not None:
            self.cancel.forget(self._deadline)
            self._deadline.close()
            self._deadline = None

    def _request(self) -> requests.Response:
        span, size = self.span, self.partial.identity.size
        headers = {"Accept-Encoding": "identity"}
        if not self.plain:
            headers["Range"] = f"bytes={span.position}-{span.end - 1}"
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
        self._refuse_other_answers(response)
        if status == 206 and self.plain:
            raise TransferError(f"{self.url} answered a GET without Range with a part (206), not the file")
        length = response.headers.get("Content-Length")
        # Where no size was stated before (`open_ended`), a length within the bound is the file's: the body ends there.
        within_bound = self.open_ended and length is not None and length.strip().isdigit() and int(length) < size
        if status == 200:
            if length is not None and length.strip() != str(size) and not within_bound:
                # A page served without text/html (EMNIST's old URL answers 110 KiB of it) is named as what it is.
                if trap := _sniff(response):
                    raise TransferError(f"{self.url} answered with {trap} (status {status}), not the file")
                raise TransferError(f"{self.url} claims {_bytes(length)} for the file; registered: {plain_size(size)}")
            self._take_whole_file()
        else:
            found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
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

    def _refuse_other_answers(self, response: requests.Response) -> None:
        """Raises unless `response` is a 200 or 206 answer carrying the file's bytes as they are (no page, no
        encoding); a status worth another attempt is an interruption."""
        status = response.status_code
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
            raise TransferError(
                f"{self.url}: {self._fruitless} attempts in a row brought no data or ended on the time limit"
                f" ({_short(reason)})"
            )
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
                self.answers += 1
                mark, deadline = self.span.position, self._deadline
                try:
                    self._receive(response)
                    if self.open_ended:
                        # A chunked body states its end (urllib3 raises if the framing is cut), so it is whole.
                        self._end_with_the_body("Content-Length" in response.headers or bool(response.raw.chunked))
                    elif not self.span.done:
                        raise _Interrupted(f"connection closed after byte {self.span.position:,}")
                except (_Interrupted, *INTERRUPTIONS) as error:
                    if self.cancel.is_set():
                        raise Cancelled(f"{self.url}: cancelled") from None
                    stalled = _timed_out(error) or (deadline is not None and deadline.expired)
                    failure = deadline.reason(error) if deadline else error
                    response.close()
                    self._end()  # before the pause
                    if self.plain and self.span.position > mark:
                        # The refetch is one GET without Range: a cut ends it (restarting it from byte 0 after every
                        # cut could bring the whole file 9 times over); the bytes it brought are not resumed.
                        raise TransferError(
                            f"{self.url}: the GET without Range was cut after byte {self.span.position:,}"
                            f" ({_short(f'{type(failure).__name__}: {failure}')})"
                        ) from None
                    # Only an attempt cut after bringing bytes is a resume: one that ended on a time limit, even after
                    # a burst, counts with those that brought nothing, so a source sending a little and then nothing
                    # on each attempt is given up as one that trickles, not after 8 resumes.
                    self._failed(failure, progressed=self.span.position > mark and not stalled)
                finally:
                    response.close()
                    response = None
                    self._end()
        finally:
            self._end()
            self._session.close()

    def _end_with_the_body(self, length_stated: bool) -> None:
        """The body of an answer that stated no size ended: the file ends there, unless it passed the bound."""
        if self.span.done:
            raise TransferError(
                f"{self.url} sent more than {plain_size(self.span.end - 1)}, the most {self.name} may have"
                " (cut there, one byte past it)"
            )
        self.partial.end_at(self.span, length_stated)

    def _receive(self, response: requests.Response) -> None:
        """Writes the body's blocks at the span's position until the span is done or the body ends
        (or the attempt's deadline ends it)."""
        for block in _blocks_as_they_arrive(response):
            if self.cancel.is_set():
                raise Cancelled(f"{self.url}: cancelled")
            if self._deadline is not None:
                self._deadline.received(len(block))
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


class _SizeProbe(_Connection):
    """Asks a source for the first byte of a file whose size is not registered, to learn the size it states."""

    def __init__(self, url: str, most_bytes: int, policy: Policy, cancel: Cancel) -> None:
        super().__init__(url, None, Span(0, 0, 1), policy, cancel, lambda count: None, first=True)  # type: ignore[arg-type]
        self.most_bytes = most_bytes
        self.size: int | None = None

    def _request(self) -> requests.Response:
        headers = {"Accept-Encoding": "identity", "Range": "bytes=0-0"}
        response = self._session.get(self.url, headers=headers, stream=True, timeout=self.policy.timeout)
        try:
            self.size = self._stated_size(response)
        finally:
            response.close()  # the body is never read: a 200 answer's may be the whole file, or anything
        return response

    def _stated_size(self, response: requests.Response) -> int | None:
        """The size the answer states (Content-Range's total, or a whole answer's Content-Length); None where it
        states none; raises above `most_bytes`, having read nothing of the body but a page's first bytes."""
        self._refuse_other_answers(response)
        if response.status_code == 206:
            stated = response.headers.get("Content-Range", "").strip()
            found = _CONTENT_RANGE.fullmatch(stated)
            if not found or found[1] != "0":
                raise TransferError(f"{self.url} answered a request for byte 0 with Content-Range {stated!r}")
            size = int(found[3]) if found[3].isdigit() else None
        else:
            length = response.headers.get("Content-Length", "").strip()
            size = int(length) if length.isdigit() else None
        if size is not None and size > self.most_bytes:
            if response.status_code == 200 and (trap := _sniff(response)):
                raise TransferError(f"{self.url} answered with {trap} (status 200), not the file")
            raise TransferError(
                f"{self.url} says the file has {plain_size(size)}; at most {plain_size(self.most_bytes)} is"
                " registered (refused before its body)"
            )
        if size == 0:
            raise TransferError(f"{self.url} says the file is empty")
        return size


def stated_size(url: str, most_bytes: int, policy: Policy, cancel: Cancel) -> int | None:
    """The size `url` states for a file known by its digests but not its size, at most `most_bytes` (TransferError
    above it, before any of the body is read); None where the server states none (chunked, no length).

    One request for byte 0, within the same time limits and cancel as every attempt; the size it gives is then
    held to by every later answer (parts, resumes), as a registered size is.
    """
    probe = _SizeProbe(url, most_bytes, policy, Cancel(cancel))
    try:
        probe.open()
    finally:
        probe._end()
        probe._session.close()
    return probe.size


def fetch(
    url: str,
    partial: Partial,
    policy: Policy,
    cancel: Cancel,
    progress: Callable[[int], None],
    whole: bool = False,
    open_ended: bool = False,
) -> bool:
    """Fills the partial's missing bytes from `url`; raises TransferError (or Cancelled) if this source cannot.

    The first missing part is asked for first; once the server has answered it with that part
    (206), the other parts start, each on its own connection. `whole`: the partial starts afresh
    and the file comes from byte 0 by a GET without Range, over one connection (after pieced bytes
    failed their sha256: a server may lie on ranges and serve the whole file right).

    `open_ended` (with `whole`): the server states no size; the partial's size is one byte past the most the
    file may have, the body's end is the file's end, and a body that reaches the partial's size is refused.

    Returns True when every byte of the file came in one whole-file answer (200) of this call: bytes that
    fail their sha256 then, a GET without Range would not bring right either. False where any came from a
    Range request (even one closed range from byte 0) or from an earlier call or process.
    """
    if whole:
        span = partial.restart_whole()
        connection = _Connection(
            url, partial, span, policy, Cancel(cancel), progress, first=True, plain=True, open_ended=open_ended
        )
        connection.run(connection.open())
        return True
    if not partial.spans:
        partial.plan(parts(partial.identity.size, policy.connections))
    missing = partial.missing()
    if not missing:
        return False
    this_source = Cancel(cancel)
    first = _Connection(url, partial, missing[0], policy, this_source, progress, first=True)
    response = first.open()
    if first.whole_file or len(missing) == 1:
        first.run(response)
        return first.whole_file and first.answers == 1
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
    return False


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
