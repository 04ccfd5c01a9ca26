"""A PNG checker that fails in one way, for the tests of mnist_variants/png.py.

    python png_checker_faults.py MODE SOURCE_LENGTH

It reads the module source the encoder sends, as the real checker does, and then, by MODE:
no_start (exits before its greeting), or it serves with the real code and, at its second
verdict: sigkill (half a verdict, then SIGKILL to itself), exit_early (exit 3 instead), stall
(sleeps instead), says_bad (calls the first PNG bad, which is not), other_bytes (a wrong CRC-32
of the body it checked), out_of_order (the verdict of another message).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import types

DAMAGED_VERDICT = 2


def main() -> None:
    mode, length = sys.argv[1], int(sys.argv[2])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    source = stdin.read(length)
    if mode == "no_start":
        sys.exit("ModuleNotFoundError: No module named 'numpy' (made up by the test)")
    png = {"__name__": "_png_checker_faults"}
    exec(compile(source, "png.py", "exec"), png)  # the real checker and protocol
    sys.stdout = types.SimpleNamespace(buffer=Failing(stdout, mode, png), flush=stdout.flush)
    png["serve_checks"]()


class Failing:
    """Passes the checker's verdicts on, and fails at its DAMAGED_VERDICT-th as MODE says."""

    def __init__(self, out, mode: str, png: dict) -> None:
        self.out, self.mode, self.png, self.verdicts = out, mode, png, 0

    def flush(self) -> None:
        self.out.flush()

    def write(self, data: bytes) -> None:
        if data == self.png["_CHECKER_GREETING"]:
            self.out.write(data)
            return
        self.verdicts += 1
        if self.verdicts != DAMAGED_VERDICT:
            self.out.write(data)
            return
        verdict = self.png["_VERDICT"]
        magic, number, bad, body_crc, pixels_crc = verdict.unpack(data)
        if self.mode == "sigkill":
            self.out.write(data[: len(data) // 2])
            self.out.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "exit_early":
            self.out.flush()
            os._exit(3)
        if self.mode == "stall":
            self.out.flush()
            time.sleep(600)
        if self.mode == "says_bad":
            data = verdict.pack(magic, number, 0, body_crc, pixels_crc)
        elif self.mode == "other_bytes":
            data = verdict.pack(magic, number, bad, body_crc ^ 1, pixels_crc)
        elif self.mode == "out_of_order":
            data = verdict.pack(magic, number + 1, bad, body_crc, pixels_crc)
        self.out.write(data)


if __name__ == "__main__":
    main()
