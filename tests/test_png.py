"""Our PNG writer's bytes are valid PNG: TF and PIL decode them to exactly the input pixels."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from mnist_variants import png, testing

images_of_any_size = hnp.arrays(
    np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.integers(0, 255)
)


@settings(max_examples=60, deadline=None)
@given(images_of_any_size)
def test_tf_and_pil_decode_exactly_the_input(image):
    encoded = png.encode_png(image)
    np.testing.assert_array_equal(tf.io.decode_png(encoded, channels=1).numpy()[..., 0], image)
    decoded = Image.open(io.BytesIO(encoded))
    decoded.load()  # PIL checks the chunk CRCs and the zlib stream while loading
    assert decoded.mode == "L" and decoded.size == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(np.asarray(decoded), image)


def test_chunks_are_well_formed():
    encoded = png.encode_png(testing.synthetic_images(1, seed=1)[0])
    assert encoded.startswith(png.PNG_SIGNATURE)
    position, kinds = len(png.PNG_SIGNATURE), []
    while position < len(encoded):
        (length,) = np.frombuffer(encoded[position : position + 4], ">u4")
        kind = encoded[position + 4 : position + 8]
        payload = encoded[position + 8 : position + 8 + length]
        (crc,) = np.frombuffer(encoded[position + 8 + length : position + 12 + length], ">u4")
        assert crc == zlib.crc32(kind + payload), kind
        kinds.append(kind)
        position += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"] and position == len(encoded)


def test_helper_process_keeps_order_across_submissions():
    first, second = testing.synthetic_images(2500, seed=2), testing.synthetic_images(7, seed=3)
    encoder = png.PngEncoder()
    assert encoder._helper is not None  # the helper process started
    pngs = [encoder.submit(first), encoder.submit(second)]
    encoder.close()
    second_pngs, first_pngs = list(pngs[1]), list(pngs[0])  # consumed out of order on purpose
    assert first_pngs == png.encode_batch(first[..., 0]) and second_pngs == png.encode_batch(second[..., 0])
    decoded = np.stack([tf.io.decode_png(data).numpy() for data in first_pngs[:300]])
    np.testing.assert_array_equal(decoded, first[:300])


def test_without_a_helper_process_the_bytes_are_the_same(monkeypatch):
    images = testing.synthetic_images(1100, seed=4)
    monkeypatch.setattr(png.sys, "executable", "/nonexistent/python")
    encoder = png.PngEncoder()
    assert encoder._helper is None
    encoded = encoder.submit(images)
    encoder.close()
    assert list(encoded) == png.encode_batch(images[..., 0])


def test_a_dead_helper_is_an_error_not_a_hang():
    encoder = png.PngEncoder()
    encoder._helper.kill()
    encoded = encoder.submit(testing.synthetic_images(3000, seed=5))
    encoder.close()
    with pytest.raises(RuntimeError, match="PNG helper process exited"):
        list(encoded)


@pytest.mark.parametrize(
    ("images", "error"),
    [(np.zeros((2, 28, 28), np.float32), TypeError), (np.zeros((2, 28, 28, 3), np.uint8), ValueError)],
)
def test_refuses_what_it_cannot_encode(images, error):
    with pytest.raises(error):
        png.as_grayscale_batch(images)
