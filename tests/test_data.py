import json
import logging
import os
import shutil
import struct
import tempfile
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer as tft
from helpers import online
from helpers import tiny_backbone

SIZE = (16, 16)
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------
# Folders made in the tests
# ---------------------------------------------------------------------------

def _rgb(h=10, w=12, seed=None):
    rng = RNG if seed is None else np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(path, array=None, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(_rgb() if array is None else array, mode).save(path)
    return path


def _class_folder(root, name, n, *, start=0):
    for i in range(start, start + n):
        _png(os.path.join(root, name, f"{i:03d}.png"))


def _jpeg_bytes():
    buffer = tempfile.SpooledTemporaryFile()
    Image.fromarray(_rgb(40, 60)).save(buffer, "JPEG")
    buffer.seek(0)
    return buffer.read()


BAD_REASONS = {
    "empty.jpg": "empty file (0 bytes)",
    "truncated.jpg": "truncated: ",
    "corrupt.png": "corrupt: ",
    "text.jpg": "not an image: ",
    "animated.gif": "animated image (3 frames)",
    "tiff.jpg": "not an image: the content is not JPEG, PNG, GIF, BMP or WebP",
}


def _png16_rgb(path, array):
    """Writes a 16-bit RGB PNG (Pillow cannot write one)."""
    h, w = array.shape[:2]
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _messy_folder(root):
    """Two classes of 8 good PNGs; in 'cats' every kind of bad and odd file."""
    _class_folder(root, "cats", 8)
    _class_folder(root, "dogs", 8)
    cats = os.path.join(root, "cats")
    # Bad files.
    open(os.path.join(cats, "empty.jpg"), "wb").close()
    jpeg = _jpeg_bytes()
    with open(os.path.join(cats, "truncated.jpg"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    png = bytearray(open(os.path.join(cats, "000.png"), "rb").read())
    png[60:90] = b"\0" * 30  # inside the image data: the header still parses
    with open(os.path.join(cats, "corrupt.png"), "wb") as f:
        f.write(bytes(png))
    with open(os.path.join(cats, "text.jpg"), "w") as f:
        f.write("this is not a JPEG")
    frames = [Image.fromarray(_rgb()) for _ in range(3)]
    frames[0].save(os.path.join(cats, "animated.gif"), save_all=True, append_images=frames[1:])
    Image.fromarray(_rgb()).save(os.path.join(cats, "tiff.jpg"), "TIFF")  # a format not read
    # Not data: ignored silently.
    with open(os.path.join(cats, ".DS_Store"), "wb") as f:
        f.write(b"\0\0\0\1Bud1")
    with open(os.path.join(cats, "notes.txt"), "w") as f:
        f.write("cats from the shelter")
    # Odd but good images.
    Image.fromarray(_rgb()).convert("CMYK").save(os.path.join(cats, "cmyk.jpg"))
    palette = Image.fromarray(_rgb()).convert("P")
    palette.save(os.path.join(cats, "palette.png"), transparency=int(np.asarray(palette)[0, 0]))
    rgba = np.dstack([_rgb(), np.where(np.arange(12) < 6, 0, 255)[None, :].repeat(10, 0)])
    Image.fromarray(rgba.astype(np.uint8)).save(os.path.join(cats, "rgba.png"))
    gray16 = (np.arange(120, dtype=np.uint16).reshape(10, 12) * 500).astype(np.uint16)
    Image.fromarray(gray16).save(os.path.join(cats, "gray16.png"))
    Image.fromarray(_rgb()[..., 0]).save(os.path.join(cats, "gray.jpg"))
    Image.fromarray(_rgb()).save(os.path.join(cats, "photo.webp"))
    Image.fromarray(_rgb()).convert("P").save(os.path.join(cats, "still.gif"))
    Image.fromarray(_rgb()).save(os.path.join(cats, "photo.BMP"))
    _png16_rgb(os.path.join(cats, "rgb16.png"),
               np.arange(360, dtype=np.uint16).reshape(10, 12, 3) * 181)
    frames[0].save(os.path.join(cats, "camera.jpg"), "MPO", save_all=True,
                   append_images=frames[1:2])  # multi-picture JPEG: a still photo
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.fromarray(_rgb(10, 20)).save(os.path.join(cats, "rotated.jpg"), exif=exif)
    return root


ODD_GOOD = ("cmyk.jpg", "palette.png", "rgba.png", "gray16.png", "gray.jpg", "photo.webp",
            "still.gif", "photo.BMP", "rgb16.png", "camera.jpg", "rotated.jpg")


def _load(root, **kwargs):
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("verbose", 0)
    return tft.image_dataset_from_folder(root, **kwargs)


def _assignment(data):
    return {os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p): split
            for split, paths in data.files.items() for p in paths}


def _all_batches(ds):
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------

def test_messy_folder_skips_each_bad_file_with_its_reason_and_trains_on_the_rest(tmp_path, caplog):
    root = _messy_folder(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="tftransfer.data"):
        data = _load(root, validation_split=0.25)
    reasons = {os.path.basename(b.path): b.reason for b in data.report.bad_files}
    assert set(reasons) == set(BAD_REASONS)
    for name, expected in BAD_REASONS.items():
        assert reasons[name].startswith(expected), (name, reasons[name])
        assert any(name in r.getMessage() and "Skipping" in r.getMessage()
                   for r in caplog.records), name
    ignored = {os.path.basename(p) for p in data.report.ignored}
    assert ignored == {".DS_Store", "notes.txt"}
    assert not any(".DS_Store" in r.getMessage() or "notes.txt" in r.getMessage()
                   for r in caplog.records)
    assert data.report.class_counts == {"cats": 8 + len(ODD_GOOD), "dogs": 8}
    summary = str(data.report).splitlines()
    assert f"{16 + len(ODD_GOOD)} usable in 2 classes" in summary[0]
    assert len(summary) == 1 + len(BAD_REASONS)
    assert str(data).startswith("2 classes (cats, dogs); train: ")
    used = {os.path.basename(p) for paths in data.files.values() for p in paths}
    assert set(ODD_GOOD) <= used  # WebP, CMYK, 16-bit, ... are read, not skipped
    total = 0
    for ds in (data.train, data.validation):
        x, y = _all_batches(ds)
        assert x.shape[1:] == (*SIZE, 3) and x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 255.0
        total += len(y)
    assert total == 16 + len(ODD_GOOD)


def test_on_bad_file_error_raises_listing_every_bad_file(tmp_path):
    root = _messy_folder(str(tmp_path))
    with pytest.raises(tft.BadDataError, match=r"6 bad image files:") as info:
        _load(root, on_bad_file="error")
    message = str(info.value)
    for name, reason in BAD_REASONS.items():
        assert f"{name}: {reason}" in message
    assert "on_bad_file='skip'" in message and "Received: on_bad_file='error'" in message
    assert {os.path.basename(b.path) for b in info.value.bad_files} == set(BAD_REASONS)


def test_scan_shows_a_keras_progress_bar_when_verbose(tmp_path, capsys):
    root = str(tmp_path)
    _class_folder(root, "a", 5)
    _class_folder(root, "b", 5)
    _load(root, verbose=1)
    assert "10/10" in capsys.readouterr().out
    _load(root, verbose=0)
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(not hasattr(os, "chmod"), reason="needs POSIX permissions")
def test_unreadable_file_is_reported():
    # As root, chmod 000 does not stop reading: scan as the user `nobody` then
    # (effective uid only, so root's rights come back after), in a folder
    # outside pytest's private tmp_path.
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root:
        try:
            import pwd

            nobody = pwd.getpwnam("nobody").pw_uid
        except (ImportError, KeyError):
            pytest.skip("running as root and there is no user 'nobody' to drop to")
    root = tempfile.mkdtemp(dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        _class_folder(root, "a", 5)
        _class_folder(root, "b", 5)
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o755)
        locked = _png(os.path.join(root, "a", "locked.png"))
        os.chmod(locked, 0)
        if as_root:
            os.seteuid(nobody)
        try:
            reasons = {b.path: b.reason for b in _load(root).report.bad_files}
        finally:
            if as_root:
                os.seteuid(0)
    finally:
        os.chmod(locked, 0o644)
        shutil.rmtree(root)
    assert reasons == {locked: "unreadable: permission denied"}


def test_a_file_broken_after_the_scan_does_not_stop_training(tmp_path, caplog):
    root = str(tmp_path)
    _class_folder(root, "a", 5)
    _class_folder(root, "b", 5)
    data = _load(root, cache=False, shuffle=False)
    victim = data.files["train"][0]
    with open(victim, "wb") as f:
        f.write(b"overwritten")
    with caplog.at_level(logging.ERROR, logger="tftransfer.data"):
        x, _ = _all_batches(data.train)
    assert len(x) == sum(data.counts["train"])
    assert np.all(x[0] == 128.0)  # the stand-in
    assert any(victim in r.getMessage() and "passed the scan" in r.getMessage()
               for r in caplog.records)


# ---------------------------------------------------------------------------
# Conversion to RGB: the same in the pipeline, load_image and to_rgb
# ---------------------------------------------------------------------------

def test_pipeline_pixels_are_load_image_pixels_for_every_kind_of_image(tmp_path):
    root = _messy_folder(str(tmp_path))
    data = _load(root, shuffle=False, validation_split=0.25)
    for split in ("train", "validation"):
        x, _ = _all_batches(getattr(data, split))
        for image, path in zip(x, data.files[split]):
            np.testing.assert_array_equal(image, tft.load_image(path, image_size=SIZE),
                                          err_msg=path)


def test_alpha_onto_white_sixteen_bits_high_byte_and_exif_orientation(tmp_path):
    cats = os.path.join(_messy_folder(str(tmp_path)), "cats")
    rgba = tft.load_image(os.path.join(cats, "rgba.png"))
    assert np.all(rgba[:, :6] == 255)  # fully transparent half: white
    source = np.asarray(Image.open(os.path.join(cats, "rgba.png")))
    np.testing.assert_array_equal(rgba[:, 6:], source[:, 6:, :3])  # opaque half untouched
    palette = Image.open(os.path.join(cats, "palette.png"))
    transparent = np.asarray(palette) == palette.info["transparency"]
    assert transparent.any()
    assert np.all(tft.load_image(os.path.join(cats, "palette.png"))[transparent] == 255)
    gray16 = tft.load_image(os.path.join(cats, "gray16.png"))
    expected = (np.arange(120).reshape(10, 12) * 500) >> 8
    np.testing.assert_array_equal(gray16, np.repeat(expected[..., None], 3, -1))
    rgb16 = tft.load_image(os.path.join(cats, "rgb16.png"))
    np.testing.assert_array_equal(rgb16, (np.arange(360).reshape(10, 12, 3) * 181) >> 8)
    assert tft.load_image(os.path.join(cats, "rotated.jpg")).shape == (20, 10, 3)
    assert tft.load_image(os.path.join(cats, "camera.jpg")).shape == (10, 12, 3)
    gray = tft.load_image(os.path.join(cats, "gray.jpg"))
    assert gray.shape == (10, 12, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_to_rgb_of_arrays_matches_the_pil_path():
    rgba = np.dstack([_rgb(), RNG.integers(0, 256, (10, 12), dtype=np.uint8)])
    from_pil = tft.to_rgb(Image.fromarray(rgba))
    np.testing.assert_array_equal(tft.to_rgb(rgba), from_pil)
    np.testing.assert_allclose(tft.to_rgb(rgba.astype("float32")), from_pil, atol=1)
    gray = _rgb()[..., 0]
    np.testing.assert_array_equal(tft.to_rgb(gray), np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(tft.to_rgb(gray.astype(np.uint16) << 8), tft.to_rgb(gray))


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((2, 2, 2), np.uint8), ValueError,
         r"must be a PIL image or an array.*\(2, 2, 2\)"),
        (np.zeros((2, 2, 3), np.int32), TypeError, r"uint8, uint16 or float.*dtype int32"),
        (Image.new("F", (2, 2)), ValueError, r"unsupported pixel format: mode 'F'.*Received"),
    ],
)
def test_to_rgb_errors(image, error, match):
    with pytest.raises(error, match=match):
        tft.to_rgb(image)


def test_load_image_error_says_why(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("not an image")
    with pytest.raises(ValueError, match=r"Cannot use .*x.jpg.*not an image.*Received: path="):
        tft.load_image(path)


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

def test_splits_stay_stable_when_files_are_added(tmp_path):
    root = str(tmp_path)
    for name in ("a", "b", "c"):
        _class_folder(root, name, 30)
    before = _assignment(_load(root, validation_split=0.2, test_split=0.1))
    for i, name in enumerate(("a", "b", "c", "a", "b")):
        _png(os.path.join(root, name, f"new{i}.png"))
        after = _assignment(_load(root, validation_split=0.2, test_split=0.1))
        assert set(after) - set(before) == {f"{name}/new{i}.png"}
        assert {k: after[k] for k in before} == before  # no other file moved
        before = after


def test_splits_are_stratified_seeded_and_reproducible(tmp_path):
    root = str(tmp_path)
    sizes = {"big": 60, "mid": 30, "small": 10}
    for name, n in sizes.items():
        _class_folder(root, name, n)
    data = _load(root, validation_split=0.2, test_split=0.2)
    for c, (name, n) in enumerate(sorted(sizes.items())):
        for split, fraction in (("validation", 0.2), ("test", 0.2)):
            count = data.counts[split][c]
            sigma = np.sqrt(n * fraction * (1 - fraction))
            assert 1 <= count and abs(count - n * fraction) <= 3 * sigma, (name, split, count)
        assert sum(data.counts[s][c] for s in ("train", "validation", "test")) == n
    again = _load(root, validation_split=0.2, test_split=0.2)
    assert _assignment(again) == _assignment(data)
    other = _load(root, validation_split=0.2, test_split=0.2, seed=1)
    assert _assignment(other) != _assignment(data)


def test_every_class_gets_a_validation_image_even_when_the_hash_gives_it_none(tmp_path):
    root = str(tmp_path)
    for name in ("a", "b", "c", "d", "e", "f"):
        _class_folder(root, name, 5)  # 5 images at 20%: often none by hash alone
    for seed in range(6):
        data = _load(root, validation_split=0.2, seed=seed)
        assert min(data.counts["validation"]) >= 1 and min(data.counts["train"]) >= 1


def test_same_seed_same_order_and_each_epoch_reshuffled(tmp_path):
    root = str(tmp_path)
    _class_folder(root, "a", 12)
    _class_folder(root, "b", 12)

    def epochs(seed):
        ds = _load(root, seed=seed, batch_size=4).train
        return [_all_batches(ds) for _ in range(2)]

    (x1, y1), (x2, y2) = epochs(0)
    (x1b, y1b), (x2b, y2b) = epochs(0)
    np.testing.assert_array_equal(x1, x1b)
    np.testing.assert_array_equal(x2, x2b)
    np.testing.assert_array_equal(y1, y1b)
    assert not np.array_equal(x1, x2)
    (x1c, _), _ = epochs(5)
    assert not np.array_equal(x1, x1c)


def test_class_too_small_for_the_split_is_an_error_with_counts(tmp_path):
    root = str(tmp_path)
    _class_folder(root, "many", 20)
    _class_folder(root, "tiny", 3)
    with pytest.raises(ValueError, match=r"Classes too small for validation_split=0.2 and "
                                         r"test_split=0.0: 'tiny'. Each class needs at least 5 "
                                         r"images.*'many': 20, 'tiny': 3.*Received: "
                                         r"validation_split=0.2"):
        _load(root)
    assert _load(root, validation_split=0.0).validation is None  # no split: fine


def test_single_class_is_an_error(tmp_path):
    _class_folder(str(tmp_path), "only", 10)
    with pytest.raises(ValueError, match=r"at least 2 classes; directory=.* has 1 \('only': 10\)"):
        _load(str(tmp_path))


def test_class_without_usable_images_is_an_error_counting_the_skipped(tmp_path):
    root = str(tmp_path)
    _class_folder(root, "good", 10)
    os.makedirs(os.path.join(root, "empty"))
    _class_folder(root, "broken", 0)
    os.makedirs(os.path.join(root, "broken"))
    for i in range(2):
        open(os.path.join(root, "broken", f"{i}.jpg"), "wb").close()
    with pytest.raises(ValueError, match=r"Classes without usable images in .*'broken', 'empty'.*"
                                         r"'broken': 0 \(2 bad files skipped\), 'empty': 0, "
                                         r"'good': 10"):
        _load(root)


def test_class_names_choose_and_order_the_folders(tmp_path):
    root = str(tmp_path)
    for name in ("a", "b", "c"):
        _class_folder(root, name, 5)
    data = _load(root, class_names=["c", "a"], validation_split=0.0)
    assert data.class_names == ["c", "a"]
    assert {os.path.basename(os.path.dirname(p)) for p in data.files["train"]} == {"a", "c"}
    _, y = _all_batches(data.train)
    assert sorted(y.tolist()) == [0] * 5 + [1] * 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_size": 0}, ValueError, r"`image_size` must be .*Received: image_size=0"),
        ({"image_size": (16, "16")}, ValueError, r"Received: image_size=\(16, '16'\)"),
        ({"validation_split": 1.0}, ValueError, r"Received: validation_split=1.0"),
        ({"validation_split": 0.5, "test_split": 0.5}, ValueError,
         r"leave a training split.*Received: validation_split=0.5, test_split=0.5"),
        ({"seed": "1"}, TypeError, r"`seed` must be an integer. Received: seed='1'"),
        ({"batch_size": 0}, ValueError, r"Received: batch_size=0"),
        ({"on_bad_file": "ignore"}, ValueError, r"Received: on_bad_file='ignore'"),
        ({"cache": 3}, ValueError, r"`cache` must be .*Received: cache=3"),
        ({"augmentation": 3}, TypeError, r"Received: augmentation=3"),
        ({"augmentation": "heavy"}, ValueError, r"Received: preset='heavy'"),
        ({"class_names": "ab"}, TypeError, r"Received: class_names='ab'"),
        ({"class_names": ["a", "a"]}, ValueError,
         r"must be unique. Received: class_names=\['a', 'a'\]"),
        ({"class_names": ["a", "zzz"]}, ValueError,
         r"No sub-folder for class\(es\) 'zzz'.*\['a', 'b'\].*Received: class_names"),
    ],
)
def test_folder_argument_errors(tmp_path, kwargs, error, match):
    _class_folder(str(tmp_path), "a", 5)
    _class_folder(str(tmp_path), "b", 5)
    with pytest.raises(error, match=match):
        _load(str(tmp_path), **kwargs)


