"""The upstream-format readers: exact round trips, and a precise error for every kind of damage."""

from __future__ import annotations

import gzip
import re
import struct
import time
import tracemalloc

import numpy as np
import pytest
import testing

from mnist_variants import MalformedFileError, formats

IMAGES = testing.synthetic_images(7, seed=3)
LABELS = np.array([0, 9, 3, 3, 1, 5, 7], dtype=np.uint8)
IMAGES_IDX = testing.encode_idx(IMAGES[..., 0])
LABELS_IDX = testing.encode_idx(LABELS)
BINARY = testing.bernoulli_binarize(IMAGES, seed=4)
AMAT = testing.encode_amat(BINARY)


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_round_trip(compress):
    wrap = testing.gzip_bytes if compress else bytes
    images = formats.read_idx_images(wrap(IMAGES_IDX), "images")
    labels = formats.read_idx_labels(wrap(LABELS_IDX), "labels")
    assert images.shape == (7, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_amat_round_trip_and_layout():
    assert AMAT[: 2 * 784].count(b" ") == 783 and AMAT[2 * 784 - 1 : 2 * 784] == b"\n"
    images = formats.read_amat(AMAT, "x.amat")
    assert images.shape == (7, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, BINARY)
    np.testing.assert_array_equal(formats.read_amat(AMAT[:-1], "x.amat"), BINARY)  # no final newline


def test_amat_matches_numpy_loadtxt_like_tfds():
    expected = np.loadtxt(AMAT.decode().splitlines(), delimiter=" ").astype(np.uint8).reshape(-1, 28, 28, 1)
    np.testing.assert_array_equal(formats.read_amat(AMAT, "x.amat"), expected)


def expect(problem: str, reader, data: bytes, source: str = "data/some-file") -> MalformedFileError:
    with pytest.raises(MalformedFileError, match=problem) as raised:
        reader(data, source)
    assert str(raised.value).startswith(f"{source}: ")
    assert isinstance(raised.value, ValueError)
    return raised.value


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
class TestIdxDamage:
    def wrap(self, data: bytes, compress: bool) -> bytes:
        return testing.gzip_bytes(data) if compress else data

    def test_wrong_magic(self, compress):
        error = expect(
            "magic number 0x00000801, expected 0x00000803", formats.read_idx_images, self.wrap(LABELS_IDX, compress)
        )
        assert "images" in str(error)

    def test_labels_given_images(self, compress):
        expect("magic number 0x00000803, expected 0x00000801", formats.read_idx_labels, self.wrap(IMAGES_IDX, compress))

    def test_dimensions_other_than_28x28(self, compress):
        data = idx_header(formats.IDX_IMAGES_MAGIC, 2, 32, 32) + bytes(2 * 32 * 32)
        expect("images of 32x32, expected 28x28", formats.read_idx_images, self.wrap(data, compress))

    def test_truncated_body(self, compress):
        data = IMAGES_IDX[:-100]
        expect(
            r"header promises 7 images \(5488 bytes\) but only 5388 bytes follow",
            formats.read_idx_images,
            self.wrap(data, compress),
        )

    def test_trailing_garbage(self, compress):
        expect("trailing garbage", formats.read_idx_images, self.wrap(IMAGES_IDX + b"\x00" * 3, compress))

    def test_label_outside_0_to_9(self, compress):
        data = testing.encode_idx(np.array([1, 2, 10, 4, 12], dtype=np.uint8))
        expect(
            r"label 10 at index 2 is outside 0\.\.9 \(2 such labels\)",
            formats.read_idx_labels,
            self.wrap(data, compress),
        )

    def test_short_header(self, compress):
        expect("too short for an IDX header", formats.read_idx_images, self.wrap(b"\x00\x00", compress))
        expect("header cut short", formats.read_idx_images, self.wrap(IMAGES_IDX[:10], compress))

    def test_header_claiming_billions_fails_before_allocating(self, compress):
        data = self.wrap(idx_header(formats.IDX_IMAGES_MAGIC, 2**32 - 1, 28, 28) + IMAGES_IDX[16:], compress)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            expect("header promises 4294967295 images", formats.read_idx_images, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 10 * 2**20, peak  # the claim is 3.4 TB
        assert time.perf_counter() - started < 60  # a bound that only a hang would break


def test_cut_gzip_stream():
    compressed = testing.gzip_bytes(IMAGES_IDX)
    expect("gzip stream is cut short", formats.read_idx_images, compressed[: len(compressed) // 2])
    expect("gzip stream is cut short", formats.read_idx_images, compressed[:-4])  # trailer lost


def test_corrupt_gzip_stream():
    compressed = bytearray(testing.gzip_bytes(IMAGES_IDX))
    compressed[-6] ^= 0xFF  # the CRC32 of the trailer
    expect("corrupt gzip stream", formats.read_idx_images, bytes(compressed))
    compressed = bytearray(testing.gzip_bytes(IMAGES_IDX))
    compressed[20:40] = b"\xff" * 20  # inside the deflate data
    expect("corrupt gzip stream|trailing garbage|cut short|promises", formats.read_idx_images, bytes(compressed))


def test_garbage_after_the_gzip_stream():
    expect("trailing garbage after the gzip stream", formats.read_idx_labels, testing.gzip_bytes(LABELS_IDX) + b"junk")


def test_image_and_label_counts_differ():
    with pytest.raises(MalformedFileError, match=r"a\.gz holds 7 images but b\.gz holds 5 labels"):
        formats.check_same_count(IMAGES, "a.gz", LABELS[:5], "b.gz")


def test_amat_empty_file():
    expect("empty file", formats.read_amat, b"")


def test_amat_value_other_than_0_or_1():
    data = bytearray(AMAT)
    data[2 * 784 * 3 + 2 * 9] = ord("2")  # line 4, value 10
    expect(r"line 4: value 10 is b'2', expected 0 or 1", formats.read_amat, bytes(data))


def test_amat_wrong_number_of_values():
    lines = AMAT.split(b"\n")
    lines[2] = lines[2][:-2]  # line 3 loses its last value
    expect("line 3: 783 values, expected 784", formats.read_amat, b"\n".join(lines))
    lines = AMAT.split(b"\n")
    lines[5] += b" 1"
    expect("line 6: 785 values, expected 784", formats.read_amat, b"\n".join(lines))


def test_amat_blank_line_and_other_separators():
    expect("line 2: blank line", formats.read_amat, AMAT[: 2 * 784] + b"\n" + AMAT[2 * 784 :])
    expect(r"line 1: value 2 is b'0,0'", formats.read_amat, AMAT.replace(b" ", b" 0,", 1))
    expect(r"line 1: value 784 is b'.\\r'", formats.read_amat, AMAT.replace(b"\n", b"\r\n"))


def test_amat_cut_mid_line():
    expect(r"line 7: \d+ values, expected 784", formats.read_amat, AMAT[: 2 * 784 * 6 + 500])


def test_amat_tolerates_nothing_float_like():
    expect("value 1 is b'0.0'", formats.read_amat, b"0.0" + AMAT[1:])


def test_gzip_magic_alone_is_not_mistaken_for_idx():
    expect("cut short|corrupt", formats.read_idx_labels, gzip.compress(LABELS_IDX)[:2])


def test_gunzip_stops_as_soon_as_the_content_passes_the_limit():
    data = testing.gzip_bytes(bytes(100_000))
    assert formats.gunzip(data, "x.gz", limit=100_000) == bytes(100_000)
    with pytest.raises(
        formats.ContentTooLargeError, match=r"^x\.gz: decompresses to more than 99,999 bytes$"
    ) as raised:
        formats.gunzip(data, "x.gz", limit=99_999)
    assert isinstance(raised.value, MalformedFileError) and raised.value.limit == 99_999
    expect("gzip stream is cut short", lambda data, source: formats.gunzip(data, source, limit=10**6), data[:-20])


def in_batches_of_2(data: bytes, source: str) -> np.ndarray:
    """What `read_idx_images_in_batches` yields, joined."""
    images = formats.read_idx_images_in_batches(data, source, batch=2)
    return np.concatenate([*images.batches, np.zeros((0, 28, 28, 1), np.uint8)])


@pytest.mark.parametrize("batch", [1, 2, 7, 100])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_images_in_batches_are_the_images(batch, compress):
    data = testing.gzip_bytes(IMAGES_IDX) if compress else IMAGES_IDX
    images = formats.read_idx_images_in_batches(data, "images", batch)
    assert len(images) == 7
    batches = list(images.batches)
    assert [len(part) for part in batches] == [min(batch, 7 - start) for start in range(0, 7, batch)]
    np.testing.assert_array_equal(np.concatenate(batches), IMAGES)


DAMAGED_IMAGES = {
    "wrong_magic": LABELS_IDX,
    "32x32": idx_header(formats.IDX_IMAGES_MAGIC, 2, 32, 32) + bytes(2 * 32 * 32),
    "truncated_body": IMAGES_IDX[:-100],
    "trailing_garbage": IMAGES_IDX + b"\x00" * 3,
    "short_header": b"\x00\x00",
    "header_cut": IMAGES_IDX[:10],
    "claims_billions": idx_header(formats.IDX_IMAGES_MAGIC, 2**32 - 1, 28, 28) + IMAGES_IDX[16:],
}
BAD_GZIP = {
    "cut": testing.gzip_bytes(IMAGES_IDX)[:-4],
    "corrupt_crc": (lambda data: data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])(testing.gzip_bytes(IMAGES_IDX)),
}


@pytest.mark.parametrize(
    "data",
    [*DAMAGED_IMAGES.values(), *map(testing.gzip_bytes, DAMAGED_IMAGES.values()), *BAD_GZIP.values()],
    ids=[*DAMAGED_IMAGES, *(f"{case}_gzip" for case in DAMAGED_IMAGES), *BAD_GZIP],
)
def test_images_in_batches_are_refused_as_the_whole_file_is(data):
    """The same error, word for word: a header's problem when it is read, a body's when it is reached."""
    with pytest.raises(MalformedFileError) as whole:
        formats.read_idx_images(data, "data/some-file")
    assert str(expect(re.escape(str(whole.value)[len("data/some-file: ") :]), in_batches_of_2, data)) == str(
        whole.value
    )


def test_a_damaged_body_fails_where_it_is_reached_after_the_good_batches():
    images = formats.read_idx_images_in_batches(testing.gzip_bytes(IMAGES_IDX[:-100]), "some-file", batch=2)
    assert len(images) == 7  # the header's count: the body is not read yet
    good = [next(images.batches) for _ in range(3)]
    np.testing.assert_array_equal(np.concatenate(good), IMAGES[:6])
    with pytest.raises(MalformedFileError, match=r"promises 7 images \(5488 bytes\) but only 5388 bytes follow"):
        next(images.batches)
