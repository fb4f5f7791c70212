"""Cached backbone features: frozen layers run once, not once per epoch.

In the plain Keras recipe a frozen backbone still runs its full forward pass
over every image in every epoch, although its output never changes. This
module finds where a model stops being frozen, runs everything below that
point once over the data, keeps the result ("features" at the top of the
backbone for phase 1, "activations" below the first unfrozen block for
phase 2), and trains only the part above it on them.

How a model is cut
------------------
The model's functional graph is flattened (the backbone, a nested functional
model, is opened up) and walked in topological order. A layer **trains** if
it has trainable weights, or if it is random in training (dropout, noise,
data augmentation) and is not inside a call made with ``training=False``.
Everything computed from a training layer's output belongs to the **top**;
the rest is the **bottom**: frozen and deterministic. The cut is cacheable
when exactly one tensor flows from the bottom into the top (the
**boundary**), and the bottom holds at least one layer with weights.

- Phase 1 of an `ImageClassifier`: the boundary is the pooling output (a
  vector per image, e.g. 1,280 floats for EfficientNetB0), since pooling has
  no weights and is deterministic; the head's dropout starts the top.
- Phase 2 (top N blocks unfrozen): the boundary is the output of the last
  frozen layer below the first unfrozen block, e.g. ``block5c_add`` of
  EfficientNetB0 for ``unfreeze_blocks=2``. If a skip connection crosses the
  boundary (two tensors flow into the top), the phase is not cached, and the
  reason is logged.

The top is rebuilt as a new `keras.Model` over the *same layer objects*, so
training it trains the full model: there is nothing to copy back. Layers
inside the backbone run in inference mode there, as they do in the full model:
`ImageClassifier` calls its backbone through a layer that pins
``training=False``, so dropout inside the backbone (EfficientNet's stochastic
depth) stays off, and frozen BatchNormalization layers use their moving
statistics. That makes phase-2 caching exact. (In another functional model, a
backbone called as ``backbone(x, training=False)`` is cached in inference
mode too; Keras 3's `fit` overrides such a ``training=False`` with its own
``training=True``, so there the uncached path would run the backbone's
dropout layers, and the cached one does not.)

When the cache is used (``cache="auto"``)
------------------------------------------
- Training data is arrays (``x``, ``y``) or a finite `tf.data.Dataset` of
  ``(images, labels)`` or ``(images, labels, sample_weights)``.
- The pipeline is deterministic. The dataset's graph is searched for random
  ops (``tf.image.random_*``, Keras preprocessing layers in a ``map``,
  `tf.data.Dataset.random`, ...) and for ``tf.py_function`` or a stateful
  ``tf.numpy_function``, whose content cannot be inspected; either makes
  ``"auto"`` fall back to the uncached path and log why (a
  ``tf.numpy_function(..., stateful=False)`` is taken at its word). Pass
  ``cache=True`` to cache such a dataset anyway: one pass of it is cached.
  A ``shuffle`` in the dataset only changes the order: the cached examples
  are then reshuffled every epoch, in batches of the dataset's batch size.
- No layer before the frozen part is random in training (augmentation
  layers inside the model): then there is nothing to cache, logged.
- Not cached: `keras.utils.PyDataset` and Python generators, datasets that
  repeat forever, ``steps_per_epoch``, and dict inputs; datasets of unknown
  length (a ``filter``, `tf.data.Dataset.from_generator`) only with
  ``cache=True``, as they might not end.
- A forced cache (``True``, ``"memory"``, ``"disk"``) that cannot be used
  raises a `ValueError` saying why.

Where the features live
-----------------------
In memory up to ``memory_limit`` bytes (default: a quarter of the memory
available when the cache is created), past it in ``.npy`` memory maps in a
temporary directory under ``cache_dir`` (default: the system's temporary
directory) that is deleted when the training call returns, also on error.
A cache lives for one `fit_head` / `fine_tune` / `fit_two_phase` call; in
`fit_two_phase`, phase 1 extracts phase 2's activations in the same pass.
Every entry is keyed by content: a hash of the data (the images, and for a
dataset its labels and weights) and of the bottom part of the model (layer
classes, names and all weight values), so changed data or weights are never
served from a stale entry. (A dataset's hash is computed while it is read
for extraction and remembered, by object, for the rest of the call.)

Speed
-----
The extraction runs the bottom as one graph with its weights as constants,
which TensorFlow's graph optimizer simplifies further than a graph reading
variables, and with each BatchNormalization folded into the convolution
before it (`_batchnorm_folds`), on the data prefetched with ``AUTOTUNE``; on
2 CPU cores it took 1.2-1.4x less CPU time per image than `model.predict`
(MobileNetV2, EfficientNetB0 at 160 px). Cached features are served from
memory as arrays (so Keras shuffles them exactly as it would the images) or
from memory maps through a prefetched `tf.data` pipeline. `jit_compile` is
left as the model has it: XLA made the backbones' forward pass 10-25 times
slower on this CPU, and Keras turns it off on CPU-only machines by default
too; it made 10 epochs of a dense head on cached features slower as well
(5.6 s instead of 1.8 s once compiled, 15.6 s instead of 3.2 s with the
compiling).

With one pass over the data instead of one per epoch, what else a cached
phase costs decides how much faster it is, so those costs are kept small:
the extractor is traced without AutoGraph, the data is hashed in place, the
frozen weights are read once for the cache keys and the extractor, the
validation features go to `fit` as a plain `tf.data.Dataset` (see
`_in_order_dataset`), and the optimizer is built before `fit` rather than
while its train function is traced. Setting the ``tftransfer.features``
logger to DEBUG logs the wall and CPU seconds of each of these steps.
``steps_per_execution`` is left as compiled: a whole epoch per call saved
~0.2 s over 10 head epochs, but tracing its loop cost ~0.5 s more.
"""

import contextlib
import dataclasses
import hashlib
import itertools
import logging
import math
import os
import re
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from keras import tree

logger = logging.getLogger(__name__)

CACHE_MODES = ("auto", "memory", "disk")
"""The cache modes; `True` means ``"memory"``, `False` and `None` no cache."""

# Ops whose output may change from one pass over the data to the next. Stateful
# Python functions (tf.py_function, tf.numpy_function(stateful=True)) are
# opaque, so they count; tf.numpy_function(stateful=False) ("PyFuncStateless")
# is declared deterministic by its author (tftransfer.data decodes files so).
_RANDOM_OP = re.compile(
    r"Random|Multinomial|TruncatedNormal|SampleDistortedBoundingBox|RngReadAndSkip|RngSkip"
    r"|^(Eager)?PyFunc$"
)
_FALLBACK_MEMORY_LIMIT = 2 * 1024**3


