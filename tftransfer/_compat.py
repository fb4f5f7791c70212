"""Every use of a Keras or TensorFlow private API in tftransfer, in one place.

No other module of the package reaches into ``keras.src``, ``tensorflow.python``,
``tf.__internal__`` or an underscored attribute of a Keras object: they call the
functions here. Each says what it relies on and the Keras version it was
checked on; ``tests/test_compat.py`` exercises every one against the installed
Keras, so an upgrade that moves one of them fails there, loudly, rather than
somewhere deep in training.

Checked on Keras 3.15.1 and TensorFlow 2.21.0.
"""

import functools
import inspect
import logging

import keras
import tensorflow as tf
from keras.src.export.saved_model_export_archive import _list_variables_used_by_fns
from keras.src.saving import saving_lib
from keras.src.saving import serialization_lib
from keras.src.utils import io_utils
from tensorflow.python.util import tf_inspect

try:
    from keras.src.backend.tensorflow import trainer as _tf_trainer
except ImportError:  # pragma: no cover - another backend, or a Keras that moved it
    _tf_trainer = None

_logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# Layers and functional graphs


def flatten_layers(layer):
    """`layer` and every layer below it, depth-first (``Layer._flatten_layers``)."""
    return layer._flatten_layers(include_self=True, recursive=True)


def is_functional(model):
    """Whether `model` is a functional model whose graph can be walked."""
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and hasattr(
        model, "_outputs_struct")


def nodes_by_depth(model):
    """``{depth: [Node, ...]}`` of a functional model (``Functional._nodes_by_depth``)."""
    return model._nodes_by_depth


def outputs_struct(model):
    """The nested structure of a functional model's outputs (``_outputs_struct``)."""
    return model._outputs_struct


def keras_history(tensor):
    """The layer that produced a symbolic tensor (``KerasTensor._keras_history``),
    or None."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def node_counts(layer):
    """How many inbound and outbound nodes `layer` has."""
    return len(layer._inbound_nodes), len(layer._outbound_nodes)


def drop_nodes(layer, inbound, outbound):
    """Removes the nodes added to `layer` after it had `inbound` / `outbound`
    (calling shared layers on new inputs adds nodes to them)."""
    del layer._inbound_nodes[inbound:]
    del layer._outbound_nodes[outbound:]


def seed_generators(layer):
    """The `keras.random.SeedGenerator`s `layer` itself holds (Dropout,
    random augmentation), not those of its sublayers."""
    return list(getattr(layer, "_seed_generators", None) or [])


def created_trainable_variables(layer):
    """The variables `layer` created trainable, whatever its `trainable`
    flag says now (``Layer._trainable_variables``)."""
    return list(getattr(layer, "_trainable_variables", None) or [])


def call_takes_training(layer):
    """Whether `layer.call` takes a `training` argument."""
    return bool(getattr(layer, "_call_has_context_arg", {}).get("training"))


def compile_config(model):
    """The arguments `model.compile` was called with, or None when it was not."""
    config = getattr(model, "_compile_config", None)
    return None if config is None else config.config


def print_msg(message):
    """Prints a line the way Keras prints its progress (to stdout, or to absl
    logging after `keras.config.disable_interactive_logging()`): for titles
    of tftransfer's progress bars, shown where Keras's `verbose` shows bars."""
    io_utils.print_msg(message)


# --------------------------------------------------------------------------
# Saving


def save_weights_only(model, path, *, objects_to_skip=None):
    """`model`'s weights to an ``.weights.h5`` file, skipping `objects_to_skip`
    (e.g. the optimizer)."""
    saving_lib.save_weights_only(model, path, objects_to_skip=objects_to_skip)


def load_weights_only(model, path, *, objects_to_skip=None):
    """The counterpart of `save_weights_only`."""
    saving_lib.load_weights_only(model, path, objects_to_skip=objects_to_skip)


def in_safe_mode():
    """Whether Keras is deserializing in safe mode (`load_model(safe_mode=True)`)."""
    return serialization_lib.in_safe_mode()


def optimizer_variable_index(optimizer, variable):
    """The index of `variable` in the list `optimizer` was built on."""
    return optimizer._get_variable_index(variable)


# --------------------------------------------------------------------------
# TensorFlow


def variables_used_by_functions(functions):
    """``(trainable, non_trainable)`` variables that the `tf.function`s use,
    as `keras.layers.TFSMLayer` finds a SavedModel's weights."""
    return _list_variables_used_by_fns(functions)


