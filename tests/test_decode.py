"""Which decoder reads a file (TensorFlow's JPEG decoder for plain JPEGs,
Pillow for the rest), that both give Pillow's pixels, and the resize rule
(issue 14, item 3)."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer as tft
from tftransfer.data.decode import check_file
from tftransfer.data.decode import check_files
from tftransfer.data.images import resize_image
from tftransfer.data.scan_index import index_path
from tftransfer.data.tf_pixels import JPEG_PLANS
from tftransfer.data.tf_pixels import jpeg_plan
from tftransfer.data.tf_pixels import tf_decode_jpeg
from tftransfer.data.tf_pixels import tf_decode_jpeg_as
from tftransfer.data.tf_pixels import tf_resize


def _photo(height, width, seed=0):
    yy, xx = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 40, (height, width, 3))
    return (np.stack([xx * 3 % 256, yy * 5 % 256, (xx + yy) % 256], -1) + noise).clip(
        0, 255).astype("uint8")


@pytest.fixture
def files(tmp_path):
    made = {}
    photo = _photo(30, 40)
    made["rgb"] = tmp_path / "rgb.jpg"
    Image.fromarray(photo).save(made["rgb"], quality=90)
    made["gray"] = tmp_path / "gray.jpg"
    Image.fromarray(photo[..., 0]).save(made["gray"], quality=90)
    made["cmyk"] = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(made["cmyk"], quality=90)
    made["rotated"] = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to view
    Image.fromarray(photo).save(made["rotated"], quality=90, exif=exif)
    made["png"] = tmp_path / "plain.png"
    Image.fromarray(photo).save(made["png"])
    return made


def test_plain_jpegs_go_to_tensorflow_the_rest_to_pillow(files):
    kinds = {name: check_file(str(path)) for name, path in files.items()}
    assert kinds == {"rgb": (None, [30, 40]), "gray": (None, [30, 40]), "cmyk": (None, None),
                     "rotated": (None, None), "png": (None, None)}


def test_truncated_jpeg_is_refused_by_the_scan(files, tmp_path):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(files["rgb"].read_bytes()[:300])
    reason, shape = check_file(str(cut))
    assert reason is not None and "truncated" in reason and shape is None


@pytest.mark.parametrize("name", ["rgb", "gray"])
def test_tensorflow_decodes_plain_jpegs_to_pillows_pixels(files, name):
    pillow = np.asarray(Image.open(files[name]).convert("RGB"))
    decoded = tf_decode_jpeg(files[name].read_bytes(), None).numpy()
    np.testing.assert_array_equal(decoded, pillow)
    np.testing.assert_array_equal(tft.load_image(files[name], image_size=(20, 24)),
                                  resize_image(pillow, (20, 24)))


def test_a_big_jpeg_decodes_at_the_dct_scale_pillows_draft_gives(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(_photo(400, 320)).save(path, quality=90)
    for size, ratio in (((50, 40), 8), ((100, 80), 4), ((120, 90), 2), ((210, 170), 1)):
        with Image.open(path) as image:
            image.draft("RGB", (400 // ratio, 320 // ratio)[::-1])
            reference = np.asarray(image.convert("RGB"))
        assert reference.shape[:2] == (400 // ratio, 320 // ratio)
        got = tf_decode_jpeg(path.read_bytes(), size).numpy()
        np.testing.assert_array_equal(got, resize_image(reference, size), err_msg=str(size))


def test_the_plan_from_the_header_is_the_plan_the_graph_picks(tmp_path):
    # The pipeline decodes with the plan the scan computed from the header
    # (`jpeg_plan`); the serving graph and `tf_decode_jpeg` pick it from
    # `extract_jpeg_shape`. Every plan occurs, and both give the same pixels.
    seen = set()
    for height, width, size in ((30, 40, (20, 24)), (30, 80, (20, 20)), (100, 90, (40, 40)),
                                (64, 40, (16, 20)), (100, 90, (24, 22)), (200, 64, (20, 16)),
                                (200, 190, (24, 23)), (200, 190, (12, 11)), (41, 33, (40, 32)),
                                (20, 30, (40, 40))):
        data = tf.io.encode_jpeg(_photo(height, width)).numpy()
        plan = jpeg_plan(height, width, size)
        seen.add(plan)
        np.testing.assert_array_equal(tf_decode_jpeg(data, size),
                                      tf_decode_jpeg_as(data, size, plan),
                                      err_msg=f"{height}x{width} to {size}: {plan}")
    assert seen == set(JPEG_PLANS)


def test_a_folder_of_mixed_sizes_and_decoders_reads_as_load_image(tmp_path, monkeypatch):
    monkeypatch.setenv("TFTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(((20, 30), (60, 50), (130, 90), (40, 200), (300, 260))):
        for label in ("a", "b"):
            (root / label).mkdir(parents=True, exist_ok=True)
            photo = _photo(height, width, seed=i)
            Image.fromarray(photo).save(root / label / f"{i}.jpg", quality=85)
            if rng.random() < 0.5:
                Image.fromarray(photo).save(root / label / f"{i}.png")
    for image_size in ((24, 24), (16, 40)):
        data = tft.image_dataset_from_folder(root, image_size=image_size, validation_split=0.0,
                                             shuffle=False, verbose=0)
        images = np.concatenate([x for x, _ in data.train])
        assert len(images) == len(data.files["train"]) >= 10
        for image, path in zip(images, data.files["train"]):
            np.testing.assert_array_equal(image, tft.load_image(path, image_size=image_size),
                                          err_msg=path)


def _area_weights(n, m):
    """``[m, n]``: how much of each of n source pixels each of m covers."""
    edges = np.arange(m + 1) * n / m
    lo, hi = edges[:-1, None], edges[1:, None]
    pixels = np.arange(n)[None]
    overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def test_resize_averages_areas_where_it_shrinks_twice_or_more():
    image = tf.constant(_photo(64, 60))
    # Less than twice the size, or larger: plain bilinear.
    for size in ((40, 40), (100, 90)):
        expected = tf.cast(tf.round(tf.image.resize(image, size)), tf.uint8)
        np.testing.assert_array_equal(tf_resize(image, size), expected, err_msg=str(size))
    # Exactly a quarter of the height, a half of the width: means of 4 x 2 blocks.
    blocks = np.asarray(image, "float64").reshape(16, 4, 30, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(tf_resize(image, (16, 30)), np.round(blocks).astype("uint8"))
    # 2.6 times the height, 1.5 times the width: each output pixel the mean of
    # the source pixels it covers, weighted by how much of each.
    expected = np.einsum("ih,jw,hwc->ijc", _area_weights(64, 24), _area_weights(60, 40),
                         np.asarray(image, "float64"))
    got = tf_resize(image, (24, 40)).numpy().astype(float)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3
    # 3 times the height, a third of the width: rows averaged, then enlarged.
    expected = np.einsum("ih,hwc->iwc", _area_weights(64, 21), np.asarray(image, "float64"))
    expected = tf.cast(tf.round(tf.image.resize(expected, (21, 180))), tf.uint8)
    got = tf_resize(image, (21, 180))
    assert np.abs(got.numpy().astype(int) - expected.numpy()).max() <= 1
    # A batch is resized image by image; float stays float.
    batch = tf.cast(tf.stack([image, image[::-1]]), tf.float32)
    np.testing.assert_allclose(tf_resize(batch, (16, 30))[1], tf_resize(batch[1], (16, 30)))
    assert tf_resize(batch, (16, 30)).dtype == tf.float32


def test_the_pipeline_reads_each_file_as_load_image_and_remembers_the_decoder(
        files, tmp_path, monkeypatch):
    monkeypatch.setenv("TFTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "folder"
    for name, path in files.items():
        for label in ("a", "b"):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / path.name).write_bytes(path.read_bytes())
    data = tft.image_dataset_from_folder(root, image_size=(16, 20), validation_split=0.4,
                                         shuffle=False, verbose=0)
    for split in ("train", "validation"):
        images = np.concatenate([x for x, _ in getattr(data, split)])
        for image, path in zip(images, data.files[split]):
            np.testing.assert_array_equal(image, tft.load_image(path, image_size=(16, 20)),
                                          err_msg=path)
    index = json.loads(pathlib.Path(index_path(str(root))).read_text())
    shapes = {pathlib.Path(p).name: entry[2] for p, entry in index["files"].items()}
    assert shapes == {"rgb.jpg": [30, 40], "gray.jpg": [30, 40], "cmyk.jpg": None,
                      "rotated.jpg": None, "plain.png": None}


def test_many_files_are_checked_as_one_file_is(files, tmp_path):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(files["rgb"].read_bytes()[:300])
    paths = [str(p) for p in files.values()] + [str(cut), str(tmp_path / "missing.jpg")]
    done = []
    results = check_files(paths, progress=done.append)
    assert results == [check_file(p) for p in paths]
    assert sum(done) == len(paths)
