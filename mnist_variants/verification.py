"""How a local copy is verified: by its bytes, or by its content whatever the compression.

MNIST, Kuzushiji-MNIST and Fashion-MNIST use the very same file names, and keras and
torchvision keep them gzipped or not, so a name proves nothing. A copy is accepted when
its bytes are upstream's (the registered sha256 and size of the download), or when it
decompresses to upstream's content where that content's digest is registered
(`checksums/<name>.decompressed.tsv`). A copy whose content's digest is not registered
(the decompressed image files) is "unverified": the builder uses it only beside a file of
its split that does verify, and says so. Anything else is refused with an error naming
the file, what it is, and what to do.

Some upstream files are known by their digests, not their size (QMNIST's images: upstream publishes
only the md5 torchvision checks and each file's git blob id): `checksums/<name>.digests.tsv`
lists them as `url, max_size, md5, git_blob_sha1, filename`, and such a file is accepted only
when it is at most `max_size` bytes and both digests match (`Digests`). The bound stands in for
the size wherever the size bounds what is read.

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
import re
from collections.abc import Iterator, Mapping

from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import formats, partials, shared_files, traps
from mnist_variants.errors import ChecksumMismatchError, MalformedFileError, MnistVariantsError, WrongFileError

UrlInfo = tfds_checksums.UrlInfo

_HASH_BLOCK_BYTES = 1 << 20  # a copy too large to read whole is hashed a block at a time


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of `data`: SHA-1 of `blob <size>\\0` and the bytes (what git, and GitHub, call the file)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Digests:
    """A file known by its digests but not its size: at most `max_size` bytes, with this md5 and git blob sha1.

    Both digests must match: md5 alone is broken (collisions are made at will), and the blob id is SHA-1,
    whose collisions cost a great deal more; together, with a size bound, they are what upstream vouches for.
    """

    max_size: int
    md5: str
    git_blob_sha1: str

    def matches(self, data: bytes) -> bool:
        return len(data) <= self.max_size and self.found(data) == (self.md5, self.git_blob_sha1)

    @staticmethod
    def found(data: bytes) -> tuple[str, str]:
        """(md5, git blob sha1) of `data`."""
        return hashlib.md5(data, usedforsecurity=False).hexdigest(), git_blob_sha1(data)


@dataclasses.dataclass(frozen=True)
class Registered:
    """What is known of one upstream file: its download's digest (size and sha256) or, for a file known by its
    digests, those (`digests`); and, if registered, its content's digest."""

    download: UrlInfo | None
    content: UrlInfo | None = None
    digests: Digests | None = None

    @property
    def most_bytes(self) -> int:
        """The size of the upstream file, or the most it may have where only its digests are known."""
        return int(self.download.size) if self.download is not None else self.digests.max_size

    @property
    def size(self) -> int | None:
        """The registered size; None for a file known by its digests (its server says it, within `most_bytes`)."""
        return int(self.download.size) if self.download is not None else None

    def verifies(self, data: bytes) -> bool:
        """Whether `data` is the upstream file: its size and sha256, or its size bound and both digests."""
        if self.download is None:
            return self.digests.matches(data)
        return _same(_info(data), self.download)

    def mismatch(self, data: bytes) -> str:
        """What `data` has and what was expected, in one line: the one wording of every refusal by digest, for
        downloads ("URL sent ...") and local copies ("it has ...") alike."""
        if self.download is None:
            md5, blob = Digests.found(data)
            digests = self.digests
            return (
                f"md5 {md5}, git blob sha1 {blob}, {plain_size(len(data))}; expected md5 {digests.md5},"
                f" git blob sha1 {digests.git_blob_sha1}, at most {plain_size(digests.max_size)}"
            )
        return (
            f"sha256 {hashlib.sha256(data).hexdigest()}, {plain_size(len(data))}; expected sha256"
            f" {self.download.checksum}, {plain_size(self.download.size)}"
        )


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


def digests_path(checksums_path: epath.Path) -> epath.Path:
    """`<name>.digests.tsv` beside `<name>.tsv`: the files known by their digests but not their size."""
    return checksums_path.parent / f"{checksums_path.stem}.digests.tsv"


_MD5 = re.compile(r"[0-9a-f]{32}")