def test_folder_errors_for_missing_or_flat_directories(tmp_path):
    with pytest.raises(ValueError, match=r"existing folder.*Received: directory=.*nope"):
        _load(str(tmp_path / "nope"))
    _png(str(tmp_path / "flat.png"))
    with pytest.raises(ValueError, match=r"No class sub-folders in .*a sub-folder named after it.*"
                                         r"Received: directory="):
        _load(str(tmp_path))


# ---------------------------------------------------------------------------
# Caching, augmentation
# ---------------------------------------------------------------------------

def test_cache_in_memory_on_disk_or_off_gives_the_same_data(tmp_path):
    root = str(tmp_path / "images")
    _class_folder(root, "a", 6)
    _class_folder(root, "b", 6)
    cache_dir = str(tmp_path / "cache")
    os.makedirs(cache_dir)
    reference = _all_batches(_load(root, cache=False, shuffle=False).validation)
    for options in ({"cache": True}, {"cache": "memory"},
                    {"cache": "disk", "cache_dir": cache_dir}):
        data = _load(root, shuffle=False, **options)
        for _ in range(2):  # the second pass reads the cache
            got = _all_batches(data.validation)
            np.testing.assert_array_equal(got[0], reference[0])
            np.testing.assert_array_equal(got[1], reference[1])
    first = set(os.listdir(cache_dir))
    assert any(name.startswith("tftransfer-validation-") for name in first)
    _png(os.path.join(root, "a", "new.png"))
    data = _load(root, cache="disk", cache_dir=cache_dir)
    _all_batches(data.validation)
    assert set(os.listdir(cache_dir)) - first  # an edited folder gets a new cache


