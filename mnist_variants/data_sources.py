"""Random access to a prepared split that PyTorch's DataLoader and Grain can use with worker processes.

Why not hand `tfds.data_source(...)` to a DataLoader as it is: with Linux's default `fork`
start method, its workers die with a segmentation fault whenever the parent process has
read or written an ArrayRecord file before the workers start: one `source[i]` (as TFDS's
docs, and ours, show) or preparing the dataset in the same process is enough. A core dump
of the dead worker shows where: `riegeli::BackgroundCleaner::Register` ->
`absl::Mutex::UnlockSlow` -> a jump to an invalid address, called from
`ArrayRecordReaderBase::Initialize` as the worker opens its reader. riegeli (under
ArrayRecord) keeps one process-wide cleaner, with its own thread, for its pooled zstd
contexts; it is created the first time the parent decompresses or compresses a chunk, and
a forked child inherits its state but not its thread. TFDS's source already opens its readers
lazily, in the worker, and that very opening is the call that crashes; no wrapper or
`worker_init_fn` can reset riegeli's process-wide state, so the ways out are: never read
ArrayRecord in a forked child (this module), or start workers with
`multiprocessing_context="spawn"` (Grain always does). Measured on full-size Fashion-MNIST,
2 workers, fork, a fresh process each time: parent untouched, 4 of 4 runs fine; after
`source[0]` in the parent, 4 of 4 crashed; after writing a small ArrayRecord file in the parent,
4 of 4 crashed; after preparing the dataset in the parent, 6 of 7 crashed.

`open(name, split)` reads the split once, in the calling process, and holds it decoded in
numpy arrays (47 MB for Fashion-MNIST's train split, like torchvision's `FashionMNIST`); its
items are what `tfds.data_source` yields (`image` uint8 (28, 28, 1), `label` int64). Forked
workers then only index arrays: no ArrayRecord, TensorFlow or image library in the workers, so
any start method works, and an epoch costs no decoding at all. It reads datasets prepared as
ArrayRecord (records read once, PNGs decoded here) or as TFRecord (`as_dataset(batch_size=-1)`).

PNG decoding needs neither PIL nor OpenCV: the builders write 8-bit grayscale PNGs whose
rows are all unfiltered (`mnist_variants/png.py`), so inflating the IDAT data with zlib gives
the pixels; any other PNG goes to OpenCV, PIL or TensorFlow, whichever is installed first.

Importing this module also registers a check that runs before every `os.fork()`: when a
DataLoader is about to fork workers over a data source that reads ArrayRecord files, it warns
(`ForkedArrayRecordWarning`), naming both ways out, instead of leaving only the crash.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, SupportsIndex

import numpy as np

from mnist_variants import png as png_writer

PNG_SIGNATURE = png_writer.PNG_SIGNATURE
_IEND_CHUNK = png_writer._IEND_CHUNK  # the trailer the builders' PNG writer puts on every image
_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, compression, filter, interlace

FORK_ADVICE = (
    "DataLoader workers started with fork crash with a segmentation fault (`DataLoader worker ... exited "
    "unexpectedly`) once this process has read or written an ArrayRecord file: ArrayRecord's riegeli library "
    "keeps a process-wide helper thread that a forked child does not inherit. Use "
    "`mnist_variants.data_sources.open(name, split)` as the dataset (it reads the split here, once), or "
    'pass `multiprocessing_context="spawn"` to the DataLoader.'
)


class ForkedArrayRecordWarning(UserWarning):
    """A DataLoader forks workers that will read ArrayRecord files (see FORK_ADVICE)."""


def decode_pngs(pngs: Sequence[bytes]) -> np.ndarray:
    """(n, height, width, 1) uint8 pixels of same-sized grayscale PNGs, as `tfds.features.Image` decodes them.

    The builders' PNGs (8-bit grayscale, one IDAT, no row filters: `mnist_variants/png.py`) are inflated
    with zlib alone, 8 us each here against 22 us for OpenCV and 150 us for PIL; any other PNG goes to a
    full decoder (`_decode_with_a_library`).
    """
    if not pngs:
        raise ValueError("no PNGs to decode")
    layout = _plain_layout(pngs[0])
    if layout is None:
        return np.stack([_decode_with_a_library(png) for png in pngs])
    header, height, width = layout
    scanlines = [_inflate_plain(png, header, height * (width + 1)) for png in pngs]
    blank = bytes(height * (width + 1))
    rows = np.frombuffer(b"".join(raw or blank for raw in scanlines), dtype=np.uint8)
    rows = rows.reshape(len(pngs), height, width + 1)
    images = rows[:, :, 1:, np.newaxis].copy()
    # A PNG of another layout, or one with filtered rows, is decoded in full.
    for index in np.flatnonzero(rows[:, :, 0].any(axis=1) | np.array([raw is None for raw in scanlines])):
        images[index] = _decode_with_a_library(pngs[index]).reshape(height, width, 1)
    return images


def _plain_layout(png: bytes) -> tuple[bytes, int, int] | None:
    """(signature + IHDR chunk, height, width) if `png` is 8-bit grayscale, not interlaced; else None."""
    ihdr_end = len(PNG_SIGNATURE) + _CHUNK_HEAD.size + _IHDR.size + 4
    if not png.startswith(PNG_SIGNATURE) or len(png) < ihdr_end:
        return None
    length, kind = _CHUNK_HEAD.unpack_from(png, len(PNG_SIGNATURE))
    if (length, kind) != (_IHDR.size, b"IHDR"):
        return None
    width, height, depth, colour, compression, filtering, interlace = _IHDR.unpack_from(
        png, len(PNG_SIGNATURE) + _CHUNK_HEAD.size
    )
    if (depth, colour, compression, filtering, interlace) != (8, 0, 0, 0, 0):
        return None
    return png[:ihdr_end], height, width


def _inflate_plain(png: bytes, header: bytes, size: int) -> bytes | None:
    """The scanlines of a PNG laid out as header + one IDAT + IEND, if it is one and they inflate to `size`."""
    if not png.startswith(header):
        return None
    at = len(header)
    length, kind = _CHUNK_HEAD.unpack_from(png, at) if len(png) >= at + _CHUNK_HEAD.size else (0, b"")
    end = at + _CHUNK_HEAD.size + length
    if kind != b"IDAT" or png[end + 4 :] != _IEND_CHUNK:
        return None
    try:
        raw = zlib.decompress(png[at + _CHUNK_HEAD.size : end])  # zlib checks its own checksum of the pixels
    except zlib.error:
        return None
    return raw if len(raw) == size else None


def _decode_with_a_library(data: bytes) -> np.ndarray:
    """Any PNG, through OpenCV, PIL or TensorFlow (a dependency of ours, so always there); ValueError if none can."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ValueError("OpenCV cannot decode an image of this dataset: not a valid PNG")
        return pixels.reshape(*pixels.shape[:2], -1)
    try:
        from PIL import Image
    except ImportError:
        import tensorflow as tf

        try:
            return tf.io.decode_png(data).numpy()
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(f"TensorFlow cannot decode an image of this dataset: {error}") from error
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"PIL cannot decode an image of this dataset: {error}") from error
    return pixels.reshape(*pixels.shape[:2], -1)


