import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from helpers import labelled
from helpers import tiny_backbone
from helpers import tiny_classifier
from helpers import weights_by_path


def _bn_stats(model):
    return {
        v.path: np.array(v.numpy())
        for layer in model.backbone._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.weights
    }


def _block_of(path):
    return path.split("/")[-2].split("_")[0]  # "block2_conv/kernel" -> "block2"


def test_freeze_test_phase_one_keeps_backbone_and_batchnorm_bit_identical():
    model = tiny_classifier()
    x, y = labelled()
    backbone_before = weights_by_path(model.backbone)
    head_before = weights_by_path(model.head.output_dense)
    tft.fit_head(model, x, y=y, epochs=2, batch_size=8, verbose=0)
    for path, value in weights_by_path(model.backbone).items():
        np.testing.assert_array_equal(value, backbone_before[path], err_msg=path)
    assert any(not np.array_equal(v, head_before[p])
               for p, v in weights_by_path(model.head.output_dense).items())


def test_phase_two_unfreezes_exactly_the_top_blocks_and_leaves_batchnorm_untouched():
    model = tiny_classifier()
    x, y = labelled()
    tft.fit_head(model, x, y=y, epochs=1, batch_size=8, verbose=0)
    bn_before = _bn_stats(model)
    before = weights_by_path(model.backbone)
    tft.fine_tune(model, x, y=y, epochs=2, unfreeze_blocks=2, batch_size=8, verbose=0)
    after = weights_by_path(model.backbone)
    for path, value in _bn_stats(model).items():  # moving stats and gamma/beta
        np.testing.assert_array_equal(value, bn_before[path], err_msg=path)
    changed = {_block_of(p) for p in after if not np.array_equal(after[p], before[p])}
    assert changed == {"block2", "block3"}
    trainable = {_block_of(v.path) for v in model.backbone.trainable_weights}
    assert trainable == {"block2", "block3"}
    assert not any("_bn" in v.path for v in model.backbone.trainable_weights)


def test_plain_keras_recipe_lets_batchnorm_drift():
    """The trap the classifier guards against (keras#20285): in Keras 3,
    ``backbone(x, training=False)`` in a functional graph does not stop a
    trainable BatchNormalization from updating its statistics in `fit`."""
    backbone = tiny_backbone()
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    plain = keras.Model(inputs, keras.layers.Dense(3)(features))
    plain.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = weights_by_path(backbone)
    plain.fit(*labelled(), epochs=1, batch_size=8, verbose=0)
    moving = [p for p in before if "moving" in p]
    assert any(not np.array_equal(weights_by_path(backbone)[p], before[p]) for p in moving)


def test_classifier_keeps_the_backbone_in_inference_mode_inside_fit():
    model = tiny_classifier()
    model.backbone.trainable = True  # even fully trainable, without freeze_batchnorm
    model.compile()
    x, y = labelled()
    before = _bn_stats(model)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    moving = [p for p in before if "moving" in p]
    for path in moving:
        np.testing.assert_array_equal(_bn_stats(model)[path], before[path], err_msg=path)


def test_backbone_dropout_is_off_during_training():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    x = keras.layers.Dropout(0.5, name="block1_dropout")(x)
    model = tft.build_classifier(keras.Model(inputs, x), num_classes=2, dropout=0.0)
    images = labelled()[0][:4]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images, training=True)),
                               keras.ops.convert_to_numpy(model(images, training=False)),
                               rtol=1e-6)


def test_unfreeze_top_blocks_returns_block_names():
    model = tiny_classifier()
    assert tft.unfreeze_top_blocks(model, 1) == ["block3"]
    assert {l.name for l in model.backbone.layers if l.trainable and l.weights} == {"block3_conv"}
    assert tft.unfreeze_top_blocks(model, "all") == ["block1", "block2", "block3"]


