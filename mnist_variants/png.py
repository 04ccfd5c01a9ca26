"""A minimal PNG writer for 8-bit grayscale images, and helper processes that run and check it on another core.

`tfds.features.Image` encodes numpy arrays through a TF graph per example, which
dominates the cost of preparing these datasets; it passes `bytes` through untouched,
so we hand it PNGs made here. Decoders (TF, PIL) return exactly the input pixels;
the tests prove it.

Why a process: TFDS's writer keeps this process's GIL busy while it ingests examples, and threads
that call zlib then wait for the GIL after every image. Measured on a full-size Fashion-MNIST
prepare, same encoder settings, two runs each (2026-11-22): a thread pool took 5.0 and 5.2 s, the
helper process 4.3 and 4.4 s, against 3.2 and 3.4 s for the floor. Encoding cost 23.7 us of CPU per
image then (1.7 s for Fashion-MNIST's 70,000; 5.8 us with zlib-ng since, see COMPRESSION_LEVEL, 4.4 us with
a smaller window, see window_bits), which the helper takes off this process. On a quiet machine (2026-11-25),
a full-size MNIST prepare took 10.8 and 11.8 s with the helper and 13.4 and 14.3 s encoding in this process.
A thread pool was not timed again since; if one ever shows no loss against the helper, the helper should go.

Simpler designs and what they cost: threads (or `concurrent.futures.ThreadPoolExecutor`)
fight TFDS's writer for the GIL, the figure above. `multiprocessing` or a
`ProcessPoolExecutor` with the parent's import state needs `fork` (unsafe once TensorFlow's
threads run) or `spawn`/`forkserver`, which import the caller's `__main__` again: a user's
training script without an `if __name__ == "__main__"` guard would start training in the
child; it also pickles every batch both ways. So the helper is a plain interpreter
(`sys.executable -I -c`) that is handed this module's source and the parent's `sys.path`
(its own working directory last, so a `queue.py` there shadows nothing), fed raw pixels
on stdin. It imports neither TFDS nor the caller's `__main__`.

What can go wrong with it, and what happens then:
- It cannot start (frozen application, no interpreter, numpy not found, anything that
  ends it before its greeting): encoding happens in this process, same bytes, slower.
- It dies or stalls later (SIGKILL, out of memory, exit): every split still waiting
  raises `EncoderError`, naming the helper and its exit status, within seconds.
- It writes too little, too much or garbage: every message is framed (magic, count,
  length, CRC-32 of the body and of the source pixels) and every PNG is checked to
  decode to its source pixels before it is handed on; a broken promise is an `EncoderError`.

Who checks the PNGs: a second helper, the checker, started the same way. It is sent each message as
it arrived and answers one verdict per message in that order: whether every PNG has this module's
form and inflates to one image, bound to the CRC-32 of the very body it checked, and the CRC-32 of
the pixels they decode to, which this process compares with that of the pixels it holds (sending it
the pixels instead was 638 MB more through pipes for EMNIST). A consumer hands PNGs on only once
every message up to theirs is known good, so a lie anywhere earlier fails every split. Why another
process: the check (inflating each PNG, then comparing with its pixels, as it was made then) was
most of what our preparation cost above the floor. Made by TFDS's writer thread, it took 0.9 s of a
full-size MNIST prepare and 10.4 s of EMNIST byclass (about 13 us an image, timed inside the
prepare, 2026-11-25). Made by the thread that reads the helper's output, it waited for the GIL after
every `zlib.decompress`: the checks of MNIST's 69 batches took 4.0 s of wall time for 0.6 s of CPU,
and the writer waited for PNGs. With the checker, on the same quiet machine, MNIST's prepare went
from 1.27x the floor to 1.04x (5 rounds), EMNIST byclass's from 1.36x to 1.26x (3 rounds).

Both helpers end, and are waited for, before the preparation returns or fails (`PngEncoder.shutdown`,
called by the builder): one that answered everything exits on its own; any other is killed. A checker
told that no more messages come owes its end, so its silence counts from then as a stall.

The checker only saves this process work. If it cannot start, dies, stalls or answers out of
place, it is ended with a note on stderr, and the consumers check what it did not answer
themselves, in arrival order, as they would without it. A message it calls bad, or whose pixels'
CRC-32 differs, is checked again here before anything fails, so a faulty checker cannot fail a good
preparation. What no check here would catch is a checker that calls a bad PNG good: that takes a
fault in `_inflate` or `decoded_pixels_crc`, code this process runs too, which the tests prove
against damaged PNGs, or PNGs that decode to other pixels with the same CRC-32 over their message, which a
random fault gives once in 2**32 (the framing of every message trusts CRC-32 the same way).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator

import numpy as np
from zlib_ng import zlib_ng

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_CRC = zlib.crc32(b"IDAT")
_IEND_CHUNK = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
# Deflated by zlib-ng (a maintained, faster zlib: the same format, not the same bytes) at level 1; inflated,
# to check them, by the standard library's zlib, as the readers of the prepared data do (TensorFlow, PIL).
# Measured on 1,024 of the benchmark's MNIST images (2026-11-26, best of 7): 5.8 us and 246.1 B an image,
# against 20.8 us and 242.7 B for zlib's level 1 with its RLE strategy, used before. In a full-size EMNIST
# byclass prepare (5 rounds each), the helpers' CPU fell from 32.9-36.1 s to 15.9-18.1 s.
COMPRESSION_LEVEL = 1
# The CRC-32s of whole messages and of their pixels are zlib-ng's too (the same values): 1.1 ms for 12.8 MB
# of pixels against zlib's 6.2 ms (2026-11-26); each image's pixels pass three of them (helper, checker, here).
# Images per message from the helper. Each message wakes three threads here (reading it, passing it to the checker,
# reading the verdict), and each wake-up takes the GIL from TFDS's writer. With 4,096 instead of 1,024, in full-size
# EMNIST byclass prepares (2026-11-26): the writer's thread woke for the GIL about 1,800 times instead of 2,700 and
# sat 4.3 s instead of 5.8 s in the run queue. The wall time showed no difference beside the code before (3 rounds:
# 69.8 s against 72.2 s, the floor at 51.7 to 58.9 s). 16,384 woke it 1,150 times but delays the first PNGs (0.6 s).
_BATCH = 4096

# The protocol. Parent -> helper: the module's source (its length is argv[1]), then submissions,
# each a header and count * height * width pixels. Helper -> parent: a greeting once booted, then
# one message per batch of up to _BATCH images, in submission order: a header, then each PNG as
# length + bytes. Every field is checked on arrival (see PngEncoder._read_messages).
_SUBMISSION = struct.Struct("<4sIII")  # magic, count, height, width
_SUBMISSION_MAGIC = b"MVPs"
_GREETING = b"MVPNG-1\n"
_MESSAGE = struct.Struct("<4sIIII")  # magic, count of PNGs, body length, CRC-32 of the body, CRC-32 of the pixels
_MESSAGE_MAGIC = b"MVPm"
_LENGTH = struct.Struct("<I")
# Parent -> checker: the source, then per message a header and its body as the helper sent it.
# Checker -> parent: a greeting, then one verdict per message, in the order they were sent.
_CHECK = struct.Struct("<4sIIIII")  # magic, number of the message, count, height, width, body length
_CHECK_MAGIC = b"MVPc"
_CHECKER_GREETING = b"MVPNG-check-2\n"
# magic, number, first bad PNG or _ALL_DECODE, CRC-32 of the body and of the pixels its PNGs decode to
_VERDICT = struct.Struct("<4sIIII")
_VERDICT_MAGIC = b"MVPv"
_ALL_DECODE = 0xFFFFFFFF
# A helper that sends nothing for this long while it owes PNGs is killed: encoding a batch takes
# milliseconds, so only a stopped or hung helper (or a starved machine) gets near it.
STALL_SECONDS = 60.0
_EXIT_SECONDS = 10.0  # how long a helper that closed its output may take to exit
_READ_AHEAD = 1 << 20  # the most read from a helper's output at a time, and the size asked of its pipe


class EncoderError(RuntimeError):
    """The PNG helper process died, stalled or broke the protocol; the message names it and its exit status."""


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _header(height: int, width: int) -> bytes:
    """Signature and IHDR: bit depth 8, colour type 0 (grayscale), no interlacing."""
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def as_grayscale_batch(images: np.ndarray) -> np.ndarray:
    """(n, h, w) or (n, h, w, 1) uint8 -> C-contiguous (n, h, w)."""
    if images.dtype != np.uint8:
        raise TypeError(f"PNG encoding needs uint8 images, got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (n, h, w) or (n, h, w, 1), got {images.shape}")
    return np.ascontiguousarray(images)


def _scanlines(images: np.ndarray) -> np.ndarray:
    """(n, h, w + 1): every row prefixed with filter type 0 (None), as the IDAT stream holds it."""
    count, height, width = images.shape
    scanlines = np.zeros((count, height, width + 1), dtype=np.uint8)
    scanlines[:, :, 1:] = images
    return scanlines


def window_bits(size: int) -> int:
    """The zlib window for `size` bytes of scanlines, by libpng's own rule (`png_deflate_claim`): halved while
    the data and deflate's 262-byte lookahead still fit in half of it, down to 2**9.

    Every earlier byte stays in reach, so the deflate stream is the same; only the zlib header, which names the
    window, differs.
    What it saves is deflate's set-up: 812 bytes (a 28x28 image) took 4.4 us with 2**11 against 5.6 us with
    2**15, 250.0 bytes each (best of 15, 40,960 generated EMNIST images, zlib-ng level 1, 2026-11-26).
    """
    bits = 15
    while bits > 9 and size + 262 <= 1 << (bits - 1):
        bits -= 1
    return bits


def encode_batch(images: np.ndarray, level: int = COMPRESSION_LEVEL) -> list[bytes]:
    """PNGs of a (n, h, w) uint8 batch; every scanline gets filter type 0 (None)."""
    height, width = images.shape[1:]
    header, wbits = _header(height, width), window_bits(height * (width + 1))
    encoded = []
    for raw in _scanlines(images):
        idat = zlib_ng.compress(raw, level, wbits)
        crc = zlib.crc32(idat, _IDAT_CRC)
        encoded.append(
            b"".join((header, len(idat).to_bytes(4, "big"), b"IDAT", idat, crc.to_bytes(4, "big"), _IEND_CHUNK))
        )
    return encoded


def encode_png(image: np.ndarray, level: int = COMPRESSION_LEVEL) -> bytes:
    """One (h, w) or (h, w, 1) uint8 image as PNG bytes."""
    return encode_batch(as_grayscale_batch(image[np.newaxis]), level)[0]


def _encode_here(images: np.ndarray) -> Iterator[list[bytes]]:
    for start in range(0, len(images), _BATCH):
        yield encode_batch(images[start : start + _BATCH])


def _inflate(pngs: list[bytes], height: int, width: int) -> tuple[int | None, list[bytes]]:
    """The scanlines of each PNG, up to the first whose form is not this module's encoding of a height x width
    image: (its index or None, the scanlines of those before it).

    Checked: signature and IHDR (size, grayscale, 8 bits), one IDAT whose length and CRC hold and whose
    zlib stream (its own checksum included) inflates to exactly one image's scanlines, each of filter type 0
    (None), and ends the IDAT (it ends with the stream's checksum: `zlib.decompress` ignores what follows a
    stream, and a decompressobj that would tell cost 2.5 us more an image), IEND last. Exactly one image's:
    else a PNG could carry the start of the next image and still join up. Not checked: the pixels.
    """
    header = _header(height, width)
    data_at = len(header) + 8
    tail = -(4 + len(_IEND_CHUNK))  # the IDAT's CRC, then IEND
    size = height * (width + 1)
    unfiltered = bytes(height)  # every scanline's first byte, its filter type
    inflated = []
    for index, png in enumerate(pngs):
        idat = png[data_at:tail]
        try:
            if (
                png[:data_at] != header + len(idat).to_bytes(4, "big") + b"IDAT"
                or png[tail:] != zlib.crc32(idat, _IDAT_CRC).to_bytes(4, "big") + _IEND_CHUNK
                or len(rows := zlib.decompress(idat, zlib.MAX_WBITS, size)) != size
                or idat[-4:] != zlib.adler32(rows).to_bytes(4, "big")
                or rows[:: width + 1] != unfiltered
            ):
                return index, inflated
        except zlib.error:
            return index, inflated
        inflated.append(rows)
    return None, inflated


def decodes_to(pngs: list[bytes], images: np.ndarray) -> int | None:
    """The index of the first PNG that is not this module's encoding of its image, None if all are.

    The scanlines are compared once per batch: per image, that comparison cost as much as the inflating.
    """
    if len(pngs) != len(images):
        return min(len(pngs), len(images))
    bad, inflated = _inflate(pngs, *images.shape[1:])
    scanlines = _scanlines(images[: len(inflated)])
    if b"".join(inflated) == scanlines.tobytes():
        return bad
    pairs = enumerate(zip(inflated, scanlines, strict=True))
    return next(index for index, (got, want) in pairs if got != want.tobytes())


def decoded_pixels_crc(pngs: list[bytes], height: int, width: int) -> tuple[int | None, int]:
    """What the checker tells: the index of the first PNG that is not this module's encoding of some image
    (None if none), and the CRC-32 of the pixels they decode to, all images in order, as `images.data` holds
    them. The pixels themselves stay with the parent, which knows their CRC-32: 638 MB less through pipes
    for EMNIST byclass."""
    bad, inflated = _inflate(pngs, height, width)
    scanlines = np.frombuffer(b"".join(inflated), np.uint8).reshape(len(inflated), height, width + 1)
    return bad, zlib_ng.crc32(np.ascontiguousarray(scanlines[:, :, 1:]))


def split_message(body: bytes, count: int) -> list[bytes] | None:
    """The PNGs of a message body (each as length + bytes), or None unless it holds exactly `count` of them."""
    pngs, position = [], 0
    while position + _LENGTH.size <= len(body):
        (size,) = _LENGTH.unpack_from(body, position)
        pngs.append(body[position + _LENGTH.size : position + _LENGTH.size + size])
        position += _LENGTH.size + size
    return pngs if len(pngs) == count and position == len(body) else None


def _command(source_length: int, entry: str) -> list[str] | None:
    """A plain interpreter running this module's `entry`, or None where none can run (frozen applications)."""
    if getattr(sys, "frozen", False) or not sys.executable or sys.platform == "win32":  # select() needs sockets there
        return None
    # The parent's import path, so numpy is found wherever this process found it (pip --target, pex,
    # Bazel runfiles); the working directory last, so modules there cannot shadow the standard library.
    here = {"", _working_directory()}
    path = [entry for entry in sys.path if entry not in here] + [entry for entry in sys.path if entry in here]
    bootstrap = (
        f"import sys; sys.path[:] = {path!r}; source = sys.stdin.buffer.read(int(sys.argv[1])); "
        "namespace = {'__name__': '_mnist_variants_png_helper'}; "
        f"exec(compile(source, {__file__!r}, 'exec'), namespace); namespace[{entry!r}]()"
    )
    # -I: no PYTHON* variables, no user site, no working directory on the path before ours is set.
    return [sys.executable, "-I", "-c", bootstrap, str(source_length)]