class InMemorySource(Sequence):
    """A split held in numpy arrays: `len`, `source[i]` (a dict like `tfds.data_source`'s) and `__getitems__`.

    Picklable (spawned workers get a copy of the arrays); forked workers share the parent's pages.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        lengths = {len(array) for array in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"features of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        self.arrays = dict(arrays)
        self._length = lengths.pop()

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: SupportsIndex) -> dict[str, np.ndarray]:  # type: ignore[override]
        position = index.__index__()
        if not -self._length <= position < self._length:
            raise IndexError(f"index {position} out of range for {self._length} examples")
        return {name: array[position] for name, array in self.arrays.items()}

    def __getitems__(self, indices: Iterable[SupportsIndex]) -> list[dict[str, np.ndarray]]:
        """What torch's DataLoader calls for a batch: one fetch for its indices."""
        return [self[index] for index in indices]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {array.dtype}{list(array.shape[1:])}" for name, array in self.arrays.items())
        return f"InMemorySource({self._length} examples; {shapes})"


def open(  # shadows the builtin here only: callers write `data_sources.open(...)`
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download_and_prepare_kwargs: dict[str, Any] | None = None,
    file_format: str = "array_record",
) -> InMemorySource:
    """The split of a registered dataset (`mnist_variants_fashion_mnist`), read once and held decoded.

    Prepares the dataset first if it is not (as `file_format`, with `download_and_prepare_kwargs`, e.g.
    a `download_config` with a `manual_dir`); an existing preparation is used in whatever format it has.
    """
    import tensorflow_datasets as tfds

    import mnist_variants  # noqa: F401 - registers the builders

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
        builder.download_and_prepare(**(download_and_prepare_kwargs or {}))
    if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
        return InMemorySource(_read_array_record(builder, split))
    # TFRecord: tf.data reads the whole split at once and TF decodes the PNGs in C++.
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    return InMemorySource({key: np.asarray(value) for key, value in arrays.items()})