@contextlib.contextmanager
def _timed(section):
    """Logs at DEBUG level how long `section` took, in wall and CPU
    seconds (of all the process's threads)."""
    if not logger.isEnabledFor(logging.DEBUG):
        yield
        return
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        logger.debug("%s: %.3f s (%.3f CPU s).", section, time.perf_counter() - wall,
                     time.process_time() - cpu)


class _NotCacheable(Exception):
    """Why a phase cannot run on cached features (logged, or raised when the
    user forced the cache)."""


# --------------------------------------------------------------------------
# Options


def check_cache_options(cache, cache_dir, memory_limit):
    """Validates the cache options; returns the mode (``None`` for no cache).

    Example:

    >>> from tftransfer.features import check_cache_options
    >>> check_cache_options(True, None, None), check_cache_options(False, None, None)
    ('memory', None)
    """
    if cache is True:
        mode = "memory"
    elif cache is False or cache is None:
        mode = None
    elif isinstance(cache, str) and cache in CACHE_MODES:
        mode = cache
    else:
        raise ValueError(
            "`cache` must be 'auto' (cache when the pipeline allows it), True or "
            "'memory', 'disk', or False/None (never cache). "
            f"Received: cache={cache!r}"
        )
    if cache_dir is not None and not os.path.isdir(cache_dir):
        raise ValueError(
            "`cache_dir` must be an existing directory (the cache goes into a "
            "temporary directory inside it, deleted afterwards), or None for the "
            f"system's temporary directory. Received: cache_dir={cache_dir!r}"
        )
    if memory_limit is not None and (
        isinstance(memory_limit, bool)
        or not isinstance(memory_limit, (int, float))
        or memory_limit < 0
    ):
        raise ValueError(
            "`cache_memory_limit` must be a number of bytes >= 0 (e.g. 2 * 1024**3), "
            "or None for a quarter of the available memory. "
            f"Received: cache_memory_limit={memory_limit!r}"
        )
    return mode


def _default_memory_limit():
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_MEMORY_LIMIT
    return int(available // 4)


# --------------------------------------------------------------------------
# The model's graph, flattened


@dataclasses.dataclass
class _Step:
    op: object
    node: object
    inference: bool  # inside a call made with training=False
    inputs: list  # canonical ids of the input tensors, in node order
    outputs: list  # ids of the output tensors
    name: str  # "backbone/layer" for a layer inside a nested model


@dataclasses.dataclass
class _Graph:
    steps: list
    tensors: dict  # id -> KerasTensor
    names: dict  # id -> "producer:index"
    inputs: list
    outputs: list
    outputs_struct: object


def _is_functional(op):
    return isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth") and hasattr(
        op, "_outputs_struct"
    )


def _flatten_graph(model):
    """The model's graph as a list of steps in topological order, with the
    nested functional models (the backbone) opened up."""
    if not _is_functional(model):
        raise _NotCacheable(
            f"model {model.name!r} is not a functional model, so it cannot be cut"
        )
    alias = {}
    tensors, names, steps = {}, {}, []
    expanded = set()

    def canon(tensor):
        key = id(tensor)
        while key in alias:
            key = alias[key]
        return key

    def walk(functional, inference, prefix):
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                inputs = [canon(t) for t in node.input_tensors]
                nested = _inference_wrapped(op)
                if nested is not None:
                    nested_inference = True
                else:
                    nested = op
                    nested_inference = node.arguments.kwargs.get("training") is False
                if (
                    _is_functional(nested)
                    and id(nested) not in expanded
                    and len(nested.inputs) == len(node.input_tensors)
                    and len(nested.outputs) == len(node.output_tensors)
                ):
                    expanded.add(id(nested))
                    for inner, outer in zip(nested.inputs, node.input_tensors):
                        # A model called on its own input tensor: no alias (a
                        # tensor aliased to itself made `canon` loop forever).
                        if canon(outer) != id(inner):
                            alias[id(inner)] = canon(outer)
                    walk(nested, inference or nested_inference, f"{prefix}{nested.name}/")
                    for outer, inner in zip(node.output_tensors, nested.outputs):
                        alias[id(outer)] = canon(inner)
                    continue
                outputs = [id(t) for t in node.output_tensors]
                for index, tensor in enumerate(node.output_tensors):
                    tensors[id(tensor)] = tensor
                    names[id(tensor)] = f"{prefix}{op.name}:{index}"
                steps.append(_Step(op, node, inference, inputs, outputs, prefix + op.name))

    for tensor in model.inputs:
        tensors[id(tensor)] = tensor
        names[id(tensor)] = f"{tensor.name}:input"
    walk(model, False, "")
    return _Graph(
        steps=steps,
        tensors=tensors,
        names=names,
        inputs=[canon(t) for t in model.inputs],
        outputs=[canon(t) for t in model.outputs],
        outputs_struct=model._outputs_struct,
    )


def _inference_wrapped(op):
    """The functional model inside a layer that always calls it with
    ``training=False`` (how `ImageClassifier` calls its backbone), or None."""
    from tftransfer import builders  # noqa: PLC0415 - builders is not needed at import

    inner = getattr(op, "layer", None)
    if isinstance(op, (builders._InferenceModeCall, _InferenceCall)) and _is_functional(inner):
        return inner
    return None


def _sublayers(op):
    if isinstance(op, keras.layers.Layer):
        return op._flatten_layers(include_self=True, recursive=True)
    return []


def _is_random(op):
    return any(getattr(layer, "_seed_generators", None) for layer in _sublayers(op))


def _has_weights(op):
    return bool(getattr(op, "weights", None))


def _trains_now(op):
    return bool(getattr(op, "trainable_weights", None))


def planned_trainability(layer_ids):
    """A predicate for "trains in phase 2": the layers `unfreeze_top_blocks`
    will unfreeze (by id), except BatchNormalization, plus what trains now."""

    def trains(op):
        if _trains_now(op):
            return True
        return (
            id(op) in layer_ids
            and not isinstance(op, keras.layers.BatchNormalization)
            # Variables created trainable (freezing a layer flips their flag).
            and any(getattr(layer, "_trainable_variables", None) for layer in _sublayers(op))
        )

    return trains


