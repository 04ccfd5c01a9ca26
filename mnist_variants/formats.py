"""Readers of the upstream file formats: pure functions from bytes to numpy arrays.

They check everything they rely on and raise `MalformedFileError` naming the file
and the problem, so a damaged download fails in seconds. An IDX image body may be read in
batches (`read_idx_images_in_batches`): its header is checked at once, the rest where it is reached.
No reader allocates more than the data it was given actually holds: a header that
claims more items than the file can hold is refused before anything is sized by it.
"""

from __future__ import annotations

import dataclasses
import io
import lzma
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence, Sized

import numpy as np
from zlib_ng import zlib_ng

from mnist_variants.errors import MalformedFileError

IMAGE_SIDE = 28
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: count, rows, columns
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: count
IDX_INT32_TABLE_MAGIC = 0x00000C02  # big-endian int32 (type 0x0C), 2 dimensions: rows, columns (QMNIST's labels)
# Each IDX type (the magic's third byte): its bytes per value and its name in messages.
_IDX_TYPES = {
    0x08: (1, "unsigned bytes"),
    0x09: (1, "signed bytes"),
    0x0B: (2, "big-endian int16"),
    0x0C: (4, "big-endian int32"),
    0x0D: (4, "big-endian float32"),
    0x0E: (8, "big-endian float64"),
}
XZ_MAGIC = b"\xfd7zXZ\x00"
# The xz decoder's own memory (its dictionary, which a stream's header names) is bounded too: upstream's files
# need 65 MiB (LZMA2, 64 MiB dictionary, `xz --list -vv`); a stream that asks for more is refused.
_XZ_MEMORY_LIMIT = 128 << 20

AMAT_VALUES_PER_LINE = IMAGE_SIDE * IMAGE_SIDE
AMAT_LINE_BYTES = 2 * AMAT_VALUES_PER_LINE  # "v v ... v\n": each value followed by one separator

Source = str | os.PathLike

_FEED_BYTES = 1 << 20  # compressed bytes handed to the inflater at a time
_JOIN_BYTES = 1 << 24  # reads up to this size are joined from parts; larger ones fill one buffer
_MAX_DEFLATE_RATIO = 1032  # deflate's most output per input byte: bounds what a stream can hold


