"""Cached backbone features (tftransfer.feature_cache) against the uncached path."""

import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from helpers import IMAGE_SHAPE
from helpers import labelled
from helpers import tiny_backbone
from helpers import tiny_classifier
from helpers import weights_by_path
from tftransfer.caching import cache_options
from tftransfer.feature_cache.cache import FeatureCache
from tftransfer.feature_cache.cut import plan_cut
from tftransfer.feature_cache.extract import batchnorm_folds
from tftransfer.feature_cache.extract import frozen_forward
from tftransfer.feature_cache.feed import in_order_dataset
from tftransfer.feature_cache.feed import stream_dataset
from tftransfer.feature_cache.store import Stream


def _train(cache, *, fn=tft.fit_two_phase, model=None, data=None, **kwargs):
    """Trains a fresh tiny classifier (same initial weights every time) with a
    deterministic optimizer and no shuffling; returns (model, history)."""
    model = model or tiny_classifier()
    x, y = data or labelled(n=24)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("shuffle", False)
    kwargs.setdefault("verbose", 0)
    if fn is tft.fit_head:
        kwargs.setdefault("optimizer", keras.optimizers.SGD(0.05))
    history = fn(model, x, (x[:12], y[:12]), y=y, cache=cache, **kwargs)
    return model, history


def _assert_same_weights(a, b, atol=1e-5):
    wa, wb = weights_by_path(a), weights_by_path(b)
    assert wa.keys() == wb.keys()
    for path in wa:
        np.testing.assert_allclose(wa[path], wb[path], atol=atol, err_msg=path)


def _assert_same_history(a, b):
    assert a.epoch == b.epoch
    assert a.history.keys() == b.history.keys()
    assert a.params == b.params
    for key in a.history:
        np.testing.assert_allclose(a.history[key], b.history[key], rtol=1e-4, atol=1e-5,
                                   err_msg=key)


def test_phase_one_cached_gives_the_uncached_head():
    plain, plain_history = _train(False, fn=tft.fit_head, epochs=3)
    cached, cached_history = _train("auto", fn=tft.fit_head, epochs=3)
    _assert_same_weights(plain, cached)  # the dropout masks agree too: same seeds
    _assert_same_history(plain_history, cached_history)
    assert cached_history.model is cached and cached.history is cached_history
    assert plain.training_summary[0]["cache"] is None
    info = cached.training_summary[0]["cache"]
    assert info["boundary"] == "pooling:0" and info["storage"] == "memory"
    assert (info["examples"], info["validation_examples"]) == (24, 12)
    assert info["bytes"] == (24 + 12) * 12 * 4  # 12 float32 features per image
    assert plain.training_summary[0].keys() == cached.training_summary[0].keys()


def test_keras_shuffling_is_the_same_on_cached_features():
    """Arrays go to `fit` as arrays on both paths, so from the same random
    state (`tiny_classifier` seeds it) Keras draws the same order each epoch,
    and the same dropout masks."""
    models = [_train(cache, fn=tft.fit_head, epochs=3, shuffle=True, data=labelled(n=40))[0]
              for cache in (False, "auto")]
    _assert_same_weights(*models)


def test_phase_two_cached_freezes_the_same_weights_and_trains_the_same():
    models = {}
    for cache in (False, "auto"):
        model = tiny_classifier()
        x, y = labelled(n=24)
        before = weights_by_path(model)
        tft.fine_tune(model, x, (x, y), y=y, epochs=2, unfreeze_blocks=2, batch_size=8,
                      shuffle=False, verbose=0, cache=cache)
        after = weights_by_path(model)
        changed = {p for p in after if not np.array_equal(after[p], before[p])}
        trainable = {v.path for v in model.trainable_weights}
        models[cache] = (model, changed, trainable)
    (plain, plain_changed, plain_trainable), (cached, cached_changed, cached_trainable) = (
        models[False], models["auto"])
    assert cached.training_summary[-1]["cache"]["boundary"] == "tiny_backbone/block1_pool:0"
    assert plain_trainable == cached_trainable
    assert plain_changed == cached_changed  # everything else stayed bit-identical
    assert not any("block1" in p or "_bn/" in p for p in cached_changed)
    _assert_same_weights(plain, cached)


