"""TF-Hub-format backbones in Keras 3: `HubLayer`, hub backbones, and the
hub-format export. Offline: the modules are written into tmp_path here."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from tftransfer.export import feature_extractor
from helpers import images
from helpers import labelled
from helpers import run_without_tftransfer
from helpers import tiny_backbone
from helpers import weights_by_path
from helpers import online

SHAPE = (16, 16, 3)
WIDTH = 4
REG = 0.01
HUB_URL = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"


# --- Offline fixtures: TF2 reusable SavedModels written by the tests --------

def write_module(path, *, width=WIDTH, training_argument=True, regularization=True,
                 dynamic_width=False, variable_lists=True, seed=0):
    """A reusable SavedModel: mean pixel -> dense -> minus a BatchNorm-like
    moving mean, which ``training=True`` updates (momentum 0.5).
    `variable_lists=False` leaves out ``variables`` and
    ``trainable_variables`` (a plain TF2 SavedModel)."""
    rng = np.random.default_rng(seed)
    kernel = tf.Variable(rng.normal(size=(3, width)).astype("float32"), name="dense/kernel")
    bias = tf.Variable(np.zeros(width, "float32"), name="dense/bias")
    moving_mean = tf.Variable(np.zeros(width, "float32"), trainable=False,
                              name="bn/moving_mean")

    # Read from a variable, the width is hidden from static shape inference.
    width_variable = tf.Variable(width, trainable=False, name="width")

    def features(images):
        return tf.reduce_mean(images, axis=[1, 2]) @ kernel + bias

    def output(x):
        if dynamic_width:
            return tf.reshape(x, tf.stack([-1, width_variable.read_value()]))
        return x

    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    if training_argument:
        @tf.function
        def call(images, training=False):
            x = features(images)
            if training:
                mean = tf.reduce_mean(x, axis=0)
                moving_mean.assign(0.5 * moving_mean + 0.5 * mean)
                return output(x - mean)
            return output(x - moving_mean)

        call.get_concrete_function(spec, training=False)
        call.get_concrete_function(spec, training=True)
    else:
        call = tf.function(lambda images: output(features(images) - moving_mean),
                           input_signature=[spec])

    root = tf.__internal__.tracking.AutoTrackable()
    root.width = width_variable
    root.__call__ = call
    if variable_lists:
        root.variables = [kernel, bias, moving_mean]
        root.trainable_variables = [kernel, bias]
    else:
        root.parameters = [kernel, bias, moving_mean]  # saved, but not listed
    root.regularization_losses = (
        [tf.function(lambda: REG * tf.reduce_sum(kernel ** 2), input_signature=[])]
        if regularization else []
    )
    tf.saved_model.save(root, os.fspath(path))
    return os.fspath(path)


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    return write_module(tmp_path_factory.mktemp("hub") / "feature_vector")


def _module_values(layer):
    return {v.name: v.numpy().copy() for v in layer._module.variables}


def _hub_layer(model):
    return next(layer for layer in model.backbone.layers if isinstance(layer, tft.HubLayer))


def _tiny_model(hub_layer):
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hub_layer(inputs)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


# --- HubLayer -----------------------------------------------------------------

def test_hub_layer_is_frozen_by_default_and_stays_identical(hub_dir):
    layer = tft.HubLayer(hub_dir)
    assert not layer.trainable and layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 3
    model = _tiny_model(layer)
    before = _module_values(layer)
    model.fit(images(8, SHAPE), np.ones((8, 2)), epochs=2, verbose=0)
    after = _module_values(layer)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_trainable_hub_layer_really_trains(hub_dir):
    layer = tft.HubLayer(hub_dir, trainable=True)
    model = _tiny_model(layer)
    # The optimizer sees the module's kernel and bias, not its moving mean.
    assert {v.name for v in layer.trainable_weights} == {"dense_kernel", "dense_bias"}
    assert {id(v) for v in layer.trainable_weights} <= {id(v) for v in model.trainable_weights}
    x = images(8, SHAPE)
    out_before = layer(x).numpy()
    before = _module_values(layer)
    model.fit(x, np.ones((8, 2)), epochs=2, verbose=0)
    after = _module_values(layer)
    assert not np.allclose(before["dense/kernel:0"], after["dense/kernel:0"])
    # The module itself computes something else now: the weights are shared.
    assert not np.allclose(out_before, layer(x).numpy())


def test_training_flag_is_passed_through_only_when_trainable(hub_dir):
    x = images(4, SHAPE)
    frozen = tft.HubLayer(hub_dir)
    assert frozen.has_training_argument
    frozen(x, training=True)
    assert not np.any(_module_values(frozen)["bn/moving_mean:0"])

    layer = tft.HubLayer(hub_dir, trainable=True)
    layer(x, training=False)
    assert not np.any(_module_values(layer)["bn/moving_mean:0"])
    layer(x, training=True)
    assert np.any(_module_values(layer)["bn/moving_mean:0"])


def test_module_without_variable_lists_trains_the_variables_it_uses(tmp_path):
    path = write_module(tmp_path / "m", variable_lists=False)
    layer = tft.HubLayer(path, trainable=True)
    assert {v.name for v in layer.trainable_weights} == {"dense_kernel", "dense_bias"}
    assert {v.name for v in layer.non_trainable_weights} == {"bn_moving_mean"}
    x = images(8, SHAPE)
    before = layer(x).numpy()
    _tiny_model(layer).fit(x, np.ones((8, 2)), epochs=1, verbose=0)
    assert not np.allclose(before, layer(x).numpy())


def test_regularization_loss_that_is_not_callable_is_refused(tmp_path):
    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = tf.function(lambda images: images,
                                input_signature=[tf.TensorSpec([None, 3])])
    root.regularization_losses = [tf.Variable(1.0)]
    tf.saved_model.save(root, os.fspath(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"regularization loss that is not callable"):
        tft.HubLayer(os.fspath(tmp_path / "m"))


def test_module_without_training_argument(tmp_path):
    path = write_module(tmp_path / "m", training_argument=False, regularization=False)
    layer = tft.HubLayer(path, trainable=True)
    assert not layer.has_training_argument
    out = layer(images(2, SHAPE), training=True)  # would fail if passed on
    assert out.shape == (2, WIDTH)
    assert layer.losses == []


def test_regularization_losses_are_added_while_trainable(hub_dir):
    x = images(2, SHAPE)
    frozen = tft.HubLayer(hub_dir)
    frozen(x)
    assert frozen.losses == []
    layer = tft.HubLayer(hub_dir, trainable=True)
    layer(x)
    kernel = _module_values(layer)["dense/kernel:0"]
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), REG * np.sum(kernel ** 2), rtol=1e-5)
    # ... and they count in the training loss.
    model = _tiny_model(layer)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    logs = model.evaluate(x, model.predict(x, verbose=0), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(REG * np.sum(kernel ** 2), rel=1e-4)


def test_config_round_trip_outside_safe_mode(hub_dir):
    layer = tft.HubLayer(hub_dir, output_shape=(WIDTH,), name="hub")
    config = json.loads(json.dumps(layer.get_config()))
    assert config["handle"] == hub_dir and config["output_shape"] == [WIDTH]
    assert config["inference_mode"] is False
    clone = tft.HubLayer.from_config(config)
    x = images(2, SHAPE)
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())


def test_hub_layer_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"`handle` must be a URL or the path.*Received: handle=3"):
        tft.HubLayer(3)
    with pytest.raises(ValueError, match=r"`output_shape` must be.*Received: output_shape=\(0,\)"):
        tft.HubLayer(os.fspath(tmp_path), output_shape=(0,))
    with pytest.raises(ValueError, match=r"no directory at .*nope.*Received: handle="):
        tft.HubLayer(os.fspath(tmp_path / "nope"))


# --- Hub backbones in the classifier -------------------------------------------

@pytest.fixture
def hub_classifier(hub_dir):
    return tft.build_classifier(hub_dir, num_classes=3, input_shape=SHAPE)


def test_hub_backbone_is_a_functional_model_with_preprocessing(hub_dir):
    backbone = tft.load_backbone(hub_dir, input_shape=SHAPE)
    assert isinstance(backbone, keras.Model)
    assert backbone.output.shape == (None, WIDTH)
    assert backbone.spec.preprocessing == "unit" and backbone.spec.pixel_range == (0, 1)
    # TF-Hub image modules take [0, 1]: raw pixels are rescaled first.
    x = images(2, SHAPE)
    direct = tft.HubLayer(hub_dir)(x / 255.0).numpy()
    np.testing.assert_allclose(backbone(x).numpy(), direct, rtol=1e-5, atol=1e-6)


def test_default_hub_input_shape(hub_dir):
    assert tft.load_backbone(hub_dir).input.shape == (None, 224, 224, 3)


def test_classification_module_gives_its_width(tmp_path):
    path = write_module(tmp_path / "classifier", width=5)
    model = tft.build_classifier(path, num_classes=2, input_shape=SHAPE)
    assert model.backbone.output.shape == (None, 5)
    assert model.predict(images(3, SHAPE), verbose=0).shape == (3, 2)


def test_width_unknown_statically_is_found_by_running_the_module(tmp_path):
    path = write_module(tmp_path / "dynamic", width=6, dynamic_width=True)
    backbone = tft.load_backbone(path, input_shape=SHAPE)
    assert backbone.output.shape == (None, 6)
    assert _hub_layer(tft.ImageClassifier(backbone=backbone, num_classes=2)).get_config()[
        "output_shape"] == [6]


def test_head_phase_keeps_the_module_identical(hub_classifier):
    x, y = labelled(12, 3, SHAPE)
    before = weights_by_path(hub_classifier.backbone)
    tft.fit_head(hub_classifier, x, y=y, epochs=1, verbose=0)
    after = weights_by_path(hub_classifier.backbone)
    for path in before:
        np.testing.assert_array_equal(before[path], after[path])


def test_fine_tuning_all_trains_the_module_with_fixed_statistics(hub_classifier):
    x, y = labelled(12, 3, SHAPE)
    layer = _hub_layer(hub_classifier)
    before = _module_values(layer)
    history = tft.fine_tune(hub_classifier, x, y=y, epochs=2, unfreeze_blocks="all",
                            learning_rate=0.05, warmup=0.0, verbose=0)
    assert history.history["phase"] == [2, 2]
    after = _module_values(layer)
    assert not np.allclose(before["dense/kernel:0"], after["dense/kernel:0"])
    # The classifier calls its backbone with training=False: the module's
    # BatchNorm-like moving statistics stay fixed.
    np.testing.assert_array_equal(before["bn/moving_mean:0"], after["bn/moving_mean:0"])
    assert hub_classifier.training_summary[-1]["unfrozen_blocks"] == [layer.name]


def test_hub_backbone_is_one_block(hub_classifier):
    blocks = tft.get_blocks(hub_classifier.backbone)
    assert list(blocks) == [_hub_layer(hub_classifier).name]


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_hub_backbone_cannot_unfreeze_blocks(hub_classifier, num_blocks):
    with pytest.raises(ValueError, match=r"cannot be unfrozen block by block.*"
                                         r"unfreeze_blocks='all'.*Received: num_blocks="):
        tft.unfreeze_top_blocks(hub_classifier, num_blocks)


def test_two_phase_refuses_blocks_before_phase_one(hub_classifier):
    x, y = labelled(6, 3, SHAPE)
    with pytest.raises(ValueError, match=r"cannot be unfrozen block by block"):
        tft.fit_two_phase(hub_classifier, x, y=y, head_epochs=1, fine_tune_epochs=1,
                          unfreeze_blocks=2, verbose=0)
    assert hub_classifier.training_summary == []


@pytest.mark.parametrize("option", ["cut_at", "block_pattern"])
def test_layer_options_do_not_apply_to_hub_modules(hub_dir, option):
    value = "x" if option == "cut_at" else r"^(x)"
    with pytest.raises(ValueError, match=rf"`{option}` does not apply to a TF-Hub"):
        tft.load_backbone(hub_dir, input_shape=SHAPE, **{option: value})


def test_keras_file_recreates_the_module_from_its_handle(hub_classifier, tmp_path):
    x, y = labelled(12, 3, SHAPE)
    tft.fine_tune(hub_classifier, x, y=y, epochs=1, unfreeze_blocks="all",
                  learning_rate=0.05, warmup=0.0, verbose=0)
    path = os.fspath(tmp_path / "hub.keras")
    hub_classifier.save(path)
    # A SavedModel runs code: safe mode refuses it, as it refuses TFSMLayer.
    with pytest.raises(ValueError, match=r"HubLayer.*safe_mode=False"):
        keras.saving.load_model(path)
    loaded = keras.saving.load_model(path, safe_mode=False, compile=False)
    assert _hub_layer(loaded).inference_mode  # as load_backbone made it
    # The trained weights come from the file, not from the module on disk.
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               hub_classifier.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    on_disk = _module_values(tft.HubLayer(_hub_layer(loaded).handle))
    assert not np.allclose(_module_values(_hub_layer(loaded))["dense/kernel:0"],
                           on_disk["dense/kernel:0"])


def test_export_of_a_hub_classifier_runs_without_tftransfer(hub_classifier, tmp_path):
    path = tft.export_saved_model(hub_classifier, tmp_path / "serving")
    x = images(3, SHAPE)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import json, sys\n"
        "import numpy as np, tensorflow as tf\n"
        "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_pixels']\n"
        "out = serve(images=tf.constant(np.load(sys.argv[2])))\n"
        "print(json.dumps(out['probabilities'].numpy().tolist()))\n"
    )
    served = np.array(run_without_tftransfer(script, path, tmp_path / "x.npy"))
    np.testing.assert_allclose(served, hub_classifier.predict_proba(x, verbose=0), atol=1e-5)


# --- SavedModels that are not reusable TF2 models; handles ------------------------

def test_tf1_hub_module_is_refused(tmp_path):
    path = write_module(tmp_path / "tf1")
    open(os.path.join(path, "tfhub_module.pb"), "wb").close()
    with pytest.raises(ValueError, match=r"TF1 Hub module.*TensorFlow 2.*Received: handle="):
        tft.load_backbone(path, input_shape=SHAPE)


def test_saved_model_without_call_is_refused(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    serve = tf.function(lambda x: {"y": x * module.v},
                        input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, os.fspath(tmp_path / "serving"),
                        signatures={"serving_default": serve})
    with pytest.raises(ValueError, match=r"not a reusable TF2 model.*serving_default.*"
                                         r"export_feature_extractor.*Received: handle="):
        tft.load_backbone(os.fspath(tmp_path / "serving"), input_shape=SHAPE)


def test_module_returning_a_dict_is_refused(tmp_path):
    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = tf.function(lambda images: {"a": images},
                                input_signature=[tf.TensorSpec([None, None, None, 3])])
    tf.saved_model.save(root, os.fspath(tmp_path / "dict"))
    with pytest.raises(ValueError, match=r"returned dict, not one tensor"):
        tft.HubLayer(os.fspath(tmp_path / "dict"))(images(1, SHAPE))


def test_unreachable_handle_names_it_and_suggests_a_local_path(monkeypatch, tmp_path):
    if online("tfhub.dev"):
        pytest.skip("online: the offline error cannot be observed")
    monkeypatch.setenv("TFHUB_CACHE_DIR", os.fspath(tmp_path))
    with pytest.raises(tft.WeightsUnavailableError,
                       match=rf"Could not fetch the TF-Hub module '{HUB_URL}'.*"
                             r"load_backbone\('/path/to/model_dir'\).*Received: handle="):
        tft.load_backbone(HUB_URL)


@pytest.mark.network
def test_real_hub_module_from_its_url(monkeypatch, tmp_path):
    if not online("tfhub.dev"):
        pytest.skip("offline: needs tfhub.dev")
    monkeypatch.setenv("TFHUB_CACHE_DIR", os.fspath(tmp_path))
    model = tft.build_classifier(HUB_URL, num_classes=2, input_shape=(96, 96, 3))
    assert model.backbone.output.shape == (None, 1280)


# --- Hub-format export -------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A backbone with a weight regularizer, and its hub-format export."""
    backbone = tiny_backbone(SHAPE)
    backbone.get_layer("block1_conv").kernel.regularizer = keras.regularizers.L2(0.1)
    path = tft.export_feature_extractor(backbone, tmp_path_factory.mktemp("fx") / "module")
    return backbone, path


