"""The exceptions this package raises, so callers can catch ours apart from TFDS's."""


class MnistVariantsError(Exception):
    """Base class of every error raised by mnist_variants."""


class MalformedFileError(MnistVariantsError, ValueError):
    """A data file is not in the upstream format; the message names the file and the problem."""


class WrongFileError(MnistVariantsError, ValueError):
    """A file stands under an upstream name but is not that file: another dataset's, an HTML page, a Git LFS pointer."""


class ChecksumMismatchError(WrongFileError):
    """A local file's sha256 or size (or its decompressed content's) differs from the registered upstream file's."""


class DownloadFailedError(MnistVariantsError, OSError):
    """Every source of a file failed; the message lists each URL tried and why."""
