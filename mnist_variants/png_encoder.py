"""PngEncoder: the preparation's PNGs, encoded and checked by two helper processes on other cores, in order.

Why its own module: it schedules; the PNG form is `png_codec`'s, what crosses the pipes is `png_protocol`'s, how
a helper starts and ends is `helper_processes`'s. Its one reason to change: who encodes and checks which images
when, and what the builder is told when a helper fails.

Why a process: TFDS's writer keeps this process's GIL busy while it ingests examples, and threads
that call zlib then wait for the GIL after every image. Measured on a full-size Fashion-MNIST
prepare, same encoder settings, two runs each (2026-11-22): a thread pool took 5.0 and 5.2 s, the
helper process 4.3 and 4.4 s, against 3.2 and 3.4 s for the floor. Encoding cost 23.7 us of CPU per
image then (1.7 s for Fashion-MNIST's 70,000; 5.8 us with zlib-ng since, see png_codec.COMPRESSION_LEVEL, 4.4 us
with a smaller window, see png_codec.window_bits), which the helper takes off this process. On a quiet machine
(2026-11-25), a full-size MNIST prepare took 10.8 and 11.8 s with the helper and 13.4 and 14.3 s encoding in this
process. A thread pool was not timed again since; if one ever shows no loss against the helper, the helper should go.

Simpler designs and what they cost: threads (or `concurrent.futures.ThreadPoolExecutor`) fight TFDS's writer
for the GIL, the figure above; why not `multiprocessing`, and how the helpers start and end, is
`helper_processes`'s docstring.

What can go wrong with it, and what happens then:
- It cannot start (frozen application, no interpreter, numpy not found, anything that
  ends it before its greeting): encoding happens in this process, same bytes, slower.
- It dies or stalls later (SIGKILL, out of memory, exit): every split still waiting
  raises `EncoderError`, naming the helper and its exit status, within seconds.
- It writes too little, too much or garbage: every message is framed (magic, count,
  length, CRC-32 of the body and of the source pixels) and every PNG is checked to
  decode to its source pixels before it is handed on; a broken promise is an `EncoderError`.

Who checks the PNGs: a second helper, the checker, started the same way. It is sent each message as
it arrived and answers one verdict per message in that order: whether every PNG has `png_codec`'s
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
fault in `png_codec`'s `_inflate` or `decoded_pixels_crc`, code this process runs too, which the tests prove
against damaged PNGs, or PNGs that decode to other pixels with the same CRC-32 over their message, which a
random fault gives once in 2**32 (the framing of every message trusts CRC-32 the same way).
"""

from __future__ import annotations

import collections
import itertools
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import IO

import numpy as np
from zlib_ng import zlib_ng

from mnist_variants import helper_processes, png_codec, png_protocol
from mnist_variants.helper_processes import Broken


class EncoderError(RuntimeError):
    """The PNG helper process died, stalled or broke the protocol; the message names it and its exit status."""


# The program both helpers run: the codec and the protocol, read once, at import (helper_processes.program).
_PROGRAM = helper_processes.program([png_codec, png_protocol])


def _helper_command(program_length: int) -> list[str] | None:
    """The encoding helper's command line (see `png_protocol.serve`)."""
    return helper_processes.python_command(program_length, "serve")


def _checker_command(program_length: int) -> list[str] | None:
    """The checking helper's command line (see `png_protocol.serve_checks`)."""
    return helper_processes.python_command(program_length, "serve_checks")