class ContentTooLargeError(MalformedFileError):
    """A gzip stream decompresses to more than the caller's limit; inflating stopped there."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def _fill(content: bytearray, read: Callable[[int], bytes]) -> int:
    """Fills `content` from `read` in parts of at most `_JOIN_BYTES`; returns how many bytes it filled (fewer than
    its length only where `read` ran dry)."""
    filled = 0
    while filled < len(content) and (part := read(min(_JOIN_BYTES, len(content) - filled))):
        content[filled : filled + len(part)] = part
        filled += len(part)
    return filled


class _ByteReader:
    """Sequential reads from raw, gzip-compressed, xz-compressed or (with `raw_deflate`) deflated bytes,
    inflating no more than asked for, and never more than `most_content` bytes in all where given.

    The compressed input is fed to the inflater a slice at a time and a large read is inflated into one
    buffer, so reading a 547 MB member costs that buffer, not copies of the input or parts to join.
    Deflate can hold at most 1032 bytes a byte, so a header is checked against that; xz's ratio has no such
    bound (a 100-byte stream can hold gigabytes), so an xz stream is read only with its file's `most_content`.
    """

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        source: Source,
        raw_deflate: bool = False,
        most_content: int | None = None,
    ) -> None:
        self.source = os.fspath(source)
        self._data = memoryview(data)
        self._position = 0  # raw data: bytes read; compressed: bytes fed to the inflater
        self._produced = 0  # bytes read out
        self._most_content = most_content
        self.stream = "deflate" if raw_deflate else "gzip" if data[:2] == GZIP_MAGIC else None
        # Without a bound, an xz stream is read as raw bytes (so refused by the format's magic).
        if not raw_deflate and most_content is not None and bytes(data[: len(XZ_MAGIC)]) == XZ_MAGIC:
            self.stream = "xz"
            # Python's lzma (liblzma): the xz decoder and its checks (CRC-64 upstream); its memory bounded.
            self._inflater = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMORY_LIMIT)
        else:
            # zlib-ng: the same RFC 1952 checks (header, CRC-32 and length of the content) at about twice zlib's
            # speed; EMNIST byclass's 547 MB train images took 1.1 s against 2.3 s (2026-11-26), on a core TFDS's
            # writer shares. A zip member's deflate stream has no header or trailer (its CRC-32 is in the zip's
            # index).
            self._inflater = zlib_ng.decompressobj(wbits=-zlib_ng.MAX_WBITS if raw_deflate else 16 + zlib_ng.MAX_WBITS)
        self.compressed = self.stream is not None  # read through the inflater

    def fail(self, problem: str) -> MalformedFileError:
        return MalformedFileError(f"{self.source}: {problem}")

    def read(self, size: int) -> bytes | bytearray | memoryview:
        """Returns up to `size` bytes; fewer only where the data ends."""
        if not self.compressed:
            chunk = self._data[self._position : self._position + size]
            self._position += len(chunk)
            return chunk
        if size <= _JOIN_BYTES:
            return self._inflate(size)
        # Sized by what the rest of the stream can hold at most, never by a header alone.
        content = bytearray(min(size, self.most_left()))
        del content[self.read_into(content) :]
        return content

    def read_into(self, content: bytearray) -> int:
        """Fills `content` with what comes next; returns how many bytes, fewer only where the data ends."""
        if not self.compressed:
            return _fill(content, self.read)
        return _fill(content, self._inflate)

    def most_left(self) -> int:
        """The most bytes the rest of the data can yield: exactly what is left, or what deflate can hold, or
        what is left of `most_content`."""
        unread = len(self._data) - self._position
        if not self.compressed:
            return unread
        bound = self._most_content - self._produced if self._most_content is not None else None
        if self.stream == "xz":
            return bound
        most = _MAX_DEFLATE_RATIO * (unread + len(self._inflater.unconsumed_tail)) + _FEED_BYTES
        return most if bound is None else min(most, bound)

    def what_can_follow(self, most: int) -> str:
        """`most_left()`'s `most`, said in a message."""
        if not self.compressed:
            return f"only {most} bytes follow (truncated file?)"
        if self._most_content is not None and most == self._most_content - self._produced:
            return f"this file's content is at most {self._most_content:,} bytes: refused before inflating it"
        return f"the rest of the {self.stream} stream can hold {most} bytes at most (truncated file?)"

    def _inflate(self, size: int) -> bytes:
        parts = []
        while size > 0 and not self._inflater.eof:
            if self.stream == "xz":  # lzma keeps the input it has not used; it asks for more when it needs it
                pending = self._next_input() if self._inflater.needs_input else b""
            else:
                pending = self._inflater.unconsumed_tail or self._next_input()
            try:
                part = self._inflater.decompress(pending, size)
            except (zlib_ng.error, lzma.LZMAError) as error:
                raise self.fail(f"corrupt {self.stream} stream ({error})") from None
            parts.append(part)
            size -= len(part)
            self._produced += len(part)
        return b"".join(parts)

    def _next_input(self) -> memoryview:
        pending = self._data[self._position : self._position + _FEED_BYTES]
        self._position += len(pending)
        if not pending:
            raise self.fail(f"{self.stream} stream is cut short (truncated download?)")
        return pending

    def check_end(self, what: str) -> None:
        """Raises unless the data (and, if compressed, the compressed stream) ends right here."""
        if self.read(1):
            extra = "more data" if self.compressed else f"{len(self._data) - self._position + 1} bytes"
            raise self.fail(f"trailing garbage: {extra} after {what}")
        unused = len(self._inflater.unused_data) + len(self._data) - self._position
        if self.compressed and unused:
            raise self.fail(f"{unused} bytes of trailing garbage after the {self.stream} stream")


def gunzip(data: bytes, source: Source = "<bytes>", limit: int | None = None) -> bytes | bytearray:
    """The whole decompressed content of gzip `data`; a cut or corrupt stream is a MalformedFileError.

    With `limit`, inflating stops as soon as the content passes `limit` bytes (ContentTooLargeError):
    a small file that expands to gigabytes costs `limit` bytes of memory, not gigabytes.
    """
    reader = _ByteReader(data, source)
    if limit is not None:
        content = reader.read(limit + 1)
        if len(content) > limit:
            raise ContentTooLargeError(f"{reader.source}: decompresses to more than {limit:,} bytes", limit)
        reader.check_end("the gzip stream")
        return content if isinstance(content, bytes | bytearray) else bytes(content)
    parts = []
    while chunk := reader.read(1 << 24):
        parts.append(chunk)
    reader.check_end("the gzip stream")
    return b"".join(parts)


