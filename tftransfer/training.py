"""Freezing, unfreezing and the two-phase transfer-learning recipe.

Phase 1 trains only the new head on top of the frozen backbone. Phase 2
unfreezes the top N blocks of the backbone (or everything from a named
layer up) and trains them together with the head at a lower learning rate,
warming up from zero and decaying with a cosine.

BatchNormalization layers stay frozen **and** in inference mode in both
phases. Calling the backbone with ``training=False`` is not enough in
Keras 3: once a BatchNormalization layer is trainable, its moving statistics
are updated during `fit` (keras#20285). Each one is therefore set
non-trainable by itself, which Keras 3 treats as inference mode (the Keras
fine-tuning guide's rewrite, keras PR #20298).
"""

import logging
import math
import time

import keras
import tensorflow as tf

from tftransfer import _hub
from tftransfer import features
from tftransfer.backbones import get_blocks

logger = logging.getLogger(__name__)

DEFAULT_LEARNING_RATE = 1e-3
FINE_TUNE_LR_FACTOR = 0.1
DEFAULT_WARMUP = 0.1


def _backbone_of(model):
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, keras.Model):
        raise TypeError(
            "`model` must be a classifier with a `.backbone` (a model built by "
            "`tftransfer.build_classifier`). Received: "
            f"model={getattr(model, 'name', model)!r} of type {type(model).__name__}"
        )
    return backbone


def _all_sublayers(layer):
    return layer._flatten_layers(include_self=True, recursive=True)


def freeze_batchnorm(layer):
    """Sets every BatchNormalization layer below `layer` non-trainable.

    In Keras 3 a non-trainable BatchNormalization layer runs in inference
    mode: it neither updates nor uses batch statistics.

    Returns:
        The number of BatchNormalization layers found.
    """
    count = 0
    for sublayer in _all_sublayers(layer):
        if isinstance(sublayer, keras.layers.BatchNormalization):
            sublayer.trainable = False
            count += 1
    return count


def freeze_backbone(model):
    """Freezes the whole backbone of `model` (phase 1 of the recipe).

    Example:

    >>> model = build_classifier("mobilenet_v3_small", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> model.backbone.trainable = True
    >>> freeze_backbone(model)
    >>> model.backbone.trainable
    False
    """
    _backbone_of(model).trainable = False


def unfreeze_top_blocks(model, num_blocks=None, *, from_layer=None, block_pattern=None):
    """Unfreezes the top `num_blocks` blocks of the backbone, or all layers
    from `from_layer` up; BatchNormalization layers stay frozen.

    Args:
        model: a classifier from `build_classifier`.
        num_blocks: how many blocks to unfreeze, counted from the top, or
            ``"all"``. See `tftransfer.get_blocks` for what the blocks are.
        from_layer: instead of `num_blocks`: the name of the backbone layer
            from which on (in topological order) layers are unfrozen.
        block_pattern: overrides the backbone's block pattern.

    Returns:
        The names of the unfrozen blocks (or ``[from_layer]``).

    Example:

    >>> model = build_classifier("efficientnet_b0", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> unfreeze_top_blocks(model, 2)
    ['block6', 'block7']
    """
    backbone = _backbone_of(model)
    unfrozen, trainable = _select_trainable(backbone, num_blocks, from_layer, block_pattern)
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = id(layer) in trainable
    freeze_batchnorm(backbone)
    return unfrozen