def test_two_phase_cached_matches_uncached_and_extracts_once():
    plain, plain_history = _train(False, head_epochs=2, fine_tune_epochs=2, unfreeze_blocks=1)
    cached, cached_history = _train("auto", head_epochs=2, fine_tune_epochs=2,
                                    unfreeze_blocks=1)
    _assert_same_weights(plain, cached)
    _assert_same_history(plain_history, cached_history)
    assert cached_history.history["phase"] == [1, 1, 2, 2]
    phase1, phase2 = (s["cache"] for s in cached.training_summary)
    assert phase1["reused"] is False
    assert phase2 == dict(phase2, boundary="tiny_backbone/block2_pool:0", reused=True)
    assert [s.keys() for s in plain.training_summary] == [
        s.keys() for s in cached.training_summary]


def test_dataset_input_is_cached_batch_for_batch():
    x, y = labelled(n=24)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    results = []
    for cache in (False, "auto"):
        model = tiny_classifier()
        history = tft.fit_two_phase(model, ds, ds, head_epochs=2, fine_tune_epochs=1,
                                    unfreeze_blocks=1, verbose=0, cache=cache)
        results.append((model, history))
    (plain, plain_history), (cached, cached_history) = results
    _assert_same_weights(plain, cached)
    _assert_same_history(plain_history, cached_history)
    assert cached.training_summary[0]["cache"]["examples"] == 24


def test_shuffled_dataset_is_cached_once_and_reshuffled_each_epoch():
    x, y = labelled(n=24)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(24, seed=1).batch(6)
    model = tiny_classifier(dropout=0.0)
    history = tft.fit_head(model, ds, ds, epochs=4, learning_rate=0.05, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.training_summary[0]["cache"]["examples"] == 24
    stream = Stream(targets=[y], structure=(y,), batch_size=6, shuffle=True)
    cached = stream_dataset(np.arange(24, dtype="float32")[:, None], stream)
    epochs = [[b[0].numpy()[:, 0] for b in cached] for _ in range(2)]
    assert [len(b) for b in epochs[0]] == [6, 6, 6, 6]
    first, second = np.concatenate(epochs[0]), np.concatenate(epochs[1])
    assert sorted(first) == list(range(24)) and not np.array_equal(first, second)


def test_disk_cache_matches_memory_and_is_deleted(tmp_path):
    seen = []

    class ListCacheDir(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.extend(sorted(os.listdir(tmp_path)))

    memory, _ = _train("memory", head_epochs=2, fine_tune_epochs=1, unfreeze_blocks=1)
    disk, _ = _train("disk", head_epochs=2, fine_tune_epochs=1, unfreeze_blocks=1,
                     cache_dir=str(tmp_path), callbacks=[ListCacheDir()])
    assert seen and all(name.startswith("tftransfer-cache-") for name in seen)
    assert os.listdir(tmp_path) == []
    assert {s["cache"]["storage"] for s in disk.training_summary} == {"disk"}
    _assert_same_weights(memory, disk)


def test_disk_cache_is_deleted_when_training_fails(tmp_path):
    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            assert os.listdir(tmp_path)  # the cache is there while training
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _train("disk", fn=tft.fit_head, epochs=2, cache_dir=str(tmp_path), callbacks=[Boom()])
    assert os.listdir(tmp_path) == []


def test_memory_limit_spills_to_disk_with_the_same_result(tmp_path):
    x, y = labelled(n=24)
    results = []
    for kwargs in ({"cache": False}, {"cache": "auto", "cache_dir": str(tmp_path),
                                      "cache_memory_limit": 0}):
        model = tiny_classifier()
        history = tft.fit_head(model, x, y=y, epochs=2, validation_split=0.25, batch_size=8,
                               shuffle=False, optimizer=keras.optimizers.SGD(0.05), verbose=0,
                               **kwargs)
        results.append((model, history))
    (plain, plain_history), (spilled, spilled_history) = results
    _assert_same_history(plain_history, spilled_history)
    assert spilled.training_summary[0]["cache"]["storage"] == "disk"
    assert os.listdir(tmp_path) == []
    _assert_same_weights(plain, spilled)


def test_stale_entries_are_never_reused():
    x, y = labelled(n=16)
    model = tiny_classifier()
    tft.freeze_backbone(model)
    kwargs = {"batch_size": 8, "verbose": 0}

    def reused(cache, images):
        return cache.plan(model, images, y, fit_kwargs=kwargs).info["reused"]

    with FeatureCache(cache_options("memory")) as cache:
        assert not reused(cache, x)
        assert reused(cache, x)  # the same data and weights
        assert not reused(cache, x[::-1].copy())  # other data
        kernel = model.backbone.get_layer("block1_conv").kernel  # other backbone weights
        kernel.assign(kernel * 2.0)
        assert not reused(cache, x)


def test_changed_backbone_between_phases_is_extracted_again():
    class ChangeFrozenWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            if len(self.model.history.epoch) == 2:  # the end of phase 1
                kernel = self.model.backbone.get_layer("block1_conv").kernel
                kernel.assign(kernel + 0.5)

    plain, _ = _train(False, head_epochs=2, fine_tune_epochs=2, unfreeze_blocks=1,
                      callbacks=[ChangeFrozenWeights()])
    cached, _ = _train("auto", head_epochs=2, fine_tune_epochs=2, unfreeze_blocks=1,
                       callbacks=[ChangeFrozenWeights()])
    assert cached.training_summary[1]["cache"]["reused"] is False
    _assert_same_weights(plain, cached)


def _augmented_classifier():
    backbone = tiny_backbone()
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.RandomFlip("horizontal", seed=1, name="random_flip")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x, training=False))
    model = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x))
    model.backbone = backbone
    return model


