"""A PNG helper that breaks its promise in one way, for the tests of mnist_variants/png_encoder.py.

    python png_helper_faults.py MODE SOURCE_LENGTH

It reads the program the encoder sends (png_codec and png_protocol, helper_processes.program), as the real
helper does, and then, by MODE:
no_start (exits before its greeting), not_python (echoes its input, as `cat` would), silent
(never greets), or it serves with the real code and damages its second message (or stops there):
sigkill (half a message, then SIGKILL to itself), short (50 bytes short, exit 0), cut_header
(10 bytes of a header, exit 0), exit_early (exit 3 instead), stall (sleeps instead), garbage
(random body), miscount (header announces one PNG less), extra (the message twice), wrong_pixels
(a PNG of another image, framed and CRC'd correctly), other_pixels (the pixels' CRC is wrong).
With MNIST_VARIANTS_TEST_HELPER_CUE=FILE it does so only once FILE exists.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
import types
import zlib

DAMAGED_MESSAGE = 2
# If set, the helper waits for this file to exist before it damages its message (a test's cue).
CUE_ENV = "MNIST_VARIANTS_TEST_HELPER_CUE"


def main() -> None:
    serve_through(Damaging, "serve")


def serve_through(wrapper: type[Intercepting], entry: str) -> None:
    """Reads the program as the real helpers do, then, unless MODE fails before that, runs its `entry`
    with the output going through `wrapper`."""
    mode, length = sys.argv[1], int(sys.argv[2])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    source = stdin.read(length)
    if mode == "no_start":
        sys.exit("ModuleNotFoundError: No module named 'numpy' (made up by the test)")
    if mode == "not_python":
        stdout.write(source[:200])
        stdout.flush()
        sys.exit(0)
    if mode == "silent":
        time.sleep(600)
    png = {"__name__": "_png_helper_faults"}
    exec(compile(source, "<helper program>", "exec"), png)  # the real helpers and protocol (png_protocol's names)
    sys.stdout = types.SimpleNamespace(buffer=wrapper(stdout, mode, png), flush=stdout.flush)
    png[entry]()


class Intercepting:
    """Passes a helper's output on; its greetings untouched, each later write to `alter` (numbered from 1)."""

    def __init__(self, out, mode: str, png: dict) -> None:
        self.out, self.mode, self.png, self.writes = out, mode, png, 0

    def flush(self) -> None:
        self.out.flush()

    def write(self, data: bytes) -> None:
        if data in (self.png["GREETING"], self.png["CHECKER_GREETING"]):
            self.out.write(data)
            return
        self.writes += 1
        self.alter(data, self.writes)

    def alter(self, data: bytes, number: int) -> None:
        raise NotImplementedError

    def die(self, data: bytes) -> None:
        """The ways to die that both helpers are tested with: sigkill (half of `data` first), exit_early, exit_clean
        (status 0 owing answers), stall."""
        if self.mode == "sigkill":
            self.out.write(data[: len(data) // 2])
            self.out.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "exit_early":
            self.out.flush()
            os._exit(3)
        if self.mode == "exit_clean":  # ends as if done, owing answers: only the count of answers shows it
            self.out.flush()
            os._exit(0)
        if self.mode == "stall":
            self.out.flush()
            time.sleep(600)


class Damaging(Intercepting):
    """Damages the helper's DAMAGED_MESSAGE-th message as MODE says."""

    def alter(self, data: bytes, number: int) -> None:
        if number != DAMAGED_MESSAGE:
            self.out.write(data)
            return
        cue = os.environ.get(CUE_ENV)
        deadline = time.monotonic() + 120
        while cue and not os.path.exists(cue) and time.monotonic() < deadline:
            time.sleep(0.05)
        header_size = self.png["MESSAGE"].size
        magic, count, length, body_crc, pixels_crc = self.png["MESSAGE"].unpack_from(data)
        body = data[header_size:]
        self.die(data)
        if self.mode in ("short", "cut_header"):
            self.out.write(data[:-50] if self.mode == "short" else data[:10])
            self.out.flush()
            os._exit(0)
        if self.mode == "garbage":
            data = data[:header_size] + os.urandom(len(body))
        elif self.mode == "miscount":
            data = self.png["MESSAGE"].pack(magic, count - 1, length, body_crc, pixels_crc) + body
        elif self.mode == "extra":
            data = data + data
        elif self.mode == "wrong_pixels":
            body = self.replace_first_png(body)
            data = self.png["MESSAGE"].pack(magic, count, len(body), zlib.crc32(body), pixels_crc) + body
        elif self.mode == "other_pixels":
            data = self.png["MESSAGE"].pack(magic, count, length, body_crc, pixels_crc ^ 1) + body
        self.out.write(data)

    def replace_first_png(self, body: bytes) -> bytes:
        """The body with its first PNG re-encoded from an image one pixel off: a valid PNG of other pixels."""
        (size,) = struct.unpack_from("<I", body)
        first = body[4 : 4 + size]
        width, height = struct.unpack_from(">II", first, 16)
        idat_length = int.from_bytes(first[33:37], "big")
        scanlines = bytearray(zlib.decompress(first[41 : 41 + idat_length]))
        scanlines[1] ^= 0xFF  # the first pixel
        import numpy as np

        image = np.frombuffer(bytes(scanlines), np.uint8).reshape(height, width + 1)[:, 1:]
        other = self.png["png_codec"].encode_batch(np.ascontiguousarray(image)[np.newaxis])[0]
        return struct.pack("<I", len(other)) + other + body[4 + size :]


if __name__ == "__main__":
    main()
