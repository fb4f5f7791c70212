"""Discriminative learning rates with Keras's MultiOptimizer: step sizes per
block, schedules, saving, tf.distribute, mixed precision, callbacks, a shared
optimizer, and the deprecated hand-written optimizers."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tftransfer.training.optimizers import DiscriminativeAdam
from tftransfer.training.optimizers import DiscriminativeAdamW
from tftransfer.training.optimizers import ScaledSchedule
from tftransfer.training.optimizers import block_multipliers
from tftransfer.training.optimizers import discriminative_optimizer

LR = 0.01
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "v0.1.0", "image_classifier.keras")


def blocks_model(seed=0, names=("block1_dense", "block2_dense", "block3_dense")):
    """Three Dense "blocks" and a head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="x")
    h = inputs
    for name in names:
        h = keras.layers.Dense(4, activation="tanh", name=name)(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h))


def multipliers(model, decay=0.1):
    blocks = {f"block{b}": [model.get_layer(f"block{b}_dense")] for b in (1, 2, 3)}
    return block_multipliers(blocks, ["block1", "block2", "block3"], decay=decay)


EXPECTED = {"block1_dense": 0.01, "block2_dense": 0.1, "block3_dense": 1.0, "head": 1.0}


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def snapshot(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def moves(model, before):
    """{layer name: (smallest, largest) absolute change of its weights}."""
    result = {}
    for layer in model.layers:
        if layer.weights:
            delta = np.concatenate([np.abs(w.numpy() - before[w.path]).ravel()
                                    for w in layer.weights])
            result[layer.name] = (float(delta.min()), float(delta.max()))
    return result


def ones_like(variables):
    return [np.ones(v.shape, "float32") for v in variables]


def assert_steps(model, before, expected, lr=LR, rtol=1e-3, exact=True):
    """Each layer moved by lr * factor (every weight if `exact`, else the largest)."""
    got = moves(model, before)
    for name, factor in expected.items():
        low, high = got[name]
        np.testing.assert_allclose(high, lr * factor, rtol=rtol, err_msg=name)
        if exact:
            np.testing.assert_allclose(low, lr * factor, rtol=rtol, err_msg=name)


def inner_rates(optimizer):
    return {o.name: float(keras.ops.convert_to_numpy(o.learning_rate)) for o in optimizer.optimizers}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_one_step_moves_each_block_by_its_factor(name):
    model = blocks_model()
    factors = multipliers(model)
    assert sorted(set(factors.values())) == [0.1**2, 0.1, 1.0]
    opt = discriminative_optimizer(LR, factors, optimizer=name)
    assert isinstance(opt, keras.optimizers.MultiOptimizer)
    assert [o.name for o in opt.optimizers] == [f"{name}_x0.01", f"{name}_x0.1", f"{name}_x1"]
    before = snapshot(model)
    opt.apply(ones_like(model.trainable_variables), model.trainable_variables)
    # SGD moves by lr * gradient; Adam's first step by lr * g / (|g| + epsilon);
    # AdamW's weight decay adds lr * 0.004 * |w| (< 0.4 %).
    assert_steps(model, before, EXPECTED, rtol=1e-2 if name == "adamw" else 1e-3)


def test_factor_zero_leaves_weights_untouched():
    model = blocks_model()
    frozen = {w.path: 0.0 for w in model.get_layer("block1_dense").weights}
    model.compile(optimizer=discriminative_optimizer(LR, frozen), loss="mse")
    before = snapshot(model)
    model.fit(*data(), batch_size=8, epochs=1, shuffle=False, verbose=0)
    got = moves(model, before)
    assert got["block1_dense"] == (0.0, 0.0)
    assert min(got[name][1] for name in ("block2_dense", "block3_dense", "head")) > LR / 2


def test_paths_with_regex_characters_match_exactly():
    # Unescaped, "blk.1/kernel" would also match "blkx1/kernel".
    model = blocks_model(names=("blk.1", "blkx1", "b(2)+"))
    factors = {w.path: 0.1 for w in model.get_layer("blk.1").weights}
    factors.update({w.path: 0.5 for w in model.get_layer("b(2)+").weights})
    opt = discriminative_optimizer(LR, factors, optimizer="sgd")
    before = snapshot(model)
    opt.apply(ones_like(model.trainable_variables), model.trainable_variables)
    assert_steps(model, before, {"blk.1": 0.1, "blkx1": 1.0, "b(2)+": 0.5, "head": 1.0})
    assert len(opt.optimizers) == 3


def test_schedule_is_followed_per_group():
    # What tftransfer's warmup_cosine_schedule builds: warmup, then cosine decay.
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=6, warmup_target=LR,
                                                      warmup_steps=3)
    model = blocks_model()
    opt = discriminative_optimizer(schedule, multipliers(model), optimizer="sgd")
    assert [type(o._learning_rate) for o in opt.optimizers] == [ScaledSchedule, ScaledSchedule,
                                                                  keras.optimizers.schedules.CosineDecay]
    for step in range(9):
        rate = float(schedule(step))
        assert inner_rates(opt) == pytest.approx(
            {"sgd_x0.01": 0.01 * rate, "sgd_x0.1": 0.1 * rate, "sgd_x1": rate}, rel=1e-5)
        before = snapshot(model)
        opt.apply(ones_like(model.trainable_variables), model.trainable_variables)
        if rate > 0:
            assert_steps(model, before, EXPECTED, lr=rate, rtol=1e-2)
        else:
            assert all(high == 0 for _, high in moves(model, before).values())
    assert int(opt.iterations) == 9


