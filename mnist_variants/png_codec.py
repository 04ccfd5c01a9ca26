"""A minimal PNG writer for 8-bit grayscale images, and the check that a PNG is its exact encoding of an image.

Why its own: `tfds.features.Image` encodes numpy arrays through a TF graph per example, which
dominates the cost of preparing these datasets; it passes `bytes` through untouched, so we hand it
PNGs made here. Decoders (TF, PIL) return exactly the input pixels; the tests prove it. Written here,
not with PIL or pypng, because the check below and `data_sources`' reader rely on its one layout (one
IDAT, no row filters), which no library promises to keep.

Pure functions of bytes and arrays: no processes, no threads. Its one reason to change: the PNG
form these builders write. The helper processes (`png_protocol`) run this module's source too; so it
imports nothing from this package.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from zlib_ng import zlib_ng

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_CRC = zlib.crc32(b"IDAT")
_IEND_CHUNK = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
# Deflated by zlib-ng (a maintained, faster zlib: the same format, not the same bytes) at level 1; inflated,
# to check them, by the standard library's zlib, as the readers of the prepared data do (TensorFlow, PIL).
# Measured on 1,024 of the benchmark's MNIST images (2026-11-26, best of 7): 5.8 us and 246.1 B an image,
# against 20.8 us and 242.7 B for zlib's level 1 with its RLE strategy, used before. In a full-size EMNIST
# byclass prepare (5 rounds each), the helpers' CPU fell from 32.9-36.1 s to 15.9-18.1 s.
COMPRESSION_LEVEL = 1


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _header(height: int, width: int) -> bytes:
    """Signature and IHDR: bit depth 8, colour type 0 (grayscale), no interlacing."""
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def as_grayscale_batch(images: np.ndarray) -> np.ndarray:
    """(n, h, w) or (n, h, w, 1) uint8 -> C-contiguous (n, h, w)."""
    if images.dtype != np.uint8:
        raise TypeError(f"PNG encoding needs uint8 images, got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (n, h, w) or (n, h, w, 1), got {images.shape}")
    return np.ascontiguousarray(images)


def _scanlines(images: np.ndarray) -> np.ndarray:
    """(n, h, w + 1): every row prefixed with filter type 0 (None), as the IDAT stream holds it."""
    count, height, width = images.shape
    scanlines = np.zeros((count, height, width + 1), dtype=np.uint8)
    scanlines[:, :, 1:] = images
    return scanlines


def window_bits(size: int) -> int:
    """The zlib window for `size` bytes of scanlines, by libpng's own rule (`png_deflate_claim`): halved while
    the data and deflate's 262-byte lookahead still fit in half of it, down to 2**9.

    Every earlier byte stays in reach, so the deflate stream is the same; only the zlib header, which names the
    window, differs.
    What it saves is deflate's set-up: 812 bytes (a 28x28 image) took 4.4 us with 2**11 against 5.6 us with
    2**15, 250.0 bytes each (best of 15, 40,960 generated EMNIST images, zlib-ng level 1, 2026-11-26).
    """
    bits = 15
    while bits > 9 and size + 262 <= 1 << (bits - 1):
        bits -= 1
    return bits


def encode_batch(images: np.ndarray, level: int = COMPRESSION_LEVEL) -> list[bytes]:
    """PNGs of a (n, h, w) uint8 batch; every scanline gets filter type 0 (None)."""
    height, width = images.shape[1:]
    header, wbits = _header(height, width), window_bits(height * (width + 1))
    encoded = []
    for raw in _scanlines(images):
        idat = zlib_ng.compress(raw, level, wbits)
        crc = zlib.crc32(idat, _IDAT_CRC)
        encoded.append(
            b"".join((header, len(idat).to_bytes(4, "big"), b"IDAT", idat, crc.to_bytes(4, "big"), _IEND_CHUNK))
        )
    return encoded


def encode_png(image: np.ndarray, level: int = COMPRESSION_LEVEL) -> bytes:
    """One (h, w) or (h, w, 1) uint8 image as PNG bytes."""
    return encode_batch(as_grayscale_batch(image[np.newaxis]), level)[0]


def _inflate(pngs: list[bytes], height: int, width: int) -> tuple[int | None, list[bytes]]:
    """The scanlines of each PNG, up to the first whose form is not this module's encoding of a height x width
    image: (its index or None, the scanlines of those before it).

    Checked: signature and IHDR (size, grayscale, 8 bits), one IDAT whose length and CRC hold and whose
    zlib stream (its own checksum included) inflates to exactly one image's scanlines, each of filter type 0
    (None), and ends the IDAT (it ends with the stream's checksum: `zlib.decompress` ignores what follows a
    stream, and a decompressobj that would tell cost 2.5 us more an image), IEND last. Exactly one image's:
    else a PNG could carry the start of the next image and still join up. Not checked: the pixels.
    """
    header = _header(height, width)
    data_at = len(header) + 8
    tail = -(4 + len(_IEND_CHUNK))  # the IDAT's CRC, then IEND
    size = height * (width + 1)
    unfiltered = bytes(height)  # every scanline's first byte, its filter type
    inflated = []
    for index, png in enumerate(pngs):
        idat = png[data_at:tail]
        try:
            if (
                png[:data_at] != header + len(idat).to_bytes(4, "big") + b"IDAT"
                or png[tail:] != zlib.crc32(idat, _IDAT_CRC).to_bytes(4, "big") + _IEND_CHUNK
                or len(rows := zlib.decompress(idat, zlib.MAX_WBITS, size)) != size
                or idat[-4:] != zlib.adler32(rows).to_bytes(4, "big")
                or rows[:: width + 1] != unfiltered
            ):
                return index, inflated
        except zlib.error:
            return index, inflated
        inflated.append(rows)
    return None, inflated


def decodes_to(pngs: list[bytes], images: np.ndarray) -> int | None:
    """The index of the first PNG that is not this module's encoding of its image, None if all are.

    The scanlines are compared once per batch: per image, that comparison cost as much as the inflating.
    """
    if len(pngs) != len(images):
        return min(len(pngs), len(images))
    bad, inflated = _inflate(pngs, *images.shape[1:])
    scanlines = _scanlines(images[: len(inflated)])
    if b"".join(inflated) == scanlines.tobytes():
        return bad
    pairs = enumerate(zip(inflated, scanlines, strict=True))
    return next(index for index, (got, want) in pairs if got != want.tobytes())


def decoded_pixels_crc(pngs: list[bytes], height: int, width: int) -> tuple[int | None, int]:
    """What the checker tells: the index of the first PNG that is not this module's encoding of some image
    (None if none), and the CRC-32 of the pixels they decode to, all images in order, as `images.data` holds
    them. The pixels themselves stay with the parent, which knows their CRC-32: 638 MB less through pipes
    for EMNIST byclass."""
    bad, inflated = _inflate(pngs, height, width)
    scanlines = np.frombuffer(b"".join(inflated), np.uint8).reshape(len(inflated), height, width + 1)
    return bad, zlib_ng.crc32(np.ascontiguousarray(scanlines[:, :, 1:]))