def _pooled(backbone, x):
    return keras.ops.convert_to_numpy(keras.ops.mean(backbone(x, training=False), axis=(1, 2)))


def test_export_is_a_reusable_saved_model(exported):
    backbone, path = exported
    loaded = tf.saved_model.load(path)
    x = images(3, SHAPE)
    np.testing.assert_allclose(loaded(tf.constant(x)).numpy(), _pooled(backbone, x), atol=1e-5)
    np.testing.assert_allclose(loaded(tf.constant(x), training=False).numpy(),
                               _pooled(backbone, x), atol=1e-5)
    assert len(loaded.variables) == len(backbone.variables)
    # kernels, biases, BN gamma/beta train; BN moving statistics do not.
    assert len(loaded.trainable_variables) == 4 * 3
    assert not any("moving" in v.name for v in loaded.trainable_variables)
    kernel = backbone.get_layer("block1_conv").kernel
    assert [float(f()) for f in loaded.regularization_losses] == pytest.approx(
        [0.1 * float(np.sum(kernel.numpy() ** 2))], rel=1e-5)
    served = loaded.signatures["serving_default"](images=tf.constant(x))["features"]
    np.testing.assert_allclose(served.numpy(), _pooled(backbone, x), atol=1e-5)
    metadata = tft.read_metadata(path)
    assert metadata["input_shape"] == list(SHAPE) and metadata["feature_dim"] == 12
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp")]