def test_auto_cache_spills_to_cache_dir_past_the_memory_limit(tmp_path, caplog):
    root = str(tmp_path / "images")
    _class_folder(root, "a", 6)
    _class_folder(root, "b", 6)
    cache_dir = str(tmp_path / "cache")
    os.makedirs(cache_dir)
    _all_batches(_load(root, cache="auto", cache_dir=cache_dir,
                       cache_memory_limit=0).validation)
    assert any(name.startswith("tftransfer-validation-") for name in os.listdir(cache_dir))
    with caplog.at_level(logging.INFO, logger="tftransfer.data"):
        _load(root, cache="auto", cache_memory_limit=0)
    assert "Not caching the decoded images" in caplog.text and "cache_dir=" in caplog.text


def test_a_directory_as_cache_still_works_with_a_deprecation_warning(tmp_path):
    root = str(tmp_path / "images")
    _class_folder(root, "a", 6)
    _class_folder(root, "b", 6)
    cache_dir = str(tmp_path / "cache")
    with pytest.warns(DeprecationWarning, match=r"cache='disk', cache_dir="):
        data = _load(root, cache=cache_dir)
    _all_batches(data.validation)
    assert os.listdir(cache_dir)


@pytest.mark.parametrize("word", ["none", "None", "false", "off"])
def test_a_word_for_no_cache_is_refused_not_made_a_directory(tmp_path, monkeypatch, word):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"Pass cache=None \(or False\) for no cache\. "
                                         rf"Received: cache='{word}'"):
        _load(str(tmp_path), cache=word)
    assert not (tmp_path / word).exists()