def test_unfreeze_from_layer():
    model = tiny_classifier()
    assert tft.unfreeze_top_blocks(model, from_layer="block2_conv") == ["block2_conv"]
    trainable = {l.name for l in model.backbone.layers if l.trainable and l.weights}
    assert trainable == {"block2_conv", "block3_conv"}


def test_unfreeze_too_many_blocks_fails_before_training():
    model = tiny_classifier()
    x, y = labelled()
    before = weights_by_path(model)
    with pytest.raises(ValueError, match=r"Cannot unfreeze 5 blocks: backbone 'tiny_backbone' has 3 "
                                         r"\(block1, block2, block3\).*Received: num_blocks=5"):
        tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=5,
                          verbose=0)
    for path, value in weights_by_path(model).items():  # phase 1 never ran
        np.testing.assert_array_equal(value, before[path])


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5])
def test_bad_unfreeze_request(bad):
    with pytest.raises(ValueError, match=rf"`num_blocks` must be a positive integer or 'all'"):
        tft.unfreeze_top_blocks(tiny_classifier(), bad)


def test_unknown_from_layer_lists_candidates():
    with pytest.raises(ValueError, match=r"no layer named 'block9_conv'.*blocks start at: .*block1.*"
                                         r"Received: from_layer='block9_conv'"):
        tft.unfreeze_top_blocks(tiny_classifier(), from_layer="block9_conv")


def test_both_num_blocks_and_from_layer():
    with pytest.raises(ValueError, match=r"Pass exactly one of `num_blocks`"):
        tft.unfreeze_top_blocks(tiny_classifier(), 1, from_layer="block2_conv")


def test_training_needs_a_tftransfer_classifier():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(TypeError, match=r"`model` must be a classifier with a `.backbone`"):
        tft.fit_head(plain, np.zeros((2, 4)), y=np.zeros(2), epochs=1)


def test_epochs_in_fit_kwargs_is_refused():
    with pytest.raises(TypeError, match=r"sets `epochs` itself.*head_epochs"):
        tft.fit_two_phase(tiny_classifier(), *labelled(), epochs=3)


def test_negative_epochs():
    x, y = labelled()
    with pytest.raises(ValueError, match=r"`head_epochs` must be a non-negative integer. Received: head_epochs=-1"):
        tft.fit_two_phase(tiny_classifier(), x, y=y, head_epochs=-1)


def test_two_phase_history_callbacks_and_learning_rates():
    model = tiny_classifier()
    x, y = labelled()
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    history = tft.fit_two_phase(
        model, x, (x, y), y=y, head_epochs=2, fine_tune_epochs=3, unfreeze_blocks=1,
        learning_rate=2e-3, batch_size=8, callbacks=[callback], verbose=0,
    )
    assert history.epoch == [0, 1, 2, 3, 4] and seen == [0, 1, 2, 3, 4]
    assert history.history["phase"] == [1, 1, 2, 2, 2]
    assert len(history.history["val_accuracy"]) == 5
    assert history.model is model
    summary = model.training_summary
    assert [s["phase"] for s in summary] == [1, 2]
    assert summary[0]["learning_rate"] == 2e-3
    assert summary[1]["learning_rate"] == pytest.approx(2e-4)  # a tenth of phase 1's
    assert summary[1]["unfrozen_blocks"] == ["block3"]
    # phase 2 warms up from 0: 3 epochs x 3 steps, 10% warmup -> 1 warmup step
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == 0.0
    assert float(schedule(1)) == pytest.approx(2e-4)


def test_fine_tune_alone_defaults_to_a_tenth_of_the_current_rate():
    model = tiny_classifier()
    x, y = labelled()
    tft.fit_head(model, x, y=y, epochs=1, learning_rate=5e-3, verbose=0)
    tft.fine_tune(model, x, y=y, epochs=1, unfreeze_blocks=1, verbose=0)
    assert model.training_summary[-1]["learning_rate"] == pytest.approx(5e-4)


