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
before it (`batchnorm_folds`), on the data prefetched with ``AUTOTUNE``; on
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
while its train function is traced. Setting the ``tftransfer.feature_cache``
logger to DEBUG logs the wall and CPU seconds of each of these steps.
``steps_per_execution`` is left as compiled: a whole epoch per call saved
~0.2 s over 10 head epochs, but tracing its loop cost ~0.5 s more.
"""

from tftransfer.feature_cache.cache import FeatureCache

__all__ = [
    "FeatureCache",
]