@dataclasses.dataclass(frozen=True)
class ImageBatches:
    """`count` images, batch by batch. An IDX file's (`read_idx_images_in_batches`) have a checked header and
    are inflated as `batches` is iterated: a problem in the body (cut short, corrupt, trailing garbage) is
    raised there."""

    count: int
    batches: Iterator[np.ndarray]  # (n, 28, 28, 1) uint8 arrays, in file order

    @classmethod
    def of(cls, images: np.ndarray, batch: int) -> ImageBatches:
        """Images parsed whole (Binarized MNIST's text files), in batches of `batch`: views, no copies."""
        starts = range(0, len(images), batch)
        return cls(len(images), (images[start : start + batch] for start in starts))

    def __len__(self) -> int:
        return self.count


def _open_idx(
    data: bytes, source: Source, magic: int, item_shape: tuple[int, ...], what: str, most_content: int | None = None
) -> tuple[_ByteReader, int]:
    """A reader past the checked header of an IDX file, and the number of items the header promises.

    The magic names the values' type and the number of dimensions (`item_shape` and the count); the body is
    `count` items of `item_shape` values of that type. `most_content` bounds the file's content (needed for xz).
    """
    reader = _ByteReader(data, source, most_content=most_content)
    ndim = 1 + len(item_shape)
    value_bytes, value_type = _IDX_TYPES[magic >> 8 & 0xFF]
    header = reader.read(4 + 4 * ndim)
    if len(header) < 4:
        raise reader.fail(f"only {len(header)} bytes: too short for an IDX header")
    (found_magic,) = struct.unpack(">I", header[:4])
    if found_magic != magic:
        raise reader.fail(
            f"IDX magic number 0x{found_magic:08x}, expected 0x{magic:08x} ({what}, {value_type}, {ndim} dimensions)"
        )
    if len(header) < 4 + 4 * ndim:
        raise reader.fail(f"IDX header cut short after {len(header)} bytes")
    count, *shape = struct.unpack(f">{ndim}I", header[4:])
    if tuple(shape) != item_shape:
        found = "x".join(map(str, shape))
        expected = "x".join(map(str, item_shape))
        raise reader.fail(f"{what} of {found}, expected {expected}")
    body_bytes = count * int(np.prod(item_shape, dtype=np.int64)) * value_bytes
    if body_bytes > (most := reader.most_left()):  # refused before anything is sized by it
        raise reader.fail(f"header promises {count} {what} ({body_bytes} bytes) but {reader.what_can_follow(most)}")
    return reader, count


def _idx_body(
    reader: _ByteReader, count: int, item_shape: tuple[int, ...], what: str, batch: int
) -> Iterator[np.ndarray]:
    """The `count` items after the header, `batch` at a time; then the data must end."""
    item_bytes = int(np.prod(item_shape, dtype=np.int64))
    for start in range(0, count, batch):
        wanted = min(batch, count - start) * item_bytes
        body = reader.read(wanted)
        if len(body) < wanted:
            raise reader.fail(
                f"header promises {count} {what} ({count * item_bytes} bytes) but only"
                f" {start * item_bytes + len(body)} bytes follow (truncated file?)"
            )
        yield np.frombuffer(body, dtype=np.uint8).reshape((-1, *item_shape))
    reader.check_end(f"the {count} {what} the header promises")


def _read_idx(data: bytes, source: Source, magic: int, item_shape: tuple[int, ...], what: str) -> np.ndarray:
    reader, count = _open_idx(data, source, magic, item_shape, what)
    parts = list(_idx_body(reader, count, item_shape, what, batch=max(count, 1)))  # one part: no copy
    return parts[0] if parts else np.zeros((0, *item_shape), np.uint8)


def read_idx_images(data: bytes, source: Source = "<bytes>") -> np.ndarray:
    """Parses an IDX image file (gzipped or not) into a (count, 28, 28, 1) uint8 array."""
    images = _read_idx(data, source, IDX_IMAGES_MAGIC, (IMAGE_SIDE, IMAGE_SIDE), "images")
    return images[..., np.newaxis]


def read_idx_images_in_batches(
    data: bytes, source: Source = "<bytes>", batch: int = 1 << 14, most_content: int | None = None
) -> ImageBatches:
    """As `read_idx_images`, but only the header is read now; the images are inflated `batch` at a time.

    Why: inflating EMNIST byclass's 547 MB of train images took 2.6 s before TFDS could write a thing
    (2026-11-25). In batches, the first ones are encoded and written while the rest inflate on another
    core (zlib-ng lets go of the GIL). The body is checked as strictly, only later, when it is reached.
    """
    reader, count = _open_idx(data, source, IDX_IMAGES_MAGIC, (IMAGE_SIDE, IMAGE_SIDE), "images", most_content)
    body = _idx_body(reader, count, (IMAGE_SIDE, IMAGE_SIDE), "images", batch)
    return ImageBatches(count, (images[..., np.newaxis] for images in body))


