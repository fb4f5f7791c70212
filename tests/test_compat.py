"""Every Keras/TensorFlow private API tftransfer relies on, against the installed
versions: when an upgrade moves one, these fail with its name, not some
training run far away (tftransfer/_compat.py says what each relies on)."""

import inspect
import os

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat


def _small_model():
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    dropped = keras.layers.Dropout(0.5, name="drop")(hidden)
    outputs = keras.layers.Dense(2, name="out")(dropped)
    return keras.Model(inputs, outputs, name="small")


def test_every_function_of_compat_is_tested_here():
    source = open(__file__).read()
    public = [name for name, value in vars(_compat).items()
              if inspect.isfunction(value) and not name.startswith("_")
              and value.__module__ == _compat.__name__]
    untested = [name for name in public if f"_compat.{name}(" not in source]
    assert not untested, f"tftransfer._compat functions without a test here: {untested}"


def test_graph_walking():
    model = _small_model()
    names = [layer.name for layer in _compat.flatten_layers(model)]
    assert names[0] == "small" and {"hidden", "drop", "out"} <= set(names)
    assert _compat.is_functional(model)
    assert not _compat.is_functional(keras.layers.Dense(2))
    depths = _compat.nodes_by_depth(model)
    ops = {node.operation.name for nodes in depths.values() for node in nodes
           if node.operation is not None}
    assert {"hidden", "drop", "out"} <= ops
    assert _compat.outputs_struct(model) is not None
    assert _compat.keras_history(model.outputs[0]).name == "out"
    assert _compat.keras_history(np.zeros(2)) is None


def test_layer_state():
    model = _small_model()
    hidden, drop = model.get_layer("hidden"), model.get_layer("drop")
    inbound, outbound = _compat.node_counts(hidden)
    hidden(keras.Input((4,)))  # calling a shared layer adds a node
    assert _compat.node_counts(hidden) == (inbound + 1, outbound)
    _compat.drop_nodes(hidden, inbound, outbound)
    assert _compat.node_counts(hidden) == (inbound, outbound)
    assert len(_compat.seed_generators(drop)) == 1
    assert _compat.seed_generators(hidden) == []
    hidden.trainable = False
    assert {v.path for v in _compat.created_trainable_variables(hidden)} == {
        "hidden/kernel", "hidden/bias"}
    assert _compat.call_takes_training(drop)
    assert not _compat.call_takes_training(keras.layers.Flatten())


def test_compile_config_and_optimizer_index():
    model = _small_model()
    assert _compat.compile_config(model) is None
    model.compile(optimizer="adam", loss="mse")
    assert _compat.compile_config(model)["loss"] == "mse"
    optimizer = keras.optimizers.SGD()
    variables = [keras.Variable(np.ones(2)), keras.Variable(np.zeros(3))]
    optimizer.build(variables)
    assert _compat.optimizer_variable_index(optimizer, variables[1]) == 1


def test_weights_only_saving_round_trip(tmp_path):
    model = _small_model()
    model.compile(optimizer="adam", loss="mse")
    path = os.fspath(tmp_path / "w.weights.h5")
    _compat.save_weights_only(model, path, objects_to_skip=[model.optimizer])
    before = [np.array(v) for v in model.weights]
    for v in model.weights:
        v.assign(np.zeros(v.shape))
    _compat.load_weights_only(model, path, objects_to_skip=[model.optimizer])
    for old, v in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.array(v))


def test_safe_mode_flag():
    assert _compat.in_safe_mode() in (None, False, True)


def test_tensorflow_internals(tmp_path):
    variable = tf.Variable(2.0)
    function = tf.function(lambda: variable * 3.0, input_signature=[])
    function.get_concrete_function()
    trainable, others = _compat.variables_used_by_functions([function])
    assert [id(v) for v in trainable + others] == [id(variable)]
    assert "training" in _compat.getfullargspec(lambda x, training=False: x).args
    assert float(_compat.smart_cond(tf.constant(True), lambda: 1.0, lambda: 2.0)) == 1.0
    root = _compat.auto_trackable()
    root.v = variable
    tf.saved_model.save(root, os.fspath(tmp_path / "sm"))
    assert float(tf.saved_model.load(os.fspath(tmp_path / "sm")).v) == 2.0
    dataset = tf.data.Dataset.range(3)
    assert _compat.dataset_variant(dataset).dtype == tf.variant


def test_multi_worker_fixes_install_on_this_keras():
    assert _compat.install_multi_worker_fixes() is True  # idempotent
    assert _compat.multi_worker_fixes_installed()


def test_print_msg_prints_as_keras_does(capsys):
    _compat.print_msg("Phase 1: training the head")
    assert capsys.readouterr().out == "Phase 1: training the head\n"
