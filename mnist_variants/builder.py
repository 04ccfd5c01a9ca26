"""The machinery shared by every variant: a variant only declares its data.

A variant subclass states its sources, its files per split, where other tools keep
them, its `_info` and how one split's files become arrays. Everything else lives here
once: one preparation at a time (preparation.py), getting and verifying the files
(fetching.py), checking every split's headers, labels and counts before anything is
written, and inflating and encoding the images on other cores while TFDS writes (ImageFeed).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import importlib.util
import inspect
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import fetching, formats, locations, png_encoder, preparation, verification
from mnist_variants.errors import MalformedFileError

SUBMISSION_IMAGES = 1 << 14  # images inflated, then submitted to the PNG helper, at a time (12.8 MB of pixels)


def checksums_dir() -> epath.Path:
    """The registered checksums: `mnist_variants/checksums/` when installed, `checksums/` in a source checkout."""
    spec = importlib.util.find_spec("mnist_variants.checksums")
    if spec is not None and spec.submodule_search_locations:
        return epath.Path(next(iter(spec.submodule_search_locations)))
    checkout = epath.Path(__file__).parent.parent / "checksums"  # the package imported from the repository
    if checkout.is_dir():
        return checkout
    raise ImportError("mnist_variants.checksums is missing: reinstall the package (pip install mnist-variants)")


class DatasetInfo(tfds.core.DatasetInfo):
    """TFDS's DatasetInfo, without the look-up of precomputed metadata in TFDS's GCS bucket.

    The bucket holds nothing for these datasets. TFDS before 4.9.5 looks there whenever a
    builder is made: a round trip online, and minutes of retries offline behind a proxy.
    """

    def initialize_from_bucket(self) -> None:
        return None


@dataclasses.dataclass(eq=False, kw_only=True)
class VariantConfig(tfds.core.BuilderConfig):
    """One config of a variant that has several (EMNIST's byclass, letters, ...): its files and classes.

    No example counts: a split holds what its files' headers say (a count in a config is how
    TFDS's emnist/letters lost 42,000 examples).
    """

    # Split name -> role in the split ("images", "labels") -> upstream file name, as SPLIT_FILES.
    split_files: Mapping[str, Mapping[str, str]]
    class_names: Sequence[str] = ()
    # A file listing each label's character codes (EMNIST's `emnist-<config>-mapping.txt`): where the
    # upstream files include it, `class_names` is checked against it.
    class_codes: str | None = None


class MnistVariantBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder for one MNIST-format variant, declared as data by a subclass."""

    # The dataset's name for people, in messages ("Fashion-MNIST").
    TITLE: ClassVar[str]
    # Base URLs tried in order; each split's files are fetched as base URL + upstream file name.
    SOURCES: ClassVar[tuple[str, ...]]
    # Split name -> role in the split ("images", "labels") -> upstream file name.
    SPLIT_FILES: ClassVar[Mapping[str, Mapping[str, str]]]
    # Folders inside a manual dir where other tools keep the files (torchvision: "FashionMNIST/raw").
    MANUAL_SUBFOLDERS: ClassVar[tuple[str, ...]] = ()
    # Where `keras.datasets` keeps the files under its home (~/.keras), if it has them.
    KERAS_CACHE_FOLDER: ClassVar[str | None] = None
    # Or the one `.npz` in which keras keeps the whole dataset (its filename registered like a download).
    KERAS_NPZ: ClassVar[locations.KerasNpz | None] = None
    # The one zip that holds the split files as members (EMNIST's gzip.zip), if upstream ships them so.
    ARCHIVE: ClassVar[locations.Archive | None] = None
    # Every concrete variant, in the order they were declared: the family whose files look alike.
    FAMILY: ClassVar[list[type[MnistVariantBuilder]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not kwargs.get("skip_registration") and not inspect.isabstract(cls):
            MnistVariantBuilder.FAMILY.append(cls)

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: to prepare without network, put the upstream files, under their
    upstream names, in the manual dir or in its `<dataset name>/` subfolder.
    Gzipped files may also be given decompressed. Every file is verified by its
    content. Without them, the files are downloaded.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def _checksums_path(cls) -> epath.Path:
        return checksums_dir() / f"{cls.name}.tsv"

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls) -> dict[str, tfds_checksums.UrlInfo]:
        """The registered checksums, also under the URLs of a user's mirror. Files known by their digests but not
        their size (`<name>.digests.tsv`) are not among them: TFDS's UrlInfo needs a size; `registry` has both."""
        path = cls._checksums_path
        registered = tfds_checksums.load_url_infos(path) if path.exists() else {}
        by_name = {info.filename: info for info in registered.values()}
        for name, info in by_name.items():
            for url in fetching.source_urls(cls.SOURCES, name, cls.name):
                registered.setdefault(url, info)
        return registered

    @classmethod
    def upstream_filenames(cls) -> list[str]:
        """Every upstream file the builder fetches: the archive, or the split files, split by split."""
        if cls.ARCHIVE is not None:
            return [cls.ARCHIVE.filename]
        return [name for files in cls.SPLIT_FILES.values() for name in files.values()]

    @property
    def split_files(self) -> Mapping[str, Mapping[str, str]]:
        """Split -> role -> upstream file name: the config's, or the variant's SPLIT_FILES."""
        config = self.builder_config
        return config.split_files if isinstance(config, VariantConfig) else self.SPLIT_FILES

    def download_and_prepare(
        self,
        *,
        download_dir: epath.PathLike | None = None,
        download_config: tfds.download.DownloadConfig | None = None,
        **kwargs: Any,
    ) -> None:
        """TFDS's `download_and_prepare`, safe when many workers call it at once (see preparation.py).

        Exactly one worker downloads and prepares; the others wait for it, then read its dataset.
        """
        # TFDS's GCS bucket hosts no prepared copy of these datasets; before TFDS 4.9.5 asking it was on
        # by default, a round trip online and minutes of retries offline behind a proxy.
        config = dataclasses.replace(download_config or tfds.download.DownloadConfig(), try_download_gcs=False)
        # The one mode that keeps an existing dataset (the others rebuild it or rewrite its metadata).
        reuse = config.download_mode == tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        if reuse and preparation.is_complete(self.data_path):  # prepared already: no lock, works read-only
            return super().download_and_prepare(download_dir=download_dir, download_config=config, **kwargs)
        with preparation.exclusive(self.data_path, f"{self.name} {self.version}") as locked:
            if reuse and preparation.is_complete(self.data_path):  # another worker prepared it meanwhile
                self.info.read_from_directory(self.data_path)
                return None
            if locked:  # partial downloads are not among them: the next download resumes them (fetching.py)
                preparation.remove(
                    preparation.abandoned_folders(self.data_path), "left by a preparation that did not finish"
                )
            try:
                return super().download_and_prepare(download_dir=download_dir, download_config=config, **kwargs)
            except OSError:
                # Without locks, TFDS's final rename fails when another worker's dataset got there first.
                if not (reuse and preparation.is_complete(self.data_path)):
                    raise
                print(f"Another process prepared {self.data_path} first; using its dataset", flush=True)
                self.info.read_from_directory(self.data_path)
                return None
            finally:
                self._end_png_helpers()

    def _end_png_helpers(self) -> None:
        """The PNG helper processes end, and are waited for, before the preparation returns or fails."""
        encoder, self._png_encoder = getattr(self, "_png_encoder", None), None
        if encoder is not None:
            encoder.shutdown()

    @abc.abstractmethod
    def _read_split(self, files: Mapping[str, verification.Verdict]) -> dict[str, np.ndarray | formats.ImageBatches]:
        """Parses one split's files (by role) into feature arrays; "image" is (n, 28, 28, 1) uint8, all of it or
        batches still to be inflated (whose header is checked).

        Each file's `data` holds the very bytes that were verified; `path` names it in messages.
        """

    def wanted(self) -> fetching.Wanted:
        """The builder's declaration (its config's, if it has configs), as the fetching machinery needs it."""
        config = self.builder_config
        class_codes = config.class_codes if isinstance(config, VariantConfig) else None
        return fetching.Wanted(
            name=self.name,
            title=self.TITLE,
            sources=self.SOURCES,
            split_files=self.split_files,
            registry=self.registry(),
            manual_subfolders=self.MANUAL_SUBFOLDERS,
            keras_cache_folder=self.KERAS_CACHE_FOLDER,
            keras_npz=self.KERAS_NPZ,
            known=verification.Known.of({other.TITLE: other.registry() for other in self.FAMILY}),
            archive=self.ARCHIVE,
            extra_files={"class_codes": class_codes} if class_codes else {},
        )

    @classmethod
    def registry(cls) -> dict[str, verification.Registered]:
        """Every registered file of the variant by name, with its decompressed content's digest where known, and
        every file known by its digests (`verification.load_registry`)."""
        return verification.load_registry(cls.url_infos, cls._checksums_path)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        fetch = fetching.Fetch(self.wanted(), dl_manager)
        # The encoder boots on another core while the files are fetched; a body found damaged meanwhile
        # stops the downloads still running, so the preparation fails then, not when they end.
        self._png_encoder = png_encoder.PngEncoder()  # ended by download_and_prepare (_end_png_helpers)
        feed = ImageFeed(self._png_encoder, on_failure=fetch.cancel)
        features = {}
        try:
            # Each split is parsed as soon as its files are here, while larger files still download; every
            # header, label and count is checked before TFDS writes anything. The images follow, inflated
            # and encoded on other cores while TFDS writes the first ones (ImageFeed).
            with contextlib.closing(fetch.splits()) as arrivals:
                for split, files in arrivals:
                    arrays = self._read_split(files)
                    features[split] = {feature: values for feature, values in arrays.items() if feature != "image"}
                    feed.add(split, arrays["image"])
                    feed.raise_failure()
        except BaseException as error:
            feed.stop()
            # The damaged body, not the downloads it stopped (a Ctrl-C stays a Ctrl-C).
            if isinstance(error, Exception) and feed.failure is not None and feed.failure is not error:
                raise feed.failure from None
            raise
        finally:
            feed.no_more_splits()
        feed.raise_failure()  # found already: before TFDS writes anything
        return {split: self._generate_examples(feed.png_batches(split), features[split]) for split in self.split_files}

    def _generate_examples(
        self, png_batches: Iterator[list[bytes]], features: Mapping[str, np.ndarray]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yields (index, example) in file order; the same keys as TFDS's builders, hence the same order.

        Each example is made in C (the zips, maps and chain): 814,255 of them took 0.4 s so, 0.9 s as a Python
        loop over nested generators (2026-11-26).
        """
        names = ("image", *features)
        pngs = itertools.chain.from_iterable(png_batches)
        rows = zip(pngs, *(values.tolist() for values in features.values()), strict=True)
        yield from enumerate(map(dict, map(zip, itertools.repeat(names), rows)))


_END = None  # after a split's last submission in its queue


class ImageFeed:
    """Inflates each split's images on a thread, a batch at a time, and submits each batch to the PNG encoder.

    Why: the images of a large split took seconds to inflate before TFDS could write anything (2.6 s of
    EMNIST byclass, 2026-11-25); fed in batches, the first PNGs are written while the rest inflate on another
    core. A problem found late in a body (cut short, corrupt: only a local copy that could not be verified can
    have one) fails every split at its next 4,096 images, and TFDS removes what it wrote.
    """

    def __init__(self, encoder: png_encoder.PngEncoder, on_failure: Callable[[], None] = lambda: None) -> None:
        self._encoder = encoder
        self._on_failure = on_failure  # called from the feed's thread when a body is found damaged
        self._splits: queue.SimpleQueue[tuple[str, formats.ImageBatches] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the two fields below: a split added after the thread ended
        self._submitted: dict[str, queue.SimpleQueue] = {}  # split -> what `submit` returned per batch, then _END
        self._ended = False
        self._counts: dict[str, int] = {}
        self.failure: BaseException | None = None  # what stopped the feed
        self._stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="image-feed").start()

    def add(self, split: str, images: np.ndarray | formats.ImageBatches) -> None:
        """Queues a split's images: all of them, or batches still to be inflated."""
        if isinstance(images, np.ndarray):
            images = formats.ImageBatches.of(images, SUBMISSION_IMAGES)
        submitted: queue.SimpleQueue = queue.SimpleQueue()
        self._counts[split] = len(images)
        with self._lock:
            self._submitted[split] = submitted
            if self._ended:  # it failed or was stopped: the split's consumer raises at once
                submitted.put(_END)
                return
        self._splits.put((split, images))

    def raise_failure(self) -> None:
        """Raises what stopped the feed, if a body was found damaged."""
        if self.failure is not None:
            raise self.failure

    def no_more_splits(self) -> None:
        self._splits.put(None)

    def stop(self) -> None:
        """Nothing more is inflated or submitted: the preparation has failed."""
        self._stopped.set()

    def _run(self) -> None:
        try:
            while (item := self._splits.get()) is not None:
                split, images = item
                for batch in images.batches:
                    if self._stopped.is_set():
                        return
                    self._submitted[split].put(self._encoder.submit_in_batches(batch))
                self._submitted[split].put(_END)
        except BaseException as error:  # noqa: BLE001 - a damaged body, or a bug here: every split raises it
            self.failure = error
            self._on_failure()
        finally:
            self._encoder.close()
            with self._lock:
                self._ended = True
                waiting = list(self._submitted.values())
            for submitted in waiting:
                submitted.put(_END)  # wakes a waiting consumer, which then raises or finds its split short

    def png_batches(self, split: str) -> Iterator[list[bytes]]:
        """The split's PNGs in file order, in the encoder's lists (up to 4,096); raises what stopped the feed at
        the next list after it stopped."""
        delivered, complete = 0, False
        try:
            while (submission := self._submitted[split].get()) is not _END:
                for pngs in submission:
                    self.raise_failure()
                    yield pngs
                    delivered += len(pngs)
            self.raise_failure()
            if delivered != self._counts[split]:
                raise png_encoder.EncoderError(
                    f"{split}: the images stopped after {delivered} of {self._counts[split]}"
                )
            complete = True
        finally:
            if not complete:
                self.stop()


# MNIST's own file names and layout, which Fashion-MNIST and Kuzushiji-MNIST kept, names included.
MNIST_FILES = {
    tfds.Split.TRAIN: {"images": "train-images-idx3-ubyte.gz", "labels": "train-labels-idx1-ubyte.gz"},
    tfds.Split.TEST: {"images": "t10k-images-idx3-ubyte.gz", "labels": "t10k-labels-idx1-ubyte.gz"},
}


class LabelledIdxBuilder(MnistVariantBuilder, skip_registration=True):
    """A labelled variant in MNIST's own format: gzipped IDX images and labels per split, named classes.

    A subclass declares its data (files, sources, class names, description, homepage, citation).
    """

    CLASS_NAMES: ClassVar[Sequence[str]] = ()  # or each config's `class_names`
    DESCRIPTION: ClassVar[str]
    HOMEPAGE: ClassVar[str]
    CITATION: ClassVar[str]
    LICENSE: ClassVar[str | None] = None
    # Integer features beside image and label (QMNIST's extended labels): name -> doc, each an int32 scalar.
    INTEGER_FEATURES: ClassVar[Mapping[str, str]] = {}
    # Examples in their files' order (TFDS otherwise orders them by a hash of their key), where positions mean
    # something (QMNIST's test[:10000] is MNIST's test set).
    IN_FILE_ORDER: ClassVar[bool] = False
    # Label files whose labels are MNIST's (MNIST-C's members, QMNIST's train and test tables): file name -> the
    # MNIST label file they must equal (see `check_mnist_labels`).
    LABELS_OF: ClassVar[Mapping[str, str]] = {}

    def _info(self) -> tfds.core.DatasetInfo:
        integers = {name: tfds.features.Scalar(dtype=np.int32, doc=doc) for name, doc in self.INTEGER_FEATURES.items()}
        return DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=formats.IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(self.class_names)),
                    **integers,
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=self.IN_FILE_ORDER,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )

    @property
    def class_names(self) -> Sequence[str]:
        """The label names: the config's, or the variant's CLASS_NAMES."""
        config = self.builder_config
        return config.class_names if isinstance(config, VariantConfig) and config.class_names else self.CLASS_NAMES

    def _read_split(self, files: Mapping[str, verification.Verdict]) -> dict[str, np.ndarray | formats.ImageBatches]:
        if codes := files.get("class_codes"):  # upstream's own label -> character list: the names must agree
            formats.check_class_names(formats.read_class_codes(codes.data, codes.path), self.class_names, codes.path)
        images = formats.read_idx_images_in_batches(files["images"].data, files["images"].path, SUBMISSION_IMAGES)
        unused = [label for label, name in enumerate(self.class_names) if name == formats.UNUSED_CLASS]
        labels = formats.read_idx_labels(files["labels"].data, files["labels"].path, len(self.class_names), unused)
        formats.check_same_count(images, files["images"].path, labels, files["labels"].path)
        return {"image": images, "label": labels}


def check_mnist_labels(
    labels: np.ndarray,
    source: formats.Source,
    mnist_labels: str,
    mnist_registry: Mapping[str, verification.Registered],
    dataset: str,
    leading: bool = False,
) -> None:
    """Raises unless `labels` (with `leading`: their first ones, as many as MNIST's) are MNIST's `mnist_labels`,
    compared as its decompressed file, whose digest is in `mnist_registry` (8 bytes of header, then one byte a
    label): a dataset that keeps MNIST's labels refuses other labels as not its own (`dataset`'s)."""
    content = mnist_registry[mnist_labels].content
    count = int(content.size) - 8
    compared = labels[:count] if leading else labels
    if len(compared) != count or not verification.is_registered_file(formats.encode_idx(compared), content):
        raise MalformedFileError(
            f"{os.fspath(source)}: its {'first ' if leading else ''}{len(compared):,} labels are not MNIST's"
            f" {mnist_labels} ({count:,} labels, sha256 {content.checksum} in IDX form), so not {dataset}'s"
        )


def listed_max_sizes(name: str) -> dict[str, int]:
    """`checksums/<name>.digests.tsv`'s bounds, by file name: files known by digests, not size (QMNIST's images).

    Only the `max_size` column (url, max_size, md5, git blob sha1, filename): the bound a reader's content
    must stay within. Verifying by these digests is fetching's.
    """
    # The shipped file, not a test's registry: dummy files registered by size stand for files bounded here.
    # Parsed (and validated) by verification's one reader of that format.
    listed = verification.load_digests(checksums_dir() / f"{name}.digests.tsv")
    return {filename: digests.max_size for filename, digests in listed.items()}
