"""The bad-file scan, remembered: a small index of the files a folder's last
scan decoded, so that loading an unchanged folder again decodes nothing.

A file is taken from the index when its path, size and modification time
(nanoseconds) are those recorded, and the index was written by the same
decoders (Pillow's, TensorFlow's and tftransfer's versions); a changed or new file is
decoded again, and files no longer in the folder leave the index. The
index lives in the user's cache directory, never beside the data (which may
be read-only, or shared): ``$TFTRANSFER_CACHE_DIR/scans/``, else
``$XDG_CACHE_HOME/tftransfer/scans/``, else ``~/.cache/tftransfer/scans/``,
one JSON file per folder (named by a hash of its absolute path), written
atomically. When it cannot be read or written the scan simply decodes every
file, as before.
"""

import hashlib
import json
import logging
import os

import PIL
import tensorflow as tf

from tftransfer.files import write_atomically
from tftransfer.version import __version__

logger = logging.getLogger(__name__)

INDEX_VERSION = 3  # 2: whether TensorFlow decodes the file; 3: its [height, width] if so


def _decoders():
    return f"Pillow {PIL.__version__}; TensorFlow {tf.version.VERSION}; tftransfer {__version__}"


def index_path(directory):
    """Where the index of `directory`'s scan is kept."""
    root = os.environ.get("TFTRANSFER_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tftransfer")
    digest = hashlib.sha256(os.path.abspath(directory).encode("utf-8")).hexdigest()[:24]
    return os.path.join(root, "scans", f"{digest}.json")


def file_key(path):
    """``(size, modification time in ns)`` of a file, or None if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def load_index(directory):
    """``{path: (key, reason, shape)}`` from the last scan of `directory`, or {}."""
    path = index_path(directory)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        return {}
    if (not isinstance(index, dict) or index.get("version") != INDEX_VERSION
            or index.get("decoders") != _decoders()
            or index.get("directory") != os.path.abspath(directory)):
        return {}
    files = index.get("files")
    return {p: tuple(entry) for p, entry in files.items()} if isinstance(files, dict) else {}


def save_index(directory, entries):
    """Writes ``{path: (key, reason, shape)}`` as `directory`'s index, atomically;
    logs and goes on when it cannot."""
    path = index_path(directory)
    index = {"version": INDEX_VERSION, "decoders": _decoders(),
             "directory": os.path.abspath(directory),
             "files": {p: list(entry) for p, entry in entries.items()}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Not synced: a crash leaves at worst an unreadable index, which means a full scan.
        write_atomically(path, json.dumps(index).encode("utf-8"), sync=False)
    except OSError as err:
        logger.info("Could not remember the scan of %s in %s (%s): the next load decodes "
                    "every file again.", directory, path, err)