@pytest.mark.parametrize("rate", ["float", "schedule"])
def test_save_and_load_restore_the_groups_and_their_state(tmp_path, rate):
    learning_rate = LR if rate == "float" else keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=20, warmup_target=LR, warmup_steps=4)
    x, y = data()
    model = blocks_model()
    model.compile(optimizer=discriminative_optimizer(learning_rate, multipliers(model)),
                  loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    path = str(tmp_path / "x.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    opt, reopt = model.optimizer, loaded.optimizer
    assert type(reopt) is keras.optimizers.MultiOptimizer
    configs = [o.get_config() for o in opt.optimizers]
    assert [o.get_config() for o in reopt.optimizers] == configs
    copy = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert [o.get_config() for o in copy.optimizers] == configs
    assert inner_rates(reopt) == inner_rates(opt)
    assert [v.path for v in reopt.variables] == [v.path for v in opt.variables]
    for saved, restored in zip(opt.variables, reopt.variables):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)
    assert int(reopt.iterations) == 8 and {int(o.iterations) for o in reopt.optimizers} == {8}
    # Both continue the same way only if Adam's moments were restored.
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.path)


def test_works_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = blocks_model()
        opt = discriminative_optimizer(LR, multipliers(model))
        model.compile(optimizer=opt, loss="mse")
    before = snapshot(model)
    model.fit(*data(), batch_size=32, epochs=1, verbose=0)
    assert int(opt.iterations.numpy()) == 1
    assert all(isinstance(v.value, tf.distribute.DistributedValues)
               for o in opt.optimizers for v in o.variables)
    # Adam's first step moves each weight by about lr * factor (|gradient| >> epsilon).
    assert_steps(model, before, EXPECTED, rtol=1e-2, exact=False)


def test_mixed_precision_wraps_it_in_a_loss_scale_optimizer():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = blocks_model()
    finally:
        keras.config.set_dtype_policy(previous)
    opt = discriminative_optimizer(LR, multipliers(model))
    model.compile(optimizer=opt, loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is opt
    assert not hasattr(model.optimizer, "learning_rate")
    before = snapshot(model)
    model.fit(*data(), batch_size=32, epochs=1, verbose=0)
    assert_steps(model, before, EXPECTED, rtol=1e-2, exact=False)
    # Keras 3.15's LR callbacks find the groups only on the model's optimizer.
    with pytest.raises(AttributeError, match="MultiOptimizer"):
        model.fit(*data(), epochs=1, verbose=0, callbacks=[
            keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0)])


