"""The user's own pretrained model as a backbone: `.keras` files (always in
safe mode), `keras.Model` objects cut below their head, SavedModels, and
their blocks for partial unfreezing."""

import os

import keras
import numpy as np
import pytest

import tftransfer as tft
from helpers import IMAGE_SHAPE
from helpers import images
from helpers import labelled
from helpers import tiny_backbone
from helpers import tiny_classifier

STAGE_PATTERN = r"^(stage\d+)_"


def _source_model(backbone=None, *, head=("dropout", "dense")):
    """A source-task model: backbone -> GlobalAveragePooling2D -> head."""
    backbone = backbone or tiny_backbone()
    x = keras.layers.GlobalAveragePooling2D(name="source_pooling")(backbone.output)
    for kind in head:
        if kind == "dropout":
            x = keras.layers.Dropout(0.3, name="source_dropout")(x)
        elif kind == "hidden":
            x = keras.layers.Dense(8, activation="relu", name="source_hidden")(x)
        elif kind == "dense":
            x = keras.layers.Dense(3, name="source_predictions")(x)
        elif kind == "softmax_dense":
            x = keras.layers.Dense(3, activation="softmax", name="source_predictions")(x)
        elif kind == "softmax":
            x = keras.layers.Softmax(name="source_softmax")(x)
    return keras.Model(backbone.input, x, name="source_model")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A small source model, pretrained here, saved as `.keras`."""
    source = _source_model()
    source.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    source.fit(*labelled(24, 3), epochs=2, batch_size=8, verbose=0)
    path = os.fspath(tmp_path_factory.mktemp("own") / "source.keras")
    source.save(path)
    return source, path


def _features(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# --- .keras files ---------------------------------------------------------------

def test_keras_file_is_cut_below_its_head(pretrained):
    source, path = pretrained
    backbone = tft.load_backbone(path)
    assert backbone.output.shape == (None, 12)
    assert backbone.layers[-1].name == "source_pooling"
    x = images(4)
    expected = _features(keras.Model(source.input, source.get_layer("source_pooling").output), x)
    np.testing.assert_allclose(_features(backbone, x), expected, rtol=1e-5, atol=1e-6)


def test_keras_file_is_loaded_in_safe_mode(pretrained, monkeypatch):
    calls = []
    load_model = keras.saving.load_model

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return load_model(*args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", spy)
    tft.load_backbone(pretrained[1])
    assert calls and all(call.get("safe_mode") is True for call in calls)


def test_keras_file_with_a_lambda_is_refused(tmp_path):
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = os.fspath(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError, match=r"safe mode refuses to load .*lambda.keras.*Lambda.*"
                                         r"safe_mode=False.*and pass the model.*"
                                         r"Received: backbone="):
        tft.load_backbone(path)


def test_tftransfer_classifier_file_gives_its_backbone(tmp_path):
    model = tiny_classifier()
    path = os.fspath(tmp_path / "classifier.keras")
    model.save(path)
    backbone = tft.load_backbone(path)
    assert backbone.name == model.backbone.name
    x = images(2)
    np.testing.assert_allclose(_features(backbone, x), _features(model.backbone, x), atol=1e-6)


def test_legacy_h5_model_is_refused(tmp_path):
    path = os.fspath(tmp_path / "model.h5")
    _source_model().save(path)  # Keras writes the legacy HDF5 format
    with pytest.raises(ValueError, match=r"legacy HDF5 model file.*only from `\.keras` files.*"
                                         r"save\('model\.keras'\).*Received: backbone="):
        tft.load_backbone(path)


def test_weights_only_h5_points_to_weights(tmp_path):
    path = os.fspath(tmp_path / "backbone.weights.h5")
    tiny_backbone().save_weights(path)
    with pytest.raises(ValueError, match=r"holds weights only.*`weights=`.*Received: backbone="):
        tft.load_backbone(path)


@pytest.mark.parametrize("name, message", [
    ("missing.keras", r"There is no file at .*missing.keras"),
    ("missing.h5", r"There is no file at .*missing.h5"),
    ("./missing_dir", r"There is no file or directory at .*missing_dir"),
])
def test_missing_paths(tmp_path, monkeypatch, name, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message + r".*Received: backbone="):
        tft.load_backbone(name)


def test_directory_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(ValueError, match=r"is not a SavedModel.*Received: backbone="):
        tft.load_backbone(os.fspath(tmp_path))


def test_unsupported_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"Cannot load a backbone from the file .*model.onnx"):
        tft.load_backbone(os.fspath(path))


def test_unknown_name_mentions_the_other_sources():
    with pytest.raises(ValueError, match=r"Unknown backbone 'my_net'.*TF-Hub URL.*`.keras` file"):
        tft.load_backbone("my_net")


def test_own_saved_model_trained_on_a_source_task(pretrained, tmp_path):
    """Source model -> hub-format SavedModel (head cut off) -> new classifier."""
    source, _ = pretrained
    path = tft.export_feature_extractor(source, tmp_path / "source_features")
    model = tft.build_classifier(path, class_names=["a", "b"])
    x, y = labelled(8, 2)
    pooled = keras.Model(source.input, source.get_layer("source_pooling").output)
    np.testing.assert_allclose(model.backbone.predict(x, verbose=0), _features(pooled, x),
                               atol=1e-5)
    history = tft.fit_head(model, x, y=y, epochs=1, verbose=0)
    assert history.history["phase"] == [1]


# --- Cutting a keras.Model -----------------------------------------------------------

@pytest.mark.parametrize("head, cut", [
    (("dropout", "dense"), "source_pooling"),
    (("dense",), "source_pooling"),
    (("softmax_dense",), "source_pooling"),
    (("dense", "softmax"), "source_pooling"),
    (("hidden", "dropout", "dense"), "source_hidden"),
])
def test_default_cut_is_below_the_classification_head(head, cut):
    backbone = tft.load_backbone(_source_model(head=head))
    assert backbone.layers[-1].name == cut


def test_model_without_head_stays_whole():
    source = _source_model(head=("hidden",))  # a ReLU Dense layer: features
    assert tft.load_backbone(source) is source
    plain = tiny_backbone()
    assert tft.load_backbone(plain) is plain


def test_named_cut(pretrained):
    source, _ = pretrained
    backbone = tft.load_backbone(source, cut_at="block2_relu")
    assert backbone.output.shape == (None, 16, 16, 8)
    # The cut shares its layers, and so its weights, with the source model.
    assert backbone.get_layer("block1_conv") is source.get_layer("block1_conv")
    assert tft.load_backbone(source, cut_at="source_predictions") is source


def test_cut_at_a_missing_layer_lists_candidates(pretrained):
    with pytest.raises(ValueError, match=r"no layer named 'block2_rel'.*"
                                         r"Did you mean 'block2_relu'.*output side first: source_predictions, source_dropout, "
                                         r"source_pooling.*Received: cut_at='block2_rel'"):
        tft.load_backbone(pretrained[0], cut_at="block2_rel")


def test_cut_of_a_named_backbone_keeps_its_description():
    backbone = tft.load_backbone("mobilenet_v3_small", input_shape=(32, 32, 3), weights=None,
                                 cut_at="expanded_conv_5_add")
    assert backbone.output.shape == (None, 2, 2, 40)
    assert backbone.spec.name == "mobilenet_v3_small" and backbone.spec.preprocessing == "none"
    assert list(tft.get_blocks(backbone))[-1] == "expanded_conv_5"


def test_head_only_model_cannot_be_cut():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match=r"only a classification head on its input.*cut_at="):
        tft.load_backbone(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def test_subclassed_model_cannot_be_cut():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D(name="pool")

        def call(self, x):
            return self.pool(self.conv(x))

    net = Net()
    net(images(1))
    with pytest.raises(ValueError, match=r"Cannot cut model 'net' at layer 'conv'.*functional.*"
                                         r"Received: cut_at='conv'"):
        tft.load_backbone(net, cut_at="conv")


def test_sequential_model_is_cut_too():
    source = keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        keras.layers.Conv2D(4, 3, name="block1_conv"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(3, activation="softmax", name="predictions"),
    ])
    assert tft.load_backbone(source).layers[-1].name == "pool"


# --- Blocks of your own model --------------------------------------------------------------

def _staged_source():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE_SHAPE, name="images")
    x = keras.layers.Rescaling(1 / 255.0, name="rescaling")(inputs)
    for s in (1, 2, 3):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"stage{s}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{s}_bn")(x)
        x = keras.layers.MaxPooling2D(name=f"stage{s}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))


def test_block_pattern_names_the_blocks_of_an_own_model():
    backbone = tft.load_backbone(_staged_source(), block_pattern=STAGE_PATTERN)
    assert backbone.spec.block_pattern == STAGE_PATTERN
    blocks = tft.get_blocks(backbone)
    assert list(blocks) == ["stage1", "stage2", "stage3"]
    assert [layer.name for layer in blocks["stage3"]] == ["stage3_conv", "stage3_bn",
                                                          "stage3_pool", "gap"]


def test_unfreezing_exactly_those_blocks():
    model = tft.build_classifier(_staged_source(), num_classes=2, block_pattern=STAGE_PATTERN)
    assert tft.unfreeze_top_blocks(model, 2) == ["stage2", "stage3"]
    trainable = {layer.name for layer in model.backbone.layers
                 if layer.trainable and layer.weights}
    assert trainable == {"stage2_conv", "stage3_conv"}  # BatchNormalization stays frozen
    names = {v.path.split("/")[0] for v in model.backbone.trainable_weights}
    assert names == {"stage2_conv", "stage3_conv"}


def test_two_phase_fine_tunes_only_the_top_block():
    model = tft.build_classifier(_staged_source(), num_classes=2, block_pattern=STAGE_PATTERN)
    x, y = labelled(12, 2)
    before = {layer.name: [w.numpy().copy() for w in layer.weights]
              for layer in model.backbone.layers}
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      fine_tune_learning_rate=0.05, warmup=0.0, verbose=0)
    changed = {name for name, weights in before.items()
               if any(not np.array_equal(w, v.numpy())
                      for w, v in zip(weights, model.backbone.get_layer(name).weights))}
    assert changed == {"stage3_conv"}


@pytest.mark.parametrize("pattern, message", [
    (r"stage\d+", r"exactly one group.*It has 0"),
    (r"(stage)(\d+)", r"exactly one group.*It has 2"),
    (r"(stage", r"must be a regular expression"),
])
def test_bad_block_pattern(pattern, message):
    with pytest.raises(ValueError, match=message + r".*Received: block_pattern="):
        tft.load_backbone(tiny_backbone(), block_pattern=pattern)
