"""Getting every upstream file of a builder: a verified local copy if there is one, else a download.

Local copies are looked for in the manual dir and in other tools' caches (locations.py)
and judged by their content (verification.py). Missing files download all at once, each
from its own list of sources in turn, through TFDS's download manager, which caches them,
checks them against the registered sha256 and size, and shows progress;
http_transport.py carries the bytes. Splits are handed over as soon as all their files
are here, so the builder parses one while a larger file still downloads.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core.download import resource as tfds_resource

from mnist_variants import http_transport, local_copies, locations, verification
from mnist_variants.errors import DownloadFailedError

MIRROR_ENV = "MNIST_VARIANTS_MIRROR"


def source_urls(bases: Sequence[str], filename: str) -> list[str]:
    """The URLs to try for `filename`: the user's mirror (if set), then each base in order."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    prefixes = ([mirror.rstrip("/") + "/"] if mirror else []) + list(bases)
    return [prefix + filename for prefix in prefixes]


def partial_downloads(download_dir: epath.Path, dataset_name: str, urls: Sequence[str]) -> list[epath.Path]:
    """TFDS's temporary folders of downloads of `urls`, where a failed download leaves its bytes.

    TFDS downloads a URL into `<get_dl_fname(url, sha256(url))>.tmp.<uuid>/`, in the download dir
    (TFDS < 4.9.5, shared by all datasets) or in its `<dataset name>/` subfolder, and renames the
    file into place once verified.
    """
    prefixes = tuple(
        f"{tfds_resource.get_dl_fname(url, hashlib.sha256(url.encode()).hexdigest())}.tmp." for url in urls
    )
    return [
        path
        for folder in (download_dir, download_dir / dataset_name)
        if folder.is_dir()
        for path in folder.iterdir()
        if path.name.startswith(prefixes) and path.is_dir()
    ]


class _SourcesFailed(Exception):
    """Every source of one file failed; the message lists each URL and why."""


class _Cancelled(Exception):
    """A download stopped because another file had failed."""


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What a preparation needs fetched: a variant's declaration, as data (fetching knows no builder)."""

    name: str  # the registered dataset name
    title: str  # the dataset's name for people, in messages
    sources: Sequence[str]  # base URLs, tried in order
    split_files: Mapping[str, Mapping[str, str]]  # split -> role -> upstream file name
    registry: Mapping[str, verification.Registered]  # upstream file name -> its registered digests
    manual_subfolders: Sequence[str] = ()
    keras_cache_folder: str | None = None

    def filenames(self) -> list[str]:
        return [name for files in self.split_files.values() for name in files.values()]