def test_export_loads_with_tensorflow_hub(exported):
    import tensorflow_hub as hub

    backbone, path = exported
    module = hub.load(path)
    x = images(2, SHAPE)
    np.testing.assert_allclose(module(x).numpy(), _pooled(backbone, x), atol=1e-5)


HUB_KERAS_LAYER_SCRIPT = """
import json, sys
import numpy as np
import tensorflow_hub as hub
import tf_keras
x = np.load(sys.argv[2])
layer = hub.KerasLayer(sys.argv[1], trainable=True)
model = tf_keras.Sequential([tf_keras.Input(x.shape[1:]), layer, tf_keras.layers.Dense(2)])
features = tf_keras.Model(model.inputs, model.layers[0].output).predict(x, verbose=0)
before = [w.numpy().copy() for w in layer.trainable_weights]
model.compile(tf_keras.optimizers.SGD(0.1), "mse")
model.fit(x, np.ones((len(x), 2)), epochs=1, verbose=0)
changed = any(not np.allclose(a, w.numpy()) for a, w in zip(before, layer.trainable_weights))
print(json.dumps({"features": features.tolist(), "changed": changed,
                  "trainable": len(layer.trainable_weights), "losses": len(model.losses)}))
"""


@pytest.mark.slow
def test_export_works_in_hub_keras_layer_under_tf_keras(exported, tmp_path):
    backbone, path = exported
    x = images(4, SHAPE)
    np.save(tmp_path / "x.npy", x)
    result = run_without_tftransfer(HUB_KERAS_LAYER_SCRIPT, path, tmp_path / "x.npy")
    np.testing.assert_allclose(np.array(result["features"]), _pooled(backbone, x), atol=1e-5)
    assert result["changed"] and result["trainable"] == 12 and result["losses"] == 1


