"""How a local copy is verified: by its bytes, or by its content whatever the compression.

MNIST, Kuzushiji-MNIST and Fashion-MNIST use the very same file names, and keras and
torchvision keep them gzipped or not, so a name proves nothing. A copy is accepted when
its bytes are upstream's (the registered sha256 and size of the download), or when it
decompresses to upstream's content where that content's digest is registered
(`checksums/<name>.decompressed.tsv`). A copy whose content's digest is not registered
(the decompressed image files) is "unverified": the builder uses it only beside a file of
its split that does verify, and says so. Anything else is refused with an error naming
the file, what it is, and what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import formats, traps
from mnist_variants.errors import ChecksumMismatchError, WrongFileError

UrlInfo = tfds_checksums.UrlInfo


@dataclasses.dataclass(frozen=True)
class Registered:
    """What is known of one upstream file: its download's digest and, if registered, its content's."""

    download: UrlInfo
    content: UrlInfo | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A local copy judged: the upstream file it stands for, whether it verified, and how."""

    path: epath.Path
    name: str
    verified: bool
    how: str


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


def judge(path: epath.Path, name: str, registered: Registered, dataset: str, url: str) -> Verdict:
    """Verifies the local copy at `path` of upstream file `name`; raises WrongFileError if it is not one."""
    data = path.read_bytes()
    trap = traps.recognise(data[: traps.SNIFF_BYTES])
    if trap:
        raise WrongFileError(f"{path} is {trap}, not the file {name}. {traps.advice(trap, url)}")
    actual = _info(data)
    if _same(actual, registered.download):
        return Verdict(path, name, True, "verified: the upstream file")
    compressed = data[:2] == formats.GZIP_MAGIC
    if not name.endswith(".gz"):  # no other form of it exists
        raise ChecksumMismatchError(_mismatch(path, name, registered.download, actual, url))
    form = "recompressed" if compressed else "decompressed"
    if registered.content is None:  # nothing to compare its content with; the parser checks its form
        how = f"NOT verified against upstream: a {form} copy, and no digest of its content is registered"
        return Verdict(path, name, False, how)
    content = _info(formats.gunzip(data, path) if compressed else data)
    if _same(content, registered.content):
        return Verdict(path, name, True, f"verified: upstream's content, {form}")
    raise ChecksumMismatchError(
        f"{path} is not {dataset}'s {name}: its content has sha256 {content.checksum}"
        f" ({plain_size(content.size)}), upstream's has sha256 {registered.content.checksum}"
        f" ({plain_size(registered.content.size)}). Other datasets (MNIST, Kuzushiji-MNIST) use the same file"
        f" names. {_replace_advice(path, url)}"
    )


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