@dataclasses.dataclass
class _Cut:
    graph: _Graph
    boundary: int  # tensor id
    name: str  # "producer:index" of the boundary tensor
    bottom: list  # steps needed to compute the boundary
    top: list  # steps from the boundary to the outputs

    @property
    def shape(self):
        return tuple(self.graph.tensors[self.boundary].shape[1:])

    def key(self, values=None):
        """A hash of the bottom part: boundary, layer classes and names, weights.

        `values` (a dict, by variable id) keeps the weights read as NumPy
        arrays, so that cuts sharing layers, and the extractor built next,
        read each variable once.
        """
        values = {} if values is None else values
        digest = hashlib.blake2b(digest_size=16)
        digest.update(self.name.encode())
        seen = set()
        for step in self.bottom:
            digest.update(f"|{type(step.op).__name__}:{step.name}:{step.inference}".encode())
            for variable in getattr(step.op, "weights", []):
                if id(variable) in seen:
                    continue
                seen.add(id(variable))
                value = values.get(id(variable))
                if value is None:
                    value = values[id(variable)] = keras.ops.convert_to_numpy(variable)
                digest.update(f"{variable.path}{value.dtype}{value.shape}".encode())
                # (ascontiguousarray makes a 0-d array 1-d: only its bytes are used.)
                digest.update(np.ascontiguousarray(value).data)
        return digest.hexdigest()


def plan_cut(model, trains=_trains_now, graph=None):
    """Finds the boundary between the frozen bottom and the top of `model`.

    Raises `_NotCacheable` with the reason when there is none to cache.
    """
    graph = graph or _flatten_graph(model)
    top_tensors, top, first_active = set(), [], None
    for step in graph.steps:
        active = trains(step.op) or (_is_random(step.op) and not step.inference)
        if active and first_active is None:
            first_active = step
        if active or any(i in top_tensors for i in step.inputs):
            top.append(step)
            top_tensors.update(step.outputs)
    if not top:
        raise _NotCacheable("nothing in the model trains")
    boundary = []
    for step in top:
        for i in step.inputs:
            if i not in top_tensors and i not in boundary:
                boundary.append(i)
    if len(boundary) > 1:
        sources = ", ".join(repr(graph.names[i]) for i in boundary)
        raise _NotCacheable(
            f"{len(boundary)} tensors flow from the frozen layers into the trained ones "
            f"({sources}): a skip connection crosses the boundary, and only a single "
            "boundary tensor can be cached"
        )
    if not boundary or boundary[0] in graph.inputs:
        if _is_random(first_active.op) and not trains(first_active.op):
            raise _NotCacheable(
                f"layer {first_active.name!r} is random in training (data augmentation "
                "or noise) and runs before the frozen layers, so their output changes "
                "every epoch"
            )
        raise _NotCacheable(
            f"the first trained layer ({first_active.name!r}) takes the model input: "
            "there is nothing frozen below it to cache"
        )
    bottom = _needed_steps(graph.steps, [boundary[0]], exclude=top)
    if not any(_has_weights(step.op) for step in bottom):
        raise _NotCacheable(
            f"nothing with weights runs below {graph.names[boundary[0]]!r}: caching "
            "would not save any work"
        )
    return _Cut(graph, boundary[0], graph.names[boundary[0]], bottom, top)


def _needed_steps(steps, output_ids, exclude=()):
    excluded = {id(step) for step in exclude}
    needed, chosen = set(output_ids), []
    for step in reversed(steps):
        if id(step) not in excluded and needed.intersection(step.outputs):
            chosen.append(step)
            needed.update(step.inputs)
    return chosen[::-1]


class _InferenceCall(keras.layers.Layer):
    """Calls a shared layer with ``training=False`` whatever the caller says."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_inference", dtype=layer.dtype_policy, **kwargs)
        self.layer = layer

    def call(self, *args, training=None, **kwargs):
        return self.layer(*args, training=False, **kwargs)


def _accepts_training(op):
    return bool(getattr(op, "_call_has_context_arg", {}).get("training"))


def _replay(graph, steps, input_ids, outputs, *, model_class=keras.Model, **model_kwargs):
    """A new functional model over the same layers: `steps` replayed from
    new `keras.Input`s standing for the tensors `input_ids`."""
    values, inputs = {}, []
    for i in input_ids:
        tensor = graph.tensors[i]
        name = re.sub(r"\W", "_", graph.names[i]) + "_cached"
        values[i] = keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)
        inputs.append(values[i])
    wrappers = {}
    for step in steps:
        op = step.op
        if step.inference and _accepts_training(op):
            op = wrappers.setdefault(id(op), _InferenceCall(op))
        lookup = {id(t): values[i] for t, i in zip(step.node.input_tensors, step.inputs)}
        args, kwargs = step.node.arguments.fill_in(lookup)
        for i, value in zip(step.outputs, tree.flatten(op(*args, **kwargs))):
            values[i] = value
    outputs = tree.map_structure(lambda i: values[i], outputs)
    return model_class(inputs=inputs[0] if len(inputs) == 1 else inputs, outputs=outputs,
                       **model_kwargs)


class _NodeSnapshot:
    """Replaying layers adds nodes to them; `restore` takes them away again, so
    the user's model is left as it was."""

    def __init__(self, model, graph):
        ops = list(model._flatten_layers(include_self=True, recursive=True))
        ops += [step.op for step in graph.steps]
        self._lengths = {
            id(op): (op, len(op._inbound_nodes), len(op._outbound_nodes)) for op in ops
        }

    def restore(self):
        for op, inbound, outbound in self._lengths.values():
            del op._inbound_nodes[inbound:]
            del op._outbound_nodes[outbound:]


class _CachedTop(keras.Model):
    """The top of a model, trained on cached activations. It shares its layers
    with the full model, and its training flags (``stop_training``, the
    History, the initial epoch) are the full model's, so callbacks that act on
    the full model steer this training."""

    def __init__(self, *, full, **kwargs):
        object.__setattr__(self, "_full", None)
        super().__init__(**kwargs)
        object.__setattr__(self, "_full", full)

    def _shared(name):  # noqa: N805 - a property factory used in the class body
        def get(self):
            full = self.__dict__.get("_full")
            return getattr(full, name) if full is not None else self.__dict__.get(f"_own{name}")

        def set_(self, value):
            full = self.__dict__.get("_full")
            if full is not None:
                setattr(full, name, value)
            else:
                object.__setattr__(self, f"_own{name}", value)

        return property(get, set_)

    stop_training = _shared("stop_training")
    history = _shared("history")
    _initial_epoch = _shared("_initial_epoch")
    del _shared


