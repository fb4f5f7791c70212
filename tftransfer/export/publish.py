"""Atomic publishing of export directories, readable by other users."""

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time

from tftransfer import _compat
from tftransfer.errors import VersionExistsError
from tftransfer.formats import LABELS_FILE
from tftransfer.formats import METADATA_FILE


def existing_versions(export_base):
    """The integer version directories under `export_base`, sorted."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(name) for name in os.listdir(export_base)
        if re.fullmatch(r"\d+", name) and os.path.isdir(os.path.join(export_base, name))
    )


@contextlib.contextmanager
def quiet_tensorflow_logs():
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def _readable_like_a_new_directory(path):
    """`mkdtemp` makes the staging directory 0700; the published one gets the
    mode a plain `mkdir` would (0777 less the umask), so that a TF Serving
    running as another user can read it."""
    os.chmod(path, 0o777 & ~_umask())


def _umask():
    try:  # Linux: read it, without setting it (os.umask sets it, for all threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def publish(staging, target, overwrite):
    _readable_like_a_new_directory(staging)
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    if not overwrite:  # appeared while we were writing
        raise VersionExistsError(f"Version directory {target!r} appeared during the export.")
    old = tempfile.mkdtemp(prefix=".tmp-replaced-", dir=os.path.dirname(target))
    os.rename(target, os.path.join(old, "model"))
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def titled(title, verbose):
    """Prints `title` before an export and its time after, where Keras's
    `verbose` would show progress (0: silent)."""
    if verbose:
        _compat.print_msg(title)
    start = time.perf_counter()
    yield
    if verbose:
        _compat.print_msg(f"  done in {time.perf_counter() - start:.1f} s")


@contextlib.contextmanager
def staging_directory(parent, prefix):
    """A hidden temporary directory in `parent` (its name is not an integer,
    so TF Serving never loads it) for an export being written; deleted if
    the block fails. The caller `publish`es it when it is complete."""
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_labels(directory, class_names):
    """``labels.txt``: one class name a line, in label order."""
    with open(os.path.join(directory, LABELS_FILE), "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))


def write_metadata(directory, metadata):
    """``tftransfer.json``."""
    with open(os.path.join(directory, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
