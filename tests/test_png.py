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


def test_batch_encoding_keeps_order_and_matches_single_images():
    images = testing.synthetic_images(50, seed=2)
    encoded = list(png.encode_pngs(images, batch_size=7, workers=3))
    assert encoded == [png.encode_png(image) for image in images]
    decoded = np.stack([tf.io.decode_png(data).numpy() for data in encoded])
    np.testing.assert_array_equal(decoded, images)


def test_abandoned_iteration_stops_cleanly():
    iterator = png.encode_pngs(testing.synthetic_images(5000, seed=3), batch_size=16)
    assert next(iterator).startswith(png.PNG_SIGNATURE)
    iterator.close()  # cancels the batches not started, waits for the running ones


@pytest.mark.parametrize(
    ("images", "error"),
    [(np.zeros((2, 28, 28), np.float32), TypeError), (np.zeros((2, 28, 28, 3), np.uint8), ValueError)],
)
def test_refuses_what_it_cannot_encode(images, error):
    with pytest.raises(error):
        list(png.encode_pngs(images))
