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
items are what `tfds.data_source` yields (`image` uint8 (28, 28, 1), `label` int64), as copies:
an in-place transform changes the item, never the held split. Forked workers then only index
arrays: no ArrayRecord, TensorFlow or image library in the workers, so any start method works,
and an epoch costs no decoding at all. It reads datasets prepared as ArrayRecord (records read,
checked and decoded a chunk at a time into the held arrays) or as TFRecord (the same, through
its own TFRecord reader: no TensorFlow); with no data_dir, it reads `array_record_data_dir()` first
and never prepares ArrayRecord in TFDS's default folder, where
`tfds.load` would then fail.

PNG decoding needs neither PIL nor OpenCV: the builders write 8-bit grayscale PNGs whose
rows are all unfiltered (`mnist_variants/png_codec.py`), so inflating the IDAT data with zlib gives
the pixels; any other PNG goes to OpenCV, PIL or TensorFlow, whichever is installed first, and
colour images to TFDS's own numpy decoder, so their channels are RGB as `tfds.data_source` gives.

Importing this module also registers a check that runs before every `os.fork()`: when a
DataLoader is about to fork workers over a data source that reads ArrayRecord files, it warns
(`ForkedArrayRecordWarning`), naming both ways out, instead of leaving only the crash.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import struct
import sys
import types
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, SupportsIndex

import numpy as np

from mnist_variants import png_codec as png_writer

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


