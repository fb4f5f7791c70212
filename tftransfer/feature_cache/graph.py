"""A model's functional graph, flattened: the steps the cache plans over."""

import dataclasses

import keras

from tftransfer import _compat
from tftransfer.feature_cache.options import NotCacheable
from tftransfer.layers import InferenceModeCall


@dataclasses.dataclass
class Step:
    op: object
    node: object
    inference: bool  # inside a call made with training=False
    inputs: list  # canonical ids of the input tensors, in node order
    outputs: list  # ids of the output tensors
    name: str  # "backbone/layer" for a layer inside a nested model


@dataclasses.dataclass
class Graph:
    steps: list
    tensors: dict  # id -> KerasTensor
    names: dict  # id -> "producer:index"
    inputs: list
    outputs: list
    outputs_struct: object


def flatten_graph(model):
    """The model's graph as a list of steps in topological order, with the
    nested functional models (the backbone) opened up."""
    if not _compat.is_functional(model):
        raise NotCacheable(
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
        for depth in sorted(_compat.nodes_by_depth(functional), reverse=True):
            for node in _compat.nodes_by_depth(functional)[depth]:
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
                    _compat.is_functional(nested)
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
                steps.append(Step(op, node, inference, inputs, outputs, prefix + op.name))

    for tensor in model.inputs:
        tensors[id(tensor)] = tensor
        names[id(tensor)] = f"{tensor.name}:input"
    walk(model, False, "")
    return Graph(
        steps=steps,
        tensors=tensors,
        names=names,
        inputs=[canon(t) for t in model.inputs],
        outputs=[canon(t) for t in model.outputs],
        outputs_struct=_compat.outputs_struct(model),
    )


def _inference_wrapped(op):
    """The functional model inside a layer that always calls it with
    ``training=False`` (how `ImageClassifier` calls its backbone), or None."""
    inner = getattr(op, "layer", None)
    if isinstance(op, InferenceModeCall) and _compat.is_functional(inner):
        return inner
    return None


def sublayers(op):
    if isinstance(op, keras.layers.Layer):
        return _compat.flatten_layers(op)
    return []


def is_random(op):
    return any(_compat.seed_generators(layer) for layer in sublayers(op))


def has_weights(op):
    return bool(getattr(op, "weights", None))


def trains_now(op):
    return bool(getattr(op, "trainable_weights", None))


def planned_trainability(layer_ids):
    """A predicate for "trains in phase 2": the layers `unfreeze_top_blocks`
    will unfreeze (by id), except BatchNormalization, plus what trains now."""

    def trains(op):
        if trains_now(op):
            return True
        return (
            id(op) in layer_ids
            and not isinstance(op, keras.layers.BatchNormalization)
            # Variables created trainable (freezing a layer flips their flag).
            and any(_compat.created_trainable_variables(layer) for layer in sublayers(op))
        )

    return trains


def accepts_training(op):
    return _compat.call_takes_training(op)