def _clone_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return type(metric).from_config(metric.get_config())
    return metric


def _compile_like(top, model):
    """Compiles `top` as `model` is compiled, sharing its optimizer."""
    config = model._compile_config.config
    with model.distribute_strategy.scope():
        top.compile(
            optimizer=model.optimizer,
            loss=config.get("loss"),
            loss_weights=config.get("loss_weights"),
            metrics=tree.map_structure(_clone_metric, config.get("metrics")),
            weighted_metrics=tree.map_structure(_clone_metric, config.get("weighted_metrics")),
            run_eagerly=config.get("run_eagerly", False),
            steps_per_execution=config.get("steps_per_execution", 1),
            jit_compile=model.jit_compile,
            auto_scale_loss=config.get("auto_scale_loss", True),
        )


# --------------------------------------------------------------------------
# Data sources


@dataclasses.dataclass
class _Source:
    kind: str  # "arrays" or "dataset"
    x: object
    targets: tuple = ()  # arrays: (y,) or (y, sample_weight); dataset: from the stream
    shuffle: bool = False  # dataset: its graph has a shuffle op
    random_ops: tuple = ()


def _is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor)) or (
        hasattr(value, "__array__") and hasattr(value, "shape") and not isinstance(value, dict)
    )


def _dataset_ops(dataset):
    graph_bytes = tf.raw_ops.DatasetToGraphV2(
        input_dataset=dataset._variant_tensor,
        external_state_policy=1,  # ignore captured state: only op types are read
        strip_device_assignment=True,
    )
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes.numpy())
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


def _source(x, y, sample_weight, what, *, forced=False):
    """Describes `x` as a cacheable source, or raises `_NotCacheable`."""
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        if cardinality == tf.data.INFINITE_CARDINALITY:
            raise _NotCacheable(f"the {what} dataset repeats forever")
        if cardinality == tf.data.UNKNOWN_CARDINALITY and not forced:
            raise _NotCacheable(
                f"the {what} dataset's length is unknown (a filter or a generator); "
                "pass cache=True if it is finite"
            )
        spec = x.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise _NotCacheable(
                f"the {what} dataset must yield (images, labels) or "
                "(images, labels, sample_weights)"
            )
        if not isinstance(spec[0], tf.TensorSpec) or spec[0].shape.rank is None or (
            spec[0].shape.rank < 2
        ):
            raise _NotCacheable(f"the {what} dataset's images must be one batched tensor")
        try:
            ops = _dataset_ops(x)
        except (tf.errors.OpError, ValueError, TypeError) as err:
            raise _NotCacheable(f"the {what} dataset's pipeline cannot be inspected ({err})")
        random_ops = tuple(sorted(op for op in ops if _RANDOM_OP.search(op)))
        shuffle = any(op.startswith("Shuffle") for op in ops)
        return _Source("dataset", x, shuffle=shuffle, random_ops=random_ops)
    if _is_array(x) and not isinstance(x, dict):
        if y is None:
            raise _NotCacheable(f"the {what} images come without labels")
        targets = (y,) if sample_weight is None else (y, sample_weight)
        return _Source("arrays", np.asarray(x), targets=targets)
    raise _NotCacheable(
        f"the {what} data is a {type(x).__name__}; only arrays and finite "
        "tf.data.Datasets are cached"
    )


def _validation_source(validation_data, *, forced):
    if validation_data is None:
        return None
    if isinstance(validation_data, tf.data.Dataset):
        return _source(validation_data, None, None, "validation", forced=forced)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        return _source(*validation_data, *([None] * (3 - len(validation_data))), "validation",
                       forced=forced)
    raise _NotCacheable(
        f"the validation data is a {type(validation_data).__name__}; pass (x, y), "
        "(x, y, sample_weight) or a tf.data.Dataset"
    )


def _data_hasher():
    # SHA-1 is the fastest hashlib hash here (CPUs with SHA instructions hash
    # ~1 GB/s with it, twice BLAKE2b's rate); collisions are no threat to a
    # cache that lives for one training call.
    return hashlib.sha1(usedforsecurity=False)


def _hash_arrays(digest, arrays):
    for array in arrays:
        # NumPy arrays are hashed in place (`keras.ops.convert_to_numpy` copies
        # them: for 400 images of 160 px that copy took longer than the hash).
        if not isinstance(array, np.ndarray):
            array = keras.ops.convert_to_numpy(array)
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data if array.dtype != object else repr(array.tolist()).encode())


# --------------------------------------------------------------------------
# Storage


class _Writer:
    """Collects one feature array, in memory or in a `.npy` memory map."""

    def __init__(self, shape, dtype, capacity, path):
        self.shape, self.dtype, self.path = tuple(shape), np.dtype(dtype), path
        self.count, self.capacity, self._files = 0, 0, 0
        self.array = self._new(capacity)

    def _new(self, capacity):
        self.capacity = capacity
        if self.path is None:
            return np.empty((capacity, *self.shape), self.dtype)
        self._files += 1
        return np.lib.format.open_memmap(
            f"{self.path}-{self._files}.npy", mode="w+", dtype=self.dtype,
            shape=(capacity, *self.shape),
        )

    def append(self, batch):
        n = len(batch)
        if self.count + n > self.capacity:  # the dataset was longer than announced
            old = self.array
            self.array = self._new(max(self.count + n, 2 * self.capacity))
            self.array[:self.count] = old[:self.count]
            if isinstance(old, np.memmap):
                filename = old.filename
                del old
                os.remove(filename)
        self.array[self.count:self.count + n] = batch
        self.count += n

    def finish(self):
        if self.path is None:
            return self.array[:self.count]
        self.array.flush()
        filename = self.array.filename
        del self.array
        return np.load(filename, mmap_mode="r")[:self.count]


@dataclasses.dataclass
class _Entry:
    features: np.ndarray  # or a read-only memmap
    storage: str


@dataclasses.dataclass
class _Stream:
    """What a dataset yielded: its labels and weights, batch size, order."""

    targets: list
    structure: object
    batch_size: int
    shuffle: bool


