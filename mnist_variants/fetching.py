"""Getting every upstream file of a preparation: a verified local copy if there is one, else a download.

Local copies are looked for in the manual dir and in other tools' caches (local_copies.py)
and judged by their content (verification.py). Missing files download all at once, each from
its own list of sources in turn, into the download dir's `<dataset name>/` folder:
http_transport.py carries the bytes into a partial download (partials.py) that a later process
resumes if this one dies. A download is read once, verified against the registered sha256 and
size (or, for a file known by its digests, its size bound, md5 and git blob sha1), and those very
bytes are handed on; only then does the file take its final name. A file
already verified there is used without the lock (a read-only download dir works); everything
in the folder is opened through shared_files.py (never followed, never waited on), and a write
the disk refuses ends the download at once (`shared_files.LocalDiskError`), no other source asked. Splits
are handed over as soon as all their files are here, so the builder parses one while a larger
file still downloads.

Where the split files come inside one archive (EMNIST's gzip.zip, `locations.Archive`), the
archive is the one file found or downloaded and verified; the split files are read out of
those verified bytes (formats.read_zip_members), each member once, and the archive's bytes
are let go as soon as that is done.

Why not TFDS's DownloadManager: it has no time limit and no resume, keeps nothing of a killed
download, and can only be extended through private functions (its `_open_url`, its progress
bars, its temporary folder names), which the package used to swap for the whole process. Here
it is asked only for its public `download_dir` and `manual_dir`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

# tqdm_utils: TFDS's own progress bars, so that `tfds.display_progress_bar(False)` silences ours too.
from tensorflow_datasets.core.utils import tqdm_utils

from mnist_variants import (
    formats,
    http_transport,
    local_copies,
    locations,
    locking,
    partials,
    shared_files,
    verification,
)
from mnist_variants.errors import DownloadFailedError

MIRROR_ENV = "MNIST_VARIANTS_MIRROR"
_UNSTATED_TRIES = 3  # fetches of a body with no stated length that fails its digests (a cut looks like an end)


def source_urls(bases: Sequence[str], filename: str, dataset: str) -> list[str]:
    """The URLs to try for `filename` of `dataset`: the user's mirror (if set), then each base in order.

    MNIST, Kuzushiji-MNIST and Fashion-MNIST share file names, so a mirror keeps each dataset's
    files in a folder named after it (`<mirror>/<registered name>/<file>`); a flat mirror
    (`<mirror>/<file>`), fine for one dataset, is tried next. The sha256 check refuses a wrong one.
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    prefixes = ([f"{mirror}/{dataset}/", f"{mirror}/"] if mirror else []) + list(bases)
    return [prefix + filename for prefix in prefixes]


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
    keras_npz: locations.KerasNpz | None = None
    known: verification.Known = dataclasses.field(default_factory=verification.Known)  # to name others' files
    archive: locations.Archive | None = None  # the one file that holds the split files as members
    # role -> file handed with every split where the archive holds it (EMNIST's label-to-character mapping)
    extra_files: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def filenames(self) -> list[str]:
        """The split files, in split order."""
        return [name for files in self.split_files.values() for name in files.values()]

    def downloads(self) -> list[str]:
        """The files fetched (found locally or downloaded) and verified: the archive, or the split files."""
        return [self.archive.filename] if self.archive else self.filenames()