class Fetch:
    """The files of one preparation: found locally or downloaded, handed over split by split."""

    def __init__(self, wanted: Wanted, dl_manager: tfds.download.DownloadManager) -> None:
        self.wanted = wanted
        self.dl_manager = dl_manager
        self.local = local_copies.LocalCopies(
            wanted.title,
            wanted.registry,
            locations.manual_dir(dl_manager, wanted.name, wanted.manual_subfolders),
            locations.keras_cache(wanted.keras_cache_folder),
        )
        self.verdicts: dict[str, verification.Verdict] = {}  # of the local copies used
        self.paths: dict[str, epath.Path] = {}

    def urls(self, name: str) -> list[str]:
        return source_urls(self.wanted.sources, name)

    def splits(self) -> Iterator[tuple[str, dict[str, epath.Path]]]:
        """(split, {role: path}) for every split, each as soon as all its files are here and checked."""
        for name in self.wanted.filenames():
            if verdict := self.local.find(name, self.urls(name)[-1]):  # the last source: one people can browse
                self.verdicts[name] = verdict
                self.paths[name] = verdict.path
        waiting = dict(self.wanted.split_files)
        yield from self._ready(waiting)
        missing = [name for name in self.wanted.filenames() if name not in self.paths]
        if not missing:
            return
        with self._downloads(missing) as arrivals:
            for name, path in arrivals:
                self.paths[name] = path
                yield from self._ready(waiting)

    def _ready(self, waiting: dict[str, Mapping[str, str]]) -> Iterator[tuple[str, dict[str, epath.Path]]]:
        for split, files in list(waiting.items()):
            if all(name in self.paths for name in files.values()):
                del waiting[split]
                self._check_split(files.values())
                yield split, {role: self.paths[name] for role, name in files.items()}

    def _check_split(self, names: Iterable[str]) -> None:
        """Downloads are verified by TFDS; an unverified local copy needs a verified file beside it."""
        verdicts = [
            self.verdicts.get(name) or verification.Verdict(self.paths[name], name, True, "downloaded")
            for name in names
        ]
        verification.check_split(verdicts)
        anchors = ", ".join(verdict.name for verdict in verdicts if verdict.verified)
        for verdict in verdicts:
            if not verdict.verified:
                print(
                    f"WARNING: using {verdict.path} for {verdict.name}, {verdict.how};"
                    f" accepted because {anchors} of the same split verifies.",
                    flush=True,
                )

    @contextlib.contextmanager
    def _downloads(self, names: list[str]) -> Iterator[Iterator[tuple[str, epath.Path]]]:
        """Downloads `names` at once; yields an iterator over (name, path) in order of arrival."""
        policy = http_transport.policy_from_env()
        with (
            http_transport.bounded_http(policy) as cancel,
            _one_progress_display(self.dl_manager),
            concurrent.futures.ThreadPoolExecutor(len(names), thread_name_prefix="download") as pool,
        ):
            futures = {pool.submit(self._download, name, cancel): name for name in names}
            try:
                yield self._arrivals(futures, cancel)
            except BaseException:
                cancel.set()  # the other files stop within a block, so the error comes out now
                raise

    def _arrivals(self, futures: dict[concurrent.futures.Future, str], cancel) -> Iterator[tuple[str, epath.Path]]:
        """(name, path) as each download ends; at the first failure, the others are cancelled and
        one error lists every file that failed for itself (not for being cancelled)."""
        for done in concurrent.futures.as_completed(futures):
            if done.exception() is None:
                yield futures[done], done.result()
                continue
            cancel.set()
            concurrent.futures.wait(futures)
            failures = {futures[future]: future.exception() for future in futures if future.exception() is not None}
            reports = [str(failure) for failure in failures.values() if isinstance(failure, _SourcesFailed)]
            if not reports:
                raise done.exception()
            stopped = [name for name, failure in failures.items() if isinstance(failure, _Cancelled)]
            if stopped:
                reports.append(f"Stopped the other downloads on the first failure: {', '.join(stopped)}.")
            raise DownloadFailedError("\n".join(reports) + "\n" + self.local.where_we_looked(self.wanted.filenames()))

    def _download(self, name: str, cancel) -> epath.Path:
        """`name` from the first of its sources that delivers it intact."""
        failures = []
        for url in self.urls(name):
            try:
                # A one-entry dict: TFDS's test harness answers `download` with its whole dummy-file dict.
                path = self.dl_manager.download({name: url})[name]
            except Exception as error:  # noqa: BLE001 - any failure of a source means: try the next one.
                if cancel.is_set():
                    raise _Cancelled(name) from None
                reason = f"{type(error).__name__}: {error}".strip()
                logging.warning("Could not get %s from %s (%s)", name, url, reason)
                failures.append(f"  {url}\n    {reason}")
                continue
            print(f"Got {name} from {url}", flush=True)
            return epath.Path(path)
        raise _SourcesFailed(f"Could not download {name} from any source:\n" + "\n".join(failures))


@contextlib.contextmanager
def _one_progress_display(dl_manager: tfds.download.DownloadManager) -> Iterator[None]:
    """One pair of TFDS progress bars for all our per-file `download` calls.

    TFDS opens a pair of bars per `download` call on its one shared downloader and points
    the downloader at the newest pair; with calls running side by side, bytes would be
    counted on a pair already closed. Here the first pair stays, and the calls reuse it.
    """
    downloader = getattr(dl_manager, "_downloader", None)
    if downloader is None or not hasattr(downloader, "tqdm"):
        yield
        return
    with downloader.tqdm():
        downloader.tqdm = contextlib.nullcontext  # an instance attribute: the calls below keep the bars above
        try:
            yield
        finally:
            del downloader.tqdm