class FeatureCache:
    """Cached activations for one training call; a context manager that deletes
    its files on exit.

    Args:
        mode: ``"auto"``, ``"memory"``, ``"disk"`` (see `check_cache_options`),
            or `None` for a cache that never caches.
        cache_dir: where the temporary directory for disk entries goes.
        memory_limit: bytes of features kept in memory (``"auto"`` mode)
            before entries go to disk; default: a quarter of the available
            memory.
    """

    def __init__(self, mode, *, cache_dir=None, memory_limit=None):
        self.mode = mode
        self.cache_dir = cache_dir
        self.memory_limit = _default_memory_limit() if memory_limit is None else memory_limit
        self.directory = None  # created on the first disk entry
        self.memory_bytes = 0
        self._entries = {}  # (data digest, cut key) -> _Entry
        self._streams = {}  # data digest -> _Stream (datasets)
        self._dataset_digests = {}  # id(dataset) -> (dataset, digest)
        self._planned = None  # predicate for phase 2's trainability
        self._forwards = {}  # cut keys -> compiled extractor
        self._snapshots = []
        # Set for resumable runs: shuffled epochs then depend on (seed, epoch) only.
        self.shuffle_seed = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Drops every entry and deletes the temporary directory."""
        self._entries.clear()
        self._streams.clear()
        self._dataset_digests.clear()
        self._forwards.clear()
        for snapshot in self._snapshots:
            snapshot.restore()
        self._snapshots.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self.memory_bytes = 0

    def expect_fine_tune(self, layer_ids):
        """Tells the cache which backbone layers phase 2 will unfreeze, so that
        phase 1 extracts phase 2's activations in the same pass."""
        self._planned = planned_trainability(set(layer_ids))

    # -- training ----------------------------------------------------------

    def fit(self, model, x, y, validation_data, *, epochs, initial_epoch, fit_kwargs):
        """Runs `model.fit` on cached activations when it can.

        Returns:
            ``(history, info)``, or ``(None, None)`` when this phase must run
            uncached (the reason is logged; with a forced mode it is raised
            as a `ValueError`).
        """
        planned, self._planned = self._planned, None
        if self.mode is None or epochs == 0:
            return None, None
        try:
            with _timed("Planning the cut"):
                plan = self._plan(model, x, y, validation_data, fit_kwargs, planned)
            top, fit_x, fit_y, kwargs, info = self._prepare(model, *plan, fit_kwargs=fit_kwargs,
                                                            first_epoch=initial_epoch)
        except _NotCacheable as reason:
            if self.mode != "auto":
                raise ValueError(
                    f"Cannot train on cached features: {reason}. Pass cache='auto' to "
                    "fall back to the uncached path in such cases, or cache=False. "
                    f"Received: cache={self.mode!r}"
                ) from None
            logger.info("Not caching features: %s. Training uncached.", reason)
            return None, None
        verbose = fit_kwargs.get("verbose", "auto")
        # The callbacks get the full model (ModelCheckpoint saves it, EarlyStopping
        # stops it); _CachedTop shares its training flags with it.
        callbacks = keras.callbacks.CallbackList(
            kwargs.pop("callbacks", None),
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=initial_epoch + epochs,
            steps=_steps(fit_x, kwargs),
            model=model,
        )
        model.stop_training = False
        logger.info("Training on cached features: %s", info)
        with model.distribute_strategy.scope(), _timed("Training on cached features"):
            if not top.optimizer.built:
                # As Keras builds it itself under a distribution strategy. Left to
                # the first call of the train function, the optimizer creates its
                # variables while that function is traced, and TensorFlow then
                # traces it a second time: for phase 2 of EfficientNetB0 (160 px)
                # the first epoch took 5.3 s instead of 8.3 s built here.
                top.optimizer.build(top.trainable_variables)
            history = top.fit(fit_x, fit_y, epochs=initial_epoch + epochs,
                              initial_epoch=initial_epoch, callbacks=callbacks, **kwargs)
        return history, info

    def _plan(self, model, x, y, validation_data, fit_kwargs, planned_trains):
        if fit_kwargs.get("steps_per_epoch"):
            raise _NotCacheable("`steps_per_epoch` is set")
        if getattr(model, "_compile_config", None) is None or model.optimizer is None:
            raise _NotCacheable("the model is not compiled")
        forced = self.mode != "auto"
        train = _source(x, y, fit_kwargs.get("sample_weight"), "training", forced=forced)
        validation = _validation_source(validation_data, forced=forced)
        for source in (train, validation):
            if source is not None and source.random_ops:
                if self.mode == "auto":
                    raise _NotCacheable(
                        "the dataset's pipeline has random or opaque ops "
                        f"({', '.join(source.random_ops)}): data augmentation would be "
                        "frozen into the cache. Pass cache=True if the pipeline is "
                        "deterministic"
                    )
                logger.warning(
                    "Caching a dataset with random or opaque ops (%s): one pass of it is "
                    "cached and reused every epoch.", ", ".join(source.random_ops)
                )
        graph = _flatten_graph(model)
        cut = plan_cut(model, graph=graph)
        extra = []
        if planned_trains is not None:  # phase 2's activations come from the same pass
            try:
                planned = plan_cut(model, planned_trains, graph=graph)
            except _NotCacheable as reason:
                logger.info("Phase 2 will not be cached: %s.", reason)
            else:
                if planned.name != cut.name:
                    extra.append(planned)
        return cut, extra, train, validation

    def _prepare(self, model, cut, extra, train, validation, *, fit_kwargs, first_epoch=0):
        """Extracts what is missing; returns the top model, its `fit` inputs
        and the summary's cache info."""
        verbose = fit_kwargs.get("verbose", "auto")
        start = time.perf_counter()
        self._snapshots.append(_NodeSnapshot(model, cut.graph))
        cuts = [cut, *extra]
        values = {}  # the frozen weights as NumPy arrays, read once
        with _timed("Hashing the frozen weights"):
            keys = [c.key(values) for c in cuts]
        batch_size = fit_kwargs.get("batch_size") or 32
        train_digest, reused = self._ensure(model, graph_cuts=cuts, keys=keys, source=train,
                                            batch_size=batch_size, verbose=verbose,
                                            values=values)
        val_digest = None
        if validation is not None:
            val_batch = fit_kwargs.get("validation_batch_size") or batch_size
            val_digest, val_reused = self._ensure(model, graph_cuts=cuts, keys=keys,
                                                  source=validation, batch_size=val_batch,
                                                  verbose=verbose, values=values)
            reused = reused and val_reused
        extract_seconds = time.perf_counter() - start

        # Built in the model's strategy scope: with several replicas, a top
        # model built outside it fails in `fit` ("You must feed a value for
        # placeholder tensor ... cond/Placeholder").
        with _timed("Building the top model"), model.distribute_strategy.scope():
            top = _replay(cut.graph, cut.top, [cut.boundary], _pack(cut.graph),
                          model_class=_CachedTop, full=model, name=f"{model.name}_cached_top")
        _compile_like(top, model)
        train_entry = self._entries[(train_digest, keys[0])]
        val_entry = self._entries[(val_digest, keys[0])] if validation is not None else None
        fit_x, fit_y, kwargs = self._fit_inputs(train, train_digest, train_entry, fit_kwargs,
                                                split=validation is None,
                                                first_epoch=first_epoch)
        if validation is not None:
            kwargs["validation_data"] = self._validation_inputs(
                validation, val_digest, val_entry,
                fit_kwargs.get("validation_batch_size") or batch_size,
                in_order=not fit_kwargs.get("validation_steps")
                and model.distribute_strategy.num_replicas_in_sync == 1)
        storages = {train_entry.storage} | ({val_entry.storage} if val_entry else set())
        info = {
            "boundary": cut.name,
            "storage": "+".join(sorted(storages)),
            "examples": len(train_entry.features),
            "validation_examples": len(val_entry.features) if val_entry else 0,
            "bytes": int(train_entry.features.nbytes
                         + (val_entry.features.nbytes if val_entry else 0)),
            "extract_seconds": round(extract_seconds, 3),
            "reused": bool(reused),
        }
        return top, fit_x, fit_y, kwargs, info

    # -- extraction --------------------------------------------------------

    def _digest(self, source):
        if source.kind == "dataset":
            known = self._dataset_digests.get(id(source.x))
            return known[1] if known is not None and known[0] is source.x else None
        digest = _data_hasher()
        _hash_arrays(digest, [source.x])
        return digest.hexdigest()

    def _ensure(self, model, *, graph_cuts, keys, source, batch_size, verbose, values=None):
        """Makes sure the entries for `source` and every cut exist; returns the
        data digest and whether they were there already. `values`: the frozen
        weights as read for `keys` (see `_Cut.key`)."""
        with _timed("Hashing the data"):
            digest = self._digest(source)
        missing = [(c, k) for c, k in zip(graph_cuts, keys) if (digest, k) not in self._entries]
        if digest is not None and not missing:
            logger.info("Reusing cached features for %d examples.",
                        len(self._entries[(digest, keys[0])].features))
            return digest, True
        if digest is None:
            missing = list(zip(graph_cuts, keys))
        cuts = [c for c, _ in missing]
        with _timed("Tracing the feature extractor"):
            forward = self._forward(model, cuts, [k for _, k in missing], values)
        with _timed("Extracting features"):
            digest, arrays = self._extract(forward, cuts, source, batch_size, verbose, digest)
        for (cut, key), array in zip(missing, arrays):
            self._entries[(digest, key)] = _Entry(
                array, "disk" if isinstance(array, np.memmap) else "memory"
            )
        return digest, False

    def _forward(self, model, cuts, keys, values=None):
        """The compiled forward pass from images to the boundaries of `cuts`,
        built once per session (training and validation data share it)."""
        if tuple(keys) not in self._forwards:
            graph = cuts[0].graph
            needed = {id(step) for cut in cuts for step in cut.bottom}
            steps = [step for step in graph.steps if id(step) in needed]
            image = graph.tensors[graph.inputs[0]]
            outputs = [c.boundary for c in cuts]
            forward = _frozen_forward(steps, graph.inputs[0], outputs,
                                      tf.TensorSpec((None, *image.shape[1:]), image.dtype),
                                      values=values)
            forward.dtypes = [keras.backend.standardize_dtype(graph.tensors[i].dtype)
                              for i in outputs]
            forward.input_dtype = image.dtype
            self._forwards[tuple(keys)] = forward
        return self._forwards[tuple(keys)]

    def _writer(self, cut, dtype, capacity):
        nbytes = capacity * int(np.prod(cut.shape)) * np.dtype(dtype).itemsize
        to_disk = self.mode == "disk" or (
            self.mode == "auto" and self.memory_bytes + nbytes > self.memory_limit
        )
        if not to_disk:
            self.memory_bytes += nbytes
            return _Writer(cut.shape, dtype, capacity, None)
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="tftransfer-cache-", dir=self.cache_dir)
        name = re.sub(r"\W", "_", cut.name)
        path = os.path.join(self.directory, f"{name}-{len(os.listdir(self.directory))}")
        logger.info("Caching %s on disk in %s (%d bytes).", cut.name, path, nbytes)
        return _Writer(cut.shape, dtype, capacity, path)

    def _extract(self, forward, cuts, source, batch_size, verbose, digest):
        if source.kind == "arrays":
            count = len(source.x)
            batches = ((source.x[i:i + batch_size], None) for i in range(0, count, batch_size))
            total = math.ceil(count / batch_size)
            hasher = None
        else:
            dataset = source.x.prefetch(tf.data.AUTOTUNE)
            batches = ((element[0], element[1:]) for element in dataset)
            total = int(source.x.cardinality())
            total = total if total >= 0 else None  # unknown: cache=True on a generator
            count = None
            hasher = _data_hasher()
        progbar = None
        if verbose != 0:
            progbar = keras.utils.Progbar(total, verbose=1 if verbose == "auto" else verbose,
                                          unit_name="batch")
        logger.info("Extracting features at %s over %s batches.",
                    ", ".join(c.name for c in cuts), total or "an unknown number of")
        writers, targets, structure, first_batch = None, [], None, None
        for step, (images, rest) in enumerate(batches):
            images = tf.cast(images, forward.input_dtype)
            outputs = forward(images)
            if writers is None:
                first_batch = int(images.shape[0])
                capacity = count if count is not None else (total or 64) * first_batch
                writers = [self._writer(c, d, capacity) for c, d in zip(cuts, forward.dtypes)]
            for writer, output in zip(writers, outputs):
                writer.append(output.numpy())
            if rest is not None:
                flat = [np.asarray(t) for t in tf.nest.flatten(rest)]
                structure = rest
                targets.append(flat)
                _hash_arrays(hasher, [images, *flat])
            if progbar is not None:
                progbar.update(step + 1)
        if writers is None:
            raise _NotCacheable("the data is empty")
        arrays = [w.finish() for w in writers]
        if hasher is not None:
            digest = hasher.hexdigest()
            self._dataset_digests[id(source.x)] = (source.x, digest)
            self._streams[digest] = _Stream(
                targets=[np.concatenate(parts) for parts in zip(*targets)],
                structure=structure,
                batch_size=first_batch,
                shuffle=source.shuffle,
            )
        return digest, arrays

    # -- feeding the top model ---------------------------------------------

    def _fit_inputs(self, source, digest, entry, fit_kwargs, *, split, first_epoch=0):
        kwargs = dict(fit_kwargs)
        kwargs.pop("verbose", None)
        kwargs["verbose"] = fit_kwargs.get("verbose", "auto")
        if source.kind == "dataset":
            kwargs.pop("batch_size", None)
            kwargs["shuffle"] = False
            return _stream_dataset(entry.features, self._streams[digest], seed=self.shuffle_seed,
                                   first_epoch=first_epoch), None, kwargs
        y, sample_weight = (list(source.targets) + [None])[:2]
        if entry.storage == "memory" and self.shuffle_seed is None:
            return entry.features, y, kwargs
        # A memory map is served batch by batch, so it is never loaded whole;
        # with a `shuffle_seed` (resumable runs) arrays in memory are served the
        # same way, so that each epoch's order depends on the epoch only.
        batch_size = kwargs.pop("batch_size", None) or 32
        shuffle = kwargs.pop("shuffle", True)
        kwargs["shuffle"] = False  # the dataset below shuffles itself
        kwargs.pop("sample_weight", None)
        split = kwargs.pop("validation_split", 0.0) if split else 0.0
        arrays = [entry.features, np.asarray(y)]
        if sample_weight is not None:
            arrays.append(np.asarray(sample_weight))
        if split:  # as Keras does it: the last rows, before shuffling
            at = int(math.floor(len(entry.features) * (1.0 - split)))
            kwargs["validation_data"] = _array_dataset(
                [a[at:] for a in arrays], kwargs.pop("validation_batch_size", None)
                or batch_size, shuffle=False)
            arrays = [a[:at] for a in arrays]
        return _array_dataset(arrays, batch_size, shuffle=bool(shuffle), seed=self.shuffle_seed,
                              first_epoch=first_epoch), None, kwargs

    def _validation_inputs(self, source, digest, entry, batch_size, *, in_order=False):
        if source.kind == "dataset":
            return _stream_dataset(entry.features, self._streams[digest])
        if entry.storage == "memory":
            arrays = (entry.features, *source.targets)
            dataset = _in_order_dataset(arrays, batch_size) if in_order else None
            return arrays if dataset is None else dataset
        return _array_dataset([entry.features, *map(np.asarray, source.targets)], batch_size,
                              shuffle=False)