def test_disk_cache_needs_a_cache_dir(tmp_path):
    with pytest.raises(ValueError, match=r"cache='disk' needs `cache_dir`.*Received: cache="):
        _load(str(tmp_path), cache="disk")


def test_augmentation_changes_only_the_training_split(tmp_path):
    root = str(tmp_path)
    _class_folder(root, "a", 10)
    _class_folder(root, "b", 10)
    plain = _load(root, shuffle=False)
    augmented = _load(root, shuffle=False, augmentation="default")
    x_plain, y_plain = _all_batches(plain.train)
    x_aug, y_aug = _all_batches(augmented.train)
    np.testing.assert_array_equal(y_plain, y_aug)
    assert not np.allclose(x_plain, x_aug)
    assert 0.0 <= x_aug.min() and x_aug.max() <= 255.0
    for a, b in zip(_all_batches(plain.validation), _all_batches(augmented.validation)):
        np.testing.assert_array_equal(a, b)


def test_augmentation_presets_and_overrides():
    names = [type(layer).__name__ for layer in tft.augmentation().layers]
    assert names == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"]
    custom = tft.augmentation(None, rotation=0.2)
    assert [type(layer).__name__ for layer in custom.layers] == ["RandomRotation"]
    assert custom.layers[0].factor == (-0.2, 0.2)
    light = tft.augmentation("light", flip=False)
    assert [type(layer).__name__ for layer in light.layers] == [
        "RandomRotation", "RandomZoom", "RandomContrast"]
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(tft.augmentation(seed=1)(x, training=False), x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"preset": "strong"}, ValueError, r"`preset` must be one of \['default', 'light'\].*"
                                           r"Received: preset='strong'"),
        ({"flip": "diagonal"}, ValueError, r"Received: flip='diagonal'"),
        ({"rotation": 1.5}, ValueError, r"`rotation` must be a number in \[0, 1\).*"
                                        r"Received: rotation=1.5"),
        ({"zoom": True}, ValueError, r"Received: zoom=True"),
        ({"seed": 1.0}, TypeError, r"Received: seed=1.0"),
        ({"preset": None}, ValueError, r"Every augmentation layer is off.*augmentation=None"),
        ({"preset": "light", "flip": False, "rotation": 0, "zoom": 0, "contrast": 0},
         ValueError, r"Every augmentation layer is off.*Received: preset='light'"),
    ],
)
def test_augmentation_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        tft.augmentation(**kwargs)