def load_digests(path: epath.Path) -> dict[str, Digests]:
    """The files `path` lists (`url<TAB>max_size<TAB>md5<TAB>git_blob_sha1<TAB>filename` a line), by file name.

    Several URLs may list one file; they must agree. Our own parser: TFDS's reads only its
    size-and-sha256 format. A line that is not so is an error naming the file and the line.
    """
    found: dict[str, Digests] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 5 or not fields[1].isdigit() or int(fields[1]) <= 0:
            raise ValueError(f"{path}:{number}: not url, max_size, md5, git_blob_sha1, filename: {line!r}")
        _url, max_size, md5, blob, filename = fields
        if not _MD5.fullmatch(md5) or not partials.SHA1_HEX.fullmatch(blob) or not filename or "/" in filename:
            raise ValueError(f"{path}:{number}: not url, max_size, md5, git_blob_sha1, filename: {line!r}")
        digests = Digests(int(max_size), md5, blob)
        if found.setdefault(filename, digests) != digests:
            raise ValueError(f"{path}:{number}: {filename} is listed with other digests above")
    return found


def load_registry(url_infos: Mapping[str, UrlInfo], checksums_path: epath.Path) -> dict[str, Registered]:
    """Every registered upstream file by name, with its content digest where one is registered; and every file
    known by its digests (`<name>.digests.tsv`)."""
    content_path = content_checksums_path(checksums_path)
    contents = tfds_checksums.load_url_infos(content_path) if content_path.exists() else {}
    content_by_download_name = {url.rsplit("/", 1)[-1]: info for url, info in contents.items()}
    registry = {
        info.filename: Registered(info, content_by_download_name.get(info.filename)) for info in url_infos.values()
    }
    by_digests = digests_path(checksums_path)
    for name, digests in (load_digests(by_digests) if by_digests.exists() else {}).items():
        if name in registry:
            raise ValueError(f"{by_digests}: {name} is registered by its size and sha256 already")
        registry[name] = Registered(None, content_by_download_name.get(name), digests)
    return registry


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

    Only the upstream file itself is usable where no other form exists (no `.gz`), where no
    content digest is registered and an unverified copy would not be used (a cache), or where the
    file is known by its digests and no content digest is registered (nothing else can verify). A copy
    verified by content is at most its content gzipped with stored blocks (5 bytes per 16 KiB
    block, plus a header whose name field has no set length: 64 KiB is room enough).
    """
    only_upstreams = not unverified_ok or registered.digests is not None
    if not name.endswith(".gz") or (registered.content is None and only_upstreams):
        return registered.most_bytes
    if registered.content is None:  # an unverified copy: the parser checks it against its IDX header
        return None
    content = registered.content.size
    return max(registered.most_bytes, content + 5 * (content // 16_383 + 1) + (64 << 10))


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


def _whose_file(path: epath.Path, known: Known) -> str | None:
    """Whose file the copy at `path` is, when its size is one another dataset registers (by sha256) or within the
    bound of a file known by its digests (by md5 and git blob sha1: the blob's header needs the size, so it is
    taken from the file first); hashed in blocks straight from the file so that memory stays bounded whatever its
    size. None otherwise, or where it cannot be read (it is refused anyway: this only names it)."""
    remote = "://" in os.fspath(path)
    try:
        with path.open("rb") if remote else _open_regular(path, follow_symlinks=True) as file:
            size = path.stat().st_size if remote else os.fstat(file.fileno()).st_size
            by_sha256, by_digests = size in known.sizes, bool(known.by_digests) and size <= known.largest_by_digests
            if not (by_sha256 or by_digests):
                return None
            sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
            blob = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
            read = 0
            while read <= size and (block := file.read(_HASH_BLOCK_BYTES)):
                for digest in (sha256, md5, blob):
                    digest.update(block)
                read += len(block)
    except OSError:
        return None
    if read != size:  # it changed while read: nothing can be said of it
        return None
    whose = known.whose(UrlInfo(size=size, checksum=sha256.hexdigest(), filename=None))
    return whose or known.by_digests.get((md5.hexdigest(), blob.hexdigest()))


@dataclasses.dataclass(frozen=True)
class Known:
    """Every digest the MNIST-format family registers, with whose file it is: to name another dataset's file.

    MNIST, Kuzushiji-MNIST and Fashion-MNIST use the very same file names; a copy that is not this
    dataset's may still be recognised, by its bytes or its decompressed content, as another's; a file known
    by its digests (QMNIST's images) by its md5 and git blob sha1.
    """

    owners: Mapping[tuple[int, str], str] = dataclasses.field(default_factory=dict)  # (size, sha256) -> whose
    largest_content: int = 0  # bytes of the largest registered decompressed content
    by_digests: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (md5, blob sha1) -> whose
    largest_by_digests: int = 0  # the largest `max_size` of a file known by its digests

    @classmethod
    def of(cls, registries: Mapping[str, Mapping[str, Registered]]) -> Known:
        """From each dataset's title and registry."""
        owners, largest, by_digests, largest_by_digests = {}, 0, {}, 0
        for title, registry in registries.items():
            for name, registered in registry.items():
                if registered.download is not None:
                    owners[(int(registered.download.size), registered.download.checksum)] = f"{title}'s {name}"
                if registered.digests is not None:
                    digests = registered.digests
                    by_digests[(digests.md5, digests.git_blob_sha1)] = f"{title}'s {name}"
                    largest_by_digests = max(largest_by_digests, digests.max_size)
                if registered.content is not None:
                    owners[(int(registered.content.size), registered.content.checksum)] = (
                        f"{title}'s {name}, decompressed"
                    )
                    largest = max(largest, int(registered.content.size))
        for (size, sha256), whose in _UNUSED_CONTENTS.items():
            owners.setdefault((size, sha256), whose)
            largest = max(largest, size)
        return cls(owners, largest, by_digests, largest_by_digests)

    def whose(self, info: UrlInfo) -> str | None:
        return self.owners.get((int(info.size), info.checksum))

    def whose_bytes(self, data: bytes) -> str | None:
        """Whose file `data` is, by its size and sha256 or (no larger than such a file may be) its two digests."""
        whose = self.whose(_info(data))
        if whose is None and self.by_digests and len(data) <= self.largest_by_digests:
            whose = self.by_digests.get(Digests.found(data))
        return whose

    @property
    def sizes(self) -> frozenset[int]:
        """Every registered size: a copy of another size is no file of the family's."""
        return frozenset(size for size, _ in self.owners)


# Files this package does not use, which a user may drop in under one of its names, by their content's
# (size, sha256). QMNIST's repository publishes MNIST-style label files beside the extended ones: the test one
# (60,000 labels: column 0 of qmnist-test-labels-idx2-int) is named so. Its train one needs no entry: its content
# is MNIST's train labels exactly, so nothing is wrong with it under MNIST's train-labels name.
_UNUSED_CONTENTS = {
    (60_008, "dbc433804379831d5aa1f78549bc9a1db7266c82d319f407d05246e3e45b6753"): (
        "QMNIST's qmnist-test-labels-idx1-ubyte.gz (decompressed)"
    ),
}


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
    if registered.verifies(data):
        return Verdict(path, name, True, "verified: the upstream file", data)
    _refuse_another_datasets(path, name, dataset, url, known.whose_bytes(data))
    compressed = data[:2] == formats.GZIP_MAGIC
    if not name.endswith(".gz"):  # no other form of it exists
        raise ChecksumMismatchError(_mismatch(path, name, registered, data, url))
    form = "recompressed" if compressed else "decompressed"
    if registered.content is None:  # nothing to compare its content with; the parser checks its form
        _refuse_another_datasets(path, name, dataset, url, _whose_content(path, data, known))
        if registered.digests is not None:  # only upstream's bytes are vouched for: no unverified form
            raise ChecksumMismatchError(_mismatch(path, name, registered, data, url))
        return Verdict(path, name, False, _unverified(form), data)
    try:
        content = _info(formats.gunzip(data, path, limit=registered.content.size) if compressed else data)
    except formats.ContentTooLargeError:
        _refuse_another_datasets(path, name, dataset, url, _whose_content(path, data, known))
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


def _whose_content(path: epath.Path, data: bytes, known: Known) -> str | None:
    """Whose file the (decompressed) content of `data` is, inflating no further than the largest content known."""
    if not known.largest_content:
        return None
    try:
        content = formats.gunzip(data, path, limit=known.largest_content) if data[:2] == formats.GZIP_MAGIC else data
    except MalformedFileError:  # too large or corrupt: this only names it: it is refused anyway
        return None
    return known.whose(_info(content))


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
    if (
        name.endswith(".gz") and registered.content is None and registered.digests is None
    ):  # a cache's unverifiable copy: passed over
        return Verdict(
            path, name, False, _unverified("recompressed" if start[:2] == formats.GZIP_MAGIC else "decompressed")
        )
    _refuse_another_datasets(path, name, dataset, url, _whose_file(path, known))
    digests = registered.digests
    known_by = (
        f" (upstream's is known by md5 {digests.md5} and git blob sha1 {digests.git_blob_sha1})" if digests else ""
    )
    raise ChecksumMismatchError(
        f"{path} is not {dataset}'s {name}: it is larger than {plain_size(limit)},"
        f" more than any copy of upstream's file can be{known_by}. {_replace_advice(path, url)}"
    )


def _unverified(form: str) -> str:
    return f"NOT verified against upstream: a {form} copy, and no digest of its content is registered"


def _mismatch(path: epath.Path, name: str, registered: Registered, data: bytes, url: str) -> str:
    return (
        f"{path} is not the upstream {name}: it has {registered.mismatch(data)}.\n"
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