def test_dataset_input_and_learning():
    x, y = labelled(n=60)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(60, seed=0).batch(10)
    model = tiny_classifier(dropout=0.0)
    history = tft.fit_two_phase(model, ds, ds, head_epochs=8, fine_tune_epochs=2,
                                unfreeze_blocks=1, learning_rate=1e-2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_warmup_schedule_shape():
    schedule = tft.warmup_cosine_schedule(1.0, total_steps=10, warmup=0.2)
    values = [float(schedule(s)) for s in range(11)]
    assert values[0] == 0.0 and values[2] == pytest.approx(1.0)
    assert values[10] == pytest.approx(0.0, abs=1e-6)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    with pytest.raises(ValueError, match=r"`warmup` must be in \[0, 1\). Received: warmup=1.0"):
        tft.warmup_cosine_schedule(1.0, total_steps=10, warmup=1.0)


def test_distribution_strategy_scope_is_used():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tft.build_classifier(tiny_backbone(), num_classes=3)
    x, y = labelled()
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      batch_size=8, verbose=0)
    assert model.distribute_strategy is strategy
    for variable in model.optimizer.variables:
        assert isinstance(variable.value, tf.distribute.DistributedValues) or \
            "Mirrored" in type(variable.value).__name__


# -- issue 4: early stopping, NaN, class weights, learning rates, logs, dtype


def test_early_stopping_is_on_by_default_and_keeps_the_best_epoch():
    model = tiny_classifier()
    x, y = labelled()
    # A learning rate so high that the validation loss gets worse after epoch 1.
    history = tft.fit_head(model, x, (x, y), y=y, epochs=8, learning_rate=5.0,
                           early_stopping=2, batch_size=8, verbose=0)
    val = history.history["val_loss"]
    assert len(val) < 8  # stopped early
    best = int(np.argmin(val))
    assert len(val) == best + 3  # patience 2
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0, return_dict=True)["loss"],
                               val[best], rtol=1e-4)
    unstopped = tft.fit_head(tiny_classifier(), x, (x, y), y=y, epochs=8, learning_rate=5.0,
                             early_stopping=False, batch_size=8, verbose=0)
    assert len(unstopped.epoch) == 8


def test_early_stopping_is_checked():
    model = tiny_classifier()
    x, y = labelled()
    with pytest.raises(ValueError, match="early_stopping='yes'"):
        tft.fit_head(model, x, y=y, early_stopping="yes")


def test_nan_loss_stops_with_a_lower_learning_rate_suggested():
    x, y = labelled()
    broken = keras.Variable(0.0, trainable=False)  # set by a callback: the loss turns inf
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(y_true, y_pred):
        return cross_entropy(y_true, y_pred) - keras.ops.log(1.0 - broken)

    class BreakAt(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_epoch_begin(self, epoch, logs=None):
            broken.assign(1.0 if epoch == self.epoch else 0.0)

    model = tiny_classifier()
    with pytest.raises(tft.NonFiniteLossError,
                       match=r"(?s)Phase 1 stopped: the loss became inf at epoch 1, batch 1\..*"
                             r"try `learning_rate=0.0001` \(a tenth of 0.001\).*NaN or infinite "
                             r"values.*not finite now"):
        tft.fit_head(model, x, y=y, epochs=2, loss=loss, batch_size=8, verbose=0,
                     callbacks=[BreakAt(0)])
    model = tiny_classifier()
    with pytest.raises(tft.NonFiniteLossError,
                       match=r"(?s)Phase 2 stopped.*epoch 4, batch 1.*"
                             r"`fine_tune_learning_rate=1e-05`.*set back to its best epoch"):
        tft.fit_two_phase(model, x, (x, y), y=y, head_epochs=1, fine_tune_epochs=3,
                          unfreeze_blocks=1, loss=loss, batch_size=8, verbose=0,
                          callbacks=[BreakAt(3)])
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)