# ---------------------------------------------------------------------------
# Imbalance
# ---------------------------------------------------------------------------

def test_balanced_class_weights_follow_sklearn():
    utils = pytest.importorskip("sklearn.utils")
    labels = np.random.default_rng(1).choice(4, size=200, p=[0.6, 0.25, 0.1, 0.05])
    expected = utils.compute_class_weight("balanced", classes=np.arange(4), y=labels)
    ours = tft.compute_class_weight(labels)
    np.testing.assert_allclose([ours[i] for i in range(4)], expected)
    counts = np.bincount(labels)
    assert tft.compute_class_weight(counts=counts.tolist()) == ours
    assert tft.compute_class_weight(counts=dict(enumerate(counts.tolist()))) == ours
    assert tft.compute_class_weight(np.eye(4)[labels]) == ours


def test_folder_class_weight_balances_the_training_counts(tmp_path):
    root = str(tmp_path)
    _class_folder(root, "common", 40)
    _class_folder(root, "rare", 8)
    data = _load(root)
    weights = data.class_weight()
    train = data.counts["train"]
    assert weights == {c: sum(train) / (2 * n) for c, n in enumerate(train)}
    assert weights[1] > 1 > weights[0]
    # Each class then carries the same total weight.
    assert weights[0] * train[0] == pytest.approx(weights[1] * train[1])


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((), {}, r"exactly one of `labels` and `counts`"),
        (([0, 1],), {"counts": [1, 1]}, r"exactly one of `labels` and `counts`"),
        (([0, 0, 2],), {}, r"Class\(es\) \[1\] have no examples.*Received: counts=\[2, 0, 1\]"),
        ((), {"counts": []}, r"non-empty list.*Received: counts=\[\]"),
        (([[1, 1], [0, 1]],), {}, r"must be one-hot.*Received: labels of shape \(2, 2\)"),
        (([-1, 0],), {}, r"non-negative integer.*Received: labels of shape \(2,\)"),
        (([0, 1],), {"mode": "inverse"}, r"`mode` must be 'balanced'. Received: mode='inverse'"),
    ],
)
def test_class_weight_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tft.compute_class_weight(*args, **kwargs)