def getfullargspec(function):
    """`inspect.getfullargspec` that sees through `tf.function` wrappers."""
    return tf_inspect.getfullargspec(function)


def smart_cond(predicate, true_fn, false_fn):
    """`tf.cond` that runs one branch directly when `predicate` is known."""
    return tf.__internal__.smart_cond.smart_cond(predicate, true_fn, false_fn)


def auto_trackable():
    """An empty object whose attributes a SavedModel saves (variables,
    functions): the root of a reusable SavedModel."""
    return tf.__internal__.tracking.AutoTrackable()


def dataset_variant(dataset):
    """The variant tensor behind a `tf.data.Dataset`, for graph inspection."""
    return dataset._variant_tensor


# --------------------------------------------------------------------------
# Keras 3 under several workers (see tftransfer.distribute)


def multi_worker_fixes_installed():
    """Whether `install_multi_worker_fixes` has wrapped Keras's trainer."""
    reduce = getattr(_tf_trainer, "reduce_per_replica", None)
    return bool(getattr(reduce, "tftransfer_wrapped", False))


def install_multi_worker_fixes():
    """Wraps the two Keras functions that fail under several workers;
    idempotent. Returns whether the wrappers are installed."""
    if keras.backend.backend() != "tensorflow":
        return False
    trainer = _tf_trainer
    trainer_class = getattr(trainer, "TensorFlowTrainer", None)
    build = getattr(trainer_class, "_maybe_symbolic_build", None)
    reduce = getattr(trainer, "reduce_per_replica", None)
    multi_worker = getattr(trainer, "_collective_all_reduce_multi_worker", None)
    if build is None or reduce is None or multi_worker is None or (
        list(inspect.signature(build).parameters) != ["self", "iterator", "data_batch"]
        or list(inspect.signature(reduce).parameters) != ["values", "strategy", "reduction"]
    ):
        _logger.debug("Keras's TensorFlow trainer has changed; its multi-worker "
                     "functions are left as they are.")
        return False
    if getattr(reduce, "tftransfer_wrapped", False):
        return True
    trainer_class._maybe_symbolic_build = _symbolic_build_wrapper(build, multi_worker)
    trainer.reduce_per_replica = _reduce_wrapper(reduce, multi_worker)
    return True


def _symbolic_build_wrapper(original, multi_worker):
    @functools.wraps(original)
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        # Keras would reduce the batch across workers, which fails for a tuple
        # of per-replica values; the build needs only shapes and dtypes.
        for _, _, batches in iterator:
            data_batch = keras.tree.map_structure(
                lambda value: strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues) else value,
                next(batches),
            )
            break
        return original(self, iterator=None, data_batch=data_batch)

    _maybe_symbolic_build.tftransfer_wrapped = True
    return _maybe_symbolic_build


def _reduce_wrapper(original, multi_worker):
    @functools.wraps(original)
    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return original(values, strategy, reduction)
        # Keras would call strategy.reduce("MEAN", value, axis=0), which fails
        # for scalars; the mean over all replicas of all workers is axis=None.
        return keras.tree.map_structure(
            lambda value: strategy.reduce("MEAN", value, axis=None)
            if isinstance(value, tf.distribute.DistributedValues) or tf.is_tensor(value)
            else value,
            values,
        )

    reduce_per_replica.tftransfer_wrapped = True
    return reduce_per_replica
