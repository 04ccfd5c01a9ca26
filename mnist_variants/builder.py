"""The machinery shared by every variant: a variant only declares its data.

A variant subclass states its sources, its files per split, its `_info` and how
one split's files become arrays. Everything else lives here once: finding the
files (manual dir, then each source), checksums, parsing every split before
anything is written, and fast PNG encoding.
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums

from mnist_variants import png, preparation, sources


def checksums_dir() -> epath.Path:
    """The registered checksums: `checksums/` in a checkout, `mnist_variants/checksums/` when installed."""
    spec = importlib.util.find_spec("mnist_variants.checksums")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mnist_variants.checksums is missing: install the package (pip install .)")
    return epath.Path(next(iter(spec.submodule_search_locations)))


class MnistVariantBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder for one MNIST-format variant, declared as data by a subclass."""

    # Base URLs tried in order; each split's files are fetched as base URL + upstream file name.
    SOURCES: ClassVar[tuple[str, ...]]
    # Split name -> role in the split ("images", "labels") -> upstream file name.
    SPLIT_FILES: ClassVar[Mapping[str, Mapping[str, str]]]

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: to prepare without network, put the upstream files, under their
    upstream names, in the manual dir or in its `<dataset name>/` subfolder.
    Gzipped files may also be given decompressed. Without them, the files are
    downloaded.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def _checksums_path(cls) -> epath.Path:
        return checksums_dir() / f"{cls.name}.tsv"

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls) -> dict[str, tfds_checksums.UrlInfo]:
        """The registered checksums, also under the URLs of a user's mirror."""
        registered = tfds_checksums.load_url_infos(cls._checksums_path)
        by_name = sources.registered_by_filename(registered)
        for name, info in by_name.items():
            for url in sources.source_urls(cls.SOURCES, name):
                registered.setdefault(url, info)
        return registered

    @classmethod
    def upstream_filenames(cls) -> list[str]:
        """Every upstream file the builder reads, split by split."""
        return [name for files in cls.SPLIT_FILES.values() for name in files.values()]

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
        config = download_config or tfds.download.DownloadConfig()
        mode = config.download_mode
        reuse = not mode.overwrite_dataset and mode != tfds.download.GenerateMode.UPDATE_DATASET_INFO
        if reuse and preparation.is_complete(self.data_path):  # prepared already: no lock, works read-only
            return super().download_and_prepare(download_dir=download_dir, download_config=config, **kwargs)
        with preparation.exclusive(self.data_path, f"{self.name} {self.version}") as locked:
            if reuse and preparation.is_complete(self.data_path):  # another worker prepared it meanwhile
                self.info.read_from_directory(self.data_path)
                return None
            if locked:
                downloads = epath.Path(download_dir or self.data_dir_root / "downloads") / self.name
                preparation.remove_abandoned(self.data_path, downloads)
            try:
                return super().download_and_prepare(download_dir=download_dir, download_config=config, **kwargs)
            except OSError:
                # Without locks, TFDS's final rename fails when another worker's dataset got there first.
                if not (reuse and preparation.is_complete(self.data_path)):
                    raise
                print(f"Another process prepared {self.data_path} first; using its dataset", flush=True)
                self.info.read_from_directory(self.data_path)
                return None

    @abc.abstractmethod
    def _read_split(self, files: Mapping[str, epath.Path]) -> dict[str, np.ndarray]:
        """Parses one split's files (by role) into feature arrays; "image" is (n, 28, 28, 1) uint8."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        encoder = png.PngEncoder()  # boots on another core while the files are fetched and parsed
        try:
            paths = self._fetch(dl_manager)
            # Parse every split before TFDS writes anything, so a bad file fails in seconds.
            arrays = {
                split: self._read_split({role: paths[name] for role, name in files.items()})
                for split, files in self.SPLIT_FILES.items()
            }
            # Encoding runs ahead of TFDS's writer, which takes the PNGs as they come.
            pngs = {split: encoder.submit(split_arrays["image"]) for split, split_arrays in arrays.items()}
        finally:
            encoder.close()
        return {split: self._generate_examples(pngs[split], split_arrays) for split, split_arrays in arrays.items()}

    def _fetch(self, dl_manager: tfds.download.DownloadManager) -> dict[str, epath.Path]:
        """Local path of every upstream file: from the manual dir if it has it, else downloaded."""
        registered = sources.registered_by_filename(self.url_infos)
        dirs = sources.manual_dirs(dl_manager, self.name)
        paths = {}
        for name in self.upstream_filenames():
            urls = sources.source_urls(self.SOURCES, name)
            paths[name] = sources.find_local_copy(dirs, name, registered, urls[0]) or (
                sources.download_first_working(dl_manager, name, urls)
            )
        return paths

    def _generate_examples(
        self, pngs: Iterator[bytes], arrays: Mapping[str, np.ndarray]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yields (index, example) in file order; the same keys as TFDS's builders, hence the same order."""
        others = {feature: values.tolist() for feature, values in arrays.items() if feature != "image"}
        for index, image in enumerate(pngs):
            yield index, {"image": image, **{feature: values[index] for feature, values in others.items()}}