def _in_order_dataset(arrays, batch_size):
    """The batches `fit` makes of validation arrays (in order, floats cast
    to floatx, as Keras's array adapter does), as a plain `tf.data.Dataset`;
    None unless every array is a numeric NumPy array.

    Keras validates on arrays through a pipeline whose iterator, made anew
    every epoch, cost ~15 ms of CPU (~20-35 ms of wall time) on 2 cores; this
    one's costs under 1 ms. The batches, so the validation metrics, are the
    same.
    """
    converted = []
    for array in arrays:
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            return None
        if array.dtype.kind == "f" and array.dtype != np.dtype(keras.backend.floatx()):
            array = array.astype(keras.backend.floatx())
        converted.append(array)
    return tf.data.Dataset.from_tensor_slices(tuple(converted)).batch(batch_size)


class _Forward:
    """A callable holding a concrete function (attributes can be added)."""

    def __init__(self, function):
        self.function = function

    def __call__(self, images):
        return self.function(images)


def _run_steps(steps, values, outputs, constants=None, folds=None):
    """Runs `steps` in inference mode on the tensors in `values` (by tensor
    id); returns the tensors `outputs`. Inside a `tf.function`; cheaper than
    building a functional model for the extractor. With `constants` (numpy
    values by variable id), the layers' weights go into the graph as
    constants (`Layer.stateless_call`), and the BatchNormalization steps in
    `folds` (see `_batchnorm_folds`) are folded into their convolutions."""
    values = dict(values)
    folds = folds or {}
    folded = {id(normalization) for normalization in folds.values()}
    for step in steps:
        if id(step) in folded:
            continue  # computed with its convolution
        lookup = {id(t): values[i] for t, i in zip(step.node.input_tensors, step.inputs)}
        args, kwargs = step.node.arguments.fill_in(lookup)
        op = step.op
        if _accepts_training(op):
            kwargs["training"] = False
        step_outputs = step.outputs
        if constants is not None and isinstance(op, keras.layers.Layer) and op.weights:
            normalization = folds.get(id(step))
            replaced, bias = {}, None
            if normalization is not None:
                replaced, bias = _folded_weights(op, normalization.op, constants)
                step_outputs = normalization.outputs

            def constant(variable, replaced=replaced):
                return tf.constant(replaced.get(id(variable), constants[id(variable)]))

            trainable = [constant(v) for v in op.trainable_variables]
            fixed = [constant(v) for v in op.non_trainable_variables]
            result, _ = op.stateless_call(trainable, fixed, *args, **kwargs)
            if bias is not None:
                result = tf.nn.bias_add(result, tf.constant(bias))
        else:
            result = op(*args, **kwargs)
        for i, value in zip(step_outputs, tree.flatten(result)):
            values[i] = value
    return [values[i] for i in outputs]


_FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _batchnorm_folds(steps, outputs):
    """The BatchNormalization steps that can be folded into the convolution
    before them, by the convolution's step id.

    In inference mode a BatchNormalization layer is a per-channel scale and
    shift, so a convolution followed by one is the same convolution with a
    scaled kernel and a bias. TensorFlow's graph optimizer folds the scale
    into regular convolutions' constant kernels, but left a multiplication
    after every depthwise convolution of MobileNetV2; folded here, the
    extractor ran MobileNetV2 at 160 px 9-15% faster on 2 CPU cores
    (EfficientNetB0: 0-8%, within the noise). The features differ from the
    unfolded ones by float rounding, as much as the constant-folded graph
    already differs from `model.predict` (at most 1e-4 to 2e-4 for features
    up to 1.6 and 10 in magnitude).
    Folded only where nothing else reads the convolution's output and
    everything is plain float32.
    """
    producer = {i: step for step in steps for i in step.outputs}
    readers = {}
    for step in steps:
        for i in step.inputs:
            readers[i] = readers.get(i, 0) + 1
    for i in outputs:
        readers[i] = readers.get(i, 0) + 1
    folds = {}
    for step in steps:
        normalization = step.op
        if (
            type(normalization) is not keras.layers.BatchNormalization
            or getattr(normalization, "renorm", False)
            or len(step.inputs) != 1
            or step.node.arguments.kwargs.get("mask") is not None
        ):
            continue
        convolution_step = producer.get(step.inputs[0])
        if convolution_step is None or readers[step.inputs[0]] != 1:
            continue
        convolution = convolution_step.op
        rank = len(convolution_step.node.output_tensors[0].shape)
        if (
            type(convolution) not in _FOLDABLE_CONVOLUTIONS
            or len(convolution_step.outputs) != 1
            or convolution.data_format != "channels_last"
            or convolution.activation is not keras.activations.linear
            or getattr(convolution, "lora_enabled", False)
            or getattr(convolution, "quantization_mode", None)
            or normalization.axis not in (-1, rank - 1)
            or not all(_plain_float32(layer) for layer in (convolution, normalization))
        ):
            continue
        folds[id(convolution_step)] = step
    return folds


