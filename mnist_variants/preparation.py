"""How preparations of one dataset are serialised: one worker prepares, the others wait, then read.

TFDS has no lock: every process that prepares a dataset into a shared data_dir does
the whole work, and all but the first die at TFDS's final rename of
`incomplete.XXXX_<version>/` (FileExistsError). Here a file lock beside the
dataset's version folder (`<data_dir>/<name>/<version>.lock`) lets exactly one
worker download and prepare; the others wait for it and then read what it wrote.
The lock (locking.py) is `flock`, which the kernel releases when its holder dies
(SIGKILL, OOM, pre-emption), so a waiting worker then takes over; it works on local
disks and NFS, and threads of one process take turns too. On filesystems without locks
(`gs://` and other remote data_dirs, or a mount whose `flock` fails: one `NoLocksWarning`)
workers prepare side by side, and one that finds a complete dataset where it was about
to put its own keeps the existing one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from etils import epath
from tensorflow_datasets.core import constants as tfds_constants

from mnist_variants import locking


def is_complete(data_path: epath.Path) -> bool:
    """Whether a prepared dataset stands at `data_path` (TFDS writes its info last and renames the folder whole)."""
    return (data_path / tfds_constants.DATASET_INFO_FILENAME).exists()


def lock_path(data_path: epath.Path) -> epath.Path:
    """`<data_dir>/<name>/<version>.lock`: beside the version folder; TFDS ignores the name."""
    return data_path.parent / f"{data_path.name}.lock"


@contextlib.contextmanager
def exclusive(data_path: epath.Path, description: str) -> Iterator[bool]:
    """Holds the dataset's lock within; yields whether it is really held (False: no locks here).

    A worker that has to wait says so once, in one line, naming the folder.
    """
    if locking.supports_locking(data_path):
        data_path.parent.mkdir(parents=True, exist_ok=True)
    with locking.hold(
        lock_path(data_path), f"Waiting for another process preparing {description} in {data_path}"
    ) as held:
        yield held


def is_incomplete_folder(name: str, version: str) -> bool:
    """Whether `name` is TFDS's folder for a preparation of `version` under way.

    TFDS 4.9.5+ names it `incomplete.XXXXXX_<version>`, TFDS 4.9.4 `<version>.incompleteXXXXXX`.
    """
    return (name.startswith("incomplete.") and name.endswith(f"_{version}")) or name.startswith(f"{version}.incomplete")


def abandoned_folders(data_path: epath.Path) -> list[epath.Path]:
    """The folders of unfinished preparations of `data_path`'s version, beside it.

    Call only while holding the lock: then no live worker is preparing this version,
    so every such folder was left by one that died.
    """
    if not data_path.parent.is_dir():
        return []
    return [
        path for path in data_path.parent.iterdir() if is_incomplete_folder(path.name, data_path.name) and path.is_dir()
    ]


def remove(folders: list[epath.Path], why: str = "") -> None:
    """Removes `folders` (lock held), saying why when there is something to say."""
    for folder in folders:
        if why:
            print(f"Removing {folder}, {why}", flush=True)
        shutil.rmtree(os.fspath(folder), ignore_errors=True)