def _select_trainable(backbone, num_blocks, from_layer, block_pattern=None):
    """Validates the unfreeze request; returns (names, ids of layers to train)."""
    if (num_blocks is None) == (from_layer is None):
        raise ValueError(
            "Pass exactly one of `num_blocks` (e.g. 2) and `from_layer` (a layer "
            f"name). Received: num_blocks={num_blocks!r}, from_layer={from_layer!r}"
        )
    layers = backbone.layers
    if from_layer is not None:
        names = [layer.name for layer in layers]
        if from_layer not in names:
            raise ValueError(
                f"Backbone {backbone.name!r} has no layer named {from_layer!r}. "
                f"Its blocks start at: "
                f"{', '.join(_first_layer_names(backbone, block_pattern))}. "
                f"Received: from_layer={from_layer!r}"
            )
        start = names.index(from_layer)
        return [from_layer], {id(layer) for layer in layers[start:]}
    _hub.check_unfreeze_request(backbone, num_blocks)  # hub modules: all or nothing
    blocks = get_blocks(backbone, block_pattern=block_pattern)
    if num_blocks == "all":
        num_blocks = len(blocks)
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(
            "`num_blocks` must be a positive integer or 'all'. "
            f"Received: num_blocks={num_blocks!r}"
        )
    if num_blocks > len(blocks):
        raise ValueError(
            f"Cannot unfreeze {num_blocks} blocks: backbone {backbone.name!r} "
            f"has {len(blocks)} ({', '.join(blocks)}). Pass at most "
            f"{len(blocks)}, or 'all'. Received: num_blocks={num_blocks}"
        )
    unfrozen = list(blocks)[-num_blocks:]
    return unfrozen, {id(layer) for name in unfrozen for layer in blocks[name]}


def _first_layer_names(backbone, block_pattern):
    try:
        return [f"{layers[0].name} ({name})" for name, layers in
                get_blocks(backbone, block_pattern=block_pattern).items()]
    except ValueError:
        return [layer.name for layer in backbone.layers[:20]]


def _steps_per_epoch(x, y, fit_kwargs):
    if fit_kwargs.get("steps_per_epoch"):
        return int(fit_kwargs["steps_per_epoch"])
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality > 0 else None
    try:
        n = len(x)
    except TypeError:
        return None
    if isinstance(x, keras.utils.PyDataset):
        return n
    batch_size = fit_kwargs.get("batch_size") or 32
    return max(1, math.ceil(n / batch_size))