def decode_pngs(pngs: Sequence[bytes], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """(n, height, width, 1) uint8 pixels of same-sized grayscale PNGs, as `tfds.features.Image` decodes them.

    The builders' PNGs (8-bit grayscale, one IDAT, no row filters: `mnist_variants/png_codec.py`) are inflated
    with zlib alone, 8 us each here against 22 us for OpenCV and 150 us for PIL; any other PNG goes to a
    full decoder (`_decode_with_a_library`). Every PNG's header must give `shape`'s height and width (by
    default the first PNG's), checked before anything is allocated for it: ValueError otherwise, so that a
    planted header cannot make a decoder allocate gigabytes.
    """
    if not pngs:
        raise ValueError("no PNGs to decode")
    sizes = [png_size(png) for png in pngs]
    height, width = shape[:2] if shape is not None else (sizes[0] or (0, 0))
    for index, size in enumerate(sizes):
        if size != (height, width):
            raise ValueError(
                f"PNG {index} of {len(pngs)}: {_describe_size(size)}, not {height}x{width} (height x width)"
            )
    layout = _plain_layout(pngs[0])
    if layout is None:
        return np.stack([_decode_with_a_library(png) for png in pngs])
    header = layout[0]
    scanlines = [_inflate_plain(png, header, height * (width + 1)) for png in pngs]
    blank = bytes(height * (width + 1))
    rows = np.frombuffer(b"".join(raw or blank for raw in scanlines), dtype=np.uint8)
    rows = rows.reshape(len(pngs), height, width + 1)
    images = rows[:, :, 1:, np.newaxis].copy()
    # A PNG of another layout, or one with filtered rows, is decoded in full.
    for index in np.flatnonzero(rows[:, :, 0].any(axis=1) | np.array([raw is None for raw in scanlines])):
        images[index] = _decode_with_a_library(pngs[index]).reshape(height, width, 1)
    return images


def png_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, without decoding it; None if `data` does not start as a PNG."""
    ihdr_end = len(PNG_SIGNATURE) + _CHUNK_HEAD.size + _IHDR.size
    if not data.startswith(PNG_SIGNATURE) or len(data) < ihdr_end:
        return None
    if _CHUNK_HEAD.unpack_from(data, len(PNG_SIGNATURE)) != (_IHDR.size, b"IHDR"):
        return None
    width, height = _IHDR.unpack_from(data, len(PNG_SIGNATURE) + _CHUNK_HEAD.size)[:2]
    return height, width


def _describe_size(size: tuple[int, int] | None) -> str:
    return "an image whose header gives no size" if size is None else f"a PNG of {size[0]}x{size[1]}"


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
    """The scanlines of a PNG laid out as header + one IDAT + IEND, if it is one and they inflate to `size`.

    Inflates at most `size` + 1 bytes, whatever the IDAT would give: a small record can inflate to gigabytes.
    """
    if not png.startswith(header):
        return None
    at = len(header)
    length, kind = _CHUNK_HEAD.unpack_from(png, at) if len(png) >= at + _CHUNK_HEAD.size else (0, b"")
    end = at + _CHUNK_HEAD.size + length
    if kind != b"IDAT" or png[end + 4 :] != _IEND_CHUNK:
        return None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(png[at + _CHUNK_HEAD.size : end], size + 1)
    except zlib.error:
        return None
    # zlib checks its own checksum of the pixels once the stream has ended, with nothing left over.
    return raw if len(raw) == size and inflater.eof and not inflater.unconsumed_tail else None


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
        if pixels.ndim == 3 and pixels.shape[2] in (3, 4):  # OpenCV's BGR(A), in the RGB(A) order of PIL and TF
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
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

    Items are copies, never views of the held arrays: a transform that writes into an item in place (random
    erasing on numpy inputs) must not rewrite the dataset for every later epoch, as it does not over
    `tfds.data_source`. A batch is one fancy-indexed copy, which costs less than the collation that follows
    (README, PyTorch and JAX). `source.arrays` are read-only views, so writing into them fails loudly too (numpy's
    "assignment destination is read-only": write into `source.arrays[name].copy()`, or into an item); arrays given
    to the constructor are held as such views and stay writable for their owner, whose writes the source then shows.
    Picklable (spawned workers get a copy of the arrays); forked workers share the parent's pages.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        lengths = {len(array) for array in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"features of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        # Read-only views: the caller's own arrays (`InMemorySource({"image": images, ...})`) stay writable.
        self.arrays = {name: array.view() for name, array in arrays.items()}
        for array in self.arrays.values():
            array.flags.writeable = False
        self._length = lengths.pop()

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: SupportsIndex) -> dict[str, np.ndarray]:  # type: ignore[override]
        position = index.__index__()
        if not -self._length <= position < self._length:
            raise IndexError(f"index {position} out of range for {self._length} examples")
        return {name: array[position].copy() for name, array in self.arrays.items()}

    def __getitems__(self, indices: Iterable[SupportsIndex]) -> list[dict[str, np.ndarray]]:
        """What torch's DataLoader calls for a batch: one copy of its examples, handed out as items.

        Each item's arrays are rows of that one copy (views of the batch, not of the held split): a write into one
        item changes no other item and no held example, but keeping one item keeps its whole batch's copy alive.
        A copy per row would cost a numpy call per item and feature, for memory the collation frees anyway.
        """
        positions = np.fromiter((index.__index__() for index in indices), dtype=np.int64)
        outside = positions[(positions < -self._length) | (positions >= self._length)]
        if len(outside):
            raise IndexError(f"index {outside[0]} out of range for {self._length} examples")
        batch = {name: array[positions] for name, array in self.arrays.items()}
        return [{name: values[row] for name, values in batch.items()} for row in range(len(positions))]

    def __setstate__(self, state: dict) -> None:
        """A spawned worker's unpickled copy is read-only too."""
        self.__dict__.update(state)
        for array in self.arrays.values():
            array.flags.writeable = False

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {array.dtype}{list(array.shape[1:])}" for name, array in self.arrays.items())
        return f"InMemorySource({self._length} examples; {shapes})"


# Where `open()` prepares ArrayRecord when no data_dir is given: beside TFDS's default folder, never in it. A
# data_dir holds one file format per dataset version, and `tfds.load` (TFRecord) in the default folder then fails
# on an ArrayRecord preparation there (NotImplementedError), `tfds.data_source` on a TFRecord one (ValueError).
ARRAY_RECORD_DIR_VARIABLE = "MNIST_VARIANTS_ARRAY_RECORD_DIR"


def array_record_data_dir() -> str:
    """The data_dir `open()` reads and prepares ArrayRecord in when given none: $MNIST_VARIANTS_ARRAY_RECORD_DIR if set,
    else TFDS's default folder (`~/tensorflow_datasets`, or $TFDS_DATA_DIR) with `_array_record` appended, so that it
    follows TFDS_DATA_DIR onto a cluster's shared scratch as `tfds.load` does.
    """
    override = os.environ.get(ARRAY_RECORD_DIR_VARIABLE)
    if override:
        return os.path.expanduser(override)
    # TFDS's own default, as `tfds.builder` resolves it (read once, when TFDS is imported); no public API gives it.
    from tensorflow_datasets.core import constants

    return os.path.normpath(os.path.expanduser(constants.DATA_DIR)) + "_array_record"


# Records read, parsed and decoded at a time: bounds what reading adds to the held arrays (about 4 MB of PNGs).
_CHUNK = 8192


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
    With no `data_dir`, an ArrayRecord preparation in `array_record_data_dir()` is read first; else one in
    TFDS's default folder (`tfds.load`'s TFRecord, read here without tf.data); else ArrayRecord is prepared
    there, so that neither `tfds.load` nor `tfds.data_source` (with that data_dir) later
    finds a file format it cannot read.
    """
    import tensorflow_datasets as tfds

    import mnist_variants  # noqa: F401 - registers the builders

    if data_dir is None:
        array_record_dir = array_record_data_dir()
        builder = tfds.builder(name, data_dir=array_record_dir)
        if not builder.is_prepared():
            in_default_folder = tfds.builder(name)
            if in_default_folder.is_prepared():
                builder = in_default_folder
            elif tfds.core.FileFormat(file_format) != tfds.core.FileFormat.ARRAY_RECORD:
                builder, data_dir = in_default_folder, None
            else:
                data_dir = array_record_dir
    else:
        builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
        builder.download_and_prepare(**(download_and_prepare_kwargs or {}))
    images, integers = _held_features(builder)
    if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
        raw = builder.as_data_source(split=split).data_source  # TFDS's ArrayRecord source: serialized records
        chunks: Iterable[list[bytes]] = (
            raw.__getitems__(range(start, min(start + _CHUNK, len(raw)))) for start in range(0, len(raw), _CHUNK)
        )
        count = len(raw)
    else:
        count = builder.info.splits[split].num_examples
        chunks = _tfrecord_chunks(builder.info.splits[split].filepaths, f"{builder.name} {split}")
    return InMemorySource(_read_records(chunks, count, images, integers, f"{builder.name} {split}"))


def _held_features(builder: Any) -> tuple[dict[str, Any], list[str]]:
    """The dataset's image features (by name) and integer features; TypeError for anything else.

    Images of any fixed shape: grayscale ones are decoded by `decode_pngs`, colour ones by TFDS's own
    `Image.decode_example_np`, so their channels are in the order `tfds.data_source` gives (RGB).
    """
    import tensorflow_datasets as tfds

    features = builder.info.features
    images = {
        key: feature
        for key, feature in features.items()
        if isinstance(feature, tfds.features.Image)
        and np.dtype(feature.np_dtype) == np.uint8
        and None not in feature.shape
    }
    integers = [
        key for key, feature in features.items() if key not in images and np.dtype(feature.np_dtype).kind in "iu"
    ]
    unsupported = set(features) - set(images) - set(integers)
    if unsupported:
        raise TypeError(
            f"{builder.name}: features {sorted(unsupported)} are neither uint8 images of a fixed shape nor integers"
        )
    return images, integers


_TFRECORD_HEAD = struct.Struct("<QI")  # length of the record, masked CRC-32C of the length's 8 bytes


def _tfrecord_chunks(paths: Iterable[os.PathLike], where: str) -> Iterable[list[bytes]]:
    """The records of TFRecord files, _CHUNK at a time, each one's framing and CRC-32C checked.

    Own reader, not tf.data: tf.data (`as_dataset`) imports all of TensorFlow and its buffers, 60x the split
    held (README); no installed library reads TFRecord framing without TensorFlow. Memory: one chunk of records;
    a record's length is checked against what is left of its file before it is read.
    """
    chunk: list[bytes] = []
    heads: list[bytes] = []
    for path in paths:
        with builtins.open(os.fspath(path), "rb") as file:
            left = os.fstat(file.fileno()).st_size
            while left:
                head = file.read(_TFRECORD_HEAD.size)
                length, _ = _TFRECORD_HEAD.unpack(head) if len(head) == _TFRECORD_HEAD.size else (left, 0)
                if length + _TFRECORD_HEAD.size + 4 > left:
                    raise ValueError(f"{where}: {os.fspath(path)} is cut or not TFRecord: a record runs past its end")
                body = file.read(length + 4)
                left -= _TFRECORD_HEAD.size + length + 4
                heads.append(head)
                chunk.append(body)
                if len(chunk) == _CHUNK:
                    yield _checked_records(heads, chunk, where)
                    chunk, heads = [], []
    if chunk:
        yield _checked_records(heads, chunk, where)


def _checked_records(heads: list[bytes], bodies: list[bytes], where: str) -> list[bytes]:
    """The records of TFRecord frames whose masked CRC-32Cs (of the length, of the data) match; ValueError if not."""
    lengths = [head[:8] for head in heads]
    datas = [body[:-4] for body in bodies]
    stored = b"".join(head[8:] + body[-4:] for head, body in zip(heads, bodies, strict=True))
    expected = np.frombuffer(stored, dtype="<u4")
    found = np.stack([_masked_crc32c(lengths), _masked_crc32c(datas)], axis=1).reshape(-1)
    if not np.array_equal(found, expected):
        bad = int(np.flatnonzero(found != expected)[0]) // 2
        raise ValueError(f"{where}: a TFRecord record fails its CRC-32C check ({bad} records into a chunk)")
    return datas


def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(values: list[bytes]) -> np.ndarray:
    """TFRecord's masked CRC-32C of each of `values`, all at once (numpy, a byte position at a time).

    Own code: no CRC-32C library is a dependency here (zlib has only CRC-32), and one value at a time in Python
    would cost seconds per split; across a chunk's records numpy takes about a second for 700,000 records.
    """
    lengths = np.array([len(value) for value in values], dtype=np.int64)
    width = int(lengths.max(initial=0))
    data = np.zeros((len(values), width), dtype=np.uint8)
    for row, value in enumerate(values):
        data[row, : len(value)] = np.frombuffer(value, dtype=np.uint8)
    crc = np.full(len(values), 0xFFFFFFFF, dtype=np.uint32)
    for column in range(width):
        stepped = _CRC32C_TABLE[(crc ^ data[:, column]) & 0xFF] ^ (crc >> np.uint32(8))
        crc = np.where(lengths > column, stepped, crc)
    crc ^= np.uint32(0xFFFFFFFF)
    return (((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)).astype(np.uint32)


def _empty_arrays(count: int, images: dict[str, Any], integers: list[str]) -> dict[str, np.ndarray]:
    arrays = {key: np.empty(count, dtype=np.int64) for key in integers}
    arrays.update({key: np.empty((count, *feature.shape), dtype=np.uint8) for key, feature in images.items()})
    return arrays


def _read_records(
    chunks: Iterable[list[bytes]], count: int, images: dict[str, Any], integers: list[str], where: str
) -> dict[str, np.ndarray]:
    """Every record of the split, in order, parsed and decoded here, a chunk at a time, into the held arrays.

    Memory: the held arrays plus one chunk of records, never the whole split's PNGs (README: at most 1.5x the
    split). Each record must hold exactly one value of the right kind per feature, as TFDS's parser requires:
    ValueError naming the record and the feature otherwise.
    """
    # TFDS's own copy of tf.train.Example ("public API of the proto package", TFDS 4.9.4 to 4.9.10), which its
    # numpy path parses with: `tf.train.Example` would import all of TensorFlow (18 s measured here) into a
    # process that otherwise needs none of it.
    from google.protobuf.message import DecodeError
    from tensorflow_datasets.proto import tf_example_pb2

    arrays = _empty_arrays(count, images, integers)
    kinds = {**{key: "bytes_list" for key in images}, **{key: "int64_list" for key in integers}}
    start = 0
    for records in chunks:
        if start + len(records) > count:
            raise ValueError(f"{where}: more examples than the {count} its dataset_info.json records")
        columns: dict[str, list] = {key: [] for key in kinds}
        for index, record in enumerate(records, start):
            try:
                example = tf_example_pb2.Example.FromString(record).features.feature
            except DecodeError as error:
                raise ValueError(f"{where}: record {index} is not a tf.train.Example: {error}") from None
            for key, kind in kinds.items():
                columns[key].append(_one_value(example, key, kind, f"{where}: record {index}"))
        end = start + len(records)
        for key in integers:
            arrays[key][start:end] = columns[key]
        for key, feature in images.items():
            arrays[key][start:end] = _decode_images(columns[key], key, feature, where, start)
        start = end
    if start != count:
        raise ValueError(f"{where}: {start} examples, not the {count} its dataset_info.json records")
    return arrays


def _one_value(example: Any, key: str, kind: str, where: str) -> Any:
    """The single value of feature `key` of a parsed tf.train.Example, which must be a `kind`."""
    if key not in example:
        raise ValueError(f"{where} has no feature {key!r}")
    found = example[key].WhichOneof("kind")
    if found != kind:
        raise ValueError(f"{where}: feature {key!r} is a {found or 'empty Feature'}, not a {kind}")
    values = getattr(example[key], kind).value
    if len(values) != 1:
        raise ValueError(f"{where}: feature {key!r} has {len(values)} values, not 1")
    return values[0]


def _decode_images(pngs: list[bytes], key: str, feature: Any, where: str, first_index: int) -> np.ndarray:
    """The images of a chunk, of `feature`'s shape, decoded as tfds.data_source decodes them.

    Each image's size is read from its header and checked against the feature's shape before any decoder sees
    it (PNG: its IHDR; any other format: PIL reads the header only), so no record makes a decoder allocate more.
    """
    shape = tuple(feature.shape)
    for offset, data in enumerate(pngs):
        size = png_size(data) or _size_by_pil(data)
        if size != shape[:2]:
            raise ValueError(
                f"{where}: record {first_index + offset}: feature {key!r}: {_describe_size(size)}, not "
                f"{shape[0]}x{shape[1]} (height x width)"
            )
    if shape[-1] == 1 and pngs:
        try:
            decoded = decode_pngs(pngs, shape)
        except ValueError:  # an image no decoder reads: found again below, by its record
            decoded = None
        if decoded is not None and decoded.shape[1:] == shape:
            return decoded
    decoded_images = []
    for offset, data in enumerate(pngs):
        try:
            image = feature.decode_example_np(data)  # TFDS's own: OpenCV (channels reordered to RGB) or PIL
        except Exception as error:  # OpenCV, PIL and TFDS raise many kinds; this names the record
            raise ValueError(
                f"{where}: record {first_index + offset}: feature {key!r}: cannot decode the image: {error}"
            ) from error
        if image is None or image.shape != shape:
            got = None if image is None else image.shape
            raise ValueError(f"{where}: record {first_index + offset}: feature {key!r}: shape {got}, not {shape}")
        decoded_images.append(image)
    return np.stack(decoded_images) if decoded_images else np.zeros((0, *shape), np.uint8)


def _size_by_pil(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an image that is not a PNG, from its header alone (PIL opens lazily); None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError):
        return None
    return height, width


# Objects looked into, at most, when a DataLoader forks: bounds the time a huge object graph can add to a fork.
_LOOK_BUDGET = 4096
# Attributes that hold the wrapped dataset in torch's wrappers and in most users' own: looked into first.
_WRAPPED_ATTRIBUTES = ("dataset", "datasets", "source", "data_source", "sources")
_NOT_LOOKED_INTO = (str, bytes, bytearray, int, float, complex, np.ndarray, np.generic, type, types.ModuleType)


def _reads_array_record(dataset: object) -> bool:
    """Whether `dataset` is, or wraps, a reader of ArrayRecord files (TFDS's or ArrayRecord's own data source).

    Follows, breadth first, what PyTorch users wrap sources in: `Subset.dataset`, `ConcatDataset.datasets`,
    `ChainDataset.datasets`, lists, tuples, dicts, and the attributes (`__dict__` or `__slots__`) of their own
    wrapper classes, `dataset`/`source`-like ones first. Only the reader classes count: other TFDS objects (a
    `DatasetInfo` kept for its class names) do not. Bounded (_LOOK_BUDGET objects; scalars, strings and numpy
    arrays are not looked into and do not count), so that a cycle or a huge object graph cannot hang a fork.
    """
    pending, looked_at = collections.deque([dataset]), set()
    while pending and len(looked_at) < _LOOK_BUDGET:
        item = pending.popleft()
        if item is None or isinstance(item, _NOT_LOOKED_INTO) or id(item) in looked_at:
            continue
        looked_at.add(id(item))
        if _is_an_array_record_reader(type(item)):
            return True
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        else:
            attributes = dict(vars(item)) if isinstance(getattr(item, "__dict__", None), dict) else {}
            for cls in type(item).__mro__:
                slots = getattr(cls, "__slots__", ())
                for slot in (slots,) if isinstance(slots, str) else slots:
                    if slot not in ("__dict__", "__weakref__") and hasattr(item, slot):
                        attributes[slot] = getattr(item, slot)
            pending.extend(attributes.pop(name) for name in _WRAPPED_ATTRIBUTES if name in attributes)
            pending.extend(attributes.values())
    return False


def _is_an_array_record_reader(cls: type) -> bool:
    """TFDS's `ArrayRecordDataSource`, ArrayRecord's own, its readers, and their subclasses (by name: no imports)."""
    return any(
        base.__name__ == "ArrayRecordDataSource" or (base.__module__ or "").startswith("array_record.")
        for base in cls.__mro__
    )


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