def test_augmentation_in_the_model_falls_back_and_logs_why(caplog):
    x, y = labelled(n=16)
    with caplog.at_level(logging.INFO, logger="tftransfer.feature_cache"):
        history = tft.fit_head(_augmented_classifier(), x, y=y, epochs=1, verbose=0,
                               loss="sparse_categorical_crossentropy", metrics=[])
    assert len(history.epoch) == 1
    assert "Not caching features: layer 'random_flip' is random in training" in caplog.text
    with pytest.raises(ValueError, match=r"Cannot train on cached features: layer "
                                         r"'random_flip' is random.*Received: cache='memory'"):
        tft.fit_head(_augmented_classifier(), x, y=y, epochs=1, verbose=0, cache=True,
                     loss="sparse_categorical_crossentropy", metrics=[])


def test_random_dataset_pipeline_falls_back_and_logs_why(caplog):
    x, y = labelled(n=16)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(
        lambda a, b: (tf.image.random_flip_left_right(a), b))
    model = tiny_classifier()
    with caplog.at_level(logging.INFO, logger="tftransfer.feature_cache"):
        tft.fit_head(model, ds, epochs=1, verbose=0)
    assert "random or opaque ops (RandomUniform)" in caplog.text
    assert model.training_summary[0]["cache"] is None
    with caplog.at_level(logging.WARNING, logger="tftransfer.feature_cache"):
        tft.fit_head(model, ds, epochs=1, verbose=0, cache=True)  # the user says: cache it
    assert "one pass of it is cached" in caplog.text
    assert model.training_summary[1]["cache"]["examples"] == 16


def _skip_backbone():
    inputs = keras.Input(IMAGE_SHAPE)
    x1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv")(inputs)
    x2 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block2_conv")(x1)
    x3 = keras.layers.Conv2D(4, 3, padding="same", name="block3_conv")(x2)
    return keras.Model(inputs, keras.layers.Add(name="block3_add")([x3, x1]), name="skip")


def test_skip_connection_across_the_boundary_falls_back_and_logs_why(caplog):
    x, y = labelled(n=16)
    model = tft.build_classifier(_skip_backbone(), num_classes=3)
    with caplog.at_level(logging.INFO, logger="tftransfer.feature_cache"):
        tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                          verbose=0)
    assert "a skip connection crosses the boundary" in caplog.text
    assert "'skip/block2_conv:0', 'skip/block1_conv:0'" in caplog.text
    assert model.training_summary[0]["cache"] is not None  # phase 1 is cached
    assert model.training_summary[1]["cache"] is None
    # Two blocks up, the skip connection lies inside the trained part: cached.
    tft.fine_tune(model, x, y=y, epochs=1, unfreeze_blocks=2, verbose=0)
    assert model.training_summary[2]["cache"]["boundary"] == "skip/block1_conv:0"


