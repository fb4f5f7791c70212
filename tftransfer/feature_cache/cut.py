"""Where a model stops being frozen: the cut, and the top model trained above it."""

import dataclasses
import hashlib
import re

import keras
import numpy as np
from keras import tree

from tftransfer import _compat
from tftransfer.feature_cache.graph import Graph
from tftransfer.feature_cache.graph import accepts_training
from tftransfer.feature_cache.graph import flatten_graph
from tftransfer.feature_cache.graph import has_weights
from tftransfer.feature_cache.graph import is_random
from tftransfer.feature_cache.graph import trains_now
from tftransfer.feature_cache.options import NotCacheable
from tftransfer.layers import InferenceModeCall


@dataclasses.dataclass
class Cut:
    graph: Graph
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


def plan_cut(model, trains=trains_now, graph=None):
    """Finds the boundary between the frozen bottom and the top of `model`.

    Raises `_NotCacheable` with the reason when there is none to cache.
    """
    graph = graph or flatten_graph(model)
    top_tensors, top, first_active = set(), [], None
    for step in graph.steps:
        active = trains(step.op) or (is_random(step.op) and not step.inference)
        if active and first_active is None:
            first_active = step
        if active or any(i in top_tensors for i in step.inputs):
            top.append(step)
            top_tensors.update(step.outputs)
    if not top:
        raise NotCacheable("nothing in the model trains")
    boundary = []
    for step in top:
        for i in step.inputs:
            if i not in top_tensors and i not in boundary:
                boundary.append(i)
    if len(boundary) > 1:
        sources = ", ".join(repr(graph.names[i]) for i in boundary)
        raise NotCacheable(
            f"{len(boundary)} tensors flow from the frozen layers into the trained ones "
            f"({sources}): a skip connection crosses the boundary, and only a single "
            "boundary tensor can be cached"
        )
    if not boundary or boundary[0] in graph.inputs:
        if is_random(first_active.op) and not trains(first_active.op):
            raise NotCacheable(
                f"layer {first_active.name!r} is random in training (data augmentation "
                "or noise) and runs before the frozen layers, so their output changes "
                "every epoch"
            )
        raise NotCacheable(
            f"the first trained layer ({first_active.name!r}) takes the model input: "
            "there is nothing frozen below it to cache"
        )
    bottom = _needed_steps(graph.steps, [boundary[0]], exclude=top)
    if not any(has_weights(step.op) for step in bottom):
        raise NotCacheable(
            f"nothing with weights runs below {graph.names[boundary[0]]!r}: caching "
            "would not save any work"
        )
    return Cut(graph, boundary[0], graph.names[boundary[0]], bottom, top)


def _needed_steps(steps, output_ids, exclude=()):
    excluded = {id(step) for step in exclude}
    needed, chosen = set(output_ids), []
    for step in reversed(steps):
        if id(step) not in excluded and needed.intersection(step.outputs):
            chosen.append(step)
            needed.update(step.inputs)
    return chosen[::-1]


def replay(graph, steps, input_ids, outputs, *, model_class=keras.Model, **model_kwargs):
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
        if step.inference and accepts_training(op):
            op = wrappers.setdefault(id(op), InferenceModeCall(
                op, name=f"{op.name}_inference", dtype=op.dtype_policy))
        lookup = {id(t): values[i] for t, i in zip(step.node.input_tensors, step.inputs)}
        args, kwargs = step.node.arguments.fill_in(lookup)
        for i, value in zip(step.outputs, tree.flatten(op(*args, **kwargs))):
            values[i] = value
    outputs = tree.map_structure(lambda i: values[i], outputs)
    return model_class(inputs=inputs[0] if len(inputs) == 1 else inputs, outputs=outputs,
                       **model_kwargs)


def activations_model(graph, output_ids):
    """A functional model from the model's inputs to the tensors
    `output_ids` of its flattened `graph` (inside nested models too), over
    the same layers. Call it with ``training=False``."""
    steps = _needed_steps(graph.steps, output_ids)
    return replay(graph, steps, graph.inputs, list(output_ids))


class NodeSnapshot:
    """Replaying layers adds nodes to them; `restore` takes them away again, so
    the user's model is left as it was."""

    def __init__(self, model, graph):
        ops = list(_compat.flatten_layers(model))
        ops += [step.op for step in graph.steps]
        self._lengths = {
            id(op): (op, *_compat.node_counts(op)) for op in ops
        }

    def restore(self):
        for op, inbound, outbound in self._lengths.values():
            _compat.drop_nodes(op, inbound, outbound)


class CachedTop(keras.Model):
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


def compile_like(top, model):
    """Compiles `top` as `model` is compiled, sharing its optimizer."""
    config = _compat.compile_config(model)
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


def pack_outputs(graph):
    return tree.pack_sequence_as(graph.outputs_struct, graph.outputs)