def test_balanced_class_weight_from_arrays_and_datasets():
    x, y = labelled(30, num_classes=2)
    y = np.array([0] * 24 + [1] * 6, "int32")
    expected = tft.compute_class_weight(y)
    seen = []
    original = keras.Model.fit

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("class_weight"))
        return original(self, *args, **kwargs)

    keras.Model.fit = spy
    try:
        model = tiny_classifier(num_classes=2)
        tft.fit_head(model, x, y=y, epochs=1, class_weight="balanced", batch_size=8, verbose=0,
                     cache=False)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        tft.fit_two_phase(tiny_classifier(num_classes=2), dataset, head_epochs=1,
                          fine_tune_epochs=1, unfreeze_blocks=1, class_weight="balanced",
                          verbose=0, cache=False)
    finally:
        keras.Model.fit = original
    assert seen == [expected] * 3 and expected == {0: 0.625, 1: 2.5}
    with pytest.raises(ValueError, match="class_weight='inverse'"):
        tft.fit_head(tiny_classifier(), x, y=y, class_weight="inverse")


def test_block_learning_rate_decay_slows_deeper_blocks():
    x, y = labelled()

    def step_sizes(decay):
        model = tiny_classifier()
        tft.fit_head(model, x, y=y, epochs=1, batch_size=8, verbose=0)
        before = weights_by_path(model)
        history = tft.fine_tune(model, x, y=y, epochs=1, unfreeze_blocks=3, learning_rate=1e-2,
                                warmup=0.0, block_learning_rate_decay=decay, batch_size=24,
                                early_stopping=False, shuffle=False, verbose=0)
        after = weights_by_path(model)
        sizes = {p: float(np.abs(after[p] - before[p]).max()) for p in after
                 if p.endswith("_conv/kernel")}
        return {_block_of(p): v for p, v in sizes.items()}, model, history

    sizes, model, _ = step_sizes(0.1)
    # One Adam step moves each weight by about its learning rate.
    np.testing.assert_allclose(sizes["block3"], 1e-2, rtol=0.05)
    np.testing.assert_allclose(sizes["block2"], 1e-3, rtol=0.05)
    np.testing.assert_allclose(sizes["block1"], 1e-4, rtol=0.05)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert model.training_summary[-1]["block_learning_rate_decay"] == 0.1
    plain, _, _ = step_sizes(None)
    np.testing.assert_allclose(plain["block1"], 1e-2, rtol=0.05)
    with pytest.raises(ValueError, match="block_learning_rate_decay=2"):
        tft.fine_tune(model, x, y=y, block_learning_rate_decay=2)
    with pytest.raises(ValueError, match="needs\\s+`unfreeze_blocks`"):
        tft.fine_tune(model, x, y=y, block_learning_rate_decay=0.5, from_layer="block2_conv")


def test_tensorboard_logs_of_both_phases(tmp_path):
    model = tiny_classifier()
    x, y = labelled()
    tft.fit_two_phase(model, x, (x, y), y=y, head_epochs=2, fine_tune_epochs=1,
                      unfreeze_blocks=1, batch_size=8, verbose=0, log_dir=tmp_path)
    events = {
        str(path.relative_to(tmp_path).parent)
        for path in tmp_path.rglob("events.out.tfevents.*")
    }
    assert events == {"train", "validation"}
    steps = []
    for path in (tmp_path / "validation").glob("events.out.tfevents.*"):
        for record in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [record.step for value in record.summary.value
                      if value.tag == "epoch_loss"]
    assert sorted(steps) == [0, 1, 2]  # epochs numbered on across the phases


def test_mixed_precision_on_request_only_for_that_model():
    x, y = labelled()
    model = tft.build_classifier("mobilenet_v3_small", num_classes=3, input_shape=(32, 32, 3),
                                 weights=None, dtype="mixed_float16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    conv = model.backbone.get_layer("conv")
    assert conv.compute_dtype == "float16" and conv.kernel.dtype == "float32"
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      batch_size=8, verbose=0)
    assert model.predict(x[:2], verbose=0).dtype == np.float32
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    with pytest.raises(ValueError, match="dtype='float8'"):
        tiny_classifier(dtype="float8")
    assert keras.config.dtype_policy().name == "float32"