def test_callbacks_see_the_full_model_and_can_stop_training():
    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.models = set()

        def on_train_batch_end(self, batch, logs=None):
            self.models.add(id(self.model))

    histories = {}
    for cache in (False, "auto"):
        record = Record()
        stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=10.0, patience=1)
        model, histories[cache] = _train(cache, fn=tft.fit_head, epochs=6,
                                         callbacks=[record, stop])
        assert record.models == {id(model)}
    assert histories["auto"].epoch == histories[False].epoch == [0, 1]


def test_model_is_left_usable_and_unchanged_in_structure(tmp_path):
    model = tiny_classifier()
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model._flatten_layers()}
    x, y = labelled(n=16)
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      batch_size=8, verbose=0)
    assert {layer.name: len(layer._inbound_nodes) for layer in model._flatten_layers()} == nodes
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # the compile state still works
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_distribution_strategy_on_the_cached_path():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tft.build_classifier(tiny_backbone(), num_classes=3)
    x, y = labelled()
    tft.fit_head(model, x, y=y, epochs=1, batch_size=8, verbose=0)
    assert model.training_summary[0]["cache"] is not None
    assert all("Mirrored" in type(v.value).__name__ or isinstance(
        v.value, tf.distribute.DistributedValues) for v in model.optimizer.variables)


@pytest.mark.parametrize("name, boundary", [
    ("mobilenet_v2", "mobilenet_v2/block_14_add:0"),
    ("efficientnet_b0", "efficientnet_b0/block5c_add:0"),
])
def test_real_backbones_are_cut_below_the_top_two_blocks(name, boundary):
    model = tft.build_classifier(name, num_classes=2, input_shape=(32, 32, 3), weights=None)
    assert plan_cut(model).name == "pooling:0"
    tft.unfreeze_top_blocks(model, 2)
    assert plan_cut(model).name == boundary


@pytest.mark.parametrize("kwargs, message", [
    ({"cache": "sometimes"}, r"`cache` must be 'auto'.*Received: cache='sometimes'"),
    ({"cache": 1.5}, r"Received: cache=1.5"),
    ({"cache_dir": "/no/such/dir"}, r"`cache_dir` must be an existing directory.*"
                                    r"Received: cache_dir='/no/such/dir'"),
    ({"cache_memory_limit": -1}, r"`cache_memory_limit` must be a number of bytes >= 0.*"
                                 r"Received: cache_memory_limit=-1"),
])
def test_bad_cache_options(kwargs, message):
    x, y = labelled(n=8)
    for fn in (tft.fit_head, tft.fine_tune, tft.fit_two_phase):
        with pytest.raises(ValueError, match=message):
            fn(tiny_classifier(), x, y=y, verbose=0, **kwargs)


def test_generator_dataset_is_cached_only_when_asked(caplog):
    def generator():
        for start in (0, 8):
            yield x[start:start + 8], y[start:start + 8]

    x, y = labelled(n=16)
    data = tf.data.Dataset.from_generator(generator, output_signature=(
        tf.TensorSpec((None, *IMAGE_SHAPE)), tf.TensorSpec((None,), tf.int32)))
    model = tiny_classifier()
    with caplog.at_level(logging.INFO, logger="tftransfer.feature_cache"):
        tft.fit_head(model, data, epochs=1, verbose=0)  # "auto": its length is unknown
    assert "the training dataset's length is unknown" in caplog.text
    assert model.training_summary[0]["cache"] is None
    tft.fit_head(model, data, epochs=2, verbose=0, cache="disk")
    assert model.training_summary[1]["cache"]["examples"] == 16


def test_forced_cache_with_uncacheable_data_says_why():
    x, y = labelled(n=8)
    sequence = keras.utils.PyDataset  # not an array or a tf.data.Dataset

    class Batches(sequence):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return x, y

    with pytest.raises(ValueError, match=r"Cannot train on cached features: the training data "
                                         r"is a Batches; only arrays and finite tf.data."
                                         r"Datasets are cached.*Received: cache='memory'"):
        tft.fit_head(tiny_classifier(), Batches(), epochs=1, verbose=0, cache=True)


