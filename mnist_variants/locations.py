"""Where local copies of the upstream files may already be: the manual dir, and other tools' caches.

A manual dir is the user's choice: its files are judged and used (an unverifiable one
with a warning). The keras cache is found, not chosen: only its verified files are used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath


@dataclasses.dataclass(frozen=True)
class ManualDir:
    """The manual dir as TFDS resolved it, and the folders inside it that may hold the files."""

    root: epath.Path | None  # None: no usable manual dir
    folders: tuple[epath.Path, ...]
    problem: str = ""  # why there is none (missing or empty), in TFDS's words


def manual_dir(dl_manager: tfds.download.DownloadManager, dataset_name: str, subfolders: Sequence[str]) -> ManualDir:
    """The manual dir, `<it>/<dataset name>/`, and the variant's own layouts (e.g. torchvision's)."""
    try:
        root = dl_manager.manual_dir
    except AssertionError as error:  # TFDS raises this for a manual dir that is missing or empty.
        return ManualDir(None, (), str(error).split("\n", 1)[0])
    return ManualDir(root, (root, root / dataset_name, *(root / sub for sub in subfolders)))


def keras_cache(subfolder: str | None) -> list[epath.Path]:
    """Where `keras.datasets` keeps its downloads: `$KERAS_HOME/<subfolder>`, else `~/.keras`, else `/tmp/.keras`."""
    if not subfolder:
        return []
    if os.environ.get("KERAS_HOME"):
        homes = [Path(os.environ["KERAS_HOME"])]
    else:
        homes = [Path.home() / ".keras", Path("/tmp/.keras")]  # keras falls back to /tmp when home is read-only
    return [epath.Path(home / subfolder) for home in homes]


def candidates(folder: epath.Path, filename: str) -> tuple[epath.Path, ...]:
    """Names a copy may have: upstream's, or decompressed as keras and torchvision also keep it."""
    names = (filename, filename.removesuffix(".gz")) if filename.endswith(".gz") else (filename,)
    return tuple(folder / name for name in names)
