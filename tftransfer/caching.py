"""The `cache` vocabulary, shared by the data loaders and the training functions.

Both take the same three arguments:

- ``cache``: ``"auto"`` (default), ``True`` or ``"memory"``, ``"disk"``, or
  ``False``/``None`` (no cache).
- ``cache_dir``: an existing directory for disk caches. The training
  functions make a temporary directory inside it (default: the system's
  temporary directory) and delete it when they return; the data loaders keep
  their cache files there, named after a fingerprint of the data, so a second
  load of unchanged data reads them.
- ``cache_memory_limit``: bytes that ``"auto"`` keeps in memory. Default: a
  quarter of the memory available when the call starts.

``"auto"`` follows one rule: what fits within the memory limit is cached in
memory, the rest on disk in `cache_dir`. The training functions always have a
directory to spill to (a temporary one); a data loader spills only when it is
given a `cache_dir` (its cache outlives the call, and nothing would delete
files in a temporary directory), and otherwise does not cache what does not
fit, logging so.
"""

import dataclasses
import os

CACHE_MODES = ("auto", "memory", "disk")
"""The cache modes; `True` means ``"memory"``, `False` and `None` no cache."""

MEMORY_FRACTION = 0.25
"""``"auto"`` keeps up to this share of the available memory in memory."""

_FALLBACK_MEMORY = 8 << 30  # where the available memory cannot be read


@dataclasses.dataclass(frozen=True)
class CacheOptions:
    """The validated cache arguments.

    Attributes:
        mode: ``"auto"``, ``"memory"``, ``"disk"``, or None (no cache).
        directory: `cache_dir`, or None.
        memory_limit: bytes ``"auto"`` keeps in memory.
    """

    mode: str = "auto"
    directory: str = None
    memory_limit: int = None

    def fits_in_memory(self, num_bytes):
        """Whether ``"auto"`` keeps `num_bytes` more in memory."""
        return num_bytes <= self.memory_limit


def available_memory():
    """Bytes of memory available now (Linux, macOS), or a fallback of 8 GiB."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_MEMORY


def cache_options(cache="auto", cache_dir=None, cache_memory_limit=None):
    """Validates the cache arguments; returns `CacheOptions`.

    Example:

    >>> cache_options(True).mode, cache_options(False).mode
    ('memory', None)
    """
    if cache is True:
        mode = "memory"
    elif cache is False or cache is None:
        mode = None
    elif isinstance(cache, str) and cache in CACHE_MODES:
        mode = cache
    else:
        raise ValueError(
            "`cache` must be 'auto' (in memory what fits, the rest on disk), True or "
            "'memory', 'disk', or False/None (no cache); a directory goes in "
            f"`cache_dir`. Received: cache={cache!r}"
        )
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)) or not os.path.isdir(cache_dir):
            raise ValueError(
                "`cache_dir` must be an existing directory, or None for the system's "
                f"temporary directory. Received: cache_dir={cache_dir!r}"
            )
        cache_dir = os.fspath(cache_dir)
    if cache_memory_limit is not None and (
        isinstance(cache_memory_limit, bool)
        or not isinstance(cache_memory_limit, (int, float))
        or cache_memory_limit < 0
    ):
        raise ValueError(
            "`cache_memory_limit` must be a number of bytes >= 0 (e.g. 2 * 1024**3), "
            "or None for a quarter of the available memory. "
            f"Received: cache_memory_limit={cache_memory_limit!r}"
        )
    if cache_memory_limit is None:
        cache_memory_limit = int(MEMORY_FRACTION * available_memory())
    return CacheOptions(mode, cache_dir, int(cache_memory_limit))
