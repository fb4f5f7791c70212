"""Shifted digit domains (digits-M and simple shifts) and `tft.evaluate_domains`."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_sample_images

import tftransfer as tft
from tftransfer.data.digits import load_digits


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits(image_size=16)
    return images[:40], labels[:40]


def test_digits_m_is_the_absolute_difference_with_a_photo_patch(digits):
    images, _ = digits
    photo = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    blended = tft.digits_m(images, photos=[photo])  # one patch position: the whole photo
    np.testing.assert_allclose(blended, np.abs(photo[None].astype("float32") - images))
    default = tft.digits_m(images, seed=3)
    assert default.shape == (40, 16, 16, 3) and default.dtype == np.float32
    assert 0.0 <= default.min() and default.max() <= 255.0
    np.testing.assert_array_equal(default, tft.digits_m(images, seed=3))  # seeded
    assert not np.array_equal(default, tft.digits_m(images, seed=4))
    # Each image is |patch - digit| for a patch of one of scikit-learn's photos: where the
    # digit is blank the image is the patch itself, so it occurs in a photo.
    blank = images[0, :, :, 0] == 0
    photos = load_sample_images().images
    patch_pixels = default[0][blank]
    assert any(np.isin(patch_pixels[:, 0], p[..., 0]).all() for p in photos)


def test_simple_shifts(digits):
    images, _ = digits
    np.testing.assert_array_equal(tft.shift_digits(images, "inverted"), 255.0 - images)
    noisy = tft.shift_digits(images, "noisy", seed=1)
    assert noisy.shape == images.shape and 0.0 <= noisy.min() and noisy.max() <= 255.0
    np.testing.assert_array_equal(noisy, tft.shift_digits(images, "noisy", seed=1))
    assert 30.0 < np.abs(noisy - images).mean() < 64.0  # noise of std 64, clipped
    thick = tft.shift_digits(images, "thick")
    assert (thick >= images).all() and (thick > 0).sum() > (images > 0).sum()


def test_evaluate_domains_reports_each_domain_and_the_gap(digits):
    images, labels = digits
    inputs = keras.Input((16, 16, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(flat))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, epochs=30, verbose=0)
    result = tft.evaluate_domains(model, {"source": (images, labels),
                                          "inverted": (tft.shift_digits(images, "inverted"),
                                                       labels)}, top_k=1)
    direct = tft.evaluate(model, (tft.shift_digits(images, "inverted"), labels), top_k=1)
    assert result.accuracy["inverted"] == direct.accuracy
    assert result.gap == {"source": 0.0,
                          "inverted": result.accuracy["source"] - direct.accuracy}
    assert result.gap["inverted"] > 0.3  # inverting the digits breaks a pixel model
    table = str(result).splitlines()
    assert table[0].split() == ["domain", "accuracy", "gap", "ECE", "examples"]
    assert result.to_dict()["reference"] == "source"


def test_errors(digits):
    images, _ = digits
    with pytest.raises(ValueError, match=r"`images` must be grayscale digits of shape "
                                         r"\(n, height, width, 1\).*\(40, 16, 16, 3\)"):
        tft.digits_m(np.repeat(images, 3, -1))
    with pytest.raises(ValueError, match=r"`photos` must be RGB images of at least 16x16"):
        tft.digits_m(images, photos=[np.zeros((8, 8, 3), "uint8")])
    with pytest.raises(ValueError, match=r"`shift` must be one of .* Received: shift='blur'"):
        tft.shift_digits(images, "blur")
    with pytest.raises(TypeError, match=r"`domains` must be a non-empty dict"):
        tft.evaluate_domains(None, [])
