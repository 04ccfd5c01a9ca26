"""A worker of the pre-emption tests: prepares a dataset with a given data_dir and download dir, reports a digest.

    python download_worker.py NAME --data_dir D [--download_dir W] [--manual_dir M]

The last line printed is `RESULT {json}`: the split sizes and one sha256 over every feature of every split.
Interrupted (Ctrl-C), it prints `INTERRUPT_CAUGHT <time.monotonic()>` when the KeyboardInterrupt reaches it and
`REQUESTS_ENDED <time.monotonic()>` once no download thread is left, then raises it on: a test measures the
cancel itself, apart from the interpreter's exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import threading
import time

import registered_dummies  # noqa: F401 - the test's sources and checksums
import tensorflow_datasets as tfds

# The package's threads that make requests: the download pool's, each file's parts', each attempt's deadline.
DOWNLOAD_THREADS = ("download", "part-")


def say(line: str) -> None:
    """One write per line: the test parses it."""
    print(line + "\n", end="", flush=True)


def main() -> None:
    if signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}):  # a blocked mask is inherited too
        print("SIGINT was inherited blocked; unblocked", flush=True)
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is not signal.default_int_handler:
        # Python keeps an inherited SIG_IGN for SIGINT; a user's shell never hands one on, but a test process
        # may have had it set (then a victim ignores every Ctrl-C). Ctrl-C is made to do what it does for users.
        print(f"SIGINT was inherited as {inherited!r}; restored to Python's default", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--download_dir")
    parser.add_argument("--manual_dir")
    args = parser.parse_args()
    builder = tfds.builder(args.name, data_dir=args.data_dir)
    try:
        builder.download_and_prepare(
            download_dir=args.download_dir, download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir)
        )
    except KeyboardInterrupt:
        say(f"INTERRUPT_CAUGHT {time.monotonic()}")
        deadline = time.monotonic() + 30
        while any(thread.name.startswith(DOWNLOAD_THREADS) for thread in threading.enumerate()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        else:
            say(f"REQUESTS_ENDED {time.monotonic()}")
        raise
    sha = hashlib.sha256()
    for split in sorted(builder.info.splits):
        arrays = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, shuffle_files=False))
        for feature in sorted(arrays):
            sha.update(f"{split}/{feature}".encode() + arrays[feature].tobytes())
    sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
    print("RESULT " + json.dumps({"splits": sizes, "digest": sha.hexdigest()}), flush=True)


if __name__ == "__main__":
    main()