class Fetch:
    """The files of one preparation: found locally or downloaded, handed over split by split as verified bytes."""

    def __init__(self, wanted: Wanted, dl_manager: tfds.download.DownloadManager) -> None:
        self.wanted = wanted
        self.download_dir = epath.Path(dl_manager.download_dir)
        self.local = local_copies.LocalCopies(
            wanted.title,
            wanted.registry,
            locations.manual_dir(dl_manager, wanted.name, wanted.manual_subfolders),
            locations.keras_cache(wanted.keras_cache_folder),
            split_files=wanted.split_files,
            known=wanted.known,
        )
        self.verdicts: dict[str, verification.Verdict] = {}  # split files here, local, downloaded or unpacked
        self.got: set[str] = set()  # files of `wanted.downloads()` found or downloaded
        self._cancel = http_transport.Cancel()

    def cancel(self) -> None:
        """Stops the downloads under way (what they received is kept): the preparation failed elsewhere."""
        self._cancel.set()

    def urls(self, name: str) -> list[str]:
        return source_urls(self.wanted.sources, name, self.wanted.name)

    def splits(self) -> Iterator[tuple[str, dict[str, verification.Verdict]]]:
        """(split, {role: verdict}) for every split, each as soon as all its files are here and checked;
        each verdict carries the bytes that were verified."""
        names = self.wanted.downloads()
        self._find_locally(names)
        waiting = dict(self.wanted.split_files)
        yield from self._ready(waiting)
        missing = [name for name in names if name not in self.got]
        if not missing:
            return
        with self._downloads(missing) as arrivals:
            for name, verdict in arrivals:
                self._arrived(name, verdict)
                del verdict  # an archive's bytes go as soon as its members are read
                yield from self._ready(waiting)

    def _find_locally(self, names: list[str]) -> None:
        """The user's own copies first, then what keras keeps."""
        browse = {name: self.urls(name)[-1] for name in names}  # the last source: one people can browse
        for name in names:
            if verdict := self.local.in_manual_dir(name, browse[name]):
                self._arrived(name, verdict)
        npz = self.wanted.keras_npz
        if npz and any(name not in self.got for name in names):
            from_npz = self.local.keras_npz(npz, browse[names[0]])
            for name, verdict in from_npz.items():
                if name not in self.got:
                    self._arrived(name, verdict)
        for name in names:
            if name not in self.got and (verdict := self.local.in_cache(name, browse[name])):
                self._arrived(name, verdict)
        archive = self.wanted.archive
        if archive and archive.filename not in self.got:
            self.local.pass_over_extracted(archive, [*self.wanted.filenames(), *self.wanted.extra_files.values()])

    def _arrived(self, name: str, verdict: verification.Verdict) -> None:
        """Keeps a file that is here and checked; an archive is read into its members at once, and not kept."""
        self.got.add(name)
        archive = self.wanted.archive
        if archive is None or name != archive.filename:
            self.verdicts[name] = verdict
            return
        names = self.wanted.filenames()
        extras = [name for name in self.wanted.extra_files.values() if name not in names]
        members = formats.read_zip_members(
            verdict.data,
            verdict.path,
            [archive.member(n) for n in names],
            [archive.member(n) for n in extras],
            most_bytes=self.wanted.registry[name].most_bytes,  # no member outgrows the registered archive
        )
        for inner in (*names, *extras):
            if (member := archive.member(inner)) in members:
                self.verdicts[inner] = verification.Verdict(
                    path=epath.Path(f"{verdict.path}[{member}]"),
                    name=inner,
                    verified=verdict.verified,
                    how=f"member {member} of {archive.filename} ({verdict.how})",
                    data=members.pop(member),
                )

    def _ready(self, waiting: dict[str, Mapping[str, str]]) -> Iterator[tuple[str, dict[str, verification.Verdict]]]:
        extra_files = self.wanted.extra_files
        for split, files in list(waiting.items()):
            if all(name in self.verdicts for name in files.values()):
                del waiting[split]
                self._check_split(files.values())
                extras = {role: self.verdicts[name] for role, name in extra_files.items() if name in self.verdicts}
                yield split, {**extras, **{role: self.verdicts[name] for role, name in files.items()}}
                # Bytes no other split needs go (a split's member can be hundreds of MB) once its parse lets go of them.
                needed = {name for other in waiting.values() for name in other.values()} | set(extra_files.values())
                for name in files.values():
                    if name not in needed:
                        self.verdicts.pop(name, None)

    def _check_split(self, names: Iterable[str]) -> None:
        """An unverified local copy needs a verified file beside it (downloads always verify)."""
        verdicts = [self.verdicts[name] for name in names]
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
    def _downloads(self, names: list[str]) -> Iterator[Iterator[tuple[str, verification.Verdict]]]:
        """Downloads `names` at once; yields an iterator over (name, verdict) in order of arrival."""
        policy = http_transport.policy_from_env()
        cancel = self._cancel
        total = sum(self.wanted.registry[name].most_bytes for name in names)  # the bound, where no size is known
        with (
            _progress_bar(total, len(names)) as progress,
            concurrent.futures.ThreadPoolExecutor(len(names), thread_name_prefix="download") as pool,
        ):
            downloads = {pool.submit(Download(self, name, policy, cancel, progress).run): name for name in names}
            try:
                yield self._arrivals(downloads, cancel)
            except BaseException:
                cancel.set()  # the other downloads stop now (their sockets are shut down); progress is kept
                raise

    def _arrivals(
        self, futures: dict[concurrent.futures.Future, str], cancel: http_transport.Cancel
    ) -> Iterator[tuple[str, verification.Verdict]]:
        """(name, verdict) as each download ends; at the first failure, the others are cancelled and
        one error lists every file that failed for itself (not for being cancelled)."""
        for done in concurrent.futures.as_completed(futures):
            if done.exception() is None:
                name, verdict = futures.pop(done), done.result()
                del done  # the future holds the verdict's bytes: nothing here keeps them past their use
                yield name, verdict
                del verdict
                continue
            cancel.set()
            concurrent.futures.wait(futures)
            failures = {futures[future]: future.exception() for future in futures if future.exception() is not None}
            if local := [
                failure for failure in failures.values() if not isinstance(failure, (_SourcesFailed, _Cancelled))
            ]:
                raise local[0]  # the disk, a planted entry: no source is to blame, one error says what it is
            reports = [str(failure) for failure in failures.values() if isinstance(failure, _SourcesFailed)]
            if not reports:
                raise done.exception()
            stopped = [name for name, failure in failures.items() if isinstance(failure, _Cancelled)]
            if stopped:
                reports.append(f"Stopped the other downloads on the first failure: {', '.join(stopped)}.")
            raise DownloadFailedError("\n".join(reports) + "\n" + self.local.where_we_looked(self.wanted.downloads()))


