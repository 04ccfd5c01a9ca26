"""Files in a folder others write to (a shared download dir): made for the group, never followed, never waited on.

A shared download dir or data_dir is written by several users: whoever can write it can also
plant a symlink, a FIFO or a device node under a name the package uses. So every file the
package opens there (partials, progress records, locks, downloaded files) is opened with
`O_NOFOLLOW | O_NONBLOCK` and then checked to be a regular file (`fstat`); anything else is
named and moved aside (renamed to `<name>.not-a-file`), never written through, or refused
where it cannot be moved. Files are created with mode 0o666 and the umask decides, as TFDS,
pip and huggingface_hub do, so a group-shared (setgid, umask 002) folder stays usable by the
group. A write the local disk refuses (full, over quota, read-only, I/O error) becomes one
`LocalDiskError` saying so, naming the folder and the bytes needed: no source can help with that.

Why our own: no library we depend on opens without following (filelock follows the lock's
symlink and, in 3.x, sets its own mode on the file; pathlib follows everywhere).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from mnist_variants.errors import MnistVariantsError

_NO_WAIT = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
# What a write to local disk answers when the disk, not the source, is the problem.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})
ASIDE_SUFFIX = ".not-a-file"


class NotAFileError(MnistVariantsError, OSError):
    """An entry the package uses in a shared folder is not a regular file (a symlink, FIFO, device, folder)."""


class LocalDiskError(MnistVariantsError):
    """The local disk refused a write (full, over quota, read-only, I/O error): no other source can help.

    Not an OSError on purpose: the transport retries OSErrors as network failures.
    """


def kind(mode: int) -> str:
    """What a file of `mode` is, for messages."""
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def what_is_there(path: os.PathLike | str) -> str | None:
    """ "a symlink", "a FIFO", ... for an entry at `path` that is not a regular file; None for a file or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else kind(mode)


def move_aside(path: os.PathLike | str, what: str, wanted: str = "a file") -> None:
    """Renames the entry at `path` (not a regular file) out of the way, saying so; NotAFileError where it cannot."""
    aside = f"{os.fspath(path)}{ASIDE_SUFFIX}"
    try:
        os.rename(path, aside)  # renames the entry itself: a symlink's target is untouched
    except FileNotFoundError:
        return
    except OSError as error:
        raise NotAFileError(
            errno.EEXIST, f"{what}, not {wanted}, and it cannot be moved aside ({error.strerror})", os.fspath(path)
        ) from None
    print(f"Moved aside {path}: {what}, not {wanted} (now {aside})", flush=True)


def real_folder(path: os.PathLike | str) -> None:
    """Moves aside whatever stands at `path` that is not a real folder (a symlink, even to a folder, a file):
    O_NOFOLLOW guards only a path's last part, so a folder the package writes in is checked itself."""
    if (what := what_is_there(path)) and what != "a folder":
        move_aside(path, what, "a folder")


def open_regular(path: os.PathLike | str, flags: int, mode: int = 0o666, follow_symlinks: bool = False) -> int:
    """A descriptor of the regular file at `path`, opened without waiting (and, unless `follow_symlinks`, without
    following a symlink); NotAFileError naming whatever else stands there. Nothing is moved."""
    try:
        descriptor = os.open(path, flags | _NO_WAIT | (0 if follow_symlinks else _NO_FOLLOW), mode)
    except OSError as error:
        what = what_is_there(path)
        if what is None or error.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
            raise
        raise NotAFileError(error.errno, f"{what}, not a file", os.fspath(path)) from None
    file_mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(file_mode):
        os.close(descriptor)
        raise NotAFileError(errno.EINVAL, f"{kind(file_mode)}, not a file", os.fspath(path))
    return descriptor


def open_file(path: os.PathLike | str, flags: int, mode: int = 0o666) -> int:
    """A descriptor of the regular file at `path` (created with `mode` under the umask where `flags` say so).

    Whatever else stands there (a symlink, even a dangling one, a FIFO, a device, a folder) is
    moved aside and the file opened anew; never followed, never waited on.
    """
    for _ in range(2):
        try:
            return open_regular(path, flags, mode)
        except NotAFileError as error:
            move_aside(path, what_is_there(path) or error.strerror.split(",")[0])
    raise NotAFileError(errno.EEXIST, "something other than a file keeps appearing here", os.fspath(path))


def read_file(path: os.PathLike | str, limit: int) -> bytes:
    """The regular file at `path`, read no further than `limit` + 1 bytes (FileNotFoundError where it is not)."""
    descriptor = open_file(path, os.O_RDONLY)
    try:
        return read_at_most(descriptor, limit + 1)
    finally:
        os.close(descriptor)


def read_at_most(descriptor: int, count: int) -> bytes:
    """Up to `count` bytes from the start of the file, in one buffer of at most that size."""
    chunks, got = [], 0
    while got < count:
        chunk = os.pread(descriptor, min(count - got, 16 << 20), got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_file(path: Path, data: bytes) -> None:
    """Writes `data` to `path` atomically: a file of this thread's, renamed over the old entry (never followed).

    The temporary file is removed whatever fails (a full disk leaves nothing stray).
    """
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        descriptor = open_file(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def refused_writes(folder: os.PathLike | str, needed: Callable[[], str]) -> Iterator[None]:
    """Within, an OSError that is the local disk's refusal becomes the LocalDiskError saying so (`disk_error`)."""
    try:
        yield
    except OSError as error:
        if found := disk_error(error, folder, needed()):
            raise found from None
        raise


def disk_error(error: OSError, folder: os.PathLike | str, needed: str) -> LocalDiskError | None:
    """The LocalDiskError `error` stands for (a write refused by the disk holding `folder`), or None.

    `needed` says what the write was for: "train.gz needs 9,912,422 bytes there (4,000,000 not yet written)".
    """
    if error.errno not in DISK_ERRNOS:
        return None
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        if error.errno == errno.EROFS:
            return LocalDiskError(f"{folder} is read-only ({error.strerror}); {needed}")
        # The file refused, not the folder: in a group-writable folder, one entry can be another user's.
        return LocalDiskError(
            f"{error.filename or folder} may not be written by this user ({error.strerror}); {needed}"
        )
    what = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota", errno.EIO: "failed to write"}[error.errno]
    return LocalDiskError(f"The disk holding {folder} {what} ({error.strerror}); {needed}")