def _working_directory() -> str:
    """The working directory, or "" where it was removed or cannot be read (a cleaned-up scratch folder)."""
    try:
        return os.getcwd()
    except OSError:
        return ""


def _helper_command(source_length: int) -> list[str] | None:
    """The encoding helper's command line (see `serve`)."""
    return _command(source_length, "serve")


def _checker_command(source_length: int) -> list[str] | None:
    """The checking helper's command line (see `serve_checks`)."""
    return _command(source_length, "serve_checks")


def _own_source() -> bytes | None:
    """This module's source, also from a zipapp or pex (through its loader)."""
    loader = globals().get("__loader__")
    try:
        source = loader.get_source(__name__) if loader is not None else None
    except (ImportError, OSError):
        source = None
    return source.encode() if source else None


def describe_exit(returncode: int | None) -> str:
    """'exit status 3', 'killed by SIGKILL' or 'still running'."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


# Read once, at import: the helper must run the code this process runs, even if the file changes later.
_SOURCE = _own_source()


class _Broken(Exception):
    """A helper broke its promise; the message says how."""


def _kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL to the helper's process group (its own session, _Process.start): it and whatever it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the whole group has ended already
        os.killpg(popen.pid, signal.SIGKILL)
    if popen.returncode is None:
        with contextlib.suppress(OSError):
            popen.kill()


class _Process:
    """A helper process: started from a command, its stderr kept for the message that reports its end."""

    def __init__(self, role: str, popen: subprocess.Popen, stderr) -> None:
        self.role, self.popen, self._stderr = role, popen, stderr

    @classmethod
    def start(cls, role: str, command: list[str] | None) -> _Process | None:
        """The running process, or None if it cannot be started here."""
        if command is None:
            return None
        stderr = tempfile.TemporaryFile()
        try:
            # A session of its own: a wrapper that does not exec (conda run) leaves the interpreter its child,
            # which _kill_group ends with it.
            popen = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True
            )
        except (OSError, ValueError):
            stderr.close()
            return None
        for pipe in (popen.stdin, popen.stdout):
            _enlarge_pipe(pipe.fileno())
        return cls(role, popen, stderr)

    def feed(self, source: bytes, inputs: queue.SimpleQueue, write) -> None:
        """Writes the source, then `write(stdin, item)` for each input until None; stops quietly if the process
        is gone (the thread reading its output reports that)."""
        stdin = self.popen.stdin
        try:
            stdin.write(source)
            stdin.flush()
            while (item := inputs.get()) is not None:
                write(stdin, item)
                stdin.flush()
        except (OSError, ValueError):
            while inputs.get() is not None:  # what is queued for a dead process must not stay in memory
                pass
        finally:
            try:
                stdin.close()
            except (OSError, ValueError):
                pass

    def greeted(self, reader: _Reader, greeting: bytes) -> None:
        """Reads its greeting; _Broken if it ends or says anything else first."""
        said = reader.read(len(greeting), allow_end=True)
        if said is None:
            raise _Broken("did not start (it ended before its greeting)")
        if said != greeting:
            raise _Broken(f"did not start (it sent {said!r}, not its greeting)")

    def describe(self, what: str) -> str:
        return f"{self.role} (pid {self.popen.pid}, {describe_exit(self.popen.poll())}) {what}"

    def end(self, what: str) -> str:
        """Kills it if it still runs and reaps it; returns what happened, naming it and its exit status."""
        if self.popen.poll() is None:
            try:
                self.popen.wait(0.5)  # it may be exiting on its own: then its own status is the news
            except subprocess.TimeoutExpired:
                _kill_group(self.popen)
                self.popen.wait()
        _kill_group(self.popen)  # what it started, if it exited on its own and left them
        self.popen.stdout.close()
        said = self._stderr_tail()
        self._stderr.close()
        return self.describe(what) + (f"; its stderr ends: {said}" if said else "")

    def finish(self) -> None:
        """After a clean end of its output: reaped, its pipes closed."""
        self.popen.stdout.close()
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        return self._stderr.read().decode(errors="replace").strip()


class _Submission:
    """One submitted image array and what has come back for it."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.received = 0
        # (number of the message in arrival order, its PNGs), an error, or _ENCODE_HERE.
        self.batches: queue.SimpleQueue[tuple[int, list[bytes]] | BaseException | None] = queue.SimpleQueue()


