"""Errors before work, naming both sides: the data's images and labels against
the classifier's input and classes (issue 10, item 1)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer as tft
from helpers import tiny_backbone


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four classes of 40x50 PNGs (another size than any backbone's default)."""
    root = tmp_path_factory.mktemp("folder")
    for c in range(4):
        os.makedirs(root / f"c{c}")
        for i in range(6):
            pixels = np.random.default_rng(10 * c + i).integers(0, 255, (40, 50, 3), "uint8")
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def data(folder):
    return tft.image_dataset_from_folder(folder, image_size=40, verbose=0)


def test_data_splits_know_their_input_shape(data):
    assert data.input_shape == (40, 40, 3)


def test_classifier_takes_its_classes_and_size_from_the_data(data):
    model = tft.build_classifier("mobilenet_v3_small", data=data, weights=None)
    assert model.class_names == ["c0", "c1", "c2", "c3"]
    assert model.input_shape == (None, 40, 40, 3)


@pytest.mark.parametrize("size, shape", [(48, (48, 48, 3)), ((32, 48), (32, 48, 3)),
                                         ((32, 32, 3), (32, 32, 3))])
def test_input_shape_and_image_size_take_an_int_or_a_pair(size, shape):
    for name in ("input_shape", "image_size"):
        model = tft.build_classifier("mobilenet_v3_small", num_classes=2, weights=None,
                                     **{name: size})
        assert model.input_shape == (None, *shape)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (32, 32, 3), "image_size": 48},
     r"`input_shape` asks for 32x32x3 images but `image_size` asks for 48x48x3.*"
     r"Received: input_shape=\(32, 32, 3\), image_size=\(48, 48, 3\)"),
    ({"image_size": "big"}, r"`image_size` must be an image size.*Received: image_size='big'"),
    ({"input_shape": (0, 32)}, r"`input_shape` must be an image size.*Received: "),
])
def test_size_arguments_that_disagree_or_are_not_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tft.build_classifier("mobilenet_v3_small", num_classes=2, weights=None, **kwargs)


def test_data_that_disagrees_with_the_arguments(data):
    with pytest.raises(ValueError, match=r"`image_size` asks for 32x32x3 images but the data's "
                                         r"images are 40x40x3.*Received: image_size="):
        tft.build_classifier("mobilenet_v3_small", data=data, image_size=32, weights=None)
    with pytest.raises(ValueError, match=r"`num_classes` is 3 but the data has 4 classes "
                                         r"\(c0, c1, c2, c3\).*Received: num_classes=3"):
        tft.build_classifier("mobilenet_v3_small", data=data, num_classes=3, weights=None)
    with pytest.raises(ValueError, match=r"`class_names` \(2\) disagree with the data's classes"):
        tft.build_classifier("mobilenet_v3_small", data=data, class_names=["a", "b"],
                             weights=None)


def test_a_fixed_size_backbone_that_does_not_match_the_data(data):
    with pytest.raises(ValueError, match=r"backbone 'tiny_backbone' takes 32x32x3 images but "
                                         r"the data has 40x40x3.*image_size=\(32, 32\)"):
        tft.build_classifier(tiny_backbone(), data=data)


def test_a_grayscale_backbone_on_rgb_data(data):
    inputs = keras.Input((40, 40, 1))
    gray = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="block1_conv")(inputs),
                       name="gray")
    with pytest.raises(ValueError, match=r"backbone 'gray' takes 1-channel images but the data "
                                         r"has 3-channel ones.*Received: a backbone with "
                                         r"input shape \(40, 40, 1\)"):
        tft.build_classifier(gray, data=data)
    model = tft.build_classifier(gray, num_classes=4)  # no data: accepted, then caught
    with pytest.raises(ValueError, match=r"training images are 40x40x3 but model "
                                         r"'gray_classifier' takes 40x40x1.*grayscale"):
        tft.fit_head(model, data, epochs=1, verbose=0)


def test_training_on_images_of_another_size_fails_before_any_epoch(data):
    model = tft.build_classifier("mobilenet_v3_small", num_classes=4, weights=None)  # 224
    with pytest.raises(ValueError, match=r"The training images are 40x40x3 but model "
                                         r"'mobilenet_v3_small_classifier' takes 224x224x3.*"
                                         r"image_size=\(40, 40\)"):
        tft.fit_two_phase(model, data.train, data.validation, verbose=0)
    assert model.training_summary == []