def _identity_classifier(num_classes):
    """A model whose scores are its inputs: predictions are known in advance."""
    inputs = keras.Input((num_classes,))
    dense = keras.layers.Dense(num_classes, use_bias=False, kernel_initializer="identity")
    return keras.Model(inputs, dense(inputs))


def test_classification_report_matches_sklearn_on_a_shuffled_dataset():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=90, p=[0.7, 0.2, 0.1]).astype("int32")
    predicted = np.where(rng.uniform(size=90) < 0.7, y, rng.integers(0, 3, 90))
    predicted[:2] = 2  # class 2 is predicted at least twice
    scores = np.eye(3, dtype="float32")[predicted]
    ds = tf.data.Dataset.from_tensor_slices((scores, y)).shuffle(90, seed=1).batch(7)
    report = tft.classification_report(_identity_classifier(3), ds,
                                       class_names=["cat", "dog", "eel"])
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=[0, 1, 2], zero_division=0)
    np.testing.assert_allclose(report.precision, precision)
    np.testing.assert_allclose(report.recall, recall)
    np.testing.assert_allclose(report.f1, f1)
    np.testing.assert_array_equal(report.support, support)
    np.testing.assert_array_equal(report.confusion_matrix,
                                  metrics.confusion_matrix(y, predicted, labels=[0, 1, 2]))
    assert report.accuracy == pytest.approx(np.mean(y == predicted))
    assert json.loads(json.dumps(report.to_dict()))["classes"]["eel"]["support"] == support[2]
    assert "eel" in str(report) and "macro avg" in str(report)
    one_hot = tft.classification_report(_identity_classifier(3), (scores, np.eye(3)[y]))
    np.testing.assert_array_equal(one_hot.confusion_matrix, report.confusion_matrix)
    assert one_hot.class_names == ["0", "1", "2"]


def test_classification_report_errors():
    model = _identity_classifier(3)
    data = (np.eye(3, dtype="float32"), np.arange(3))
    with pytest.raises(ValueError, match=r"`class_names` has 2 names for a model with 3 outputs"):
        tft.classification_report(model, data, class_names=["a", "b"])
    with pytest.raises(TypeError, match=r"tf.data.Dataset .* or a tuple \(x, y\). "
                                        r"Received: data of type dict"):
        tft.classification_report(model, {"x": 1})
    with pytest.raises(ValueError,
                       match=r"one score per class.*Received: outputs of shape \(3, 1\)"):
        tft.classification_report(_identity_classifier(1), (np.ones((3, 1)), np.zeros(3)))
    multi = tft.build_classifier(tiny_backbone(), num_classes=2, multi_label=True)
    with pytest.raises(TypeError, match=r"single-label.*multi_label=True"):
        tft.classification_report(multi, data)


# ---------------------------------------------------------------------------
# Arrays and text
# ---------------------------------------------------------------------------

