import os

import keras
import numpy as np
import pytest

import tftransfer as tft
from helpers import online
from tftransfer.backbones import ARCHITECTURES

MIN_SHAPE = {name: (a.min_size, a.min_size, 3) for name, a in ARCHITECTURES.items()}

# Tested at their minimum size; the large EfficientNets take long to build.
FAST = [n for n in tft.available_backbones() if n not in (
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_b3")]
SLOW = [n for n in tft.available_backbones() if n not in FAST]


def test_table_lists_every_family_the_spine_promises():
    names = set(tft.available_backbones())
    expected = {
        "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
        *(f"efficientnet_b{i}" for i in range(8)),
        *(f"efficientnet_v2_b{i}" for i in range(4)), "efficientnet_v2_s",
        "resnet50", "resnet50_v2", "xception", "inception_v3", "densenet121", "convnext_tiny",
    }
    assert expected <= names


def _check_backbone(name):
    backbone = tft.load_backbone(name, input_shape=MIN_SHAPE[name], weights=None)
    assert isinstance(backbone, tft.ImageBackbone)
    assert backbone.architecture == name
    assert len(backbone.output.shape) == 4
    blocks = tft.get_blocks(backbone)
    assert len(blocks) >= 4
    # every layer belongs to exactly one block, in order
    flat = [layer for layers in blocks.values() for layer in layers]
    assert [id(layer) for layer in flat] == [id(layer) for layer in backbone.layers]
    out = backbone(np.full((1, *MIN_SHAPE[name]), 128.0, "float32"))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("name", FAST)
def test_every_backbone_builds_with_blocks(name):
    _check_backbone(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_large_backbones_build_with_blocks(name):
    _check_backbone(name)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("efficientnet_b0", [f"block{i}" for i in range(1, 8)]),
        ("resnet50", ["conv2", "conv3", "conv4", "conv5"]),
        ("inception_v3", [f"mixed{i}" for i in range(11)]),
        ("convnext_tiny", ["stage_0", "stage_1", "stage_2", "stage_3"]),
        ("mobilenet_v2", ["expanded_conv"] + [f"block_{i}" for i in range(1, 17)]),
    ],
)
def test_block_names(name, expected):
    backbone = tft.load_backbone(name, input_shape=MIN_SHAPE[name], weights=None)
    assert list(tft.get_blocks(backbone)) == expected


def test_efficientnet_top_conv_belongs_to_last_block():
    backbone = tft.load_backbone("efficientnet_b0", input_shape=(32, 32, 3), weights=None)
    last = [layer.name for layer in tft.get_blocks(backbone)["block7"]]
    assert "top_conv" in last and last[0].startswith("block7a")


@pytest.mark.parametrize("alias", ["EfficientNetB0", "efficientnet-b0", "EFFICIENTNET_B0"])
def test_names_are_forgiving(alias):
    backbone = tft.load_backbone(alias, input_shape=(32, 32, 3), weights=None)
    assert backbone.architecture == "efficientnet_b0"


@pytest.mark.parametrize(
    "name, module",
    [
        ("mobilenet_v2", keras.applications.mobilenet_v2),
        ("resnet50", keras.applications.resnet50),
        ("densenet121", keras.applications.densenet),
        ("inception_v3", keras.applications.inception_v3),
    ],
)
def test_preprocessing_matches_keras_applications(name, module):
    """Raw pixels in, the same values the application's preprocess_input gives."""
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    layer = tft.PixelPreprocessing(mode=ARCHITECTURES[name].preprocessing)
    expected = module.preprocess_input(pixels.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pixels)), expected, atol=1e-4)


def test_preprocessing_is_inside_the_backbone():
    backbone = tft.load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=None)
    assert backbone.layers[1].name == "pixel_preprocessing"
    assert backbone.spec.pixel_range == (-1, 1)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown backbone 'efficentnet_b0'.*Did you mean "
                                         r"'efficientnet_b0'.*Received: backbone='efficentnet_b0'"):
        tft.load_backbone("efficentnet_b0", weights=None)


def test_backbone_of_wrong_type():
    with pytest.raises(TypeError, match=r"`backbone` must be a backbone name.*Received: backbone=42"):
        tft.load_backbone(42)


def test_input_below_minimum_size():
    with pytest.raises(ValueError, match=r"at least 75x75 pixels.*Received: input_shape=\(64, 64, 3\)"):
        tft.load_backbone("inception_v3", input_shape=(64, 64, 3), weights=None)


@pytest.mark.parametrize("shape", [(32, 32, 3, 1), (32, "32", 3), (100,), "32"])
def test_non_image_input_shape(shape):
    with pytest.raises(ValueError, match=r"`input_shape` must be an image size.*Received: input_shape="):
        tft.load_backbone("resnet50", input_shape=shape, weights=None)


@pytest.mark.parametrize("shape", [40, (40, 40), (40, 40, 3)])
def test_input_shape_takes_an_int_or_a_pair(shape):
    backbone = tft.load_backbone("mobilenet_v3_small", input_shape=shape, weights=None)
    assert backbone.spec.input_shape == (40, 40, 3)


def test_grayscale_input_shape_says_convert_to_rgb():
    with pytest.raises(ValueError, match=r"RGB images \(3 channels\).*Received: input_shape=\(32, 32, 1\)"):
        tft.load_backbone("resnet50", input_shape=(32, 32, 1), weights=None)


def test_missing_weights_file(tmp_path):
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(ValueError, match=r"No file at .*nope.h5.*Received: weights="):
        tft.load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=missing)


def test_weights_of_wrong_type():
    with pytest.raises(TypeError, match=r"`weights` must be 'imagenet', None, or a path.*Received: weights=3"):
        tft.load_backbone("mobilenet_v2", weights=3)


def test_local_weights_file_is_loaded(tmp_path):
    source = tft.load_backbone("mobilenet_v3_small", input_shape=(32, 32, 3), weights=None)
    path = str(tmp_path / "backbone.weights.h5")
    source.save_weights(path)
    loaded = tft.load_backbone("mobilenet_v3_small", input_shape=(32, 32, 3), weights=path)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.skipif(online(), reason="online: the offline error path cannot be exercised")
def test_imagenet_weights_offline_error_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights
    with pytest.raises(tft.WeightsUnavailableError,
                       match=r"Could not download the ImageNet weights for 'mobilenet_v2'.*"
                             r"offline.*weights=None.*local copy.*Received: weights='imagenet'"):
        tft.load_backbone("mobilenet_v2", input_shape=(96, 96, 3))


@pytest.mark.network
@pytest.mark.skipif(not online(), reason="needs the internet to download ImageNet weights")
def test_imagenet_weights_download():
    backbone = tft.load_backbone("mobilenet_v3_small", input_shape=(224, 224, 3))
    assert len(backbone.weights) > 0


def test_keras_saving_round_trip(tmp_path):
    backbone = tft.load_backbone("mobilenet_v3_small", input_shape=(32, 32, 3), weights=None)
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tft.ImageBackbone)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), backbone.predict(x, verbose=0),
                               atol=1e-5)


def test_get_blocks_error_lists_layers_and_the_way_out():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs), name="plain")
    with pytest.raises(ValueError, match=r"No layer of backbone 'plain' matches.*block_pattern.*"
                                         r"from_layer.*Layers: .*conv"):
        tft.get_blocks(model)
