"""Where the upstream files come from: the manual dir if it holds them, else each URL in turn.

Downloads go through TFDS's download manager, which caches them and checks them
against the registered checksums. Its HTTP transport, though, has no timeout (a
silent server hangs it forever) and retries a refused connection for minutes,
which makes falling back to a mirror useless; `bounded_http` replaces that
transport while our files download with one that times out and retries briefly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence

import requests
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core.download import checksums as tfds_checksums
from tensorflow_datasets.core.download import downloader as tfds_downloader
from urllib3.util.retry import Retry

from mnist_variants.errors import ChecksumMismatchError, DownloadFailedError

MIRROR_ENV = "MNIST_VARIANTS_MIRROR"
TIMEOUT_ENV = "MNIST_VARIANTS_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 60.0
HTTP_RETRIES = 2  # per URL, for connection errors, timeouts before the first byte and HTTP 5xx

UrlInfo = tfds_checksums.UrlInfo


def source_urls(bases: Sequence[str], filename: str) -> list[str]:
    """The URLs to try for `filename`: the user's mirror (if set), then each base in order."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    prefixes = ([mirror.rstrip("/") + "/"] if mirror else []) + list(bases)
    return [prefix + filename for prefix in prefixes]


def registered_by_filename(url_infos: Mapping[str, UrlInfo]) -> dict[str, UrlInfo]:
    """The registered checksum of each upstream file, keyed by its file name."""
    return {info.filename: info for info in url_infos.values()}


def local_names(filename: str) -> tuple[str, ...]:
    """Names a local copy may have: upstream's, or decompressed as keras and torchvision keep it."""
    return (filename, filename.removesuffix(".gz")) if filename.endswith(".gz") else (filename,)


def manual_dirs(dl_manager: tfds.download.DownloadManager, dataset_name: str) -> list[epath.Path]:
    """The manual dir and its `<dataset name>/` subfolder; none when it is missing or empty."""
    try:
        root = dl_manager.manual_dir
    except AssertionError:  # TFDS raises this for a manual dir that is missing or empty.
        return []
    return [root, root / dataset_name]


def find_local_copy(
    dirs: Sequence[epath.Path], filename: str, registered: Mapping[str, UrlInfo], upstream_url: str
) -> epath.Path | None:
    """The first copy of `filename` in `dirs`, verified when its checksum is registered."""
    for directory in dirs:
        for name in local_names(filename):
            path = directory / name
            if not path.is_file():
                continue
            expected = registered.get(name)
            if expected is not None:
                actual = tfds_checksums.compute_url_info(path)
                if actual != expected:
                    raise ChecksumMismatchError(
                        f"{path} is not the upstream {name}:\n"
                        f"  expected sha256 {expected.checksum} ({expected.size} bytes)\n"
                        f"  actual   sha256 {actual.checksum} ({actual.size} bytes)\n"
                        f"It is damaged or a different file. Delete it to let the builder download"
                        f" {name}, or replace it with a fresh copy of {upstream_url}."
                    )
            print(f"Using local copy of {filename}: {path}")
            return path
    return None


def download_first_working(dl_manager: tfds.download.DownloadManager, filename: str, urls: Sequence[str]) -> epath.Path:
    """Downloads `filename` from the first of `urls` that delivers it intact."""
    failures = []
    with bounded_http(timeout_seconds()):
        for url in urls:
            try:
                # A one-entry dict: TFDS's test harness answers `download` with its whole dummy-file dict.
                path = dl_manager.download({filename: url})[filename]
            except Exception as error:  # noqa: BLE001 - any failure of a source means: try the next one.
                reason = f"{type(error).__name__}: {error}".strip()
                logging.warning("Could not get %s from %s (%s)", filename, url, reason)
                failures.append(f"  {url}\n    {reason}")
                continue
            print(f"Got {filename} from {url}")
            return epath.Path(path)
    raise DownloadFailedError(
        f"Could not download {filename} from any source:\n" + "\n".join(failures) + "\n"
        "Check the network, or put the file in a manual dir (see the README: Offline and firewalled machines)."
    )


def timeout_seconds() -> float:
    """Seconds without a byte before a download attempt is abandoned."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} must be positive")
    return seconds


_transport_lock = threading.Lock()


@contextlib.contextmanager
def bounded_http(timeout: float) -> Iterator[None]:
    """While active, TFDS's downloader fetches http(s) URLs with timeouts and brief retries."""
    original_open_url = tfds_downloader._open_url

    def open_url(url: str, **kwargs):
        if url.startswith(("http://", "https://")):
            return _open_http(url, timeout=timeout, **kwargs)
        return original_open_url(url, **kwargs)

    with _transport_lock:
        tfds_downloader._open_url = open_url
        try:
            yield
        finally:
            tfds_downloader._open_url = original_open_url


@contextlib.contextmanager
def _open_http(url: str, timeout: float, verify: bool = True):
    """Same contract as TFDS's `_open_url`: yields (response, iterator over the body's blocks)."""
    retries = Retry(
        total=HTTP_RETRIES,
        backoff_factor=0.5,
        status_forcelist=(500, 502, 503, 504),
        raise_on_status=False,  # Report the last status, not urllib3's "too many retries".
    )
    with requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(max_retries=retries)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session.get(url, stream=True, timeout=(timeout, timeout), verify=verify) as response:
            if response.status_code != 200:
                raise tfds.download.DownloadError(f"HTTP {response.status_code} {response.reason} for {url}")
            yield response, response.iter_content(chunk_size=1 << 16)
