"""The exceptions this package raises, so callers can catch ours apart from TFDS's."""


class MnistVariantsError(Exception):
    """Base class of every error raised by mnist_variants."""


class MalformedFileError(MnistVariantsError, ValueError):
    """A data file is not in the upstream format; the message names the file and the problem."""


class ChecksumMismatchError(MnistVariantsError, ValueError):
    """A local file's sha256 or size differs from the registered upstream file."""


class DownloadFailedError(MnistVariantsError, OSError):
    """Every source of a file failed; the message lists each URL tried and why."""