def test_arrays_grayscale_and_rgba_become_rgb_at_the_requested_size():
    gray = RNG.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    data = tft.dataset_from_arrays(gray, np.arange(20) % 2, image_size=16, shuffle=False)
    x, y = _all_batches(data.train)
    assert x.shape == (len(y), 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert data.class_names == ["0", "1"]
    rgba = RNG.integers(0, 256, (20, 8, 8, 4), dtype=np.uint8)
    data = tft.dataset_from_arrays(rgba, ["cat", "dog"] * 10, shuffle=False)
    x, y = _all_batches(data.train)
    expected = np.stack([tft.to_rgb(image) for image in rgba[data.indices["train"]]])
    np.testing.assert_array_equal(x, expected)
    assert data.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(y, np.array([0, 1] * 10)[data.indices["train"]])


def test_arrays_split_by_content_is_stable_when_rows_are_appended():
    x = RNG.integers(0, 256, (60, 4, 4, 3), dtype=np.uint8)
    y = np.arange(60) % 3
    before = tft.dataset_from_arrays(x, y, test_split=0.1)
    extra = RNG.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    after = tft.dataset_from_arrays(np.concatenate([x, extra]), np.append(y, 1), test_split=0.1)
    for split in ("train", "validation", "test"):
        old = set(before.indices[split].tolist())
        new = set(after.indices[split].tolist())
        assert new - {60} == old, split


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (np.zeros((10, 4, 4, 3)), np.zeros(9, int), {}, ValueError,
         r"one label per example: shape \(10,\). Received: y of shape \(9,\)"),
        (np.zeros((10, 4, 4, 2)), np.arange(10) % 2, {}, ValueError,
         r"1, 3 or 4 channels.*Received: x of shape \(10, 4, 4, 2\)"),
        (np.zeros((10, 4, 4, 3), np.int64), np.arange(10) % 2, {}, TypeError,
         r"uint8, or floats.*Received: x of dtype int64"),
        (np.zeros((10, 4, 4, 3)), np.arange(10) % 3, {"class_names": ["a", "b"]}, ValueError,
         r"Integer labels must lie in \[0, number of classes\). Received: labels from 0 to 2"),
        (np.zeros((10, 4, 4, 3)), ["a"] * 5 + ["b"] * 5, {"class_names": ["a", "c"]}, ValueError,
         r"Labels \['b'\] are not in `class_names`"),
        (np.zeros((10, 4, 4, 3)), np.linspace(0, 1, 10), {}, TypeError,
         r"integer or string labels. Received: y of dtype float64"),
        (["a text"] * 10, np.arange(10) % 2, {"image_size": 8}, ValueError,
         r"`image_size` and `augmentation` are for images"),
        (np.zeros((10, 4, 4, 3)), np.arange(10) % 2, {"test_split": -0.1}, ValueError,
         r"Received: test_split=-0.1"),
    ],
)
def test_array_errors(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        tft.dataset_from_arrays(x, y, **kwargs)


def test_text_csv_with_quotes_a_bom_and_bad_rows(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = [f'"great, truly {i}",pos' if i % 2 else f"dull {i},neg" for i in range(30)]
    rows[3] = '"two\nlines",pos'
    rows.insert(5, ",neg")  # no text: line 8 (the header is line 1; row 3 spans 2 lines)
    rows.insert(9, "lonely text,")  # no label: line 12
    path.write_text("\ufeffbody,sentiment\n" + "\n".join(rows) + "\n", encoding="utf-8")
    data = tft.text_dataset_from_csv(path, text_column="body", label_column="sentiment",
                                     batch_size=8)
    assert data.class_names == ["neg", "pos"]
    assert [(os.path.basename(b.path), b.reason) for b in data.report.bad_files] == [
        ("reviews.csv:8", "no text"), ("reviews.csv:12", "no label (or not a string or integer)")]
    texts, labels = _all_batches(data.train)
    assert texts.dtype == object and labels.dtype == np.int32
    all_texts = {t.decode() for ds in (data.train, data.validation) for t in _all_batches(ds)[0]}
    assert "two\nlines" in all_texts and "great, truly 1" in all_texts and len(all_texts) == 30
    with pytest.raises(tft.BadDataError, match=r"(?s)2 bad rows:.*reviews.csv:8: no text.*"
                                               r"Received: on_bad_row='error'"):
        tft.text_dataset_from_csv(path, text_column="body", label_column="sentiment",
                                  on_bad_row="error")
    with pytest.raises(ValueError, match=r"`text_column` 'text' is not a column.*"
                                         r"\['body', 'sentiment'\]. Received: text_column='text'"):
        tft.text_dataset_from_csv(path, label_column="sentiment")


def test_text_tsv_and_duplicates_share_a_split(tmp_path):
    path = tmp_path / "data.tsv"
    lines = [f"text {i % 10}\t{i % 2}" for i in range(40)]  # each text 4 times
    path.write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    data = tft.text_dataset_from_csv(path)
    assert data.class_names == ["0", "1"] and sum(map(sum, data.counts.values())) == 40
    train = {t.decode() for t in _all_batches(data.train)[0]}
    validation = {t.decode() for t in _all_batches(data.validation)[0]}
    assert train and validation and not train & validation


def test_text_jsonl_bad_lines_and_numeric_label_order(tmp_path):
    path = tmp_path / "data.jsonl"
    records = [json.dumps({"text": f"item {i}", "label": [2, 10][i % 2]}) for i in range(20)]
    records[4:4] = ["[1, 2]", '{"text": "no label"}', '{"text": "x", "label": [1]}', "", "{oops"]
    path.write_text("\n".join(records) + "\n")
    data = tft.text_dataset_from_jsonl(path)
    assert data.class_names == ["2", "10"]
    assert [(os.path.basename(b.path), b.reason.split(":")[0]) for b in data.report.bad_files] == [
        ("data.jsonl:5", "not a JSON object"),
        ("data.jsonl:6", "no label (or not a string or integer)"),
        ("data.jsonl:7", "no label (or not a string or integer)"),
        ("data.jsonl:9", "not a JSON object"),
    ]
    assert data.report.class_counts == {"2": 10, "10": 10}


def test_text_file_errors(tmp_path):
    with pytest.raises(ValueError, match=r"existing file. Received: path=.*nope.csv"):
        tft.text_dataset_from_csv(tmp_path / "nope.csv")
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n')
    with pytest.raises(ValueError, match=r"at least 2 classes; the data has 1 \('x': 1\)"):
        tft.text_dataset_from_jsonl(path)
    with pytest.raises(TypeError, match=r"`label_column` must be a column name.*label_column=1"):
        tft.text_dataset_from_jsonl(path, label_column=1)
    with pytest.raises(ValueError, match=r"Received: on_bad_row='drop'"):
        tft.text_dataset_from_jsonl(path, on_bad_row="drop")


# ---------------------------------------------------------------------------
# TFDS
# ---------------------------------------------------------------------------

def test_tfds_pipeline_and_class_names_from_the_dataset_info():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        data = tft.dataset_from_tfds("tf_flowers", image_size=SIZE, batch_size=4,
                                     split=("train[:75%]", "train[75%:]"))
        assert data.class_names == tfds.builder("tf_flowers").info.features["label"].names
        x, y = next(iter(data.train))
        assert x.shape == (4, *SIZE, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
        assert data.validation is not None and data.test is None and data.counts is None
        with pytest.raises(ValueError, match=r"counts of this data are unknown"):
            data.class_weight()


def test_tfds_grayscale_becomes_rgb():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        data = tft.dataset_from_tfds("mnist", image_size=SIZE, batch_size=8, split="train")
        x, _ = next(iter(data.train))
    assert data.validation is None and x.shape == (8, *SIZE, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert data.class_names == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("imdb_reviews", r"'imdb_reviews' is not an image classification dataset"),
        ("div2k", r"'div2k' has no class labels \('hr' is Image"),
        ("celeb_a", r"'celeb_a' has no \(image, label\) supervised keys"),
    ],
)
def test_tfds_datasets_that_are_not_image_classification(name, match):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(ValueError, match=match + rf".*Received: name='{name}'"):
            tft.dataset_from_tfds(name, image_size=SIZE)


def test_tfds_offline_without_data_says_how_to_bring_them(tmp_path):
    with pytest.raises(tft.DatasetUnavailableError,
                       match=r"'tf_flowers' is not in .* and download=False.*prepare it once.*"
                             r"copy its folder.*Received: download=False"):
        tft.dataset_from_tfds("tf_flowers", image_size=SIZE, data_dir=str(tmp_path),
                              download=False)


def test_tfds_failed_download_is_wrapped(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'download.tensorflow.org'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", unreachable)
    with pytest.raises(tft.DatasetUnavailableError,
                       match=r"Could not download TFDS dataset 'tf_flowers' \(ConnectionError: "
                             r"Failed to resolve.*offline.*Received: name='tf_flowers'"):
        tft.dataset_from_tfds("tf_flowers", image_size=SIZE, data_dir=str(tmp_path))


def test_tfds_missing_module_is_named(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def missing(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", missing)
    with pytest.raises(tft.DatasetUnavailableError,
                       match=r"needs the module 'importlib_resources' \(`pip install "
                             r"importlib_resources`; tensorflow/datasets#11212\)"):
        tft.dataset_from_tfds("tf_flowers", image_size=SIZE, data_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("tf_flowerz", {}, ValueError, r"TFDS has no dataset 'tf_flowerz'. Did you mean "
                                       r"'tf_flowers'.*Received: name='tf_flowerz'"),
        (3, {}, TypeError, r"Received: name=3"),
        ("tf_flowers", {"split": ["a", "b", "c", "d"]}, ValueError,
         r"1 to 3 of them.*Received: split=\['a', 'b', 'c', 'd'\]"),
    ],
)
def test_tfds_argument_errors(tmp_path, name, kwargs, error, match):
    with pytest.raises(error, match=match):
        tft.dataset_from_tfds(name, image_size=SIZE, data_dir=str(tmp_path), download=False,
                              **kwargs)


@pytest.mark.network
@pytest.mark.slow
def test_tfds_real_download():
    if not online("download.tensorflow.org"):
        pytest.skip("offline: needs download.tensorflow.org for tf_flowers")
    data = tft.dataset_from_tfds("tf_flowers", image_size=SIZE, batch_size=8)
    assert data.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    x, _ = next(iter(data.train))
    assert x.shape == (8, *SIZE, 3)


# ---------------------------------------------------------------------------
# Training on a messy folder
# ---------------------------------------------------------------------------

def test_a_classifier_trains_on_the_messy_folder(tmp_path):
    root = _messy_folder(str(tmp_path))
    data = _load(root, image_size=32, batch_size=8, augmentation="light")
    model = tft.build_classifier(tiny_backbone(), class_names=data.class_names)
    history = model.fit(data.train, validation_data=data.validation, epochs=1, verbose=0,
                        class_weight=data.class_weight(), shuffle=False)
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history
    report = tft.classification_report(model, data.validation)
    assert report.support.tolist() == data.counts["validation"]