def _plain_float32(layer):
    return keras.backend.standardize_dtype(layer.compute_dtype) == "float32" and all(
        keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.weights
    )


def _folded_weights(convolution, normalization, constants):
    """The kernel and bias of `convolution` with `normalization` (inference
    mode) folded in: ``({variable id: value}, bias to add or None)``."""

    def value(variable):
        return constants[id(variable)].astype(np.float64)

    # As tf.nn.batch_normalization: x * inv + (beta - mean * inv).
    inv = 1.0 / np.sqrt(value(normalization.moving_variance) + normalization.epsilon)
    if normalization.scale:
        inv = inv * value(normalization.gamma)
    shift = -value(normalization.moving_mean) * inv
    if normalization.center:
        shift = shift + value(normalization.beta)
    kernel = value(convolution.kernel)
    if isinstance(convolution, keras.layers.DepthwiseConv2D):
        # (height, width, channels, multiplier): output channel c * multiplier + m.
        kernel = kernel * inv.reshape(kernel.shape[2:])
    else:
        kernel = kernel * inv
    replaced = {id(convolution.kernel): kernel.astype(np.float32)}
    if convolution.use_bias:
        replaced[id(convolution.bias)] = (value(convolution.bias) * inv + shift).astype(
            np.float32)
        return replaced, None
    return replaced, shift.astype(np.float32)


def _frozen_forward(steps, input_id, outputs, spec, values=None):
    """The compiled forward pass of `steps`, with the weights as constants in
    the graph (the bottom is frozen: its weights do not change while the
    cache lives, and the cache key holds them), so that TensorFlow's graph
    optimizer can fold them: on 2 CPU cores this ran MobileNetV2 and
    EfficientNetB0 at 160 px 1.6-2x faster than the same graph reading
    variables. BatchNormalization is folded into the convolutions before it
    (`_batchnorm_folds`). Falls back to reading the variables where that
    fails. `values`: weights already read, as NumPy arrays by variable id."""
    values = {} if values is None else values
    constants = {
        id(v): values[id(v)] if id(v) in values else keras.ops.convert_to_numpy(v)
        for step in steps
        for v in getattr(step.op, "weights", [])
    }
    folds = _batchnorm_folds(steps, outputs)
    # Traced without AutoGraph, as Keras traces its own train and predict
    # functions: the steps are a Python loop over layers, and converting every
    # layer's `call` took more than half of the tracing time.
    try:
        concrete = tf.function(
            lambda images: _run_steps(steps, {input_id: images}, outputs, constants, folds),
            input_signature=[spec], autograph=False,
        ).get_concrete_function()
    except Exception as err:  # noqa: BLE001 - any failure: read the variables instead
        logger.info("Running the feature extractor on variables (%s: %s).",
                    type(err).__name__, err)
        concrete = tf.function(
            lambda images: _run_steps(steps, {input_id: images}, outputs),
            input_signature=[spec], autograph=False,
        ).get_concrete_function()
    return _Forward(concrete)


def _pack(graph):
    return tree.pack_sequence_as(graph.outputs_struct, graph.outputs)


def _steps(x, kwargs):
    """The steps per epoch `fit` will count (for the progress bar)."""
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality >= 0 else None
    count = len(x)
    if kwargs.get("validation_split") and kwargs.get("validation_data") is None:
        count = int(math.floor(count * (1.0 - kwargs["validation_split"])))
    return math.ceil(count / (kwargs.get("batch_size") or 32))


def _array_dataset(arrays, batch_size, *, shuffle, seed=None, first_epoch=0):
    """Batches of rows of `arrays` (memory maps included), in order or
    reshuffled every epoch, read lazily.

    Epoch ``e``'s order depends only on ``(seed, e)``; the n-th iteration of
    the dataset is epoch ``first_epoch + n``. So a run resumed at epoch ``e``
    sees the same orders from there on as an uninterrupted run. `seed`
    defaults to a draw from NumPy's global generator (which
    `keras.utils.set_random_seed` seeds).
    """
    count = len(arrays[0])
    if seed is None:
        seed = int(np.random.randint(2**31 - 1))
    epochs = itertools.count(first_epoch)

    def batches():
        epoch = next(epochs)
        order = np.random.default_rng([seed, epoch]).permutation(count) if shuffle else None
        for start in range(0, count, batch_size):
            index = np.sort(order[start:start + batch_size]) if shuffle else slice(
                start, start + batch_size)
            yield tuple(np.asarray(a[index]) for a in arrays)

    signature = tuple(
        tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(np.asarray(a[:1]).dtype)) for a in arrays
    )
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(
        math.ceil(count / batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _stream_dataset(features, stream, *, seed=None, first_epoch=0):
    """The cached form of a dataset: same batch size and labels, reshuffled
    each epoch when the original shuffled."""
    arrays = [features, *stream.targets]
    dataset = _array_dataset(arrays, stream.batch_size, shuffle=stream.shuffle, seed=seed,
                             first_epoch=first_epoch)
    structure = stream.structure

    def restore(x, *targets):
        return (x, *tf.nest.pack_sequence_as(structure, list(targets)))

    return dataset.map(restore, num_parallel_calls=tf.data.AUTOTUNE)
