"""A download in progress, on disk: the bytes a killed process leaves, and how far each part got.

For an upstream file NAME of a dataset, in the download dir's `<dataset name>/` folder:

- `NAME`: the complete download, renamed into place only after its sha256 and size verified;
- `NAME.partial`: the bytes received so far, each part written at its own offset (the file
  has its registered size from the start; what is not yet received reads as zeros);
- `NAME.partial.json`: what the partial is of (registered size and sha256; for a file known by
  its digests, the size its server stated and its git blob sha1), the validator (ETag
  or Last-Modified) of the source that last wrote it and that source's URL, and, for each part,
  how far from its start it has been received;
- `NAME.lock`: held while a process writes the partial (locking.py), so no two processes
  write one partial, and a partial is resumed only once its writer is gone.

The progress record is written after the bytes it counts, at least every `SAVE_EVERY_BYTES`
per part, so a process killed at any moment (SIGKILL, OOM, a reboot) leaves a record that
claims no byte it did not write; a lost write (power cut before the page cache reached the
disk) shows up as a sha256 mismatch, and the file is then fetched again from zero.

A partial is of a file, not of a URL: any source of the same registered size and sha256
resumes it, and it is thrown away only when known to be of another file. The validator is the
source's own, so it is sent (If-Range) only back to that URL; another source resumes with a
plain Range, its bytes join the partial unvouched, and the sha256 check of the whole file is
what catches a mix-up (the file is then fetched again from zero, fetching.py). A record is
read as hostile: bounded, every field checked by type and range (the validator is an ETag or
an HTTP-date of visible ASCII, as it goes out as a header), and one that fails is
removed with one line, never fatal and never saved back. Files are opened through
shared_files.py (not followed, regular files only, created for the folder's group), and a
write the disk refuses is a LocalDiskError, not a network failure.

Where locks do not work, each process writes a private partial, `NAME.partial.<pid>-<random>@<host>`,
removed when it ends; one left by a killed process is removed by the next run on the same
host once its pid is no longer alive. The host in the name is what proves whose it is on a
shared (NFS) folder; a pid reused since only delays the removal, never removes a live one's.

Why our own: huggingface_hub keeps `.incomplete` files the same way, but for one connection
and inside its own hub client; TFDS, keras and torchvision keep nothing across processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_variants import shared_files

SAVE_EVERY_BYTES = 256 << 10
SAVE_EVERY_SECONDS = 0.2
RECORD_LIMIT = 64 << 10  # bytes of a progress record read at most: a few parts take a few hundred
MAX_SPANS = 256
_FOLDER_PREFIX = "mnist_variants-"
_SHA256 = re.compile(r"[0-9a-f]{64}")
SHA1_HEX = re.compile(r"[0-9a-f]{40}")  # a git blob id, as records and registries write it
# An entity tag (RFC 9110 8.8.3), strong or weak, of visible ASCII only: it goes out as a header (If-Range).
_ETAG = re.compile(r'(W/)?"[\x21\x23-\x7e]{0,1024}"')


@dataclasses.dataclass
class Span:
    """Bytes [start, end) of the file, of which [start, position) have been received."""

    start: int
    position: int
    end: int

    @property
    def done(self) -> bool:
        return self.position >= self.end


@dataclasses.dataclass(frozen=True)
class Identity:
    """What a partial is of: a file, by its registered size and sha256 (from whichever URL); or, for a file known
    by its digests, by its git blob sha1 and the size its server stated (at most the registered bound)."""

    size: int
    sha256: str | None
    git_blob_sha1: str | None = None


class BadRecordError(ValueError):
    """A progress record that is not what this package writes: the reason, in a few words."""


class Partial:
    """The partial download of one file, with its progress record; thread-safe for its parts."""

    def __init__(self, path: Path, identity: Identity, url: str | None = None) -> None:
        self.path = path
        self.url = url  # the source this process now fetches it from
        self.record = path.with_name(path.name + ".json")
        self.identity = identity
        self.validator: str | None = None  # the strong ETag or Last-Modified of `source`, for If-Range
        self.source: str | None = None  # the URL whose validator this is
        self.spans: list[Span] = []
        self.inherited = 0  # bytes received by an earlier process
        self.responses = 0  # answers whose bytes went into it: more than one means it was pieced together
        # Where the body's end fixed the size (`end_at`), whether no length was stated: a cut looks the same.
        self.unstated_end = False
        self._lock = threading.Lock()
        self._unsaved = 0
        self._saved_at = 0.0
        self._fd: int | None = None

    @classmethod
    def resume_or_start(cls, path: Path, identity: Identity, url: str) -> tuple[Partial, str]:
        """The partial at `path` if it is of `identity` (resumed from `url`), else a fresh one; and a note
        on what was found and removed."""
        partial, note = cls(path, identity, url), ""
        try:
            spans, source, validator = _read_record(partial.record, identity)
            partial._fd = shared_files.open_file(partial.path, os.O_RDWR)
            if os.fstat(partial._fd).st_size != identity.size:
                raise BadRecordError("the partial's size differs from the record's")
        except FileNotFoundError:
            partial._close()
            if partial.path.exists() or partial.record.exists():
                note = "no progress record beside the partial" if partial.path.exists() else "no partial beside it"
                partial.discard()
            return partial, note
        except Exception as error:  # noqa: BLE001 - any failure to read a record makes it bad, never fails the run
            partial._close()
            if isinstance(error, OSError):
                note = f"unreadable ({error.strerror or error})"
            else:
                note = str(error) if isinstance(error, BadRecordError) else f"unreadable ({type(error).__name__})"
            partial.discard()
            return partial, note
        partial.spans, partial.source = spans, source
        # The validator is that source's: sent back to it only; another source resumes with a plain Range.
        partial.validator = validator if source == url else None
        partial.inherited = sum(span.position - span.start for span in spans)
        return partial, note

    @classmethod
    def private(cls, folder: Path, name: str, identity: Identity, url: str) -> Partial:
        """A partial no other process will touch or resume: for folders where locks do not work."""
        unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        return cls(folder / f"{name}.partial.{unique}", identity, url)

    def plan(self, spans: list[tuple[int, int]]) -> None:
        """Starts afresh with these parts (all of the file, nothing received)."""
        with self._lock:
            self.spans = [Span(start, start, end) for start, end in spans]
            self.inherited = self.responses = 0
            self._open(truncate=True)
            self._save()

    def restart_whole(self) -> Span:
        """Everything from zero over one connection (a server that ignores ranges, or changed the file)."""
        self.plan([(0, self.identity.size)])
        return self.spans[0]

    def end_at(self, span: Span, length_stated: bool) -> None:
        """The file ends where `span` (its only one) got to: a body that stated no size ended there (or a body
        of the Content-Length it stated, which urllib3 holds it to). With no length, a cut ends it the same way."""
        with self._lock:
            self.unstated_end = not length_stated
            self.identity = dataclasses.replace(self.identity, size=span.position)
            span.end = span.position
            with self._disk():
                os.ftruncate(self._open(), span.position)
            self._save()

    def missing(self) -> list[Span]:
        return [span for span in self.spans if not span.done]

    @property
    def received(self) -> int:
        return sum(span.position - span.start for span in self.spans)

    def write(self, span: Span, block: bytes) -> None:
        """Writes `block` at the span's position, then counts it (saved to the record now and then)."""
        block = block[: span.end - span.position]
        if not block:
            return
        with self._disk():
            os.pwrite(self._open(), block, span.position)
        with self._lock:
            span.position += len(block)
            self._unsaved += len(block)
            if self._unsaved >= SAVE_EVERY_BYTES or time.monotonic() - self._saved_at >= SAVE_EVERY_SECONDS:
                self._save()

    def set_validator(self, validator: str | None) -> None:
        """The validator of the source now writing into the partial (`url`), kept with that URL."""
        with self._lock:
            # One a record could not hold (the next run would throw the partial away) is not kept.
            self.validator, self.source = (validator if is_validator(validator) else None), self.url
            self._save()

    def save(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._save()

    def read_all(self) -> bytes:
        """The whole file as received, read once from the partial's own descriptor (what is verified is
        what will be parsed), no further than its registered size."""
        self.save()
        return shared_files.read_at_most(self._open(), self.identity.size)

    def finish(self, final: Path) -> None:
        """The verified file takes its final name (whatever stood there is replaced, not followed); the record goes."""
        self._close()
        if what := shared_files.what_is_there(final):
            shared_files.move_aside(final, what)  # a folder would refuse the rename
        os.replace(self.path, final)
        self.record.unlink(missing_ok=True)

    def discard(self) -> None:
        """Removes the partial and its record, as far as it may (an error here never hides the one that led here)."""
        self._close()
        for path in (self.path, self.record):
            with contextlib.suppress(OSError):
                path.unlink()
        self.spans, self.inherited, self.responses = [], 0, 0

    def close(self) -> None:
        """Saves progress and closes the file; the partial stays for a later process (closed even if the save fails)."""
        try:
            self.save()
        finally:
            self._close()

    def _open(self, truncate: bool = False) -> int:
        if self._fd is None or truncate:
            self._close()
            with self._disk():
                flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
                self._fd = shared_files.open_file(self.path, flags)
                os.ftruncate(self._fd, self.identity.size)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _disk(self) -> contextlib.AbstractContextManager[None]:
        """A write the local disk refuses (full, read-only, ...) becomes a LocalDiskError saying so."""

        def needed() -> str:
            missing = self.identity.size - self.received
            name = self.path.name.split(".partial")[0]
            return f"{name} needs {self.identity.size:,} bytes there ({missing:,} not yet written)"

        return shared_files.refused_writes(self.path.parent, needed)

    def _save(self) -> None:
        """Writes the record atomically (a new file renamed over the old one), after the bytes it counts."""
        record = {
            **dataclasses.asdict(self.identity),
            "url": self.source,
            "validator": self.validator,
            "spans": [[span.start, span.position, span.end] for span in self.spans],
        }
        with self._disk():
            shared_files.write_file(self.record, json.dumps(record).encode())
        self._unsaved, self._saved_at = 0, time.monotonic()


def remove_dead_private(folder: Path, name: str) -> None:
    """Removes private partials of `name` (and their records) left by processes of this host no longer alive."""
    _remove_dead(folder, rf"{re.escape(name)}\.partial\.(\d{{1,10}})-[0-9a-f]{{8}}@(.+?)(\.json)?", os.unlink)


def private_folder() -> Path:
    """A temporary folder for private partials (where the download dir is remote), named so that the next run
    can tell it was left by a process of this host that is gone (`remove_dead_folders`)."""
    return Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}@{socket.gethostname()}-"))