def read_idx_labels(
    data: bytes, source: Source = "<bytes>", num_classes: int = 10, unused: Sequence[int] = ()
) -> np.ndarray:
    """Parses an IDX label file (gzipped or not) into a (count,) uint8 array of 0..num_classes-1, none of
    them a class the dataset leaves `unused` (EMNIST Letters' 0)."""
    labels = _read_idx(data, source, IDX_LABELS_MAGIC, (), "labels")
    check_labels(labels, source, num_classes, unused)
    return labels


def check_labels(labels: np.ndarray, source: Source, num_classes: int, unused: Sequence[int] = ()) -> None:
    """Raises unless every label is one of 0..num_classes-1 but the `unused` ones: every reader's label check."""
    used = np.setdiff1d(np.arange(num_classes), np.asarray(unused, dtype=np.int64))
    out_of_range = np.flatnonzero(~np.isin(labels, used))
    if out_of_range.size:
        first = int(out_of_range[0])
        classes = f"{used[0]}..{used[-1]}" if used.size and used[-1] - used[0] + 1 == used.size else str(list(used))
        raise MalformedFileError(
            f"{os.fspath(source)}: label {labels[first]} at index {first} is outside {classes}"
            f" ({out_of_range.size} such labels)"
        )


def check_same_count(images: Sized, images_source: Source, labels: Sized, labels_source: Source) -> None:
    """Raises unless an image file and its label file describe the same number of examples."""
    if len(images) != len(labels):
        raise MalformedFileError(
            f"{os.fspath(images_source)} holds {len(images)} images but {os.fspath(labels_source)}"
            f" holds {len(labels)} labels"
        )


def read_amat(data: bytes, source: Source = "<bytes>") -> np.ndarray:
    """Parses Binarized MNIST `.amat` text (one image a line, 784 space-separated 0/1) into (count, 28, 28, 1) uint8."""
    if not data:
        raise MalformedFileError(f"{os.fspath(source)}: empty file, expected lines of 784 values 0/1")
    if not data.endswith(b"\n"):
        data += b"\n"  # A last line without its newline is still a whole line.
    lines = np.frombuffer(data, dtype=np.uint8)
    if lines.size % AMAT_LINE_BYTES == 0:
        lines = lines.reshape(-1, AMAT_LINE_BYTES)
        values, separators = lines[:, 0::2], lines[:, 1::2]
        expected_separators = np.full(AMAT_VALUES_PER_LINE, ord(" "), dtype=np.uint8)
        expected_separators[-1] = ord("\n")
        # `v | 1 == "1"` holds exactly for v in {"0", "1"}.
        if ((values | 1) == ord("1")).all() and (separators == expected_separators).all():
            return (values - ord("0")).reshape(-1, *IMAGE_SHAPE)
    raise _first_amat_problem(data, source)


def _first_amat_problem(data: bytes, source: Source) -> MalformedFileError:
    """Finds the first line that breaks the `.amat` format and says what is wrong with it."""
    lines = data.split(b"\n")[:-1]  # data ends with a newline: the last piece is empty.
    well_formed_line_length = AMAT_LINE_BYTES - 1
    for number, line in enumerate(lines, start=1):
        if (
            len(line) == well_formed_line_length
            and not line[0::2].translate(None, b"01")
            and (line[1::2] == b" " * (AMAT_VALUES_PER_LINE - 1))
        ):
            continue
        where = f"{os.fspath(source)}: line {number}"
        if not line:
            return MalformedFileError(f"{where}: blank line, expected {AMAT_VALUES_PER_LINE} values")
        values = line.split(b" ")
        if len(values) != AMAT_VALUES_PER_LINE:
            return MalformedFileError(
                f"{where}: {len(values)} values, expected {AMAT_VALUES_PER_LINE} separated by single spaces"
            )
        position, value = next((i, v) for i, v in enumerate(values, start=1) if v not in (b"0", b"1"))
        return MalformedFileError(f"{where}: value {position} is {value[:20]!r}, expected 0 or 1")
    raise AssertionError("read_amat refused data in which no line breaks the format")


