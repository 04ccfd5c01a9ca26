"""Property-based fuzzing of the readers: random and mutated bytes give either well-formed arrays or
MalformedFileError, never another exception and never an allocation sized by a lying header."""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_variants import MalformedFileError, formats

VALID = {
    "images": testing.encode_idx(testing.synthetic_images(3, seed=5)[..., 0]),
    "labels": testing.encode_idx(np.array([1, 9, 0], np.uint8)),
    "amat": testing.encode_amat(testing.bernoulli_binarize(testing.synthetic_images(3, seed=6), seed=7)),
}
READERS = {"images": formats.read_idx_images, "labels": formats.read_idx_labels, "amat": formats.read_amat}
MAX_ALLOCATION = 8 * 2**20  # far above what inputs of a few KB can justify


def traced(read: Callable[[], Any]) -> tuple[Any, MalformedFileError | None, int]:
    """What `read()` returns (or None), the MalformedFileError it raises (or None), and its peak traced allocation."""
    tracemalloc.start()
    try:
        try:
            result, refusal = read(), None
        except MalformedFileError as error:
            result, refusal = None, error
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, refusal, peak


def check(kind: str, data: bytes) -> None:
    """The reader's peak allocation stays small whether it parses `data` or refuses it; then the outcome is checked."""
    array, refusal, peak = traced(lambda: READERS[kind](data, "fuzzed"))
    assert peak < MAX_ALLOCATION, f"{peak:,} bytes allocated for {len(data):,} bytes of input ({refusal})"
    if refusal is not None:
        assert str(refusal).startswith("fuzzed: ")
        return
    assert array.dtype == np.uint8
    if kind == "labels":
        assert array.ndim == 1 and (array <= 9).all()
    else:
        assert array.shape[1:] == (28, 28, 1)
        if kind == "amat":
            assert ((array == 0) | (array == 1)).all()


@st.composite
def mutated(draw, kind: str) -> bytes:
    """A valid file (maybe gzipped) with bytes flipped, cut, inserted or a header field rewritten."""
    data = bytearray(VALID[kind])
    if kind != "amat" and draw(st.booleans()):
        data = bytearray(testing.gzip_bytes(bytes(data)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif len(data) >= 8:
            field = draw(st.sampled_from([0, 4, 8, 12]))
            data[field : field + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return bytes(data)


fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.sampled_from(sorted(READERS)), st.binary(max_size=2000))
def test_random_bytes(kind, data):
    check(kind, data)


@fuzz
@given(st.sampled_from(sorted(READERS)).flatmap(lambda kind: st.tuples(st.just(kind), mutated(kind))))
def test_mutated_files(case):
    check(*case)


@fuzz
@given(st.integers(0, 2**32 - 1), st.sampled_from([(28, 28), (0, 0), (2**16, 2**16)]), st.binary(max_size=3000))
def test_headers_claiming_anything(count, dims, body):
    header = formats.IDX_IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (count, *dims))
    check("images", header + body)
    check("images", testing.gzip_bytes(header + body))


# Zip archives (EMNIST's gzip.zip): the central directory and the local headers claim offsets and sizes; the
# reader must refuse any claim the archive's own bytes cannot hold before allocating for it, and every damage
# is a MalformedFileError naming the archive (and the member, where one is read). Issue 31.
def small_zip() -> bytes:
    buffer = io.BytesIO()
    testing.write_zip(buffer, [("a.gz", testing.gzip_bytes(VALID["labels"])), ("m.txt", b"0 48\r\n1 49\r\n")], "z/")
    return buffer.getvalue()


ZIP = small_zip()
ZIP_MEMBERS = ["z/a.gz", "z/m.txt"]


def central_directory(data: bytes) -> int:
    """The offset of the central directory, from the end record."""
    end = data.rindex(b"PK\x05\x06")
    return struct.unpack("<I", data[end + 16 : end + 20])[0]


def check_zip(data: bytes) -> None:
    members, refusal, peak = traced(lambda: formats.read_zip_members(data, "fuzzed.zip", ZIP_MEMBERS))
    assert peak < MAX_ALLOCATION, f"{peak:,} bytes allocated for {len(data):,} bytes of zip ({refusal})"
    if refusal is not None:
        assert str(refusal).startswith("fuzzed.zip: "), refusal
        return
    assert set(members) == set(ZIP_MEMBERS)


@st.composite
def zip_mutants(draw) -> bytes:
    """The small zip with its index damaged: bytes flipped or little-endian fields rewritten inside the
    local headers and the central directory (where the offsets and sizes are)."""
    data = bytearray(ZIP)
    index = central_directory(ZIP)
    local = [offset for offset in range(index) if ZIP[offset : offset + 4] == b"PK\x03\x04"]
    regions = [(offset, offset + 30) for offset in local] + [(index, len(ZIP))]
    for _ in range(draw(st.integers(1, 3))):
        start, end = draw(st.sampled_from(regions))
        at = draw(st.integers(start, end - 1))
        width = draw(st.sampled_from([1, 2, 4]))
        field = draw(st.integers(0, 256**width - 1)).to_bytes(width, "little")
        data[at : at + width] = field[: len(data) - at]
    return bytes(data)


@fuzz
@given(zip_mutants())
def test_mutated_zip_indexes(data):
    check_zip(data)


def test_a_damaged_zip_index_is_named_not_a_bare_python_error():
    """Two mutants the issue's fuzzing found: a central directory entry needing zip version 10.6
    (NotImplementedError), and an offset that makes the reader seek before the archive's start (ValueError)."""
    index = central_directory(ZIP)
    version = bytearray(ZIP)
    version[index + 6] = 106  # "version needed to extract" of the first entry (the folder's)
    with pytest.raises(MalformedFileError, match=r"^fuzzed\.zip: .*(version|10\.6)"):
        formats.read_zip_members(bytes(version), "fuzzed.zip", ZIP_MEMBERS)
    end = ZIP.rindex(b"PK\x05\x06")
    seek = bytearray(ZIP)
    seek[end + 12 : end + 16] = struct.pack("<I", 0xFFFFFF00)  # the directory's size: past its start
    with pytest.raises(MalformedFileError, match=r"^fuzzed\.zip: "):
        formats.read_zip_members(bytes(seek), "fuzzed.zip", ZIP_MEMBERS)


def zip_claiming(compressed: int, size: int, zip64: bool) -> bytes:
    """One deflated member of 10 bytes whose central directory entry claims `compressed` stored bytes and
    `size` bytes inflated (both in a zip64 extra field where `zip64`): 122 bytes, or 142 with the extra
    field, as the issue's. Each claim alone is one deflate could hold; the archive cannot."""
    name = b"z/a.gz"
    body = zlib.compress(b"0123456789")[2:-4]  # the raw deflate stream
    crc = zlib.crc32(b"0123456789")
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(body), 10, len(name), 0)
    extra = struct.pack("<2H2Q", 1, 16, size, compressed) if zip64 else b""
    claims = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (compressed, size)
    entry = struct.pack(
        "<4s6H3I5H2I", b"PK\x01\x02", 45, 45 if zip64 else 20, 0, 8, 0, 0, crc, *claims,
        len(name), len(extra), 0, 0, 0, 0, 0,
    )  # fmt: skip
    directory = entry + name + extra
    start = len(local) + len(name) + len(body)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), start, 0)
    return local + name + body + directory + end