def _conv_bn_classifier():
    """Convolutions with and without a bias and a depthwise one, each before a
    BatchNormalization with non-trivial statistics, after a Normalization
    layer (a scalar `count` variable among its weights)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Normalization(mean=100.0, variance=900.0, name="normalize")(inputs)
    x = keras.layers.Conv2D(6, 3, use_bias=False, name="conv")(x)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = keras.layers.Conv2D(5, 1, name="biased_conv")(x)  # with a bias
    x = keras.layers.BatchNormalization(epsilon=1e-5, center=False, name="biased_bn")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pooling")(x))
    rng = np.random.default_rng(0)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 1, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0, 1, channels))
    outputs = keras.layers.Dense(3, name="predictions")(backbone(inputs, training=False))
    model = keras.Model(inputs, outputs)
    model.backbone = backbone
    model.training_summary = []
    return model


def test_extractor_folds_batchnorm_into_convolutions_and_matches_predict(caplog):
    x, _ = labelled(n=16)
    model = _conv_bn_classifier()
    tft.freeze_backbone(model)
    cut = plan_cut(model)
    folds = batchnorm_folds(cut.bottom, [cut.boundary])
    assert sorted(step.op.name for step in folds.values()) == [
        "biased_bn", "conv_bn", "depthwise_bn"]
    with caplog.at_level(logging.INFO, logger="tftransfer.feature_cache"):
        forward = frozen_forward(
            cut.bottom, cut.graph.inputs[0], [cut.boundary],
            tf.TensorSpec((None, *IMAGE_SHAPE), "float32"))
    assert "on variables" not in caplog.text  # the constants path, not the fallback
    expected = model.backbone.predict(x, verbose=0)
    np.testing.assert_allclose(forward(tf.constant(x))[0].numpy(), expected, rtol=1e-4,
                               atol=1e-5)


def test_batchnorm_read_elsewhere_is_not_folded():
    inputs = keras.Input(IMAGE_SHAPE)
    conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(conv)
    x = keras.layers.Concatenate()([x, conv])  # the convolution's output is read twice
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pooling")(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(backbone(inputs, training=False)))
    model.backbone = backbone
    tft.freeze_backbone(model)
    cut = plan_cut(model)
    assert batchnorm_folds(cut.bottom, [cut.boundary]) == {}


def test_validation_arrays_are_served_in_keras_batches():
    x = np.arange(10, dtype="float64").reshape(5, 2)
    y = np.arange(5)
    batches = list(in_order_dataset((x, y), 2).as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == y.dtype
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    assert in_order_dataset((x, np.array(["a"] * 5, dtype=object)), 2) is None


def test_backbone_called_on_its_own_input_tensor_is_cached_exactly():
    """`_conv_bn_classifier` calls its backbone on the backbone's own input
    tensor (flattening such a graph once looped forever); its cached head
    training, on folded BatchNormalization, gives the uncached weights."""
    models = [_train(cache, fn=tft.fit_head, model=_conv_bn_classifier(), epochs=2,
                     loss="sparse_categorical_crossentropy", metrics=[])[0]
              for cache in (False, "auto")]
    assert models[0].training_summary[0]["cache"] is None
    assert models[1].training_summary[0]["cache"]["boundary"].endswith("pooling:0")
    _assert_same_weights(*models)


def test_plan_says_whether_and_why_a_phase_is_cached():
    x, y = labelled(n=16)
    model = tiny_classifier()
    tft.freeze_backbone(model)
    kwargs = {"batch_size": 8, "verbose": 0}
    with FeatureCache(cache_options(False)) as cache:
        plan = cache.plan(model, x, y, fit_kwargs=kwargs)
        assert not plan.cached and plan.reason == "cache=False" and plan.info is None
    random = tf.data.Dataset.from_tensor_slices((x, y)).map(
        lambda a, b: (tf.image.random_flip_left_right(a), b)).batch(8)
    with FeatureCache(cache_options("auto")) as cache:
        plan = cache.plan(model, x, y, fit_kwargs=kwargs)
        assert plan.cached and plan.reason is None and plan.info["boundary"] == "pooling:0"
        history = plan.fit(epochs=2, initial_epoch=0)
        assert history.epoch == [0, 1]
        plan = cache.plan(model, random, fit_kwargs={"verbose": 0})
        assert not plan.cached and "random or opaque ops" in plan.reason
    with FeatureCache(cache_options("memory")) as cache:
        with pytest.raises(ValueError, match=r"Cannot train on cached features: "
                                             r"`steps_per_epoch` is set.*Received: cache='memory'"):
            cache.plan(model, x, y, fit_kwargs={"steps_per_epoch": 1})
