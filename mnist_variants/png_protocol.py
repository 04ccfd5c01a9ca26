"""The framed protocol between the preparing process and its two PNG helper processes, and the helpers' own loops.

Why its own module: it is the one part both sides run. The parent (`png_encoder`) writes submissions
and checks every message and verdict it reads against these structures; the helpers run `serve` and
`serve_checks` in a plain interpreter that is handed this module's source and `png_codec`'s
(`helper_processes.program`), never TFDS or the rest of this package. So it imports nothing from this
package but `png_codec`. Its one reason to change: what crosses the pipes.

Parent -> encoding helper: the program's source (its length is argv[1]), then submissions, each a
header and count * height * width pixels. Encoding helper -> parent: a greeting once booted, then
one message per batch of up to BATCH images, in submission order: a header, then each PNG as
length + bytes. Every field is checked on arrival (see `png_encoder.PngEncoder._route`).
Parent -> checker: the source, then per message a header and its body as the helper sent it.
Checker -> parent: a greeting, then one verdict per message, in the order they were sent.
"""

from __future__ import annotations

import signal
import struct
import sys
from typing import BinaryIO

import numpy as np
from zlib_ng import zlib_ng

from mnist_variants import png_codec

# The CRC-32s of whole messages and of their pixels are zlib-ng's (the same values as zlib's): 1.1 ms for 12.8 MB
# of pixels against zlib's 6.2 ms (2026-11-26); each image's pixels pass three of them (helper, checker, parent).
# Images per message from the helper. Each message wakes three threads of the parent (reading it, passing it to the
# checker, reading the verdict), and each wake-up takes the GIL from TFDS's writer. With 4,096 instead of 1,024, in
# full-size EMNIST byclass prepares (2026-11-26): the writer's thread woke for the GIL about 1,800 times instead of
# 2,700 and sat 4.3 s instead of 5.8 s in the run queue. The wall time showed no difference beside the code before
# (3 rounds: 69.8 s against 72.2 s, the floor at 51.7 to 58.9 s). 16,384 woke it 1,150 times but delays the first
# PNGs (0.6 s).
BATCH = 4096

SUBMISSION = struct.Struct("<4sIII")  # magic, count, height, width
SUBMISSION_MAGIC = b"MVPs"
GREETING = b"MVPNG-1\n"
MESSAGE = struct.Struct("<4sIIII")  # magic, count of PNGs, body length, CRC-32 of the body, CRC-32 of the pixels
MESSAGE_MAGIC = b"MVPm"
LENGTH = struct.Struct("<I")
CHECK = struct.Struct("<4sIIIII")  # magic, number of the message, count, height, width, body length
CHECK_MAGIC = b"MVPc"
CHECKER_GREETING = b"MVPNG-check-2\n"
# magic, number, first bad PNG or ALL_DECODE, CRC-32 of the body and of the pixels its PNGs decode to
VERDICT = struct.Struct("<4sIIII")
VERDICT_MAGIC = b"MVPv"
ALL_DECODE = 0xFFFFFFFF


def split_message(body: bytes, count: int) -> list[bytes] | None:
    """The PNGs of a message body (each as length + bytes), or None unless it holds exactly `count` of them."""
    pngs, position = [], 0
    while position + LENGTH.size <= len(body):
        (size,) = LENGTH.unpack_from(body, position)
        pngs.append(body[position + LENGTH.size : position + LENGTH.size + size])
        position += LENGTH.size + size
    return pngs if len(pngs) == count and position == len(body) else None


def write_submission(stdin: BinaryIO, images: np.ndarray) -> None:
    """Parent -> encoding helper: a (count, height, width) uint8 C-contiguous array."""
    stdin.write(SUBMISSION.pack(SUBMISSION_MAGIC, *images.shape))
    stdin.write(images.data)


def write_check(stdin: BinaryIO, number: int, images: np.ndarray, body: bytes) -> None:
    """Parent -> checker: message `number`, the shape of the images it encodes, and its body as it arrived."""
    stdin.write(CHECK.pack(CHECK_MAGIC, number, *images.shape, len(body)))
    stdin.write(body)


def _read_exactly(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        sys.exit(f"PNG helper: {what} was cut short ({len(data)} of {size} bytes)")
    return data


def serve() -> None:
    """The encoding helper: greets, then reads (count, height, width, pixels) submissions and writes PNG messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then closes our stdin
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(GREETING)
    stdout.flush()
    while header := stdin.read(SUBMISSION.size):
        magic, count, height, width = SUBMISSION.unpack(header)
        if magic != SUBMISSION_MAGIC:
            sys.exit(f"PNG helper: malformed submission header {header!r}")
        pixels = _read_exactly(stdin, count * height * width, "a submission")
        images = np.frombuffer(pixels, np.uint8).reshape(count, height, width)
        for start in range(0, count, BATCH):
            batch = images[start : start + BATCH]
            pngs = png_codec.encode_batch(batch)
            body = b"".join(LENGTH.pack(len(png)) + png for png in pngs)
            header = MESSAGE.pack(MESSAGE_MAGIC, len(pngs), len(body), zlib_ng.crc32(body), zlib_ng.crc32(batch.data))
            stdout.write(header + body)
            stdout.flush()


def serve_checks() -> None:
    """The checking helper: greets, then reads (message number, shape, body) and writes one verdict for each:
    the index of its first PNG that is not `png_codec`'s encoding of an image (or ALL_DECODE), the CRC-32 of
    the very body it checked and that of the pixels its PNGs decode to, which the parent compares with its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(CHECKER_GREETING)
    stdout.flush()
    while header := stdin.read(CHECK.size):
        magic, number, count, height, width, length = CHECK.unpack(header)
        if magic != CHECK_MAGIC:
            sys.exit(f"PNG checker: malformed header {header!r}")
        body = _read_exactly(stdin, length, "a message")
        pngs = split_message(body, count)
        bad, pixels_crc = (0, 0) if pngs is None else png_codec.decoded_pixels_crc(pngs, height, width)
        verdict = ALL_DECODE if bad is None else bad
        stdout.write(VERDICT.pack(VERDICT_MAGIC, number, verdict, zlib_ng.crc32(body), pixels_crc))
        stdout.flush()
