"""The remembered scan: a second load of an unchanged folder decodes no file;
a changed or added file is decoded again (issue 14, item 2)."""

import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

import tftransfer as tft
from tftransfer import files
from tftransfer.data import folders
from tftransfer.data.scan_index import index_path
from tftransfer.data.scan_index import load_index
from tftransfer.data.scan_index import save_index


@pytest.fixture
def decoded(monkeypatch, tmp_path):
    """The paths the scan decodes, in a cache directory of the test's own."""
    monkeypatch.setenv("TFTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = folders.check_files

    def counting(paths, *args, **kwargs):
        calls.extend(os.path.basename(os.fspath(path)) for path in paths)
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(folders, "check_files", counting)
    return calls


def _folder(root):
    for c in ("cat", "dog"):
        os.makedirs(root / c)
        for i in range(4):
            pixels = np.random.default_rng(i).integers(0, 255, (20, 24, 3), "uint8")
            Image.fromarray(pixels).save(root / c / f"{c}{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    return root


def _load(root):
    return tft.image_dataset_from_folder(root, image_size=16, validation_split=0.25, verbose=0)


def test_a_second_load_decodes_no_unchanged_file(decoded, tmp_path):
    root = _folder(tmp_path / "photos")
    first = _load(root)
    assert sorted(decoded) == sorted([f"cat{i}.png" for i in range(4)]
                                     + [f"dog{i}.png" for i in range(4)] + ["broken.png"])
    decoded.clear()
    second = _load(root)
    assert decoded == []  # everything remembered, the bad file too
    assert [b.path for b in second.report.bad_files] == [b.path for b in first.report.bad_files]
    assert second.report.class_counts == first.report.class_counts == {"cat": 4, "dog": 4}
    index = json.loads(pathlib.Path(index_path(str(root))).read_text())
    assert len(index["files"]) == 9 and index["directory"] == os.path.abspath(root)


def test_changed_and_added_files_are_decoded_again(decoded, tmp_path):
    root = _folder(tmp_path / "photos")
    _load(root)
    decoded.clear()
    Image.fromarray(np.zeros((30, 30, 3), "uint8")).save(root / "cat" / "cat0.png")  # changed
    (root / "dog" / "broken.png").write_bytes(
        (root / "cat" / "cat1.png").read_bytes())  # repaired
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(root / "cat" / "new.png")  # added
    os.remove(root / "dog" / "dog3.png")  # removed
    data = _load(root)
    assert sorted(decoded) == ["broken.png", "cat0.png", "new.png"]
    assert data.report.bad_files == [] and data.report.class_counts == {"cat": 5, "dog": 4}
    index = json.loads(pathlib.Path(index_path(str(root))).read_text())
    assert not any(p.endswith("dog3.png") for p in index["files"])


def test_an_unreadable_index_means_a_full_scan(decoded, tmp_path):
    root = _folder(tmp_path / "photos")
    _load(root)
    with open(index_path(str(root)), "w") as f:
        f.write("{ not json")
    decoded.clear()
    _load(root)
    assert len(decoded) == 9


def test_the_index_is_written_whole_but_not_flushed_to_the_disk(tmp_path, monkeypatch):
    # A cache: a crash may lose it (the next load scans again), so it skips
    # the fsync that costs a fifth of a second per megabyte here.
    synced = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd))
    files.write_atomically(str(tmp_path / "a"), b"kept")
    assert len(synced) == 1
    monkeypatch.setenv("TFTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    save_index(str(tmp_path), {"x.jpg": ([1, 2], None, [3, 4])})
    assert len(synced) == 1
    assert load_index(str(tmp_path)) == {"x.jpg": ([1, 2], None, [3, 4])}