_ENCODE_HERE = None  # put in a submission's queue: encode the rest in this process


class PngEncoder:
    """Encodes submitted image arrays to PNGs in a helper process, each submission in order.

    Start it early (it takes a moment to boot), submit each split's images as soon as
    they are parsed, call `close` when all are submitted, and iterate over what `submit`
    returns, in any order: every iterator either yields all its PNGs, each checked to decode
    to its image, or raises `EncoderError` within seconds of the helper's failure.
    """

    def __init__(self, stall_seconds: float = STALL_SECONDS) -> None:
        self._stall_seconds = stall_seconds
        self._lock = threading.Lock()  # guards the four fields below
        self._unanswered: collections.deque[_Submission] = collections.deque()
        self._failure: str | None = None  # set once the helper failed after its start
        self._here = False  # set when the helper never started: encode in this process
        self._closed = False
        # The checks, in arrival order across submissions (see _check_through); the condition guards these fields.
        self._checks = threading.Condition()
        # Messages received and not yet known to decode to their images, by number in arrival order:
        # (images, PNGs, the CRC-32s of the message's body and pixels).
        self._unchecked: dict[int, tuple[np.ndarray, list[bytes], tuple[int, int]]] = {}
        self._arrived = 0  # messages received
        self._checked = 0  # every message numbered below it decodes to its images
        self._checker_up = False  # verdicts come from the checker process; else consumers check
        self._refusal: str | None = None  # set once a PNG was found that does not decode to its image
        self._inputs: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._to_check: queue.SimpleQueue[tuple[int, np.ndarray, bytes] | None] = queue.SimpleQueue()
        self._encoding: _Process | None = None
        self._checker: _Process | None = None
        self._checks_all_sent = False  # the checker was told no more messages come: it owes its end
        self._ending = False  # `shutdown` ends the helpers: no note on their end
        self._threads: list[threading.Thread] = []
        source = _SOURCE
        encoding = _Process.start("PNG helper process", _helper_command(len(source)) if source else None)
        if encoding is None:
            self._here = True
            return
        self._encoding = encoding
        feeding = (source, self._inputs, _write_submission)
        self._start(threading.Thread(target=encoding.feed, args=feeding, daemon=True, name="png-feed"))
        # Its end is when the helper's end is known (see _refused).
        self._reading = threading.Thread(target=self._read_messages, daemon=True, name="png-read")
        self._start(self._reading)
        self._checker = _Process.start("PNG checker process", _checker_command(len(source)))
        if self._checker is not None:
            self._checker_up = True
            feed = (source, self._to_check, _write_check)
            self._start(threading.Thread(target=self._checker.feed, args=feed, daemon=True, name="png-check-feed"))
            self._start(threading.Thread(target=self._read_verdicts, daemon=True, name="png-check-read"))

    def _start(self, thread: threading.Thread) -> None:
        self._threads.append(thread)
        thread.start()

    @property
    def _helper(self) -> subprocess.Popen | None:
        """The encoding helper's process, None where it never started."""
        return self._encoding.popen if self._encoding else None

    def submit(self, images: np.ndarray) -> Iterator[bytes]:
        """Starts encoding `images`; returns an iterator over their PNGs."""
        return itertools.chain.from_iterable(self.submit_in_batches(images))

    def submit_in_batches(self, images: np.ndarray) -> Iterator[list[bytes]]:
        """As `submit`, the PNGs in lists of up to 4,096 as they come: a consumer that hands on 800,000 of them
        saves a Python step per PNG."""
        submission = _Submission(as_grayscale_batch(images))
        with self._lock:
            if self._closed:
                raise ValueError("submit after close")
            if not len(submission.images):  # nothing to ask: the helper would answer no message for it
                return iter(())
            if self._here:
                submission.batches.put(_ENCODE_HERE)
            elif self._failure is not None:
                submission.batches.put(EncoderError(self._failure))
            else:
                self._unanswered.append(submission)
                self._inputs.put(submission)
        return self._results(submission)

    def close(self) -> None:
        """No more submissions: the helper exits once it has answered the last one."""
        with self._lock:
            closed, self._closed = self._closed, True
        if not closed:
            self._inputs.put(None)

    def shutdown(self, seconds: float = _EXIT_SECONDS) -> None:
        """Ends both helpers and waits for them and for the threads that serve them: the preparation is over,
        done or failed. Helpers that answered everything have exited or exit within `seconds` of being told no
        more comes; any other (a failed preparation's, a hung one) is killed. Consumers still waiting raise."""
        self._ending = True
        self.close()
        deadline = time.monotonic() + seconds
        for process in (self._encoding, self._checker):
            if process is None:
                continue
            try:
                process.popen.wait(max(0.0, deadline - time.monotonic()) if not self._owes() else 0)
            except subprocess.TimeoutExpired:
                _kill_group(process.popen)
                process.popen.wait()
            _kill_group(process.popen)  # what it started, if it exited on its own and left them
        for thread in self._threads:
            thread.join(max(1.0, deadline - time.monotonic()))

    def _results(self, submission: _Submission) -> Iterator[list[bytes]]:
        delivered = 0
        while delivered < len(submission.images):
            batch = submission.batches.get()
            if batch is _ENCODE_HERE:
                yield from _encode_here(submission.images[delivered:])
                return
            if isinstance(batch, BaseException):
                raise EncoderError(str(batch))  # a fresh one per consumer
            number, pngs = batch
            self._check_through(number)
            yield pngs
            delivered += len(pngs)

    def _check_through(self, number: int) -> None:
        """Returns once every message up to `number` is known to decode to its images; raises EncoderError at a lie.

        In arrival order, so that a consumer never hands on PNGs that came after a lie in another split: every
        split fails then, as when the helper dies. The checker process's verdicts come in that order; without
        it, the consumer checks here.
        """
        with self._checks:
            while self._refusal is None and self._checked <= number:
                if self._checker_up:
                    self._checks.wait()
                    continue
                images, pngs, _ = self._unchecked.pop(self._checked)
                if (bad := decodes_to(pngs, images)) is not None:
                    self._refuse(_undecodable(bad, self._checked))
                else:
                    self._checked += 1
            refused = self._refusal is not None
        if refused:
            raise EncoderError(self._refused())

    def _refuse(self, what: str) -> None:
        """A lie was found (the caller holds _checks): the helper is killed if it still runs; the reading thread
        then reports it."""
        self._refusal = what
        self._checks.notify_all()
        if self._helper.poll() is None:
            _kill_group(self._helper)  # only a signal: the reading thread owns the pipes and reaps the helper

    def _refused(self) -> str:
        """The failure to report for a refusal: the reading thread's, naming the helper and its exit status."""
        self._reading.join(_EXIT_SECONDS + 5)
        with self._lock:
            if self._failure is None:  # the helper had sent everything and exited before the lie was found
                self._failure = self._encoding.describe(self._refusal)
            return self._failure

    def _read_messages(self) -> None:
        """Routes each message, its framing checked, to its submission; on any failure, tells every waiting one.

        This thread is the watchdog: whatever ends it (end of output, a broken promise, a stall,
        a bug here) leaves no consumer waiting.
        """
        try:
            self._read_all_messages()
        finally:
            with self._checks:
                self._checks_all_sent = True  # from now on its silence counts: it owes answers, then its end
            self._to_check.put(None)  # the checker exits once it has answered what it was sent

    def _read_all_messages(self) -> None:
        reader = _Reader(self._helper.stdout.fileno(), self._stall_seconds, self._owes)
        try:
            self._encoding.greeted(reader, _GREETING)
        except _Broken as broken:
            self._encode_here_instead(str(broken))
            return
        except BaseException as error:  # a bug here must not leave a consumer waiting; re-raised
            self._encode_here_instead(f"could not be read ({error!r})")
            raise
        try:
            while (header := reader.read(_MESSAGE.size, allow_end=True)) is not None:
                self._route(reader, *_MESSAGE.unpack(header))
            self._helper.wait(_EXIT_SECONDS)
            with self._lock:
                owed = sum(len(sub.images) - sub.received for sub in self._unanswered)
                closed = self._closed
            if owed or not closed or self._helper.returncode != 0:
                raise _Broken(f"ended its output owing {owed} PNGs" + ("" if closed else ", before it was told to"))
            self._encoding.finish()
        except (_Broken, subprocess.TimeoutExpired) as broken:
            self._fail(str(broken))
        except BaseException as error:  # a bug here must not leave a consumer waiting; re-raised
            self._fail(f"could not be read ({error!r})")
            raise

    def _owes(self) -> bool:
        with self._lock:
            return bool(self._unanswered)

    def _route(self, reader: _Reader, magic: bytes, count: int, length: int, body_crc: int, pixels_crc: int) -> None:
        """Reads one message's body and hands its PNGs to the submission it answers, after checking its framing."""
        if magic != _MESSAGE_MAGIC or not 0 < count <= _BATCH:
            raise _Broken(f"sent a malformed message header (magic {magic!r}, count {count})")
        with self._lock:
            submission = self._unanswered[0] if self._unanswered else None
        if submission is None:
            raise _Broken(f"sent a message of {count} PNGs that nobody asked for")
        start = submission.received
        if start + count > len(submission.images):
            raise _Broken(f"sent {start + count} PNGs for a submission of {len(submission.images)}")
        body = reader.read(length)
        if zlib_ng.crc32(body) != body_crc:
            raise _Broken(f"sent a message of {length} bytes whose CRC-32 does not match")
        if (pngs := split_message(body, count)) is None:
            raise _Broken(f"announced {count} PNGs in {length} bytes but sent other lengths")
        images = submission.images[start : start + count]
        if zlib_ng.crc32(images.data) != pixels_crc:
            raise _Broken(f"encoded other pixels than images {start}..{start + count - 1} of a submission")
        # Each PNG is checked (by the checker process, or else by the consumer) before it is handed on.
        number = self._arrived
        with self._checks:
            self._unchecked[number] = (images, pngs, (body_crc, pixels_crc))
            if self._checker_up:
                self._to_check.put((number, images, body))
            self._arrived += 1
        submission.received += count
        submission.batches.put((number, pngs))
        if submission.received == len(submission.images):
            with self._lock:
                self._unanswered.popleft()

    def _read_verdicts(self) -> None:
        """Takes the checker's verdicts, each bound to the bytes it checked; if it fails, consumers check instead.

        The checker only saves this process work: a checker that dies, stalls or says anything out of
        place is ended, and the messages it did not answer are checked here. A message it calls bad, or
        whose pixels' CRC-32 it gives otherwise, is checked here again before it fails anything, so a
        faulty checker cannot fail a good preparation.
        """
        checker = self._checker
        reader = _Reader(checker.popen.stdout.fileno(), self._stall_seconds, self._checker_owes)
        try:
            checker.greeted(reader, _CHECKER_GREETING)
            while (verdict := reader.read(_VERDICT.size, allow_end=True)) is not None:
                self._take_verdict(*_VERDICT.unpack(verdict))
            checker.popen.wait(_EXIT_SECONDS)
            if not self._checker_answered_all() or checker.popen.returncode != 0:
                raise _Broken("ended its output before it had answered every message")
            checker.finish()
            self._check_here()  # nothing is left to check: it answered every message
        except (_Broken, subprocess.TimeoutExpired) as broken:
            self._check_here_instead(str(broken))
        except BaseException as error:  # a bug here must not leave a consumer waiting; re-raised
            self._check_here_instead(f"could not be read ({error!r})")
            raise

    def _take_verdict(self, magic: bytes, number: int, bad: int, body_crc: int, pixels_crc: int) -> None:
        with self._checks:
            if self._refusal is not None:  # a lie was found: later verdicts change nothing
                return
            if magic != _VERDICT_MAGIC or number != self._checked or number not in self._unchecked:
                raise _Broken(f"sent a malformed verdict (magic {magic!r}, message {number + 1})")
            images, pngs, (sent_body_crc, sent_pixels_crc) = self._unchecked[number]
            if body_crc != sent_body_crc:
                raise _Broken(f"checked other bytes than message {number + 1}")
            if bad == _ALL_DECODE and pixels_crc == sent_pixels_crc:
                del self._unchecked[number]
                self._checked += 1
                self._checks.notify_all()
            elif (found := decodes_to(pngs, images)) is not None:
                self._refuse(_undecodable(found, number))
            elif bad == _ALL_DECODE:
                raise _Broken(f"found other pixels in message {number + 1} than its PNGs decode to")
            else:
                raise _Broken(f"called PNG {bad + 1} of message {number + 1} bad, which decodes to its image")

    def _checker_answered_all(self) -> bool:
        """Whether the checker owes no verdict: it was told that no more messages come and answered each one (or
        a lie found made the rest moot). Not `_checker_owes`, which is true from that telling on: a checker that
        had answered everything and exited was reported as failed, and every preparation said so on stderr."""
        with self._checks:
            return self._checks_all_sent and (self._checked == self._arrived or self._refusal is not None)

    def _checker_owes(self) -> bool:
        """Whether the checker's silence counts: it owes a verdict, or (told that nothing more comes) its end.
        Without the latter, a checker that never greets nor exits was waited for for ever."""
        with self._checks:
            return self._checks_all_sent or (self._checked < self._arrived and self._refusal is None)

    def _check_here_instead(self, what: str) -> None:
        """The checker failed: consumers check every message it has not answered, in this process."""
        instead = "Checking PNGs in this process instead."
        _give_up_on(self._checker, what, instead, self._check_here, quiet=self._ending)

    def _check_here(self) -> None:
        with self._checks:
            self._checker_up = False
            self._checks.notify_all()

    def _encode_here_instead(self, what: str) -> None:
        """The helper never started: every submission, waiting or to come, is encoded in this process."""
        instead = "Encoding PNGs in this process instead."
        _give_up_on(self._encoding, what, instead, self._encode_here, quiet=self._ending)

    def _encode_here(self) -> None:
        with self._lock:
            self._here = True
            while self._unanswered:
                self._unanswered.popleft().batches.put(_ENCODE_HERE)

    def _fail(self, what: str) -> None:
        """The helper failed after it started: every waiting submission, and every later one, raises."""
        with self._checks:
            what = self._refusal or what  # killed for a lie found in a PNG: the lie is the news
        failure = self._encoding.end(what)
        with self._lock:
            self._failure = failure
            while self._unanswered:
                self._unanswered.popleft().batches.put(EncoderError(self._failure))