def test_fit_two_phase_optimizer_is_copied_for_each_phase_with_its_rate():
    x, y = labelled(n=16)
    model = tiny_classifier()
    template = keras.optimizers.AdamW(learning_rate=0.5, weight_decay=3e-3, beta_1=0.8)
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      learning_rate=2e-3, optimizer=template, batch_size=8, verbose=0)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer is not template
    assert optimizer.weight_decay == 3e-3 and optimizer.beta_1 == pytest.approx(0.8)
    assert isinstance(optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert [s["learning_rate"] for s in model.training_summary] == [2e-3, pytest.approx(2e-4)]
    assert not template.built  # the template itself never trains


def test_fit_two_phase_optimizer_with_block_decay_makes_groups_of_its_class():
    x, y = labelled(n=16)
    model = tiny_classifier()
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=2,
                      block_learning_rate_decay=0.1, optimizer="sgd", batch_size=8, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert {type(group) for group in model.optimizer.optimizers} == {keras.optimizers.SGD}
    assert len(model.optimizer.optimizers) == 2  # factors 0.1 (block2) and 1 (block3, head)


def test_bad_optimizer_is_refused_before_training():
    model = tiny_classifier()
    x, y = labelled(n=8)
    with pytest.raises(ValueError, match=r"`optimizer` must be a Keras optimizer.*"
                                         r"Received: optimizer='no-such'"):
        tft.fit_two_phase(model, x, y=y, optimizer="no-such", verbose=0)
    assert model.training_summary == []


def test_the_schedule_counts_the_steps_validation_split_leaves():
    # 16 examples, a quarter held out, batches of 4: 3 steps an epoch, not 4.
    x, y = labelled(n=16)
    model = tiny_classifier()
    tft.fine_tune(model, x, y=y, epochs=2, unfreeze_blocks=1, warmup=0.0, batch_size=4,
                  validation_split=0.25, early_stopping=False, verbose=0)
    assert model.optimizer._learning_rate.decay_steps == 2 * 3


def test_label_smoothing_on_integer_labels():
    x, y = labelled(n=16)
    model = tiny_classifier()
    tft.fit_head(model, x, y=y, epochs=1, label_smoothing=0.2, batch_size=8, verbose=0)
    loss = model.loss
    assert isinstance(loss, tft.classifiers.losses.SparseCategoricalCrossentropyWithSmoothing)
    assert loss.label_smoothing == 0.2
    logits = np.array([[3.0, 0.0, -1.0]], "float32")
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)(
        np.array([[1.0, 0.0, 0.0]]), logits)
    np.testing.assert_allclose(float(loss(np.array([0]), logits)), float(expected), rtol=1e-6)
    with pytest.raises(ValueError, match=r"`label_smoothing` applies to loss='auto'"):
        tft.fit_head(model, x, y=y, epochs=1, label_smoothing=0.1, loss="mse", verbose=0)
    with pytest.raises(ValueError, match=r"`label_smoothing` must be a number in \[0, 1\).*"
                                         r"Received: label_smoothing=1.5"):
        tft.fit_head(model, x, y=y, epochs=1, label_smoothing=1.5, verbose=0)


def test_no_fine_tune_epochs_asks_nothing_of_the_blocks():
    """A backbone with one block trains its head with fine_tune_epochs=0,
    whatever unfreeze_blocks says (the default asks for 2)."""
    x, y = labelled(n=8)
    model = tft.build_classifier(tiny_backbone(blocks=1), num_classes=3)
    history = tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=0, verbose=0)
    assert history.history["phase"] == [1]
    with pytest.raises(ValueError, match=r"Cannot unfreeze 2 blocks: backbone .* has 1"):
        tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, verbose=0)
