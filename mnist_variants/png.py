"""A minimal PNG writer for 8-bit grayscale images, fast enough to keep up with TFDS's writer.

`tfds.features.Image` encodes numpy arrays through a TF graph per example, which
dominates the cost of preparing these datasets. It passes `bytes` through untouched,
so we hand it PNGs made here: zlib releases the GIL, so threads encode while TFDS
writes. Decoders (TF, PIL) return exactly the input pixels; tests prove it.
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
import zlib
from collections.abc import Iterator

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_CRC = zlib.crc32(b"IDAT")
_IEND_CHUNK = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
COMPRESSION_LEVEL = 6  # zlib's default, as TF's encode_png uses.


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _header(height: int, width: int) -> bytes:
    """Signature and IHDR: bit depth 8, colour type 0 (grayscale), no interlacing."""
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def _as_grayscale_batch(images: np.ndarray) -> np.ndarray:
    """(n, h, w) or (n, h, w, 1) uint8 -> (n, h, w)."""
    if images.dtype != np.uint8:
        raise TypeError(f"PNG encoding needs uint8 images, got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (n, h, w) or (n, h, w, 1), got {images.shape}")
    return images


def _encode_batch(images: np.ndarray, level: int) -> list[bytes]:
    """PNGs of a (n, h, w) uint8 batch: every scanline gets filter type 0 (None)."""
    count, height, width = images.shape
    scanlines = np.zeros((count, height, width + 1), dtype=np.uint8)
    scanlines[:, :, 1:] = images
    header = _header(height, width)
    encoded = []
    for raw in scanlines:
        idat = zlib.compress(raw, level)
        encoded.append(
            b"".join(
                (
                    header,
                    struct.pack(">I", len(idat)),
                    b"IDAT",
                    idat,
                    struct.pack(">I", zlib.crc32(idat, _IDAT_CRC)),
                    _IEND_CHUNK,
                )
            )
        )
    return encoded


def encode_png(image: np.ndarray, level: int = COMPRESSION_LEVEL) -> bytes:
    """One (h, w) or (h, w, 1) uint8 image as PNG bytes."""
    return _encode_batch(_as_grayscale_batch(image[np.newaxis]), level)[0]


def encode_pngs(
    images: np.ndarray, level: int = COMPRESSION_LEVEL, batch_size: int = 1024, workers: int | None = None
) -> Iterator[bytes]:
    """Yields the PNG of each image in order, encoding ahead in background threads."""
    images = _as_grayscale_batch(images)
    workers = workers or min(4, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="png") as pool:
        batches = [
            pool.submit(_encode_batch, images[start : start + batch_size], level)
            for start in range(0, len(images), batch_size)
        ]
        try:
            for batch in batches:
                yield from batch.result()
        finally:
            for batch in batches:
                batch.cancel()
