"""Where local copies of the upstream files may already be: the manual dir, and other tools' caches.

A manual dir is the user's choice: its files are judged and used (an unverifiable one
with a warning). The keras cache is found, not chosen: only its verified files are used,
and it is looked for in the one folder keras itself would use, never in a world-writable
fallback that keras would not have written to.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Mapping, Sequence

import tensorflow_datasets as tfds
from etils import epath


@dataclasses.dataclass(frozen=True)
class ManualDir:
    """The manual dir as TFDS resolved it, and the folders inside it that may hold the files."""

    root: epath.Path | None  # None: no usable manual dir
    folders: tuple[epath.Path, ...]
    problem: str = ""  # why there is none, in our words: "/x does not exist", "... is empty", "... is not a folder"


# TFDS's DownloadManager.manual_dir raises AssertionError with this sentence for a missing or empty folder.
_TFDS_UNUSABLE_MANUAL_DIR = re.compile(r"Manual directory (.+?) does not exist or is empty")


def manual_dir(dl_manager: tfds.download.DownloadManager, dataset_name: str, subfolders: Sequence[str]) -> ManualDir:
    """The manual dir, `<it>/<dataset name>/`, and the variant's own layouts (e.g. torchvision's)."""
    try:
        root = dl_manager.manual_dir
    except AssertionError as error:  # missing or empty; TFDS's sentence ends in instructions we do not show
        found = _TFDS_UNUSABLE_MANUAL_DIR.match(str(error))
        if not found:
            return ManualDir(None, (), "it is missing or empty")
        folder = epath.Path(found[1])
        default = folder == epath.Path(dl_manager.download_dir) / "manual"
        return ManualDir(None, (), why_unusable(folder) + (" (TFDS's default; none was given)" if default else ""))
    except OSError as error:  # TFDS lists it: a file under its name, or a folder that cannot be read
        return ManualDir(None, (), why_unusable(epath.Path(error.filename)) if error.filename else f"{error}")
    return ManualDir(root, (root, root / dataset_name, *(root / sub for sub in subfolders)))


def why_unusable(folder: epath.Path) -> str:
    """Why TFDS refused `folder` as the manual dir, in plain words."""
    try:
        if not folder.exists():
            return f"{folder} does not exist"
        if not folder.is_dir():
            return f"{folder} is not a folder"
        return f"{folder} is empty" if not any(folder.iterdir()) else f"{folder} could not be listed"
    except OSError as error:  # a folder we may not list
        return f"{folder} cannot be read ({error.strerror or error})"


@dataclasses.dataclass(frozen=True)
class KerasNpz:
    """A `.npz` in which `keras.datasets` keeps a whole dataset (keras's mnist.npz), and which array is which file.

    `arrays` maps each split to its roles and each role to the array's name: {"train": {"images": "x_train"}}.
    """

    folder: str  # under keras's home: "datasets"
    filename: str  # "mnist.npz", registered like an upstream file
    arrays: Mapping[str, Mapping[str, str]]


@dataclasses.dataclass(frozen=True)
class Archive:
    """A zip file that holds the upstream files as members (EMNIST's gzip.zip), registered and fetched as one file.

    The split files are its members `<folder><name>`; they are read out of the verified archive's
    bytes, never extracted. No digest of a member is known: copies found extracted are not used.
    """

    filename: str  # "gzip.zip", registered like any upstream file
    folder: str = ""  # where the members sit inside it: "gzip/"

    def member(self, name: str) -> str:
        return self.folder + name


def keras_cache(subfolder: str | None) -> list[epath.Path]:
    """The one folder where `keras.datasets` keeps `subfolder`, by keras's own rule (keras is not imported: slow).

    keras 3 (keras/src/backend/config.py, keras_home(); keras/src/utils/file_utils.py, get_file()):
    its home is `$KERAS_HOME` if that variable is set, else `~/.keras` (`/tmp/.keras` if `~` is not
    writable), made on import where possible; `get_file` then writes to `<home>/<cache_subdir>`,
    unless the home is not writable (`os.access(home, os.W_OK)`), and then to `/tmp/.keras` (or
    `tempfile.gettempdir()/.keras` without `/tmp`). keras 2's `get_file` follows the same rule.
    `/tmp/.keras` is writable by every user, so it is looked in only where keras would write there.
    """
    if not subfolder:
        return []
    if "KERAS_HOME" in os.environ:
        home = os.path.expanduser(os.environ["KERAS_HOME"])
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    if not _keras_can_write(home):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return [epath.Path(home) / subfolder]


def _keras_can_write(home: str) -> bool:
    """Whether keras would write into `home`: writable, or missing and makeable (keras makes it on import)."""
    if not home:
        return False
    path = os.path.abspath(home)
    if os.path.exists(path):
        return os.access(path, os.W_OK)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def candidates(folder: epath.Path, filename: str) -> tuple[epath.Path, ...]:
    """Names a copy may have: upstream's, or decompressed as keras and torchvision also keep it."""
    names = (filename, filename.removesuffix(".gz")) if filename.endswith(".gz") else (filename,)
    return tuple(folder / name for name in names)