def test_learning_rate_attribute_and_learning_rate_callbacks(tmp_path):
    model = blocks_model()
    opt = discriminative_optimizer(LR, multipliers(model))
    assert not hasattr(opt, "learning_rate")
    with pytest.raises(AttributeError, match="Learning rate cannot be accessed on a MultiOptimizer"):
        opt.learning_rate  # noqa: B018
    assert inner_rates(opt) == pytest.approx({"adam_x0.01": 1e-4, "adam_x0.1": 1e-3, "adam_x1": LR})
    model.compile(optimizer=opt, loss="mse")
    x, y = data()

    # ReduceLROnPlateau: every group's rate times `factor`; the ratios stay.
    never_better = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1e9,
                                                     factor=0.5)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[never_better])
    # (logged at the end of each epoch, before it reduces them after epochs 2 and 3)
    assert history.history["learning_rate_adam_x0.1"] == pytest.approx([1e-3, 1e-3, 5e-4])
    assert history.history["learning_rate_adam_x1"] == pytest.approx([LR, LR, LR / 2])
    assert inner_rates(opt) == pytest.approx({"adam_x0.01": 2.5e-5, "adam_x0.1": 2.5e-4,
                                              "adam_x1": 2.5e-3})

    # LearningRateScheduler calls the schedule once per group, with its rate...
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[halve])
    assert inner_rates(opt) == pytest.approx({"adam_x0.01": 1.25e-5, "adam_x0.1": 1.25e-4,
                                              "adam_x1": 1.25e-3})
    # ... so a schedule of the epoch only gives every group the same rate.
    constant = keras.callbacks.LearningRateScheduler(lambda epoch: 1e-3)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[constant])
    assert list(inner_rates(opt).values()) == pytest.approx([1e-3] * 3)

    # TensorBoard logs each group's rate.
    model.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.TensorBoard(tmp_path)])
    tags = {value.tag for path in (tmp_path / "train").glob("events.out.tfevents.*")
            for record in tf.compat.v1.train.summary_iterator(str(path))
            for value in record.summary.value}
    assert {"epoch_learning_rate_adam_x0.01", "epoch_learning_rate_adam_x1"} <= tags


@pytest.mark.parametrize("build_first", [False, True])
def test_second_model_over_the_same_layers_shares_it(build_first):
    # As the feature cache: the frozen bottom (block1) is not in the top model.
    full = blocks_model()
    full.get_layer("block1_dense").trainable = False
    inputs = keras.Input((4,))
    h = inputs
    for name in ("block2_dense", "block3_dense", "head"):
        h = full.get_layer(name)(h)
    top = keras.Model(inputs, h)
    full.compile(optimizer=discriminative_optimizer(LR, multipliers(full)), loss="mse")
    top.compile(optimizer=full.optimizer, loss="mse")
    if build_first:  # what the feature cache does before fitting the top
        top.optimizer.build(top.trainable_variables)
    x, y = data()
    before = snapshot(full)
    top.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert moves(full, before)["block1_dense"] == (0.0, 0.0)
    assert_steps(full, before, {k: v for k, v in EXPECTED.items() if k != "block1_dense"},
                 rtol=1e-2, exact=False)
    before = snapshot(full)
    full.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert int(full.optimizer.iterations) == 2
    assert moves(full, before)["block1_dense"] == (0.0, 0.0)
    assert min(high for _, high in moves(full, before).values() if high) > 1e-5


def test_shared_optimizer_trains_only_the_variables_it_was_built_with():
    x, y = data()

    def pair(optimizer):
        full = blocks_model()
        inputs = keras.Input((4,))
        top = keras.Model(inputs, full.get_layer("head")(inputs))
        full.compile(optimizer=optimizer(full), loss="mse")
        top.compile(optimizer=full.optimizer, loss="mse")
        return full, top

    def multi(model):
        return discriminative_optimizer(LR, multipliers(model))

    # Built with the head only, neither Adam nor the MultiOptimizer trains more.
    for optimizer in (lambda m: keras.optimizers.Adam(LR), multi):
        full, top = pair(optimizer)
        top.fit(x, y, verbose=0)
        with pytest.raises(ValueError, match="Unknown variable|Gradients must match"):
            full.fit(x, y, verbose=0)
    # Built with all variables, Adam trains a subset of them, MultiOptimizer not.
    full, top = pair(lambda m: keras.optimizers.Adam(LR))
    full.fit(x, y, verbose=0)
    top.fit(x, y, verbose=0)
    full, top = pair(multi)
    full.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="Gradients must match trainable variables one-to-one"):
        top.fit(x, y, verbose=0)


