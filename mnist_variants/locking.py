"""One holder at a time, across processes and threads: the lock behind preparations and partial downloads.

Everything that must not be done twice at once (preparing one dataset version, writing one
partial download) takes `hold(lock file)`. It yields True while the lock is really held,
False where the filesystem offers no lock (the caller then works so that nothing is shared).

Across processes the lock is `flock`, which the kernel (on NFS, the server) releases when its
holder dies, so a waiter never waits for a dead one. It is taken on a descriptor of our own,
opened as every file in a shared folder is (shared_files.py: a planted symlink or FIFO is moved
aside, never followed; created 0o666 under the umask, so the folder's group can take it too).
Why not filelock's, as before: it follows a symlink under the lock's name (creating and
truncating its target), and 3.x sets its own 0o644 on the file, which locks the group out.
filelock stays where `fcntl` does not exist (Windows). Where `flock`
fails (NFS without a lock daemon: ENOLCK; Lustre without `-o flock`: ENOSYS; some FUSE
and SMB mounts: EOPNOTSUPP) nobody waits at all: `hold` yields False and warns once per
folder. We do not fall back to a lock file that only its holder removes (filelock 4's
soft lock): a holder killed on another host would leave it behind for ever.

Across threads of one process a lock per path comes first: Linux's NFS client turns
`flock` into POSIX locks, which do not exclude two threads of one process, and which any
`close` of the file by the process drops.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import threading
import warnings
from collections.abc import Iterator

import filelock

from mnist_variants import shared_files

try:
    import fcntl
except ImportError:  # Windows: filelock locks with msvcrt, which has no such failure
    fcntl = None

# What `flock` answers on a filesystem without it.
NO_LOCK_ERRNOS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
# What it answers when another holder has the lock: the filesystem has locks.
_BUSY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


class NoLocksWarning(UserWarning):
    """The filesystem of a lock file refuses `flock`: workers there prepare side by side."""


_registry_lock = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}  # one per lock path, for the life of the process
_warned: set[str] = set()  # folders already warned about


def supports_locking(path: os.PathLike | str) -> bool:
    """Local paths (and NFS mounts) take a file lock; remote filesystems (gs://, s3://, ...) do not."""
    return "://" not in os.fspath(path)


def _thread_lock(key: str) -> threading.Lock:
    with _registry_lock:
        return _thread_locks.setdefault(key, threading.Lock())


# filelock 4 falls back to a soft lock unless told not to; older versions have no such option (nor fallback).
_NO_SOFT_FALLBACK = (
    {"fallback_to_soft": False}
    if "fallback_to_soft" in inspect.signature(filelock.BaseFileLock.__init__).parameters
    else {}
)


def _say(message: str) -> None:
    """One line in one write, so lines of waiting threads do not interleave."""
    print(message + "\n", end="", flush=True)


def _file_lock(lock_file: str) -> filelock.BaseFileLock:
    return filelock.FileLock(lock_file, **_NO_SOFT_FALLBACK)


def _warn_no_locks(lock_file: str, error: BaseException) -> None:
    folder = os.path.dirname(lock_file)
    with _registry_lock:
        if folder in _warned:
            return
        _warned.add(folder)
    warnings.warn(
        NoLocksWarning(
            f"{folder} has no file locks ({error}); workers sharing it prepare side by side, "
            "and one that finds a complete dataset where it was about to put its own uses that one"
        ),
        stacklevel=5,  # the caller of `with hold(...)`
    )


@contextlib.contextmanager
def hold(lock_file: os.PathLike | str, waiting_message: str) -> Iterator[bool]:
    """Holds the lock at `lock_file` within; yields whether it is really held (False: no locks here).

    Threads of this process and other processes (on this host or, through NFS, others) take
    turns; a caller that has to wait prints `waiting_message` once.
    """
    path = os.fspath(lock_file)
    local = supports_locking(path)
    if local:
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    turn = _thread_lock(os.path.realpath(path) if local else path)
    told = not turn.acquire(blocking=False)
    if told:
        _say(waiting_message)
        turn.acquire()
    try:
        if not local:
            yield False
        elif fcntl is None:
            lock = _acquire_filelock(path, waiting_message, told)
            try:
                yield lock is not None
            finally:
                if lock is not None:
                    lock.release()
        else:
            descriptor = _acquire(path, waiting_message, told)
            try:
                yield descriptor is not None
            finally:
                if descriptor is not None:
                    try:
                        fcntl.flock(descriptor, fcntl.LOCK_UN)
                    finally:
                        os.close(descriptor)
    finally:
        turn.release()


def _acquire(path: str, waiting_message: str, told: bool) -> int | None:
    """A descriptor of `path` holding its `flock`; None (after one warning) where the filesystem refuses `flock`."""
    try:
        descriptor = shared_files.open_file(path, os.O_RDWR | os.O_CREAT)
    except PermissionError:  # another user's, made 0o644: flock needs only a descriptor, a read one will do
        descriptor = shared_files.open_file(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in NO_LOCK_ERRNOS:
                _warn_no_locks(path, error)
                os.close(descriptor)
                return None
            if error.errno not in _BUSY_ERRNOS:
                raise
            if not told:
                _say(waiting_message)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _acquire_filelock(path: str, waiting_message: str, told: bool) -> filelock.BaseFileLock | None:
    """Where `fcntl` does not exist (Windows): filelock's lock at `path`, held; None where it cannot lock."""
    lock = _file_lock(path)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if not told:
                _say(waiting_message)
            lock.acquire()
    except (NotImplementedError, OSError) as error:
        if isinstance(error, OSError) and error.errno not in NO_LOCK_ERRNOS:
            raise
        _warn_no_locks(path, error)
        return None
    return lock