class Download:
    """One file into `<download dir>/<dataset name>/`, from the first of its sources that delivers it intact."""

    def __init__(
        self,
        fetch: Fetch,
        name: str,
        policy: http_transport.Policy,
        cancel: http_transport.Cancel,
        progress: _Progress,
    ) -> None:
        self.name, self.urls, self.policy, self.cancel, self.progress = name, fetch.urls(name), policy, cancel, progress
        self.registered = fetch.wanted.registry[name]
        self._counted = self.registered.most_bytes  # this file's share of the bar's total
        self._thrown_away = 0  # bytes received, counted, then thrown away before a refetch
        self.folder = fetch.download_dir / fetch.wanted.name
        self.final = self.folder / name
        self.writer: str | None = None  # the last source whose bytes went into the shared partial in this run
        self.resumed = False  # an earlier run's bytes were taken up (said and counted once)

    def run(self) -> verification.Verdict:
        if locking.supports_locking(self.folder):  # the user's download dir may be a symlink; our folder in it not
            shared_files.real_folder(self.folder)
            partials.remove_dead_private(Path(self.folder), self.name)  # even where the file is already here
        else:
            partials.remove_dead_folders()
        # A verified file needs no lock to be read: a read-only download dir works where every file is there.
        if verdict := self._earlier_download(may_remove=False):
            return verdict
        waiting = f"Waiting for another process downloading {self.name} into {self.folder}"
        with contextlib.ExitStack() as stack:
            with shared_files.refused_writes(self.folder, self._needed):  # no source can help with those
                self.folder.mkdir(parents=True, exist_ok=True)
                held = stack.enter_context(locking.hold(self.folder / f"{self.name}.lock", waiting))
            if verdict := self._earlier_download(may_remove=True):
                return verdict
            failures = []
            for url in self.urls:
                try:
                    data = self._from_source(url, held)
                except http_transport.Cancelled:
                    raise _Cancelled(self.name) from None
                except shared_files.NotAFileError:
                    raise  # a local problem, named: no source can help with it
                except (http_transport.TransferError, OSError) as error:
                    if self.cancel.is_set():
                        raise _Cancelled(self.name) from None
                    reason = f"{type(error).__name__}: {error}".strip()
                    logging.warning("Could not get %s from %s (%s)", self.name, url, reason)
                    failures.append(f"  {url}\n    {reason}")
                    continue
                print(f"Got {self.name} from {url}", flush=True)
                return verification.Verdict(
                    path=self.final, name=self.name, verified=True, how=f"downloaded from {url}", data=data
                )
        raise _SourcesFailed(f"Could not download {self.name} from any source:\n" + "\n".join(failures))

    def _needed(self) -> str:
        if self.registered.size is None:
            return f"{self.name} needs up to {self.registered.most_bytes:,} bytes there"
        return f"{self.name} needs {self.registered.size:,} bytes there"

    def _earlier_download(self, may_remove: bool) -> verification.Verdict | None:
        """The file an earlier run downloaded and verified, if it still verifies (read once, here, no further
        than its registered size + 1, never through a symlink). Only the lock's holder (`may_remove`)
        removes one that does not verify: without it, another process may be renaming a good one into place."""
        try:
            data = verification.read_copy(self.final, self.registered.most_bytes, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except verification.UnreadableCopyError as error:
            if may_remove and (what := shared_files.what_is_there(self.final)):
                shared_files.move_aside(self.final, what)
            elif may_remove:
                print(f"Not using {self.final}: {error.strerror}", flush=True)
            return None
        if self._verifies(data):
            print(f"Using {self.name} downloaded earlier: {self.final}", flush=True)
            return verification.Verdict(
                path=self.final, name=self.name, verified=True, how="downloaded earlier", data=data
            )
        if may_remove:
            print(f"Removing {self.final}: it has {self._mismatch(data)}", flush=True)
            self.final.unlink(missing_ok=True)
        return None

    def _from_source(self, url: str, locked: bool) -> bytes:
        """The file's verified bytes from `url`, resuming what an earlier attempt, source or process left of it.

        Bytes that do not verify are thrown away; unless they came in one whole-file answer (200), that is
        if any came by a Range request, the file is fetched once more from zero by one GET without Range
        before the source is given up (a server may garble its ranges and serve the whole file right).
        """
        identity = self._identity(url)
        open_ended = identity.size > self.registered.most_bytes  # no size stated: one stream, cut past the bound
        # With no length stated, a cut body looks like a whole short file: it is fetched again, a bounded number
        # of times (each from zero: no size to hold a resumed range to).
        tries = (True,) * _UNSTATED_TRIES if open_ended else (False, True)
        with self._partial(identity, url, locked and not open_ended) as partial:
            for attempt, whole in enumerate(tries, 1):
                partial.identity = identity  # the body's end set the size of an earlier try
                came_whole = http_transport.fetch(
                    url, partial, self.policy, self.cancel, self.progress, whole, open_ended=open_ended
                )
                data = partial.read_all()
                if self._verifies(data):
                    self._count_as(len(data))  # where no size was stated, the body's end told it
                    self._keep(partial, data)
                    return data
                cut = partial.unstated_end
                partial.discard()
                self._throw_away(len(data))
                why = self._mismatch(data)
                if cut:
                    why += f"; the body ended after {len(data):,} bytes with no length stated (maybe cut)"
                if attempt == len(tries) or (came_whole and not cut):
                    raise http_transport.TransferError(f"checksum mismatch: {url} sent {why}")
                again = "once more" if not open_ended else f"again (try {attempt + 1} of {len(tries)})"
                print(f"{self.name} from {url} does not verify ({why}); fetching it {again} from zero", flush=True)
                partial.plan([(0, identity.size)])
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _partial(self, identity: partials.Identity, url: str, locked: bool) -> Iterator[partials.Partial]:
        """This file's partial download: the shared one, resumed (from any source of the file), where the lock
        is held; else a private one, removed when done, whatever happens."""
        temporary = None
        shared = Path(self.folder / f"{self.name}.partial")
        if locked and (stuck := _stuck(shared, shared.with_name(shared.name + ".json"))):
            print(f"{stuck}; downloading {self.name} into a private partial instead", flush=True)
            locked = False
        if locked:
            partial, note = partials.Partial.resume_or_start(shared, identity, url)
            if note:
                print(f"Removing {partial.path}: {note}", flush=True)
            if partial.inherited and self.writer:  # bytes a source sent in this run (counted already)
                got = f"{partial.inherited:,}, received from {self.writer}"
                print(f"Going on with {self.name} from byte {got}", flush=True)
            elif partial.inherited and not self.resumed:
                print(f"Resuming {self.name} from byte {partial.inherited:,} (left by an earlier run)", flush=True)
                self.progress(partial.inherited)
                self.resumed = True
        else:  # no locks here: nobody else may write into it, so nobody resumes it either
            if locking.supports_locking(self.folder):
                private = Path(self.folder)
            else:
                private = temporary = partials.private_folder()
            partial = partials.Partial.private(private, self.name, identity, url)
        before = partial.received
        try:
            yield partial
        finally:
            if locked and partial.received > before:
                self.writer = url
            if locked and partial.received:
                with contextlib.suppress(shared_files.LocalDiskError):  # a full disk: the save is all that is lost
                    partial.close()  # kept for a later attempt, source or process to resume
            else:
                partial.discard()
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)

    def _keep(self, partial: partials.Partial, data: bytes) -> None:
        """The verified file takes its final name (copied where the download dir is remote)."""
        if locking.supports_locking(self.folder):
            partial.finish(Path(self.final))
        else:
            self.final.write_bytes(data)
            partial.discard()

    def _identity(self, url: str) -> partials.Identity:
        """What the partial is of: the registered size and sha256; for a file known by its digests, the size `url`
        states (refused past the bound before any of the body is read) and the git blob sha1, so that parts, resumes
        and every answer's length are held to that size as to a registered one. Where the server states no size,
        the file comes in one stream into a private partial one byte larger than the bound (not resumed: no size
        to hold a resumed range to), the body's end being the file's end."""
        registered = self.registered
        if registered.download is not None:
            return partials.Identity(registered.size, registered.download.checksum)
        digests = registered.digests
        size = http_transport.stated_size(url, digests.max_size, self.policy, self.cancel)
        if size is not None:
            self._count_as(size)
        return partials.Identity(digests.max_size + 1 if size is None else size, None, digests.git_blob_sha1)

    def _verifies(self, data: bytes) -> bool:
        return self.registered.verifies(data)

    def _count_as(self, size: int) -> None:
        """This file counts as `size` bytes in the bar's total from now on (beside the bytes thrown away)."""
        share = size + self._thrown_away
        self.progress.expect(share - self._counted)
        self._counted = share

    def _throw_away(self, count: int) -> None:
        """Bytes received (and counted on the bar) but thrown away, to be fetched again: the total grows by them,
        so that the bar still ends at 100%."""
        self._thrown_away += count
        self.progress.expect(count)
        self._counted += count

    def _mismatch(self, data: bytes) -> str:
        return self.registered.mismatch(data)