def _give_up_on(process: _Process, what: str, instead: str, fall_back, quiet: bool = False) -> None:
    """Ends a failed helper, says so and what happens instead, then calls `fall_back`. The note first, so that
    it is out before the consumers go on; they go on whatever happens to it. `quiet`: ended by `shutdown`."""
    try:
        ended = process.end(what)
        if not quiet:
            _note(f"{ended}\n{instead}")
    finally:
        fall_back()


def _note(text: str) -> None:
    """Says on stderr what changed; a closed or broken stderr (`... 2>&1 | head`) changes nothing else."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _undecodable(index: int, number: int) -> str:
    return f"sent a PNG that does not decode to its image (PNG {index + 1} of its message {number + 1})"


def _write_submission(stdin, submission: _Submission) -> None:
    stdin.write(_SUBMISSION.pack(_SUBMISSION_MAGIC, *submission.images.shape))
    stdin.write(submission.images.data)


def _write_check(stdin, item: tuple[int, np.ndarray, bytes]) -> None:
    number, images, body = item
    stdin.write(_CHECK.pack(_CHECK_MAGIC, number, *images.shape, len(body)))
    stdin.write(body)


class _Reader:
    """Exact reads from a helper's output, with a limit on silence while it owes an answer.

    It reads ahead, up to _READ_AHEAD bytes a call, from a pipe made as large (`_Process.start`): a message
    then takes one wake-up of the reading thread instead of one per 64 KiB, and each wake-up waits for the
    GIL that TFDS's writer holds. With 1,024 PNGs a message (4,096 since, see _BATCH), that writer waited for the GIL
    12,700 times in a full-size EMNIST byclass prepare, and the thread reading the helper's output woke 13,000 times
    (2026-11-26).
    """

    def __init__(self, fd: int, stall_seconds: float, owes) -> None:
        self._fd, self._stall_seconds, self._owes = fd, stall_seconds, owes
        self._ahead = bytearray()  # read, not yet asked for

    def read(self, size: int, allow_end: bool = False) -> bytes | None:
        """Exactly `size` bytes; None at a clean end of output if `allow_end`; else _Broken."""
        # The silence that counts starts at the last byte read, or later, when an answer became owed: looked
        # at a few times per limit, so a request made just before a limit ran out is given a whole one.
        silent_since = time.monotonic()
        while len(self._ahead) < size:
            ready, _, _ = select.select([self._fd], [], [], min(1.0, self._stall_seconds / 4))
            if not ready:
                if not self._owes():
                    silent_since = time.monotonic()
                elif time.monotonic() - silent_since >= self._stall_seconds:
                    raise _Broken(f"sent nothing for {self._stall_seconds:g} s while it owed an answer; killed")
                continue
            silent_since = time.monotonic()
            part = os.read(self._fd, max(size - len(self._ahead), _READ_AHEAD))
            if not part:
                if not self._ahead and allow_end:
                    return None
                raise _Broken(f"ended its output {len(self._ahead)} bytes into a {size}-byte read")
            self._ahead += part
        data = bytes(self._ahead[:size])
        del self._ahead[:size]
        return data


def _enlarge_pipe(fd: int) -> None:
    """Makes the pipe at `fd` hold _READ_AHEAD bytes where Linux lets it (fs.pipe-max-size); else leaves it.

    Both ways: at 64 KiB, the 12.8 MB of a submission crossed in 200 pieces, each a wake-up of the helper on
    another core and of the thread writing to it (in a VM, each wake-up on another core costs an interrupt).
    """
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ_AHEAD)
    except (ImportError, AttributeError, OSError):  # not Linux, not a pipe, or above the limit: 64 KiB it is
        pass


def _read_exactly(stream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        sys.exit(f"PNG helper: {what} was cut short ({len(data)} of {size} bytes)")
    return data


def serve() -> None:
    """The encoding helper: greets, then reads (count, height, width, pixels) submissions and writes PNG messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then closes our stdin
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(_GREETING)
    stdout.flush()
    while header := stdin.read(_SUBMISSION.size):
        magic, count, height, width = _SUBMISSION.unpack(header)
        if magic != _SUBMISSION_MAGIC:
            sys.exit(f"PNG helper: malformed submission header {header!r}")
        pixels = _read_exactly(stdin, count * height * width, "a submission")
        images = np.frombuffer(pixels, np.uint8).reshape(count, height, width)
        for start in range(0, count, _BATCH):
            batch = images[start : start + _BATCH]
            pngs = encode_batch(batch)
            body = b"".join(_LENGTH.pack(len(png)) + png for png in pngs)
            header = _MESSAGE.pack(_MESSAGE_MAGIC, len(pngs), len(body), zlib_ng.crc32(body), zlib_ng.crc32(batch.data))
            stdout.write(header + body)
            stdout.flush()


def serve_checks() -> None:
    """The checking helper: greets, then reads (message number, shape, body) and writes one verdict for each:
    the index of its first PNG that is not this module's encoding of an image (or _ALL_DECODE), the CRC-32 of
    the very body it checked and that of the pixels its PNGs decode to, which the parent compares with its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(_CHECKER_GREETING)
    stdout.flush()
    while header := stdin.read(_CHECK.size):
        magic, number, count, height, width, length = _CHECK.unpack(header)
        if magic != _CHECK_MAGIC:
            sys.exit(f"PNG checker: malformed header {header!r}")
        body = _read_exactly(stdin, length, "a message")
        pngs = split_message(body, count)
        bad, pixels_crc = (0, 0) if pngs is None else decoded_pixels_crc(pngs, height, width)
        verdict = _ALL_DECODE if bad is None else bad
        stdout.write(_VERDICT.pack(_VERDICT_MAGIC, number, verdict, zlib_ng.crc32(body), pixels_crc))
        stdout.flush()
