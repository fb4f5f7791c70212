"""The training and validation data, described for caching (and hashed)."""

import dataclasses
import hashlib

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.data.checks import is_array
from tftransfer.feature_cache.options import RANDOM_OP
from tftransfer.feature_cache.options import NotCacheable


@dataclasses.dataclass
class Source:
    kind: str  # "arrays" or "dataset"
    x: object
    targets: tuple = ()  # arrays: (y,) or (y, sample_weight); dataset: from the stream
    shuffle: bool = False  # dataset: its graph has a shuffle op
    random_ops: tuple = ()
    what: str = "training"  # or "validation", for messages


def dataset_ops(dataset):
    graph_bytes = tf.raw_ops.DatasetToGraphV2(
        input_dataset=_compat.dataset_variant(dataset),
        external_state_policy=1,  # ignore captured state: only op types are read
        strip_device_assignment=True,
    )
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes.numpy())
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


def describe_source(x, y, sample_weight, what, *, forced=False):
    """Describes `x` as a cacheable source, or raises `_NotCacheable`."""
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        if cardinality == tf.data.INFINITE_CARDINALITY:
            raise NotCacheable(f"the {what} dataset repeats forever")
        if cardinality == tf.data.UNKNOWN_CARDINALITY and not forced:
            raise NotCacheable(
                f"the {what} dataset's length is unknown (a filter or a generator); "
                "pass cache=True if it is finite"
            )
        spec = x.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise NotCacheable(
                f"the {what} dataset must yield (images, labels) or "
                "(images, labels, sample_weights)"
            )
        if not isinstance(spec[0], tf.TensorSpec) or spec[0].shape.rank is None or (
            spec[0].shape.rank < 2
        ):
            raise NotCacheable(f"the {what} dataset's images must be one batched tensor")
        try:
            ops = dataset_ops(x)
        except (tf.errors.OpError, ValueError, TypeError) as err:
            raise NotCacheable(f"the {what} dataset's pipeline cannot be inspected ({err})")
        random_ops = tuple(sorted(op for op in ops if RANDOM_OP.search(op)))
        shuffle = any(op.startswith("Shuffle") for op in ops)
        return Source("dataset", x, shuffle=shuffle, random_ops=random_ops, what=what)
    if is_array(x) and not isinstance(x, dict):
        if y is None:
            raise NotCacheable(f"the {what} images come without labels")
        targets = (y,) if sample_weight is None else (y, sample_weight)
        return Source("arrays", np.asarray(x), targets=targets, what=what)
    raise NotCacheable(
        f"the {what} data is a {type(x).__name__}; only arrays and finite "
        "tf.data.Datasets are cached"
    )


def describe_validation(validation_data, *, forced):
    if validation_data is None:
        return None
    if isinstance(validation_data, tf.data.Dataset):
        return describe_source(validation_data, None, None, "validation", forced=forced)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        return describe_source(*validation_data, *([None] * (3 - len(validation_data))), "validation",
                       forced=forced)
    raise NotCacheable(
        f"the validation data is a {type(validation_data).__name__}; pass (x, y), "
        "(x, y, sample_weight) or a tf.data.Dataset"
    )


def data_hasher():
    # SHA-1 is the fastest hashlib hash here (CPUs with SHA instructions hash
    # ~1 GB/s with it, twice BLAKE2b's rate); collisions are no threat to a
    # cache that lives for one training call.
    return hashlib.sha1(usedforsecurity=False)


def hash_arrays(digest, arrays):
    for array in arrays:
        # NumPy arrays are hashed in place (`keras.ops.convert_to_numpy` copies
        # them: for 400 images of 160 px that copy took longer than the hash).
        if not isinstance(array, np.ndarray):
            array = keras.ops.convert_to_numpy(array)
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data if array.dtype != object else repr(array.tolist()).encode())