def _encode_here(images: np.ndarray) -> Iterator[list[bytes]]:
    for start in range(0, len(images), png_protocol.BATCH):
        yield png_codec.encode_batch(images[start : start + png_protocol.BATCH])


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

    def __init__(self, stall_seconds: float = helper_processes.STALL_SECONDS) -> None:
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
        self._encoding: helper_processes.Process | None = None
        self._checker: helper_processes.Process | None = None
        self._checks_all_sent = False  # the checker was told no more messages come: it owes its end
        self._ending = False  # `shutdown` ends the helpers: no note on their end
        self._threads: list[threading.Thread] = []
        source = _PROGRAM
        if source is None:
            helper_processes.note(
                "The PNG helpers cannot start: the source of mnist_variants' png_codec or png_protocol cannot be read"
                " (an install without .py files?).\nEncoding PNGs in this process instead (the same bytes, slower)."
            )
        command = _helper_command(len(source)) if source else None
        encoding = helper_processes.Process.start("PNG helper process", command)
        if encoding is None:
            self._here = True
            return
        self._encoding = encoding
        feeding = (source, self._inputs, _write_submission)
        self._start(threading.Thread(target=encoding.feed, args=feeding, daemon=True, name="png-feed"))
        # Its end is when the helper's end is known (see _refused).
        self._reading = threading.Thread(target=self._read_messages, daemon=True, name="png-read")
        self._start(self._reading)
        self._checker = helper_processes.Process.start("PNG checker process", _checker_command(len(source)))
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
        submission = _Submission(png_codec.as_grayscale_batch(images))
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

    def shutdown(self, seconds: float = helper_processes.EXIT_SECONDS) -> None:
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
                helper_processes.kill_group(process.popen)
                process.popen.wait()
            helper_processes.kill_group(process.popen)  # what it started, if it exited on its own and left them
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
                if (bad := png_codec.decodes_to(pngs, images)) is not None:
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
            helper_processes.kill_group(
                self._helper
            )  # only a signal: the reading thread owns the pipes and reaps the helper

    def _refused(self) -> str:
        """The failure to report for a refusal: the reading thread's, naming the helper and its exit status."""
        self._reading.join(helper_processes.EXIT_SECONDS + 5)
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
        reader = helper_processes.Reader(self._helper.stdout.fileno(), self._stall_seconds, self._owes)
        try:
            self._encoding.greeted(reader, png_protocol.GREETING)
        except Broken as broken:
            self._encode_here_instead(str(broken))
            return
        except BaseException as error:  # a bug here must not leave a consumer waiting; re-raised
            self._encode_here_instead(f"could not be read ({error!r})")
            raise
        try:
            while (header := reader.read(png_protocol.MESSAGE.size, allow_end=True)) is not None:
                self._route(reader, *png_protocol.MESSAGE.unpack(header))
            self._helper.wait(helper_processes.EXIT_SECONDS)
            with self._lock:
                owed = sum(len(sub.images) - sub.received for sub in self._unanswered)
                closed = self._closed
            if owed or not closed or self._helper.returncode != 0:
                raise Broken(f"ended its output owing {owed} PNGs" + ("" if closed else ", before it was told to"))
            self._encoding.finish()
        except (Broken, subprocess.TimeoutExpired) as broken:
            self._fail(str(broken))
        except BaseException as error:  # a bug here must not leave a consumer waiting; re-raised
            self._fail(f"could not be read ({error!r})")
            raise

    def _owes(self) -> bool:
        with self._lock:
            return bool(self._unanswered)

    def _route(
        self, reader: helper_processes.Reader, magic: bytes, count: int, length: int, body_crc: int, pixels_crc: int
    ) -> None:
        """Reads one message's body and hands its PNGs to the submission it answers, after checking its framing."""
        if magic != png_protocol.MESSAGE_MAGIC or not 0 < count <= png_protocol.BATCH:
            raise Broken(f"sent a malformed message header (magic {magic!r}, count {count})")
        with self._lock:
            submission = self._unanswered[0] if self._unanswered else None
        if submission is None:
            raise Broken(f"sent a message of {count} PNGs that nobody asked for")
        start = submission.received
        if start + count > len(submission.images):
            raise Broken(f"sent {start + count} PNGs for a submission of {len(submission.images)}")
        body = reader.read(length)
        if zlib_ng.crc32(body) != body_crc:
            raise Broken(f"sent a message of {length} bytes whose CRC-32 does not match")
        if (pngs := png_protocol.split_message(body, count)) is None:
            raise Broken(f"announced {count} PNGs in {length} bytes but sent other lengths")
        images = submission.images[start : start + count]
        if zlib_ng.crc32(images.data) != pixels_crc:
            raise Broken(f"encoded other pixels than images {start}..{start + count - 1} of a submission")
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
        reader = helper_processes.Reader(checker.popen.stdout.fileno(), self._stall_seconds, self._checker_owes)
        try:
            checker.greeted(reader, png_protocol.CHECKER_GREETING)
            while (verdict := reader.read(png_protocol.VERDICT.size, allow_end=True)) is not None:
                self._take_verdict(*png_protocol.VERDICT.unpack(verdict))
            checker.popen.wait(helper_processes.EXIT_SECONDS)
            if not self._checker_answered_all() or checker.popen.returncode != 0:
                raise Broken("ended its output before it had answered every message")
            checker.finish()
            self._check_here()  # nothing is left to check: it answered every message
        except (Broken, subprocess.TimeoutExpired) as broken:
            self._check_here_instead(str(broken))
        except BaseException as error:  # a bug here must not leave a consumer waiting; re-raised
            self._check_here_instead(f"could not be read ({error!r})")
            raise

    def _take_verdict(self, magic: bytes, number: int, bad: int, body_crc: int, pixels_crc: int) -> None:
        with self._checks:
            if self._refusal is not None:  # a lie was found: later verdicts change nothing
                return
            if magic != png_protocol.VERDICT_MAGIC or number != self._checked or number not in self._unchecked:
                raise Broken(f"sent a malformed verdict (magic {magic!r}, message {number + 1})")
            images, pngs, (sent_body_crc, sent_pixels_crc) = self._unchecked[number]
            if body_crc != sent_body_crc:
                raise Broken(f"checked other bytes than message {number + 1}")
            if bad == png_protocol.ALL_DECODE and pixels_crc == sent_pixels_crc:
                del self._unchecked[number]
                self._checked += 1
                self._checks.notify_all()
            elif (found := png_codec.decodes_to(pngs, images)) is not None:
                self._refuse(_undecodable(found, number))
            elif bad == png_protocol.ALL_DECODE:
                raise Broken(f"found other pixels in message {number + 1} than its PNGs decode to")
            else:
                raise Broken(f"called PNG {bad + 1} of message {number + 1} bad, which decodes to its image")

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
        helper_processes.give_up_on(self._checker, what, instead, self._check_here, quiet=self._ending)

    def _check_here(self) -> None:
        with self._checks:
            self._checker_up = False
            self._checks.notify_all()

    def _encode_here_instead(self, what: str) -> None:
        """The helper never started: every submission, waiting or to come, is encoded in this process."""
        instead = "Encoding PNGs in this process instead."
        helper_processes.give_up_on(self._encoding, what, instead, self._encode_here, quiet=self._ending)

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


def _undecodable(index: int, number: int) -> str:
    return f"sent a PNG that does not decode to its image (PNG {index + 1} of its message {number + 1})"


def _write_submission(stdin: IO[bytes], submission: _Submission) -> None:
    png_protocol.write_submission(stdin, submission.images)


def _write_check(stdin: IO[bytes], item: tuple[int, np.ndarray, bytes]) -> None:
    png_protocol.write_check(stdin, *item)
