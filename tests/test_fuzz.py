"""Property-based fuzzing of the readers: random and mutated bytes give either well-formed arrays or
MalformedFileError, never another exception and never an allocation sized by a lying header."""

from __future__ import annotations

import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_variants import MalformedFileError, formats, testing

VALID = {
    "images": testing.encode_idx(testing.synthetic_images(3, seed=5)[..., 0]),
    "labels": testing.encode_idx(np.array([1, 9, 0], np.uint8)),
    "amat": testing.encode_amat(testing.bernoulli_binarize(testing.synthetic_images(3, seed=6), seed=7)),
}
READERS = {"images": formats.read_idx_images, "labels": formats.read_idx_labels, "amat": formats.read_amat}
MAX_ALLOCATION = 8 * 2**20  # far above what inputs of a few KB can justify


def check(kind: str, data: bytes) -> None:
    """The reader's peak allocation stays small whether it parses `data` or refuses it; then the outcome is checked."""
    tracemalloc.start()
    try:
        try:
            array, refusal = READERS[kind](data, "fuzzed"), None
        except MalformedFileError as error:
            array, refusal = None, error
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
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