def test_round_trip_backbone_export_backbone(exported):
    backbone, path = exported
    reloaded = tft.load_backbone(path)  # input size and pixel range from the metadata
    assert reloaded.input.shape == (None, *SHAPE)
    assert reloaded.spec.preprocessing == "none" and reloaded.spec.pixel_range == (0, 255)
    x = images(3, SHAPE)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), _pooled(backbone, x), atol=1e-5)


def test_exported_backbone_fine_tunes_in_keras_3(exported):
    _, path = exported
    x, y = labelled(12, 3, SHAPE)
    model = tft.build_classifier(path, num_classes=3)
    before = weights_by_path(model.backbone)
    tft.fine_tune(model, x, y=y, epochs=1, unfreeze_blocks="all", learning_rate=0.05,
                  warmup=0.0, verbose=0)
    after = weights_by_path(model.backbone)
    assert any(not np.allclose(before[p], after[p]) for p in before)


def test_export_a_fine_tuned_hub_classifier_again(hub_classifier, tmp_path):
    """A hub backbone, fine-tuned, exported again in hub format."""
    x, y = labelled(12, 3, SHAPE)
    tft.fine_tune(hub_classifier, x, y=y, epochs=1, unfreeze_blocks="all",
                  learning_rate=0.05, warmup=0.0, verbose=0)
    path = tft.export_feature_extractor(hub_classifier, tmp_path / "again")
    loaded = tf.saved_model.load(path)
    expected = hub_classifier.backbone.predict(x, verbose=0)
    np.testing.assert_allclose(loaded(tf.constant(x)).numpy(), expected, atol=1e-5)


