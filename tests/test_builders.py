import json

import keras
import numpy as np
import pytest

import tftransfer as tft
from helpers import images
from helpers import tiny_backbone
from helpers import tiny_classifier


def test_class_names_travel_with_the_model():
    model = tiny_classifier(class_names=["cat", "dog", "fox"])
    assert model.class_names == ["cat", "dog", "fox"]
    assert model.num_classes == 3
    assert model.output.shape == (None, 3)


def test_num_classes_alone_gives_default_names():
    model = tft.build_classifier(tiny_backbone(), num_classes=2)
    assert model.class_names == ["0", "1"]


def test_backbone_is_frozen_and_called_through_the_inference_mode_layer():
    model = tiny_classifier()
    assert model.backbone.trainable is False
    assert [v.path for v in model.trainable_weights] == [
        v.path for v in model.head.output_dense.trainable_weights
    ]
    # The backbone is called through a layer that pins training=False.
    assert model.get_layer("frozen_backbone_call").layer is model.backbone


def test_named_backbone_is_loaded():
    model = tft.build_classifier("mobilenet_v3_small", num_classes=4,
                                 input_shape=(32, 32, 3), weights=None)
    assert isinstance(model.backbone, tft.ImageBackbone)
    assert model.name == "mobilenet_v3_small_classifier"


def test_head_with_hidden_layers_and_dropout():
    model = tiny_classifier(hidden_units=[16, 8], dropout=0.3)
    assert [layer.units for layer in model.head.hidden_layers] == [16, 8]
    assert all(layer.rate == 0.3 for layer in model.head.dropout_layers)


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_pooling(pooling):
    model = tiny_classifier(pooling=pooling)
    assert model.predict(images(2), verbose=0).shape == (2, 3)


def test_feature_vector_backbone_needs_no_pooling():
    inputs = keras.Input((32, 32, 3))
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    model = tft.build_classifier(backbone, num_classes=2)
    assert model.pooler is None


def test_multi_label_uses_binary_loss_and_sigmoid_probabilities():
    model = tiny_classifier(multi_label=True)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    probs = model.predict_proba(images(4), verbose=0)
    logits = model.predict(images(4), verbose=0)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5)


def test_auto_loss_follows_the_activation():
    logits = tiny_classifier()
    assert logits.loss.get_config()["from_logits"] is True
    softmax = tiny_classifier(activation="softmax")
    assert softmax.loss.get_config()["from_logits"] is False
    np.testing.assert_allclose(softmax.predict_proba(images(2), verbose=0).sum(-1), 1.0, rtol=1e-5)


def test_mixed_precision_keeps_float32_outputs():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_classifier()
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_config_round_trip_through_json():
    model = tiny_classifier(hidden_units=[8], pooling="max", dropout=0.1)
    config = model.get_config()
    as_json = json.dumps(config)
    restored = tft.ImageClassifier.from_config(json.loads(as_json))
    assert json.dumps(restored.get_config()) == as_json


def test_keras_file_round_trip(tmp_path):
    model = tiny_classifier(class_names=["a", "b", "c"], hidden_units=[8])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True by default
    assert isinstance(loaded, tft.ImageClassifier)
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.backbone.trainable is False
    x = images(3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert loaded.compiled and isinstance(loaded.loss, keras.losses.SparseCategoricalCrossentropy)


def test_num_classes_inconsistent_with_class_names():
    with pytest.raises(ValueError, match=r"`num_classes` \(3\) does not match the number of "
                                         r"`class_names` \(2\).*Received: num_classes=3"):
        tft.build_classifier(tiny_backbone(), num_classes=3, class_names=["a", "b"])


def test_neither_num_classes_nor_class_names():
    with pytest.raises(ValueError, match=r"Pass `num_classes` or `class_names`"):
        tft.build_classifier(tiny_backbone())


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match=rf"`num_classes` must be a positive integer. Received: num_classes={bad}"):
        tft.build_classifier(tiny_backbone(), num_classes=bad)


def test_class_names_must_be_strings_and_unique():
    with pytest.raises(TypeError, match=r"`class_names` must be a list of strings"):
        tft.build_classifier(tiny_backbone(), class_names=[1, 2])
    with pytest.raises(ValueError, match=r"`class_names` must be unique"):
        tft.build_classifier(tiny_backbone(), class_names=["a", "a"])


def test_bad_pooling_dropout_activation_hidden_units():
    with pytest.raises(ValueError, match=r"`pooling` must be one of .*Received: pooling='mean'"):
        tiny_classifier(pooling="mean")
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\). Received: dropout=1.5"):
        tiny_classifier(dropout=1.5)
    with pytest.raises(ValueError, match=r"`activation` must be one of .*Received: activation='sigmoid'"):
        tiny_classifier(activation="sigmoid")
    with pytest.raises(ValueError, match=r"`hidden_units` must be a list of positive integers.*Received: hidden_units=16"):
        tiny_classifier(hidden_units=16)


def test_backbone_must_output_features():
    inputs = keras.Input((32, 32, 3))
    flat = keras.layers.Reshape((32 * 32, 3))(inputs)
    with pytest.raises(ValueError, match=r"feature map .* or a feature vector"):
        tft.build_classifier(keras.Model(inputs, flat), num_classes=2)


def test_classifier_needs_a_model_backbone():
    with pytest.raises(TypeError, match=r"`backbone` must be a `keras.Model`"):
        tft.ImageClassifier(backbone="resnet50", num_classes=2)


def test_custom_block_pattern_survives_keras_file(tmp_path):
    model = tft.build_classifier(tiny_backbone(), num_classes=2, block_pattern=r"^(block[12])_")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert list(tft.get_blocks(loaded.backbone)) == ["block1", "block2"]
