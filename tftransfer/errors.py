"""The exceptions tftransfer raises, for users to catch.

Each is also a built-in exception type (`ValueError`, `RuntimeError`, ...), so
code that catches those keeps working.
"""





class WeightsUnavailableError(ValueError):
    """Pretrained weights were asked for but could not be fetched."""


class BadDataError(ValueError):
    """Bad files or rows were found and ``on_bad_file="error"`` (or
    ``on_bad_row="error"``) was asked for. ``error.bad_files`` lists them."""

    def __init__(self, message, bad_files):
        super().__init__(message)
        self.bad_files = list(bad_files)


class DatasetUnavailableError(ValueError):
    """A TFDS data set is neither on disk nor downloadable."""


class VersionExistsError(FileExistsError, ValueError):
    """The export version directory exists already (a `FileExistsError` and,
    as bad input, a `ValueError`)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""