def _stuck(*paths: Path) -> str | None:
    """What stands in the way at one of `paths` and cannot be moved aside (another user's entry in a sticky
    folder): None where each is a file, nothing, or was moved aside."""
    for path in paths:
        if what := shared_files.what_is_there(path):
            try:
                shared_files.move_aside(path, what)
            except shared_files.NotAFileError as error:
                return f"{path}: {error.strerror}"
    return None


class _Progress:
    """One bar for the bytes of all files, as TFDS shows; the count is updated from every connection. A file known
    by its digests counts as its bound until its size is known (`expect`), so that the bar ends at 100%."""

    def __init__(self, bar) -> None:
        self._bar, self._lock = bar, threading.Lock()

    def __call__(self, count: int) -> None:
        if count:
            with self._lock:
                self._bar.update(count)

    def expect(self, change: int) -> None:
        """The bar's total grows by `change` bytes (shrinks, where negative)."""
        with self._lock:
            total = getattr(self._bar, "total", None)
            if change and isinstance(total, int | float):  # TFDS's EmptyTqdm (bars off) has none
                self._bar.total = total + change
                self._bar.refresh()


@contextlib.contextmanager
def _progress_bar(total: int, files: int) -> Iterator[_Progress]:
    """The bar for `files` files of `total` bytes at most."""
    with tqdm_utils.tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"Dl {files} files") as bar:
        yield _Progress(bar)