def _read_array_record(builder: Any, split: str) -> dict[str, np.ndarray]:
    """Every record of the split, in order, parsed and decoded here: images by `decode_pngs`, integers as int64."""
    import tensorflow_datasets as tfds

    # TFDS's own copy of tf.train.Example ("public API of the proto package", TFDS 4.9.4 to 4.9.10), which its
    # numpy path parses with: `tf.train.Example` would import all of TensorFlow (18 s measured here) into a
    # process that otherwise needs none of it.
    from tensorflow_datasets.proto import tf_example_pb2

    # The serialized records: the ArrayRecord source under TFDS's (its `data_source` field, in every TFDS
    # since 4.9.4; `deserialize_method=RAW_BYTES` would say the same but arrived after 4.9.4).
    raw = builder.as_data_source(split=split).data_source
    records = raw.__getitems__(range(len(raw))) if len(raw) else []
    features = builder.info.features
    images = [key for key, feature in features.items() if isinstance(feature, tfds.features.Image)]
    integers = [
        key for key, feature in features.items() if key not in images and np.dtype(feature.np_dtype).kind in "iu"
    ]
    unsupported = set(features) - set(images) - set(integers)
    if unsupported:
        raise TypeError(f"{builder.name}: features {sorted(unsupported)} are neither images nor integers")
    columns: dict[str, list] = {key: [] for key in features}
    for record in records:
        example = tf_example_pb2.Example.FromString(record).features.feature
        for key in images:
            columns[key].append(example[key].bytes_list.value[0])
        for key in integers:
            columns[key].append(example[key].int64_list.value[0])
    arrays = {key: np.asarray(columns[key], dtype=np.int64) for key in integers}
    for key in images:
        arrays[key] = decode_pngs(columns[key]) if records else np.zeros((0, *features[key].shape), np.uint8)
    return {key: arrays[key] for key in features}


def _reads_array_record(dataset: object) -> bool:
    """Whether `dataset` is (or wraps, as torch's Subset does) a data source of TFDS or ArrayRecord."""
    for _ in range(8):
        module = type(dataset).__module__ or ""
        if module.startswith(("tensorflow_datasets.", "array_record.")):
            return True
        if not hasattr(dataset, "dataset"):
            return False
        dataset = dataset.dataset
    return False


def _warn_before_a_dataloader_forks() -> None:
    """Runs in the parent before each os.fork(): warns if a DataLoader is forking workers over ArrayRecord.

    It looks up the call stack for torch's multi-process iterator (no torch import: only its frames),
    because an at-fork hook cannot raise and gets no arguments.
    """
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__name__ == "_MultiProcessingDataLoaderIter" and _reads_array_record(
            getattr(owner, "_dataset", None)
        ):
            warnings.warn(FORK_ADVICE, ForkedArrayRecordWarning, stacklevel=2)
            return
        frame = frame.f_back


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_warn_before_a_dataloader_forks)