def encode_idx(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of unsigned bytes holding `array` (count first): the readers' inverse."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, IDX_UBYTE, array.ndim, *array.shape)
    return header + array.tobytes()


def read_npz(data: bytes, source: Source, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The uint8 arrays `keys` of a NumPy `.npz` archive (keras's mnist.npz), read strictly.

    Members must be exactly `<key>.npy`, C-ordered uint8 arrays holding exactly the bytes their
    headers describe. No pickles are loaded, and nothing is sized by a header before the
    member's recorded size agrees with it.
    """
    where = os.fspath(source)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))  # BytesIO shares the bytes: no copy
    except _ZIP_ERRORS as error:
        raise MalformedFileError(f"{where}: not a readable .npz archive ({error or type(error).__name__})") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        expected = {f"{key}.npy" for key in keys}
        if set(members) != expected:
            raise MalformedFileError(
                f"{where}: holds {sorted(members)}, expected exactly {sorted(expected)} (a NumPy .npz archive)"
            )
        return {key: _read_npy(archive, members[f"{key}.npy"], where, data) for key in keys}


def _read_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, data: bytes) -> np.ndarray:
    """A member of keras's .npz: inflated as any zip member is (sized only by what the archive's bytes can
    hold), then read by the one strict .npy reader."""
    source = f"{where}[{info.filename}]"
    array = read_npy(_read_member(archive, info, where, data, None), source)
    if array.dtype != np.uint8:
        raise MalformedFileError(f"{source}: a {array.dtype} array, expected uint8")
    return array


UNUSED_CLASS = "N/A"  # the name of a label value a dataset never uses (EMNIST Letters' 0)


# Every way a damaged zip index reaches zipfile's reader as a Python error (a version it cannot read, a
# negative seek, a field struct cannot unpack, a size it cannot hold); each becomes a MalformedFileError.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OverflowError,
    struct.error,
    MemoryError,
    OSError,
)
# A member's local header before its name: signature, versions, flags, method, time, date, CRC-32, sizes, and
# the lengths of its name and extra field; its stored bytes start after those.
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
_LOCAL_HEADER_BYTES = _LOCAL_HEADER.size
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_ZIP_ENCRYPTED_FLAGS = 0x1 | 0x40  # encrypted, strongly encrypted
_ZIP_UTF8_NAME_FLAG = 0x800


def read_zip_members(
    data: bytes,
    source: Source,
    members: Sequence[str],
    optional: Sequence[str] = (),
    most_bytes: int | None = None,
) -> dict[str, bytearray]:
    """The named members of zip archive `data` (EMNIST's gzip.zip, MNIST-C's mnist_c.zip), each inflated once
    and checked.

    zipfile reads the index; a deflated member's local header is checked against its central record and its
    stored bytes are inflated by zlib-ng (`_inflate_member`), any other member is read by zipfile, and each is
    checked against its recorded CRC-32 and size as it is read whole. A member of `members` that is missing, or
    any that is damaged, is a MalformedFileError naming it; a member of `optional` that is missing is left out.
    Nothing is extracted to disk, and each member is read into one buffer of its recorded size, once that size
    is shown possible: its stored bytes lie inside the archive, its size is within what they can inflate to and
    within `most_bytes` (the dataset's bound for any member), so no claim of the index allocates more than the
    archive's own bytes can hold.
    """
    where = os.fspath(source)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))  # BytesIO shares the bytes: no copy
    except _ZIP_ERRORS as error:
        raise MalformedFileError(f"{where}: not a readable zip archive ({error or type(error).__name__})") from None
    with archive:
        held = {info.filename: info for info in archive.infolist()}
        missing = [name for name in members if name not in held]
        if missing:
            raise MalformedFileError(
                f"{where}: has no member {', '.join(missing)} (it holds {len(held)} members;"
                " another archive, or a different release?)"
            )
        wanted = [*members, *(name for name in optional if name in held)]
        return {name: _read_member(archive, held[name], where, data, most_bytes) for name in wanted}


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, data: bytes | bytearray, most_bytes: int | None
) -> bytearray:
    """Member `info` of `archive` (whose bytes are `data`), inflated into one buffer of its recorded size once
    that size is shown possible, and checked against its recorded size and CRC-32."""
    damaged = f"{where}: member {info.filename} is damaged"
    if info.header_offset < 0 or info.header_offset + _LOCAL_HEADER_BYTES + info.compress_size > len(data):
        raise MalformedFileError(
            f"{damaged}: its {info.compress_size:,} stored bytes at offset {info.header_offset:,} would end past"
            f" the archive's {len(data):,} bytes"
        )
    most = info.compress_size * (_MAX_DEFLATE_RATIO if info.compress_type == zipfile.ZIP_DEFLATED else 1)
    if info.file_size > most + _FEED_BYTES:
        raise MalformedFileError(
            f"{damaged}: it claims {info.file_size:,} bytes, more than its {info.compress_size:,} stored bytes can hold"
        )
    if most_bytes is not None and info.file_size > most_bytes:
        raise MalformedFileError(
            f"{damaged}: it claims {info.file_size:,} bytes, more than any member of this dataset's archive"
            f" ({most_bytes:,})"
        )
    try:
        if info.compress_type == zipfile.ZIP_DEFLATED:
            content = _inflate_member(_stored_bytes(data, info, damaged), info, where, damaged)
        else:
            # zipfile's open() checks the local header's signature and name, and refuses encryption and methods
            # it cannot read as the central record states them.
            with archive.open(info) as member:
                content = _read_through_zipfile(member, info, where)
    except MalformedFileError:
        raise
    except (*_ZIP_ERRORS, zlib_ng.error) as error:
        raise MalformedFileError(f"{damaged} ({error or type(error).__name__})") from None
    return content


def _stored_bytes(data: bytes | bytearray, info: zipfile.ZipInfo, damaged: str) -> memoryview:
    """The member's stored (deflated) bytes, found through its local header, which is checked against the central
    record first: zipfile is not asked to open a member read here, and its open() compares the name only."""
    signature, _, flags, method, _, _, _, _, _, name_bytes, extra_bytes = _LOCAL_HEADER.unpack_from(
        data, info.header_offset
    )
    if signature != _LOCAL_HEADER_SIGNATURE:
        raise MalformedFileError(f"{damaged}: no local header signature at offset {info.header_offset:,}")
    if (flags | info.flag_bits) & _ZIP_ENCRYPTED_FLAGS:
        raise MalformedFileError(f"{damaged}: it is encrypted")
    if method != info.compress_type:
        raise MalformedFileError(
            f"{damaged}: its local header's method {method} is not its central record's {info.compress_type}"
        )
    start = info.header_offset + _LOCAL_HEADER_BYTES
    encoding = "utf-8" if info.flag_bits & _ZIP_UTF8_NAME_FLAG else "cp437"  # as zipfile decodes names
    name = bytes(data[start : start + name_bytes]).decode(encoding, "replace")
    if name != info.orig_filename:
        raise MalformedFileError(f"{damaged}: its local header names {name}, its central record {info.orig_filename}")
    start += name_bytes + extra_bytes
    if start + info.compress_size > len(data):
        raise MalformedFileError(
            f"{damaged}: its {info.compress_size:,} stored bytes from offset {start:,} would end past"
            f" the archive's {len(data):,} bytes"
        )
    return memoryview(data)[start : start + info.compress_size]


def _inflate_member(stored: memoryview, info: zipfile.ZipInfo, where: str, damaged: str) -> bytearray:
    """A deflated member's content, inflated by zlib-ng into one buffer of its recorded size, CRC-32 checked.

    Why not zipfile's own reader: it inflates with the stdlib zlib and copies through its own buffers; one MNIST-C
    config's four members (55 MB) took 0.53-0.57 s of wall and 0.22 s of CPU through it, 0.23-0.28 s and 0.11 s
    here (medians of 7, 2026-12-06, load average 8 on 2 cores), and they are read before TFDS can write anything.
    `_ByteReader` feeds the stored bytes a slice at a time and inflates no more than the recorded size (+1, to see
    a member that holds more), so a bomb costs its recorded size at most, a size already shown possible.
    """
    size = info.file_size
    if not stored and size == 0:
        content = bytearray()  # no deflate stream at all: zipfile reads such a member as b"", so do we
    else:
        content = bytearray(size + 1)
        filled = _ByteReader(stored, damaged, raw_deflate=True).read_into(content)
        if filled > size:
            raise MalformedFileError(f"{where}: member {info.filename} holds more than its {size:,} bytes")
        if filled < size:
            raise MalformedFileError(f"{where}: member {info.filename} is cut short ({filled:,} of {size:,} bytes)")
        del content[size:]
    if (crc := zlib_ng.crc32(content)) != info.CRC:
        raise MalformedFileError(f"{damaged}: its content has CRC-32 {crc:08x}, its index records {info.CRC:08x}")
    return content


def _read_through_zipfile(member: zipfile.ZipExtFile, info: zipfile.ZipInfo, where: str) -> bytearray:
    """A member stored without deflate (or by another method zipfile reads), read by zipfile into one buffer of
    its recorded size; zipfile checks the CRC-32 as the member ends."""
    content = bytearray(info.file_size)
    filled = _fill(content, member.read)
    if member.read(1):
        raise MalformedFileError(f"{where}: member {info.filename} holds more than its {len(content):,} bytes")
    if filled < len(content):
        raise MalformedFileError(f"{where}: member {info.filename} is cut short ({filled:,} of {len(content):,} bytes)")
    return content


def read_class_codes(data: bytes, source: Source = "<bytes>") -> dict[int, tuple[int, ...]]:
    """Each label's character codes from a mapping file (EMNIST's `label code [code]` lines), read strictly."""
    where = os.fspath(source)
    codes: dict[int, tuple[int, ...]] = {}
    # What real files hold beside upstream's form: a UTF-8 byte-order mark, CRLF line ends (split() drops
    # the CR with the spaces), and blank lines after the last one.
    lines = bytes(data).removeprefix(b"\xef\xbb\xbf").split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) < 2 or not all(field.isdigit() and len(field) <= 7 for field in fields):
            raise MalformedFileError(f"{where}: line {number} is {line[:40]!r}, expected `label code [code]`")
        label, *characters = (int(field) for field in fields)
        if label in codes:
            raise MalformedFileError(f"{where}: line {number}: label {label} is listed twice")
        if any(code > 0x10FFFF for code in characters):
            raise MalformedFileError(f"{where}: line {number}: {line[:40]!r} holds no character code")
        codes[label] = tuple(characters)
    return codes


def check_class_names(codes: dict[int, tuple[int, ...]], names: Sequence[str], source: Source) -> None:
    """Raises unless every mapped label is declared with one of its characters as its name, and every
    declared class (but `UNUSED_CLASS`) is mapped: declared names that disagree with upstream's are a bug."""
    where = os.fspath(source)
    for label, characters in sorted(codes.items()):
        spelled = " or ".join(repr(chr(code)) for code in characters)
        if label >= len(names):
            raise MalformedFileError(f"{where}: label {label} ({spelled}) is not among the {len(names)} classes")
        # Each code is the name or its other case (letters' `1 65 97`): a code naming any other character is wrong.
        cases = {names[label], names[label].upper(), names[label].lower()}
        if names[label] not in {chr(code) for code in characters} or any(chr(code) not in cases for code in characters):
            raise MalformedFileError(f"{where}: label {label} is {spelled}, but the builder names it {names[label]!r}")
    unmapped = [label for label, name in enumerate(names) if label not in codes and name != UNUSED_CLASS]
    if unmapped:
        raise MalformedFileError(f"{where}: lists no character for the declared labels {unmapped}")


NPY_MAGIC = b"\x93NUMPY"


def read_npy(data: bytes | bytearray, source: Source) -> np.ndarray:
    """The array of a `.npy` file given as bytes (MNIST-C's archive members, keras's .npz members), read strictly;
    a view of `data`. The one .npy reader of the package.

    numpy's own header reader parses the header (a Python literal: `ast.literal_eval`, never `eval`),
    on a copy of the header alone. Refused: pickled objects (never loaded), Fortran order, negative dimensions, and
    any data that is not exactly the bytes the header describes (sized with Python's exact integers, so no
    shape overflows); nothing is sized by the header before that.
    """
    where = os.fspath(source)
    view = memoryview(data)
    if bytes(view[:6]) != NPY_MAGIC or len(view) < 10:
        raise MalformedFileError(f"{where}: not a .npy array (its first bytes are {bytes(view[:8])!r})")
    version = (view[6], view[7])
    if version not in ((1, 0), (2, 0)):  # 3.0 only adds utf-8 field names: structured arrays, refused anyway
        raise MalformedFileError(f"{where}: .npy format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
    length_bytes = 2 if version == (1, 0) else 4
    header_end = 8 + length_bytes + int.from_bytes(view[8 : 8 + length_bytes], "little")
    if header_end > len(view):
        raise MalformedFileError(f"{where}: .npy header cut short ({len(view):,} of {header_end:,} bytes)")
    header = io.BytesIO(bytes(view[:header_end]))
    try:
        np.lib.format.read_magic(header)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(header)
    except ValueError as error:
        raise MalformedFileError(f"{where}: not a .npy array ({error})") from None
    if dtype.hasobject:
        raise MalformedFileError(f"{where}: holds Python objects ({dtype}), which load only as pickles: refused")
    if fortran_order:
        raise MalformedFileError(f"{where}: an array in Fortran order, expected C order")
    if any(dimension < 0 for dimension in shape):
        raise MalformedFileError(f"{where}: its header describes a negative dimension, shape {shape}")
    size = math.prod(shape) * dtype.itemsize
    if len(view) - header_end != size:
        held = len(view) - header_end
        problem = "cut short" if held < size else "trailing garbage"
        raise MalformedFileError(
            f"{where}: {problem}: its header describes {size:,} bytes of {dtype} {shape}, the file holds {held:,}"
        )
    return np.frombuffer(view[header_end:], dtype=dtype).reshape(shape)


def read_npy_images(data: bytes, source: Source = "<bytes>") -> np.ndarray:
    """A `.npy` file of 28x28 uint8 images, (n, 28, 28, 1) or (n, 28, 28), as (n, 28, 28, 1): a view, no copy."""
    images = read_npy(data, source)
    if images.dtype != np.uint8 or images.shape[1:] not in (IMAGE_SHAPE, IMAGE_SHAPE[:2]):
        raise MalformedFileError(
            f"{os.fspath(source)}: {images.dtype} images of shape {images.shape},"
            f" expected uint8 of (n, {IMAGE_SIDE}, {IMAGE_SIDE}, 1) or (n, {IMAGE_SIDE}, {IMAGE_SIDE})"
        )
    return images.reshape(-1, *IMAGE_SHAPE)


def read_npy_labels(data: bytes, source: Source = "<bytes>", num_classes: int = 10) -> np.ndarray:
    """A `.npy` file of integer labels, one per image, each 0..num_classes-1, as a (n,) uint8 array."""
    where = os.fspath(source)
    labels = read_npy(data, source)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise MalformedFileError(f"{where}: {labels.dtype} labels of shape {labels.shape}, expected one integer each")
    check_labels(labels, source, num_classes)
    return labels.astype(np.uint8)


# QMNIST's files: extended labels as IDX tables of big-endian int32 (its NIST files are xz: see `_ByteReader`).


def read_idx_int32_table(
    data: bytes | bytearray, source: Source = "<bytes>", columns: int = 8, most_content: int | None = None
) -> np.ndarray:
    """Parses an IDX file of big-endian int32 in 2 dimensions, (count, `columns`) (QMNIST's extended labels,
    gzipped, xz-compressed or not), into a (count, columns) native int32 array, with the IDX readers' checks."""
    what = "label rows"
    reader, count = _open_idx(data, source, IDX_INT32_TABLE_MAGIC, (columns,), what, most_content)
    parts = list(_idx_body(reader, count, (columns, 4), what, batch=max(count, 1)))  # one part: no copy
    body = parts[0] if parts else np.zeros((0, columns, 4), np.uint8)
    return body.view(">i4").reshape(count, columns).astype(np.int32)


def read_idx_label_table(
    data: bytes | bytearray, source: Source, columns: int, num_classes: int, most_content: int | None = None
) -> np.ndarray:
    """An IDX int32 table whose first column is the label (0..num_classes-1) and whose last is unused (0 in
    every row, as QMNIST's eighth column is): anything else there is not such a table."""
    table = read_idx_int32_table(data, source, columns, most_content)
    check_labels(table[:, 0], source, num_classes)
    if (used := np.flatnonzero(table[:, -1])).size:
        raise MalformedFileError(
            f"{os.fspath(source)}: column {columns - 1}, unused upstream, holds {table[used[0], -1]} at row"
            f" {used[0]} ({used.size} such rows): not a label table of this dataset"
        )
    return table


def idx_bytes(header_dims: int, count: int, item_values: int, value_bytes: int) -> int:
    """The size of an IDX file of `count` items of `item_values` values each: what its content can be at most."""
    return 4 + 4 * header_dims + count * item_values * value_bytes


def encode_idx_int32_table(table: np.ndarray) -> bytes:
    """An uncompressed IDX file of big-endian int32 holding the 2-D `table`: `read_idx_int32_table`'s inverse."""
    table = np.ascontiguousarray(table, dtype=">i4")
    return struct.pack(">I2I", IDX_INT32_TABLE_MAGIC, *table.shape) + table.tobytes()
