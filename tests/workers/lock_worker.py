"""Takes `locking.hold` on a lock file and reports when it got it and when it let go.

    python lock_worker.py LOCK_FILE [--seconds S] [--threads N] [--times K]

Each of N threads takes the lock K times and holds it S seconds. Lines printed:
`ENTER <thread> <held> <monotonic time>` and `LEAVE <thread> <monotonic time>` (CLOCK_MONOTONIC is
the same clock in every process), and the filelock version first. Run it under faults.py to
make `flock` fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from pathlib import Path

import filelock

# locking.py by its path: importing the package would import TFDS, seconds per worker for nothing.
_spec = importlib.util.spec_from_file_location(
    "mnist_variants_locking", Path(__file__).resolve().parents[2] / "mnist_variants" / "locking.py"
)
locking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(locking)


def say(line: str) -> None:
    """The line and its end in one write: print() writes them apart, and a waiting thread's line
    (locking's) once fell between them ('1168.032567184Waiting' in a CI run under load)."""
    print(line + "\n", end="", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lock_file")
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--times", type=int, default=1)
    args = parser.parse_args()
    print(f"FILELOCK {filelock.__version__}", flush=True)

    def take(number: int) -> None:
        for _ in range(args.times):
            with locking.hold(args.lock_file, f"Waiting {number}") as held:
                say(f"ENTER {number} {held} {time.monotonic()}")
                time.sleep(args.seconds)
                say(f"LEAVE {number} {time.monotonic()}")

    threads = [threading.Thread(target=take, args=(number,)) for number in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
