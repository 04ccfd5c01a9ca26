"""A download in progress, on disk: the bytes a killed process leaves, and how far each part got.

For an upstream file NAME of a dataset, in the download dir's `<dataset name>/` folder:

- `NAME`: the complete download, renamed into place only after its sha256 and size verified;
- `NAME.partial`: the bytes received so far, each part written at its own offset (the file
  has its registered size from the start; what is not yet received reads as zeros);
- `NAME.partial.json`: what the partial is of (URL, registered size and sha256, the server's
  ETag or Last-Modified) and, for each part, how far from its start it has been received;
- `NAME.lock`: held while a process writes the partial (locking.py), so no two processes
  write one partial, and a partial is resumed only once its writer is gone.

The progress record is written after the bytes it counts, at least every `SAVE_EVERY_BYTES`
per part, so a process killed at any moment (SIGKILL, OOM, a reboot) leaves a record that
claims no byte it did not write; a lost write (power cut before the page cache reached the
disk) shows up as a sha256 mismatch, and the file is then fetched again from zero.

Why our own: huggingface_hub keeps `.incomplete` files the same way, but for one connection
and inside its own hub client; TFDS, keras and torchvision keep nothing across processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path

SAVE_EVERY_BYTES = 256 << 10
SAVE_EVERY_SECONDS = 0.2


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
    """What a partial is of: it is resumed only for the very same URL, size and sha256."""

    url: str
    size: int
    sha256: str


class Partial:
    """The partial download of one file, with its progress record; thread-safe for its parts."""

    def __init__(self, path: Path, identity: Identity) -> None:
        self.path = path
        self.record = path.with_name(path.name + ".json")
        self.identity = identity
        self.validator: str | None = None  # the server's strong ETag or Last-Modified, for If-Range
        self.spans: list[Span] = []
        self.inherited = 0  # bytes received by an earlier process
        self.responses = 0  # answers whose bytes went into it: more than one means it was pieced together
        self._lock = threading.Lock()
        self._unsaved = 0
        self._saved_at = 0.0
        self._fd: int | None = None

    @classmethod
    def resume_or_start(cls, path: Path, identity: Identity) -> tuple[Partial, str]:
        """The partial at `path` if it is of `identity`, else a fresh one; and a note on what was found."""
        partial, note = cls(path, identity), ""
        try:
            saved = json.loads(partial.record.read_text())
            spans = [Span(*span) for span in saved["spans"]]
            same = Identity(saved["url"], saved["size"], saved["sha256"]) == identity
            intact = partial.path.stat().st_size == identity.size and _spans_cover(spans, identity.size)
        except FileNotFoundError:
            same = intact = False
        except (OSError, ValueError, KeyError, TypeError) as error:
            same, intact, note = False, False, f"unreadable progress record ({type(error).__name__})"
        if same and intact:
            partial.spans, partial.validator = spans, saved.get("validator")
            partial.inherited = sum(span.position - span.start for span in spans)
        elif partial.path.exists() or partial.record.exists():
            note = note or "left for another URL, size or sha256"
            partial.discard()
        return partial, note

    @classmethod
    def private(cls, folder: Path, name: str, identity: Identity) -> Partial:
        """A partial no other process will touch or resume: for folders where locks do not work."""
        return cls(folder / f"{name}.partial.{os.getpid()}-{uuid.uuid4().hex[:8]}", identity)

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
        os.pwrite(self._open(), block, span.position)
        with self._lock:
            span.position += len(block)
            self._unsaved += len(block)
            if self._unsaved >= SAVE_EVERY_BYTES or time.monotonic() - self._saved_at >= SAVE_EVERY_SECONDS:
                self._save()

    def set_validator(self, validator: str | None) -> None:
        with self._lock:
            self.validator = validator
            self._save()

    def save(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._save()

    def read_all(self) -> bytes:
        """The whole file as received, read once (what is verified is what will be parsed)."""
        self.save()
        return self.path.read_bytes()

    def finish(self, final: Path) -> None:
        """The verified file takes its final name; the record goes."""
        self._close()
        os.replace(self.path, final)
        self.record.unlink(missing_ok=True)

    def discard(self) -> None:
        self._close()
        for path in (self.path, self.record):
            path.unlink(missing_ok=True)
        self.spans, self.inherited, self.responses = [], 0, 0

    def close(self) -> None:
        """Saves progress and closes the file; the partial stays for a later process."""
        self.save()
        self._close()

    def _open(self, truncate: bool = False) -> int:
        if self._fd is None or truncate:
            self._close()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0), 0o644)
            os.ftruncate(self._fd, self.identity.size)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _save(self) -> None:
        """Writes the record atomically (a new file renamed over the old one), after the bytes it counts."""
        record = {
            **dataclasses.asdict(self.identity),
            "validator": self.validator,
            "spans": [[span.start, span.position, span.end] for span in self.spans],
        }
        temporary = self.record.with_name(f"{self.record.name}.{os.getpid()}.{threading.get_ident()}")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.record)
        self._unsaved, self._saved_at = 0, time.monotonic()


def _spans_cover(spans: list[Span], size: int) -> bool:
    """Whether the spans tile [0, size) in order, each position inside its span."""
    edge = 0
    for span in spans:
        if span.start != edge or not span.start <= span.position <= span.end:
            return False
        edge = span.end
    return edge == size and bool(spans)