def remove_dead_folders() -> None:
    """Removes `private_folder`s of processes of this host no longer alive (killed before they could)."""
    _remove_dead(Path(tempfile.gettempdir()), rf"{_FOLDER_PREFIX}(\d{{1,10}})@(.+)-[a-z0-9_]{{8}}", shutil.rmtree)


def _remove_dead(folder: Path, pattern: str, remove: Callable[[Path], object]) -> None:
    """Removes (best effort) each entry of `folder` whose name (`pattern`: pid, host) says a dead process left it."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if (found := re.fullmatch(pattern, entry)) and _left_by_dead(found[1], found[2]):
            with contextlib.suppress(OSError):
                remove(folder / entry)
                print(f"Removed {folder / entry}, left by a process that ended (pid {found[1]})", flush=True)


def _left_by_dead(pid: str, host: str) -> bool:
    """Whether a name's `pid`@`host` proves a process of this host that is gone; anything odd (a pid no
    process can have, planted by hand) proves nothing, and what it names is left alone."""
    if host != socket.gethostname() or not 0 < int(pid) <= _pid_max():
        return False
    return not _alive(int(pid))


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as file:
            return int(file.read(32))
    except (OSError, ValueError):
        return 1 << 22  # Linux's PID_MAX_LIMIT on 64-bit


def _alive(pid: int) -> bool:
    """Whether a process of this pid runs on this host (a reused pid counts as alive: nothing of its is removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # another user's process; a pid os.kill cannot take
        return True
    return True


def _read_record(record: Path, identity: Identity) -> tuple[list[Span], str | None, str | None]:
    """The spans, source URL and validator of a progress record of `identity`; BadRecordError where it is not one.

    Every field is checked by type (an int is no bool and no float) and range, as written by `_save`.
    """
    data = shared_files.read_file(record, RECORD_LIMIT)
    if len(data) > RECORD_LIMIT:
        raise BadRecordError(f"progress record larger than {RECORD_LIMIT:,} bytes")
    try:
        saved: Any = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: "[" * 20000
        raise BadRecordError("progress record is not JSON") from None
    if not isinstance(saved, dict):
        raise BadRecordError("progress record is not a JSON object")
    size, sha256, blob = saved.get("size"), saved.get("sha256"), saved.get("git_blob_sha1")
    if not _is_int(size) or size <= 0:
        raise BadRecordError(f"progress record's size is {_shown(size)}")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
        raise BadRecordError(f"progress record's sha256 is {_shown(sha256)}")
    if blob is not None and (not isinstance(blob, str) or not SHA1_HEX.fullmatch(blob)):
        raise BadRecordError(f"progress record's git_blob_sha1 is {_shown(blob)}")
    if sha256 is None and blob is None:
        raise BadRecordError("progress record names no digest of its file")
    if Identity(size, sha256, blob) != identity:
        differ = "registered size or sha256" if identity.sha256 else "stated size or git blob sha1"
        raise BadRecordError(f"a partial of another file (its {differ} differ)")
    url, validator = saved.get("url"), saved.get("validator")
    if url is not None and (not isinstance(url, str) or len(url) > 8192):
        raise BadRecordError(f"progress record's url is {_shown(url)}")
    if validator is not None and not is_validator(validator):
        raise BadRecordError(f"progress record's validator is {_shown(validator)}")
    spans = saved.get("spans")
    if not isinstance(spans, list) or not 0 < len(spans) <= MAX_SPANS:
        raise BadRecordError(f"progress record's spans are {_shown(spans)}")
    parsed, edge = [], 0
    for index, span in enumerate(spans):
        if not (isinstance(span, list) and len(span) == 3):
            raise BadRecordError(f"progress record's span {index} is {_shown(span)}")
        if wrong := [value for value in span if not _is_int(value)]:
            raise BadRecordError(f"progress record's span {index} holds {_shown(wrong[0])}")
        start, position, end = span
        if start != edge or not start <= position <= end or end > size:
            raise BadRecordError(f"progress record's span {index} ({start}, {position}, {end}) is out of place")
        parsed.append(Span(start, position, end))
        edge = end
    if edge != size:
        raise BadRecordError(f"progress record's spans end at byte {edge:,}, not at {size:,}")
    return parsed, url, validator


def is_validator(value: object) -> bool:
    """Whether `value` may go out as If-Range: an ETag or an HTTP-date, of visible ASCII and spaces only
    (a CR/LF would be a header of its own; non-latin-1 fails to encode; either failed every request)."""
    if not isinstance(value, str) or len(value) > 1100:
        return False
    if _ETAG.fullmatch(value):
        return True
    if not re.fullmatch(r"[\x21-\x7e][\x20-\x7e]*[\x21-\x7e]", value):
        return False
    try:  # the standard library's HTTP-date parser (RFC 9110 5.6.7 allows three forms)
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A record's value in a message: its type, and a short form of it."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
