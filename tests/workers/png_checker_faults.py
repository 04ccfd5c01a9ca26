"""A PNG checker that fails in one way, for the tests of mnist_variants/png_encoder.py.

    python png_checker_faults.py MODE SOURCE_LENGTH

It starts as png_helper_faults.py does (same no_start), then, by MODE:
no_start (exits before its greeting), or it serves with the real code and, at its second
verdict: sigkill (half a verdict, then SIGKILL to itself), exit_early (exit 3 instead), exit_clean
(exit 0 instead, as if done), stall
(sleeps instead), says_bad (calls the first PNG bad, which is not), other_bytes (a wrong CRC-32
of the body it checked), other_pixels (a wrong CRC-32 of the pixels the PNGs decode to),
out_of_order (the verdict of another message).
"""

from __future__ import annotations

from png_helper_faults import Intercepting, serve_through

DAMAGED_VERDICT = 2


def main() -> None:
    serve_through(Failing, "serve_checks")


class Failing(Intercepting):
    """Fails at the checker's DAMAGED_VERDICT-th verdict as MODE says."""

    def alter(self, data: bytes, number: int) -> None:
        if number != DAMAGED_VERDICT:
            self.out.write(data)
            return
        verdict = self.png["VERDICT"]
        magic, message, bad, body_crc, pixels_crc = verdict.unpack(data)
        self.die(data)
        if self.mode == "says_bad":
            data = verdict.pack(magic, message, 0, body_crc, pixels_crc)
        elif self.mode == "other_bytes":
            data = verdict.pack(magic, message, bad, body_crc ^ 1, pixels_crc)
        elif self.mode == "other_pixels":
            data = verdict.pack(magic, message, bad, body_crc, pixels_crc ^ 1)
        elif self.mode == "out_of_order":
            data = verdict.pack(magic, message + 1, bad, body_crc, pixels_crc)
        self.out.write(data)


if __name__ == "__main__":
    main()