@pytest.mark.parametrize(
    ("compressed", "size", "zip64"), [(10**6, 10**9, False), (1 << 31, 1 << 40, True)], ids=["1GB", "zip64-1TiB"]
)
def test_a_tiny_zip_claiming_a_huge_member_is_refused_without_allocating(compressed, size, zip64):
    """Before: the 1 GB claim was allocated (peak 1 GB) and the 1 TiB one ended in a bare MemoryError."""
    data = zip_claiming(compressed, size, zip64)
    assert len(data) == (142 if zip64 else 122)
    _, refusal, peak = traced(lambda: formats.read_zip_members(data, "tiny.zip", ["z/a.gz"]))
    assert re.match(r"tiny\.zip: member z/a\.gz is damaged: .* past the archive", str(refusal)), refusal
    assert peak < 1 << 20, f"{peak:,} bytes allocated"


def zip_of_zeros(gibibytes: int, claimed: int) -> bytes:
    """One deflated member of `gibibytes` GiB of zeros whose central record claims `claimed` bytes. Its deflate
    stream is one 16 MiB block of zeros, fully flushed (so each copy inflates alike), repeated, then an empty
    last block: built in milliseconds, where deflating a gibibyte takes seconds."""
    name = b"z/a.gz"
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = deflater.compress(bytes(1 << 24)) + deflater.flush(zlib.Z_FULL_FLUSH)
    body = block * (64 * gibibytes) + b"\x03\x00"  # the last block: empty, fixed Huffman codes
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(body), claimed, len(name), 0)
    entry = struct.pack(
        "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(body), claimed, len(name), 0, 0, 0, 0, 0, 0
    )
    start = len(local) + len(name) + len(body)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(entry) + len(name), start, 0)
    return local + name + body + entry + name + end


def test_a_small_zip_holding_a_gibibyte_of_zeros_costs_its_recorded_size_only():
    """A deflate bomb: 1 GiB of zeros (about 1 MB stored) whose central record claims 1 MiB, a claim its stored
    bytes can hold. Inflating stops one byte past the recorded size; an unbounded inflate peaked at 2-3 GiB."""
    data = zip_of_zeros(1, 1 << 20)
    assert len(data) < 1_100_000
    _, refusal, peak = traced(lambda: formats.read_zip_members(data, "bomb.zip", ["z/a.gz"]))
    assert re.match(r"bomb\.zip: member z/a\.gz holds more than its 1,048,576 bytes", str(refusal)), refusal
    assert peak < 20 * 2**20, f"{peak:,} bytes allocated"


def test_a_member_beyond_the_datasets_bound_or_the_archive_is_refused():
    """A member may claim no more than the dataset's bound (fetching passes the registered archive's size),
    and its stored bytes must lie inside the archive."""
    with pytest.raises(MalformedFileError, match=r"^fuzzed\.zip: member z/a\.gz is damaged: .* more than any member"):
        formats.read_zip_members(ZIP, "fuzzed.zip", ZIP_MEMBERS, most_bytes=10)
    assert set(formats.read_zip_members(ZIP, "fuzzed.zip", ZIP_MEMBERS, most_bytes=len(ZIP))) == set(ZIP_MEMBERS)
    entry = ZIP.index(b"PK\x01\x02", central_directory(ZIP) + 1)  # z/a.gz's, after the folder's
    beyond = bytearray(ZIP)
    beyond[entry + 20 : entry + 24] = struct.pack("<I", len(ZIP))  # its compressed size
    with pytest.raises(MalformedFileError, match=r"^fuzzed\.zip: member z/a\.gz is damaged: .* past the archive"):
        formats.read_zip_members(bytes(beyond), "fuzzed.zip", ZIP_MEMBERS)
