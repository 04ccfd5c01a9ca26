"""One holder at a time, across processes and threads: the lock behind preparations and partial downloads.

Everything that must not be done twice at once (preparing one dataset version, writing one
partial download) takes `hold(lock file)`. It yields True while the lock is really held,
False where the filesystem offers no lock (the caller then works so that nothing is shared).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import filelock


def supports_locking(path: os.PathLike | str) -> bool:
    """Local paths (and NFS mounts) take a file lock; remote filesystems (gs://, s3://, ...) do not."""
    return "://" not in os.fspath(path)


@contextlib.contextmanager
def hold(lock_file: os.PathLike | str, waiting_message: str) -> Iterator[bool]:
    """Holds the lock at `lock_file` within; yields whether it is really held (False: no locks here).

    A caller that has to wait prints `waiting_message` once.
    """
    if not supports_locking(lock_file):
        yield False
        return
    lock = filelock.FileLock(os.fspath(lock_file))
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            print(waiting_message, flush=True)
            lock.acquire()
    except NotImplementedError:  # filelock < 4 on a filesystem without flock
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