def test_export_refuses_to_overwrite(exported):
    backbone, path = exported
    with pytest.raises(tft.VersionExistsError, match=r"exists already.*overwrite=True"):
        tft.export_feature_extractor(backbone, path)


def test_export_overwrites_when_asked(tmp_path):
    target = tmp_path / "module"
    first = tiny_backbone(SHAPE, seed=1)
    tft.export_feature_extractor(first, target)
    second = tiny_backbone(SHAPE, seed=2)
    tft.export_feature_extractor(second, target, overwrite=True)
    x = images(2, SHAPE)
    np.testing.assert_allclose(tf.saved_model.load(os.fspath(target))(tf.constant(x)).numpy(),
                               _pooled(second, x), atol=1e-5)
    assert os.listdir(tmp_path) == ["module"]


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("check failed")

    monkeypatch.setattr(feature_extractor, "verify_feature_extractor", broken)
    with pytest.raises(RuntimeError, match="check failed"):
        tft.export_feature_extractor(tiny_backbone(SHAPE), tmp_path / "module")
    assert os.listdir(tmp_path) == []


def test_export_argument_errors(tmp_path):
    with pytest.raises(TypeError,
                       match=r"`model_or_backbone` must be.*Received: model_or_backbone="):
        tft.export_feature_extractor("efficientnet_b0", tmp_path / "m")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"`path` must be a directory.*Received: path="):
        tft.export_feature_extractor(tiny_backbone(SHAPE), tmp_path / "file")
    inputs = keras.Input((8, 3))
    with pytest.raises(ValueError, match=r"feature map .* or a feature vector"):
        tft.export_feature_extractor(keras.Model(inputs, keras.layers.Conv1D(2, 3)(inputs)),
                                     tmp_path / "m")