def warmup_cosine_schedule(learning_rate, *, total_steps, warmup=DEFAULT_WARMUP):
    """Linear warmup from 0 to `learning_rate`, then cosine decay to 0.

    Args:
        learning_rate: the peak learning rate.
        total_steps: training steps in all (epochs x steps per epoch).
        warmup: fraction of `total_steps` spent warming up, in [0, 1).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Example:

    >>> schedule = warmup_cosine_schedule(1e-4, total_steps=100, warmup=0.1)
    >>> [round(float(schedule(s)), 6) for s in (0, 10, 100)]
    [0.0, 0.0001, 0.0]
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"`warmup` must be in [0, 1). Received: warmup={warmup!r}")
    warmup_steps = int(round(warmup * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def _check_fit_kwargs(fit_kwargs, function):
    for key in ("epochs", "initial_epoch", "x", "validation_data"):
        if key in fit_kwargs:
            raise TypeError(
                f"`{function}` sets `{key}` itself; pass the phase's epochs as "
                "`head_epochs` / `fine_tune_epochs` (or `epochs` for one phase). "
                f"Received: {key}={fit_kwargs[key]!r}"
            )


def _check_epochs(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")


def _compile(model, optimizer, loss, metrics):
    with model.distribute_strategy.scope():
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def _current_learning_rate(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _run_phase(model, phase, x, y, validation_data, epochs, initial_epoch, fit_kwargs, info,
               cache):
    if isinstance(x, tf.data.Dataset):
        # A dataset shuffles itself; Keras warns about its default shuffle=True.
        fit_kwargs.setdefault("shuffle", False)
    start = time.perf_counter()
    logger.info("Phase %d: %s", phase, info)
    # On cached backbone features when the cache can (see tftransfer.features).
    history, cache_info = cache.fit(model, x, y, validation_data, epochs=epochs,
                                    initial_epoch=initial_epoch, fit_kwargs=fit_kwargs)
    if history is None:
        history = model.fit(
            x,
            y,
            validation_data=validation_data,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            **fit_kwargs,
        )
    seconds = time.perf_counter() - start
    summary = dict(info, phase=phase, epochs=len(history.epoch), seconds=round(seconds, 3),
                   cache=cache_info)
    summary["final"] = {k: float(v[-1]) for k, v in history.history.items() if v}
    if isinstance(getattr(model, "training_summary", None), list):
        model.training_summary.append(summary)
    history.history["phase"] = [phase] * len(history.epoch)
    return history


def fit_head(
    model,
    x,
    validation_data=None,
    *,
    y=None,
    epochs=5,
    learning_rate=DEFAULT_LEARNING_RATE,
    optimizer=None,
    loss="auto",
    metrics="auto",
    cache="auto",
    cache_dir=None,
    cache_memory_limit=None,
    **fit_kwargs,
):
    """Phase 1: trains only the head, with the backbone frozen.

    The backbone runs once over the data, not once per epoch, when its
    features can be cached (``cache="auto"``): the head then trains on them,
    and being the same layer objects, it is the model's head afterwards.

    Args:
        model: a classifier from `build_classifier`.
        x: training data: a `tf.data.Dataset` of ``(images, labels)``, or an
            array of images with `y`.
        validation_data: as for `keras.Model.fit`.
        y: labels, when `x` is an array.
        epochs: epochs of head training.
        learning_rate: Adam's learning rate (ignored with `optimizer`).
        optimizer: a Keras optimizer instead of Adam.
        loss, metrics: passed to `model.compile` (`"auto"` by default).
        cache: train on cached backbone features when the backbone part
            below the trained layers is frozen and the data is deterministic:
            ``"auto"`` (default: when possible, in memory up to
            `cache_memory_limit`, then on disk; otherwise uncached, logging
            why), ``True`` or ``"memory"``, ``"disk"``, or ``False``/``None``
            (never). See `tftransfer.features` for what is cached and when.
        cache_dir: directory for the temporary disk cache (deleted
            afterwards). Default: the system's temporary directory.
        cache_memory_limit: bytes of cached features kept in memory before
            the rest goes to disk. Default: a quarter of the available memory.
        **fit_kwargs: any other `keras.Model.fit` argument (`callbacks`,
            `verbose`, `class_weight`, `batch_size`, ...).

    Returns:
        The `keras.callbacks.History`, with a ``"phase"`` entry of 1s.

    Example:

    >>> import numpy as np
    >>> model = build_classifier("mobilenet_v3_small", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> images = np.random.uniform(0, 255, (8, 32, 32, 3))
    >>> history = fit_head(model, images, y=np.arange(8) % 2, epochs=1,
    ...                    verbose=0)
    >>> history.history["phase"]
    [1]
    """
    _check_fit_kwargs(fit_kwargs, "fit_head")
    _check_epochs(epochs, "epochs")
    mode = features.check_cache_options(cache, cache_dir, cache_memory_limit)
    with features.FeatureCache(mode, cache_dir=cache_dir,
                               memory_limit=cache_memory_limit) as session:
        return _fit_head(model, x, y, validation_data, epochs, 0, learning_rate, optimizer,
                         loss, metrics, fit_kwargs, session)


def _fit_head(model, x, y, validation_data, epochs, initial_epoch, learning_rate,
              optimizer, loss, metrics, fit_kwargs, cache):
    backbone = _backbone_of(model)
    backbone.trainable = False
    freeze_batchnorm(model)
    with model.distribute_strategy.scope():
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    _compile(model, optimizer, loss, metrics)
    info = {"learning_rate": learning_rate, "unfrozen_blocks": []}
    return _run_phase(model, 1, x, y, validation_data, epochs, initial_epoch, fit_kwargs, info,
                      cache)


def fine_tune(
    model,
    x,
    validation_data=None,
    *,
    y=None,
    epochs=5,
    unfreeze_blocks=2,
    from_layer=None,
    learning_rate=None,
    warmup=DEFAULT_WARMUP,
    optimizer=None,
    loss="auto",
    metrics="auto",
    cache="auto",
    cache_dir=None,
    cache_memory_limit=None,
    **fit_kwargs,
):
    """Phase 2: unfreezes the top blocks and trains them with the head.

    With ``cache="auto"``, the frozen part of the backbone below the first
    unfrozen block runs once over the data, and only the blocks above it
    train, on its cached activations (when no skip connection crosses that
    boundary and the data is deterministic).

    The optimizer is Adam with a linear warmup from 0 over the first
    `warmup` fraction of the steps, then cosine decay to 0 (a constant rate
    when the number of steps is unknown). BatchNormalization layers stay
    frozen and in inference mode.

    Args:
        model: a classifier from `build_classifier`, usually after
            `fit_head`.
        x, validation_data, y: as for `fit_head`.
        epochs: epochs of fine-tuning.
        unfreeze_blocks: how many backbone blocks to unfreeze, from the top,
            or ``"all"``. See `tftransfer.get_blocks`.
        from_layer: instead of `unfreeze_blocks`: unfreeze from this backbone
            layer up.
        learning_rate: peak learning rate. Default: a tenth of the model's
            current learning rate (the head phase's), or 1e-4 if the model
            has no optimizer yet.
        warmup: fraction of the steps spent warming up.
        optimizer, loss, metrics, cache, cache_dir, cache_memory_limit,
        **fit_kwargs: as for `fit_head`.

    Returns:
        The `keras.callbacks.History`, with a ``"phase"`` entry of 2s.
    """
    _check_fit_kwargs(fit_kwargs, "fine_tune")
    _check_epochs(epochs, "epochs")
    mode = features.check_cache_options(cache, cache_dir, cache_memory_limit)
    if learning_rate is None:
        current = _current_learning_rate(model)
        learning_rate = FINE_TUNE_LR_FACTOR * (current or DEFAULT_LEARNING_RATE)
    with features.FeatureCache(mode, cache_dir=cache_dir,
                               memory_limit=cache_memory_limit) as session:
        return _fine_tune(model, x, y, validation_data, epochs, 0, unfreeze_blocks, from_layer,
                          learning_rate, warmup, optimizer, loss, metrics, fit_kwargs, session)


def _fine_tune(model, x, y, validation_data, epochs, initial_epoch, unfreeze_blocks,
               from_layer, learning_rate, warmup, optimizer, loss, metrics, fit_kwargs, cache):
    if from_layer is not None:
        unfrozen = unfreeze_top_blocks(model, from_layer=from_layer)
    else:
        unfrozen = unfreeze_top_blocks(model, unfreeze_blocks)
    if optimizer is None:
        steps = _steps_per_epoch(x, y, fit_kwargs)
        if steps is None:
            logger.info("Unknown steps per epoch: fine-tuning at a constant learning rate.")
            schedule = learning_rate
        else:
            schedule = warmup_cosine_schedule(
                learning_rate, total_steps=max(1, steps * epochs), warmup=warmup
            )
        with model.distribute_strategy.scope():
            optimizer = keras.optimizers.Adam(learning_rate=schedule)
    _compile(model, optimizer, loss, metrics)
    info = {"learning_rate": learning_rate, "unfrozen_blocks": unfrozen}
    return _run_phase(model, 2, x, y, validation_data, epochs, initial_epoch, fit_kwargs, info,
                      cache)


def fit_two_phase(
    model,
    x,
    validation_data=None,
    *,
    y=None,
    head_epochs=5,
    fine_tune_epochs=5,
    unfreeze_blocks=2,
    from_layer=None,
    learning_rate=DEFAULT_LEARNING_RATE,
    fine_tune_learning_rate=None,
    warmup=DEFAULT_WARMUP,
    loss="auto",
    metrics="auto",
    cache="auto",
    cache_dir=None,
    cache_memory_limit=None,
    **fit_kwargs,
):
    """The transfer-learning recipe in one call: `fit_head`, then `fine_tune`.

    With ``cache="auto"`` (see `fit_head`), one pass of the backbone over the
    data gives both phase 1's features and phase 2's activations below the
    unfrozen blocks; the epochs of both phases then train on those.

    Args:
        model: a classifier from `build_classifier`.
        x: training data: a `tf.data.Dataset` of ``(images, labels)``, or an
            array of images with `y`.
        validation_data: as for `keras.Model.fit`.
        y: labels, when `x` is an array.
        head_epochs: epochs of phase 1 (0 skips it).
        fine_tune_epochs: epochs of phase 2 (0 skips it).
        unfreeze_blocks: backbone blocks unfrozen in phase 2, from the top,
            or ``"all"``.
        from_layer: instead of `unfreeze_blocks`, unfreeze from this layer.
        learning_rate: phase 1's learning rate.
        fine_tune_learning_rate: phase 2's peak learning rate. Default: a
            tenth of `learning_rate`.
        warmup: fraction of phase 2's steps spent warming up.
        loss, metrics: passed to `model.compile` in both phases.
        cache, cache_dir, cache_memory_limit: as for `fit_head`, for both
            phases.
        **fit_kwargs: any other `keras.Model.fit` argument (`callbacks`,
            `verbose`, `class_weight`, `batch_size`, ...), used in both
            phases.

    Returns:
        One `keras.callbacks.History` over both phases: epochs are numbered
        on from phase 1 into phase 2, and ``history.history["phase"]`` says
        which phase each epoch belongs to.

    Example:

    >>> import numpy as np
    >>> model = build_classifier("efficientnet_b0", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> images = np.random.uniform(0, 255, (8, 32, 32, 3))
    >>> history = fit_two_phase(model, images, y=np.arange(8) % 2,
    ...                         head_epochs=1, fine_tune_epochs=1,
    ...                         unfreeze_blocks=1, verbose=0)
    >>> history.history["phase"], history.epoch
    ([1, 2], [0, 1])
    """
    _check_fit_kwargs(fit_kwargs, "fit_two_phase")
    _check_epochs(head_epochs, "head_epochs")
    _check_epochs(fine_tune_epochs, "fine_tune_epochs")
    mode = features.check_cache_options(cache, cache_dir, cache_memory_limit)
    backbone = _backbone_of(model)
    unfrozen_ids = ()
    if fine_tune_epochs:
        # A bad unfreeze request fails before phase 1 runs, not after it.
        _, unfrozen_ids = _select_trainable(
            backbone, None if from_layer else unfreeze_blocks, from_layer
        )
    if fine_tune_learning_rate is None:
        fine_tune_learning_rate = FINE_TUNE_LR_FACTOR * learning_rate
    histories = []
    with features.FeatureCache(mode, cache_dir=cache_dir,
                               memory_limit=cache_memory_limit) as session:
        if head_epochs:
            if fine_tune_epochs:
                session.expect_fine_tune(unfrozen_ids)
            histories.append(
                _fit_head(model, x, y, validation_data, head_epochs, 0, learning_rate, None,
                          loss, metrics, dict(fit_kwargs), session)
            )
        if fine_tune_epochs:
            histories.append(
                _fine_tune(model, x, y, validation_data, fine_tune_epochs, head_epochs,
                           unfreeze_blocks, from_layer, fine_tune_learning_rate, warmup, None,
                           loss, metrics, dict(fit_kwargs), session)
            )
    return _merge_histories(model, histories)


def _merge_histories(model, histories):
    merged = keras.callbacks.History()
    merged.set_model(model)
    merged.history = {}
    merged.epoch = []
    keys = []
    for history in histories:
        keys += [k for k in history.history if k not in keys]
    for history in histories:
        n = len(history.epoch)
        merged.epoch += list(history.epoch)
        for key in keys:
            merged.history.setdefault(key, []).extend(history.history.get(key, [None] * n))
        merged.params = history.params
    return merged