def test_options_and_errors():
    schedule = keras.optimizers.schedules.ExponentialDecay(LR, 10, 0.5)
    opt = discriminative_optimizer(schedule, {"a/kernel": 0.5}, optimizer="AdamW",
                                   weight_decay=0.05, beta_1=0.8, loss_scale_factor=128.0,
                                   name="fine_tune")
    assert opt.name == "fine_tune" and opt.loss_scale_factor == 128.0
    assert [type(o) for o in opt.optimizers] == [keras.optimizers.AdamW] * 2
    assert {(o.weight_decay, o.beta_1, o.loss_scale_factor) for o in opt.optimizers} == {
        (0.05, 0.8, 128.0)}
    sgd = discriminative_optimizer(LR, {}, optimizer=keras.optimizers.SGD, momentum=0.9)
    assert [(type(o), o.name, o.momentum) for o in sgd.optimizers] == [
        (keras.optimizers.SGD, "sgd_x1", 0.9)]
    assert [o.name for o in discriminative_optimizer(LR, {"a": 0.1, "b": 0.1 ** 2,
                                                          "c": 0.01}).optimizers] == [
        "adam_x0.01", "adam_x0.010000000000000002", "adam_x0.1", "adam_x1"]

    cases = [
        ({"optimizer": "adamx"}, r"Received: optimizer='adamx'"),
        ({"optimizer": keras.optimizers.Adam()}, r"Received: optimizer=<"),
        ({"optimizer": keras.optimizers.MultiOptimizer}, r"Received: optimizer=<class"),
        ({"learning_rate": lambda step: 0.1}, r"Received: learning_rate=<function"),
        ({"learning_rate": -1.0}, r"Received: learning_rate=-1.0"),
        ({"multipliers": {"a": -1}}, r"Received: multipliers\['a'\]=-1"),
        ({"multipliers": {"a": True}}, r"Received: multipliers\['a'\]=True"),
        ({"multipliers": ["a"]}, r"Received: multipliers=\['a'\]"),
        ({"global_clipnorm": 1.0}, r"`clipnorm`.*Received: global_clipnorm=1.0"),
    ]
    for change, message in cases:
        kwargs = {"learning_rate": LR, "multipliers": {"a": 0.5}} | change
        with pytest.raises(ValueError, match=message):
            discriminative_optimizer(**kwargs)
    with pytest.raises(ValueError, match="Received: schedule=0.1"):
        ScaledSchedule(0.1, 2)
    with pytest.raises(ValueError, match="Received: factor=-1"):
        ScaledSchedule(schedule, -1)
    with pytest.raises(ValueError, match="block_learning_rate_decay=2"):
        block_multipliers({}, [], decay=2)
    restored = ScaledSchedule.from_config(ScaledSchedule(schedule, 0.5).get_config())
    assert float(restored(7)) == pytest.approx(0.5 * float(schedule(7)))


def test_deprecated_optimizers_warn_and_work_as_before():
    model = blocks_model()
    factors = multipliers(model)
    with pytest.warns(DeprecationWarning, match=r"discriminative_optimizer\(.*'adam'\)"):
        opt = DiscriminativeAdam(learning_rate=LR, multipliers=factors)
    assert opt.get_config()["multipliers"] == factors
    before = snapshot(model)
    opt.apply(ones_like(model.trainable_variables), model.trainable_variables)
    assert_steps(model, before, EXPECTED)
    with pytest.warns(DeprecationWarning):
        again = DiscriminativeAdam.from_config(opt.get_config())
    assert again.multipliers == factors

    # The old AdamW decays a factor-0 weight at the full rate, the new one not.
    w = keras.Variable(np.ones(3, "float32"), name="w")
    with pytest.warns(DeprecationWarning, match="'adamw'"):
        old = DiscriminativeAdamW(learning_rate=0.1, weight_decay=0.5, multipliers={w.path: 0.0})
    old.apply([np.ones(3, "float32")], [w])
    np.testing.assert_allclose(w.numpy(), 1 - 0.5 * 0.1, rtol=1e-6)
    v = keras.Variable(np.ones(3, "float32"), name="v")
    new = discriminative_optimizer(0.1, {v.path: 0.0}, optimizer="adamw", weight_decay=0.5)
    new.apply([np.ones(3, "float32")], [v])
    np.testing.assert_array_equal(v.numpy(), np.ones(3, "float32"))


def test_v0_1_0_file_loads_its_deprecated_optimizer_with_a_warning():
    with pytest.warns(DeprecationWarning, match="DiscriminativeAdam is deprecated"):
        model = keras.saving.load_model(FIXTURE)
    assert type(model.optimizer) is DiscriminativeAdam
    assert sorted(set(model.optimizer.multipliers.values())) == [0.5, 1.0]