def test_labels_outside_num_classes_fail_naming_num_classes(data):
    model = tft.build_classifier("mobilenet_v3_small", num_classes=3, image_size=40,
                                 weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (8, 40, 40, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"training labels go from 0 to 7 but model .* has "
                                         r"num_classes=3.*num_classes=8"):
        tft.fit_head(model, x, y=np.arange(8), epochs=1, verbose=0)
    # The loader's pipeline, on cached features: the cache reads the labels, and checks them.
    with pytest.raises(ValueError, match=r"training labels go from 0 to 3 but model .* "
                                         r"has num_classes=3"):
        tft.fit_head(model, data.train, data.validation, epochs=1, verbose=0)
    # A pipeline trained uncached: its first batch is checked.
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(8) % 5)).batch(8)
    with pytest.raises(ValueError, match=r"training labels go from 0 to 4 but model .* "
                                         r"has num_classes=3"):
        tft.fit_head(model, dataset, epochs=1, cache=False, verbose=0)
    assert model.training_summary == []


@pytest.mark.parametrize("pipeline", ["cached", "past the first batch"])
def test_labels_of_a_pipeline_read_while_training_fail_naming_num_classes(pipeline):
    """Labels that cannot be read before training without a pass over the
    data: the batch that holds one out of range stops training with an error
    that names num_classes (not the loss's own)."""
    model = tft.build_classifier("mobilenet_v3_small", num_classes=3, image_size=32,
                                 weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 7])  # the 7 in the second batch
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
    if pipeline == "cached":
        dataset = dataset.cache()  # not peeked at: that would leave the cache half-filled
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"training labels must be in \[0, 3\): model .* has num_classes=3"
                             r"(.|\n)*a training label of (.|\n)*\[7\]"):
        tft.fit_head(model, dataset, epochs=1, cache=False, verbose=0)
    fine = tf.data.Dataset.from_tensor_slices((x, labels % 3)).batch(4)
    assert len(tft.fit_head(model, fine, epochs=1, cache=False, verbose=0).epoch) == 1


def test_data_splits_train_whole_and_their_classes_are_checked(data):
    model = tft.build_classifier("mobilenet_v3_small", data=data, weights=None)
    history = tft.fit_head(model, data, epochs=1, verbose=0)
    assert "val_loss" in history.history  # the validation split was used
    other = tft.build_classifier("mobilenet_v3_small", class_names=["w", "x", "y", "z"],
                                 image_size=40, weights=None)
    with pytest.raises(ValueError, match=r"The data's classes \(4: c0, c1, c2, c3\) are not the "
                                         r"model's \(4: w, x, y, z\)"):
        tft.fit_head(other, data, epochs=1, verbose=0)


def test_classify_names_the_classes_of_files_folders_bytes_and_arrays(data, folder):
    model = tft.build_classifier("mobilenet_v3_small", data=data, weights=None)
    first = os.path.join(folder, "c1", "0.png")
    with open(first, "rb") as f:
        encoded = f.read()
    result = model.classify([os.path.join(folder, "c2"), first, encoded, Image.open(first),
                             tft.load_image(first, image_size=40)], top_k=3)
    assert [p.source for p in result[:6]] == [os.path.join(folder, "c2", f"{i}.png")
                                             for i in range(6)]
    assert [p.source for p in result[6:]] == [first, "<bytes 2>", "<image 3>", "<array 4>"]
    # The same decoding as training: a file, its bytes and its pixels agree.
    probabilities = model.predict_proba(
        tft.load_image(first, image_size=40)[None].astype("float32"), verbose=0)[0]
    for prediction in result[6:]:
        assert len(prediction.top_k) == 3
        assert prediction.class_name == model.class_names[int(probabilities.argmax())]
        assert prediction.probability == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert str(result).count("\n") == len(result) - 1
    assert result.to_json()[0]["top_k"][0]["class_name"] == result[0].class_name


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((2, 20, 20, 3)), r"images of shape \(20, 20, 3\) but the model takes \(40, 40, 3\)"),
    ("no/such.jpg", r"There is no file or folder at 'no/such.jpg'"),
    (b"junk", r"<bytes 0>: Cannot decode the image bytes: not an image"),
    ([], r"`inputs` holds no image"),
])
def test_classify_errors(data, inputs, message):
    model = tft.build_classifier("mobilenet_v3_small", data=data, weights=None)
    with pytest.raises(ValueError, match=message):
        model.classify(inputs)
    with pytest.raises(ValueError, match=r"`top_k` must be an integer from 1 to the number of "
                                         r"classes \(4\).*Received: top_k=5"):
        model.classify(np.zeros((40, 40, 3)), top_k=5)


def test_predict_proba_takes_files_too(data, folder):
    model = tft.build_classifier("mobilenet_v3_small", data=data, weights=None)
    first = os.path.join(folder, "c1", "0.png")
    pixels = tft.load_image(first, image_size=40)[None].astype("float32")
    np.testing.assert_allclose(model.predict_proba(first, verbose=0),
                               model.predict_proba(pixels, verbose=0), atol=1e-6)
    assert model.predict_proba([first, first], verbose=0).shape == (2, 4)
