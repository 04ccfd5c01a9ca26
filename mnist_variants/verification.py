"""How a local copy is verified: by its bytes, or by its content whatever the compression.

MNIST, Kuzushiji-MNIST and Fashion-MNIST use the very same file names, and keras and
torchvision keep them gzipped or not, so a name proves nothing. A copy is accepted when
its bytes are upstream's (the registered sha256 and size of the download), or when it
decompresses to upstream's content where that content's digest is registered
(`checksums/<name>.decompressed.tsv`). A copy whose content's digest is not registered
(the decompressed image files) is "unverified": the builder uses it only beside a file of
its split that does verify, and says so. Anything else is refused with an error naming
the file, what it is, and what to do.

A copy is read once, and the bytes that are verified are the bytes handed on to be parsed
(`Verdict.data`): a file swapped after its check never reaches the prepared data. Reading
takes no more memory than the largest acceptable copy: a larger file, or a gzip stream that
inflates past the registered content, is refused as soon as that shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet

from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import formats, shared_files, traps
from mnist_variants.errors import ChecksumMismatchError, MnistVariantsError, WrongFileError

UrlInfo = tfds_checksums.UrlInfo

_HASH_BLOCK_BYTES = 1 << 20  # a copy too large to read whole is hashed a block at a time


@dataclasses.dataclass(frozen=True)
class Registered:
    """What is known of one upstream file: its download's digest and, if registered, its content's."""

    download: UrlInfo
    content: UrlInfo | None = None


class UnreadableCopyError(MnistVariantsError, OSError):
    """A local copy cannot be read (permission, I/O error, a directory or a pipe under the file's name)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A local copy judged: the upstream file it stands for, whether it verified, and how.

    `data` holds exactly the bytes that were read once and judged, as stored (gzipped or not):
    parse these, never `path` again (it names the copy in messages).
    """

    path: epath.Path
    name: str
    verified: bool
    how: str
    data: bytes = dataclasses.field(default=b"", repr=False)


def content_checksums_path(checksums_path: epath.Path) -> epath.Path:
    """`<name>.decompressed.tsv` beside `<name>.tsv`: same TFDS format, digests of decompressed content."""
    return checksums_path.parent / f"{checksums_path.stem}.decompressed.tsv"


def load_registry(url_infos: Mapping[str, UrlInfo], checksums_path: epath.Path) -> dict[str, Registered]:
    """Every registered upstream file by name, with its content digest where one is registered."""
    content_path = content_checksums_path(checksums_path)
    contents = tfds_checksums.load_url_infos(content_path) if content_path.exists() else {}
    content_by_download_name = {url.rsplit("/", 1)[-1]: info for url, info in contents.items()}
    return {info.filename: Registered(info, content_by_download_name.get(info.filename)) for info in url_infos.values()}


def plain_size(size: int) -> str:
    """'25.2 MiB (26,421,880 bytes)': readable, and exact."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


def _info(data: bytes) -> UrlInfo:
    return UrlInfo(size=len(data), checksum=hashlib.sha256(data).hexdigest(), filename=None)


def _same(actual: UrlInfo, expected: UrlInfo) -> bool:
    return (actual.size, actual.checksum) == (expected.size, expected.checksum)


def is_registered_file(data: bytes, registered: UrlInfo) -> bool:
    """Whether `data` is the file `registered` describes (its size and sha256): bytes made from what was
    parsed, such as an array encoded back to the IDX file it must equal."""
    return _same(_info(data), registered)


def largest_copy(name: str, registered: Registered, unverified_ok: bool = True) -> int | None:
    """The most bytes any usable copy of `name` can have; None where nothing bounds it.

    Only the upstream file itself is usable where no other form exists (no `.gz`), or where no
    content digest is registered and an unverified copy would not be used (a cache). A copy
    verified by content is at most its content gzipped with stored blocks (5 bytes per 16 KiB
    block, plus a header whose name field has no set length: 64 KiB is room enough).
    """
    if not name.endswith(".gz") or (registered.content is None and not unverified_ok):
        return registered.download.size
    if registered.content is None:  # an unverified copy: the parser checks it against its IDX header
        return None
    content = registered.content.size
    return max(registered.download.size, content + 5 * (content // 16_383 + 1) + (64 << 10))


def read_copy(path: epath.Path, limit: int | None = None, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file at `path`, read once, at most `limit` + 1 of them.

    A manual dir's copy may be a symlink (the user's own); in the download dir (`follow_symlinks`
    False) one is refused as not a file.

    Raises FileNotFoundError where there is nothing (or a folder of the path is a file), and
    UnreadableCopyError where something cannot be read as a file: a pipe or device (opened
    without blocking, and refused: a pipe would wait for a writer forever), a directory, a
    permission or I/O error. Remote paths (`gs://`) are read through epath.
    """
    size = -1 if limit is None else limit + 1
    try:
        if "://" in os.fspath(path):
            if not path.is_file():  # remote file systems differ in what opening nothing raises
                raise FileNotFoundError(errno.ENOENT, "no such file", os.fspath(path))
            with path.open("rb") as remote:
                return remote.read(size)
        with _open_regular(path, follow_symlinks) as file:
            return file.read(size)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(errno.ENOENT, "no such file", os.fspath(path)) from None
    except UnreadableCopyError:
        raise
    except OSError as error:  # permission, I/O error, a file vanishing into a directory
        why = f"cannot be read ({error.strerror or error})"
        raise UnreadableCopyError(error.errno, why, os.fspath(path)) from None


@contextlib.contextmanager
def _open_regular(path: epath.Path, follow_symlinks: bool) -> Iterator[io.BufferedReader]:
    """The local regular file at `path`, opened without blocking (a pipe is refused, never waited on)."""
    try:
        descriptor = shared_files.open_regular(path, os.O_RDONLY, follow_symlinks=follow_symlinks)
    except shared_files.NotAFileError as error:  # a symlink, folder, FIFO, device: nothing waited on
        raise UnreadableCopyError(error.errno, error.strerror, os.fspath(path)) from None
    try:
        with open(descriptor, "rb", closefd=False) as file:
            yield file
    finally:
        os.close(descriptor)


def _digest_if_sized(path: epath.Path, sizes: AbstractSet[int]) -> UrlInfo | None:
    """The sha256 of the copy at `path` when its size is one of `sizes` (files another dataset registers),
    hashed in blocks straight from the file so that memory stays bounded whatever its size; None otherwise,
    or where it cannot be read (it is refused anyway: this only names it)."""
    remote = "://" in os.fspath(path)
    try:
        with path.open("rb") if remote else _open_regular(path, follow_symlinks=True) as file:
            size = path.stat().st_size if remote else os.fstat(file.fileno()).st_size
            if size not in sizes:
                return None
            digest, read = hashlib.sha256(), 0
            while read <= size and (block := file.read(_HASH_BLOCK_BYTES)):
                digest.update(block)
                read += len(block)
    except OSError:
        return None
    return UrlInfo(size=read, checksum=digest.hexdigest(), filename=None) if read == size else None


@dataclasses.dataclass(frozen=True)
class Known:
    """Every digest the MNIST-format family registers, with whose file it is: to name another dataset's file.

    MNIST, Kuzushiji-MNIST and Fashion-MNIST use the very same file names; a copy that is not this
    dataset's may still be recognised, by its bytes or its decompressed content, as another's.
    """

    owners: Mapping[tuple[int, str], str] = dataclasses.field(default_factory=dict)  # (size, sha256) -> whose
    largest_content: int = 0  # bytes of the largest registered decompressed content

    @classmethod
    def of(cls, registries: Mapping[str, Mapping[str, Registered]]) -> Known:
        """From each dataset's title and registry."""
        owners, largest = {}, 0
        for title, registry in registries.items():
            for name, registered in registry.items():
                owners[(int(registered.download.size), registered.download.checksum)] = f"{title}'s {name}"
                if registered.content is not None:
                    owners[(int(registered.content.size), registered.content.checksum)] = (
                        f"{title}'s {name}, decompressed"
                    )
                    largest = max(largest, int(registered.content.size))
        return cls(owners, largest)

    def whose(self, info: UrlInfo) -> str | None:
        return self.owners.get((int(info.size), info.checksum))

    @property
    def sizes(self) -> frozenset[int]:
        """Every registered size: a copy of another size is no file of the family's."""
        return frozenset(size for size, _ in self.owners)


def judge(
    path: epath.Path,
    name: str,
    registered: Registered,
    dataset: str,
    url: str,
    unverified_ok: bool = True,
    known: Known = Known(),
) -> Verdict:
    """Verifies the local copy at `path` of upstream file `name`; raises WrongFileError if it is not one.

    The copy is read once (FileNotFoundError if it is not there, UnreadableCopyError if it cannot be
    read); the Verdict carries those bytes. With `unverified_ok` false (a cache, where only verified
    copies are used), a copy that could at best be unverified is not read past the upstream file's size.
    A copy that another dataset of the family registers (`known`) is refused, naming that dataset.
    """
    limit = largest_copy(name, registered, unverified_ok)
    data = read_copy(path, limit)
    trap = traps.recognise(data[: traps.SNIFF_BYTES])
    if trap:
        raise WrongFileError(f"{path} is {trap}, not the file {name}. {traps.advice(trap, url)}")
    if limit is not None and len(data) > limit:
        return _too_large(path, name, registered, dataset, url, limit, data, known)
    actual = _info(data)
    if _same(actual, registered.download):
        return Verdict(path, name, True, "verified: the upstream file", data)
    _refuse_another_datasets(path, name, dataset, url, known.whose(actual))
    compressed = data[:2] == formats.GZIP_MAGIC
    if not name.endswith(".gz"):  # no other form of it exists
        raise ChecksumMismatchError(_mismatch(path, name, registered.download, actual, url))
    form = "recompressed" if compressed else "decompressed"
    if registered.content is None:  # nothing to compare its content with; the parser checks its form
        if known.largest_content:  # but it may be another dataset's content
            try:
                content = _info(formats.gunzip(data, path, limit=known.largest_content) if compressed else data)
            except formats.ContentTooLargeError:
                content = None
            if content is not None:
                _refuse_another_datasets(path, name, dataset, url, known.whose(content))
        return Verdict(path, name, False, _unverified(form), data)
    try:
        content = _info(formats.gunzip(data, path, limit=registered.content.size) if compressed else data)
    except formats.ContentTooLargeError:
        raise ChecksumMismatchError(
            f"{path} is not {dataset}'s {name}: it decompresses to more than upstream's"
            f" {plain_size(registered.content.size)} (inflating stopped there). {_replace_advice(path, url)}"
        ) from None
    if _same(content, registered.content):
        return Verdict(path, name, True, f"verified: upstream's content, {form}", data)
    _refuse_another_datasets(path, name, dataset, url, known.whose(content))
    raise ChecksumMismatchError(
        f"{path} is not {dataset}'s {name}: its content has sha256 {content.checksum}"
        f" ({plain_size(content.size)}), upstream's has sha256 {registered.content.checksum}"
        f" ({plain_size(registered.content.size)}). Other datasets (MNIST, Kuzushiji-MNIST) use the same file"
        f" names. {_replace_advice(path, url)}"
    )


def _refuse_another_datasets(path: epath.Path, name: str, dataset: str, url: str, whose: str | None) -> None:
    """Raises when the copy is recognised as another dataset's file."""
    if whose is not None and not whose.startswith(f"{dataset}'s "):
        raise ChecksumMismatchError(
            f"{path} is {whose}, not {dataset}'s {name}: the datasets use the same file names."
            f" {_replace_advice(path, url)}"
        )


def _too_large(
    path: epath.Path,
    name: str,
    registered: Registered,
    dataset: str,
    url: str,
    limit: int,
    start: bytes,
    known: Known,
) -> Verdict:
    """A copy larger than any usable copy of `name` (`limit`): refused having read only `start` of it, naming
    whose file it is where its size is that of another dataset's (upstream's EMNIST gzip.zip is larger than
    mnist_c.zip, which is larger than any MNIST file): only such a copy is hashed, block by block."""
    if name.endswith(".gz") and registered.content is None:  # a cache's unverifiable copy: passed over
        return Verdict(
            path, name, False, _unverified("recompressed" if start[:2] == formats.GZIP_MAGIC else "decompressed")
        )
    actual = _digest_if_sized(path, known.sizes)
    if actual is not None:
        _refuse_another_datasets(path, name, dataset, url, known.whose(actual))
    raise ChecksumMismatchError(
        f"{path} is not {dataset}'s {name}: it is larger than {plain_size(limit)},"
        f" more than any copy of upstream's file can be. {_replace_advice(path, url)}"
    )


def _unverified(form: str) -> str:
    return f"NOT verified against upstream: a {form} copy, and no digest of its content is registered"


def _mismatch(path: epath.Path, name: str, expected: UrlInfo, actual: UrlInfo, url: str) -> str:
    return (
        f"{path} is not the upstream {name}:\n"
        f"  expected sha256 {expected.checksum}, {plain_size(expected.size)}\n"
        f"  found    sha256 {actual.checksum}, {plain_size(actual.size)}\n"
        f"It is damaged or a different file. {_replace_advice(path, url)}"
    )


def _replace_advice(path: epath.Path, url: str) -> str:
    return (
        f"Replace it with the upstream file ({url}), copied from any machine with network access,"
        f" or move it out of {path.parent} so that the builder downloads it."
    )


def check_split(verdicts: list[Verdict]) -> None:
    """An unverified copy is used only beside a file of its split that verifies (its labels)."""
    unverified = [verdict for verdict in verdicts if not verdict.verified]
    if unverified and len(unverified) == len(verdicts):
        names = ", ".join(str(verdict.path) for verdict in unverified)
        raise WrongFileError(
            f"Cannot use {names}: no file of that split verifies against upstream, so nothing shows they are"
            " this dataset's. Use the upstream .gz files (they are verified by their sha256)."
        )
