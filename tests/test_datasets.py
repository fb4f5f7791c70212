import numpy as np
import pytest

from tftransfer.data.digits import load_digits


def test_digits_are_raw_pixels():
    images, labels = load_digits(image_size=8)
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 255.0
    assert sorted(set(labels.tolist())) == list(range(10))


def test_digits_resize():
    images, _ = load_digits(image_size=16)
    assert images.shape == (1797, 16, 16, 1)
    assert 0.0 <= images.min() and images.max() <= 255.0


def test_shipped_digits_are_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    images, labels = load_digits(image_size=8)
    np.testing.assert_array_equal(labels, reference.target)
    np.testing.assert_allclose(images[..., 0], reference.images * 255.0 / 16.0, rtol=1e-6)


@pytest.mark.parametrize("bad", [4, "16", 16.0])
def test_bad_image_size(bad):
    with pytest.raises(ValueError, match=rf"`image_size` must be an integer of at least 8. Received: image_size={bad!r}"):
        load_digits(image_size=bad)
