"""Faults a test injects into a worker process: `flock` failing or behaving as on NFS, a misbehaving PNG helper.

    python faults.py [--flock ERRNO|posix] [--png_helper MODE] SCRIPT ARGS...

installs the faults, then runs SCRIPT (e.g. prepare_worker.py) with ARGS as its command line.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import runpy
import sys
from pathlib import Path

HELPER = Path(__file__).with_name("png_helper_faults.py")


def break_flock(mode: str) -> None:
    """`flock` fails with errno `mode` (ENOLCK, ENOSYS, EOPNOTSUPP), or ("posix") takes POSIX locks, as
    Linux's NFS client does: they do not exclude threads of one process and any close drops them."""
    if mode == "posix":
        fcntl.flock = fcntl.lockf
        return
    code = getattr(errno, mode)

    def flock(fd: int, operation: int) -> None:
        raise OSError(code, f"{errno.errorcode[code]} (made to fail by the test)")

    fcntl.flock = flock


def break_png_helper(mode: str) -> None:
    """The PNG encoder starts tests/workers/png_helper_faults.py MODE instead of its own helper."""
    from mnist_variants import png_encoder

    png_encoder._helper_command = lambda source_length: [sys.executable, str(HELPER), mode, str(source_length)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flock")
    parser.add_argument("--png_helper")
    parser.add_argument("script")
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.flock:
        break_flock(args.flock)
    if args.png_helper:
        break_png_helper(args.png_helper)
    sys.argv = [args.script, *args.arguments]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
