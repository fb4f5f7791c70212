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

import dataclasses
import importlib.util
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _hub
from tftransfer import checkpoints
from tftransfer import distribute
from tftransfer import features
from tftransfer.backbones import get_blocks
from tftransfer.optimizers import DiscriminativeAdam
from tftransfer.optimizers import block_multipliers

logger = logging.getLogger(__name__)

DEFAULT_LEARNING_RATE = 1e-3
FINE_TUNE_LR_FACTOR = 0.1
DEFAULT_WARMUP = 0.1
DEFAULT_PATIENCE = 3


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
    distribute.prepare(model.distribute_strategy)
    with model.distribute_strategy.scope():
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def _current_learning_rate(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def enable_determinism(seed):
    """Seeds every random generator and makes TensorFlow's ops deterministic.

    One `seed` then gives the same data splits, the same initial head and
    the same trained weights, run after run (on the same machine and
    software). Call it once, at the start of the program: op determinism
    cannot be turned off again in the same process, and some ops run
    slower (or raise, where no deterministic kernel exists) with it.

    Args:
        seed: an integer, for Python's, NumPy's, TensorFlow's and Keras's
            generators (`keras.utils.set_random_seed`).

    Example:

    ```python
    tft.enable_determinism(42)
    model = tft.build_classifier("efficientnet_b0", num_classes=5)
    tft.fit_two_phase(model, splits.train, splits.validation)
    ```
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
    logger.info("Seeded all generators with %d; TensorFlow op determinism is on.", seed)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class _StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN(raise_error=True)` with a message that says what to do.

    It raises at the first batch whose loss is not finite, before any
    checkpoint of that epoch is written, so no saved state holds non-finite
    weights. When EarlyStopping holds the best epoch's weights, the model gets
    them back; otherwise its weights are those of the failing batch."""

    def __init__(self, phase, learning_rate, argument, early_stopping):
        super().__init__(raise_error=True)
        self.phase = phase
        self.learning_rate = learning_rate
        self.argument = argument
        self.early_stopping = early_stopping
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        es = self.early_stopping
        if es is not None and es.best_weights is not None:
            self.model.set_weights(es.best_weights)
            weights = (f"The model's weights were set back to its best epoch so far "
                       f"(epoch {es.best_epoch + 1}).")
        else:
            weights = "The model's weights are not finite now: rebuild it before training again."
        rate = self.learning_rate
        if self.argument is None:  # the user's optimizer
            hint = "try your optimizer with a lower learning rate"
        elif isinstance(rate, (int, float)):
            hint = f"try `{self.argument}={rate / 10:g}` (a tenth of {rate:g})"
        else:
            hint = f"try a lower `{self.argument}`"

        raise NonFiniteLossError(
            f"Phase {self.phase} stopped: the loss became {float(loss)} at epoch "
            f"{self.epoch + 1}, batch {batch + 1}. A learning rate that is too high is the "
            f"usual cause: {hint}. Also check the data for NaN or infinite values and the "
            f"labels for values outside [0, num_classes). {weights}"
        )


@dataclasses.dataclass
class _Options:
    """What every phase takes besides its data and epochs."""

    early_stopping: object = True
    checkpoint: object = None  # checkpoints.TrainingCheckpoint
    log_dir: object = None
    learning_rate_argument: object = "learning_rate"  # None: the user's optimizer


def _check_log_dir(log_dir):
    if log_dir is None:
        return None
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"`log_dir` must be a directory path. Received: log_dir={log_dir!r}")
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "`log_dir` writes TensorBoard logs, which needs the `tensorboard` package: "
            "`pip install tensorboard` (or `pip install tftransfer[tensorboard]`). "
            f"Received: log_dir={log_dir!r}"
        )
    return os.fspath(log_dir)


def _check_early_stopping(value):
    if value is True or value is False or value is None:
        return bool(value)
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(
        "`early_stopping` must be True (stop after "
        f"{DEFAULT_PATIENCE} epochs without improvement, keeping the best epoch's "
        "weights), False, or a patience in epochs. Received: "
        f"early_stopping={value!r}"
    )


def _callbacks(phase, fit_kwargs, validation_data, info, options):
    """The phase's callbacks: the NaN check, early stopping, the user's,
    TensorBoard, and the checkpoint (last: it saves what the others did in
    the epoch)."""
    callbacks = list(fit_kwargs.pop("callbacks", None) or [])
    early_stopping = next(
        (c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    if early_stopping is None and options.early_stopping is not False:
        validating = validation_data is not None or fit_kwargs.get("validation_split")
        patience = DEFAULT_PATIENCE if options.early_stopping is True else options.early_stopping
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss" if validating else "loss", patience=patience,
            restore_best_weights=True)
        # Before the user's callbacks: at the end they see the best weights.
        callbacks.insert(0, early_stopping)
    if not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks):
        callbacks.insert(0, _StopOnNonFiniteLoss(phase, info["learning_rate"],
                                                 options.learning_rate_argument,
                                                 early_stopping))
    if options.log_dir is not None:
        # Both phases write to one log: epochs are numbered on across phases.
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(options.log_dir),
                                                     write_graph=False))
    return callbacks, early_stopping


def _resumable_inputs(x, y, fit_kwargs, seed, first_epoch):
    """Arrays are served with each epoch's order a function of (seed, epoch),
    so a resumed run reshuffles as the uninterrupted one did."""
    if isinstance(x, tf.data.Dataset) or y is None or fit_kwargs.get("validation_split"):
        if isinstance(x, tf.data.Dataset):
            logger.info(
                "Resumable training on a tf.data pipeline: the resumed epochs are exactly "
                "those of an uninterrupted run when the backbone's features are cached, or "
                "when the pipeline's order and augmentation do not depend on how many "
                "epochs it has run.")
        return x, y, fit_kwargs
    if not features._is_array(x):
        return x, y, fit_kwargs
    fit_kwargs = dict(fit_kwargs)
    arrays = [np.asarray(x), np.asarray(y)]
    if fit_kwargs.get("sample_weight") is not None:
        arrays.append(np.asarray(fit_kwargs.pop("sample_weight")))
    dataset = features._array_dataset(
        arrays, fit_kwargs.pop("batch_size", None) or 32,
        shuffle=bool(fit_kwargs.pop("shuffle", True)), seed=seed, first_epoch=first_epoch)
    fit_kwargs["shuffle"] = False
    return dataset, None, fit_kwargs


def _run_phase(model, phase, x, y, validation_data, epochs, initial_epoch, fit_kwargs, info,
               cache, options):
    if isinstance(x, tf.data.Dataset):
        # A dataset shuffles itself; Keras warns about its default shuffle=True.
        fit_kwargs.setdefault("shuffle", False)
    start = time.perf_counter()
    checkpoint = options.checkpoint.phase(phase) if options.checkpoint is not None else None
    done = checkpoint.done() if checkpoint is not None else None
    if done is not None:
        checkpoint.restore_done(model)
        logger.info("Phase %d was finished before: its weights are restored from %s.",
                    phase, checkpoint.path)
        return _finish_phase(model, phase, done["logs"], initial_epoch, done["summary"])
    state = checkpoint.latest() if checkpoint is not None else None
    callbacks, early_stopping = _callbacks(phase, fit_kwargs, validation_data, info, options)
    previous_logs = []
    first = initial_epoch
    if state is not None:
        previous_logs = state["logs"]
        first = state["epoch"] + 1
        if state["stop_training"] or first >= initial_epoch + epochs:
            # The phase ended before its result was recorded.
            checkpoint.restore_state_weights(model, state, early_stopping)
            return _record_phase(model, phase, previous_logs, initial_epoch, info, start,
                                 None, checkpoint)
    if checkpoint is not None:
        callbacks.append(checkpoint.callback(state=state, early_stopping=early_stopping))
        cache.shuffle_seed = options.checkpoint.shuffle_seed
        x, y, fit_kwargs = _resumable_inputs(x, y, fit_kwargs, options.checkpoint.shuffle_seed,
                                             first)
    fit_kwargs["callbacks"] = callbacks
    logger.info("Phase %d: %s", phase, info)
    # On cached backbone features when the cache can (see tftransfer.features).
    history, cache_info = cache.fit(model, x, y, validation_data, epochs=initial_epoch + epochs
                                    - first, initial_epoch=first, fit_kwargs=fit_kwargs)
    if history is None:
        history = model.fit(
            x,
            y,
            validation_data=validation_data,
            epochs=initial_epoch + epochs,
            initial_epoch=first,
            **fit_kwargs,
        )
    logs = previous_logs + [
        {key: float(values[i]) for key, values in history.history.items()}
        for i in range(len(history.epoch))
    ]
    return _record_phase(model, phase, logs, initial_epoch, info, start, cache_info, checkpoint,
                         history if not previous_logs else None)


def _record_phase(model, phase, logs, initial_epoch, info, start, cache_info, checkpoint,
                  history=None):
    summary = dict(info, phase=phase, epochs=len(logs),
                   seconds=round(time.perf_counter() - start, 3), cache=cache_info)
    summary["final"] = {k: v for k, v in (logs[-1] if logs else {}).items()}
    if checkpoint is not None:
        checkpoint.finish(model, logs, summary)
    return _finish_phase(model, phase, logs, initial_epoch, summary, history)


def _finish_phase(model, phase, logs, initial_epoch, summary, history=None):
    """The phase's History: `fit`'s own, or one rebuilt from the logs of a
    resumed phase."""
    if isinstance(getattr(model, "training_summary", None), list):
        model.training_summary.append(summary)
    if history is not None:
        history.history["phase"] = [phase] * len(history.epoch)
        return history
    history = keras.callbacks.History()
    history.set_model(model)
    history.epoch = list(range(initial_epoch, initial_epoch + len(logs)))
    keys = []
    for entry in logs:
        keys += [k for k in entry if k not in keys]
    history.history = {key: [entry.get(key) for entry in logs] for key in keys}
    history.history["phase"] = [phase] * len(logs)
    history.params = {"epochs": initial_epoch + len(logs)}
    model.history = history
    return history


def _class_weight(model, x, y, fit_kwargs):
    """Resolves ``class_weight="balanced"`` from the training labels."""
    value = fit_kwargs.get("class_weight")
    if not isinstance(value, str):
        return fit_kwargs
    if value != "balanced":
        raise ValueError(
            "`class_weight` must be a dict {class_index: weight} or 'balanced'. "
            f"Received: class_weight={value!r}"
        )
    from tftransfer.data import compute_class_weight  # data imports training's users

    if y is not None:
        labels = np.asarray(y)
    elif isinstance(x, tf.data.Dataset):
        logger.info("Counting the training labels for class_weight='balanced'.")
        labels = np.concatenate([np.asarray(batch[1]) for batch in x.as_numpy_iterator()])
    else:
        raise ValueError(
            "class_weight='balanced' needs the labels: pass `y` with arrays, or a "
            "tf.data.Dataset of (inputs, labels). Or compute the weights with "
            "`tftransfer.compute_class_weight` and pass them as a dict. "
            f"Received: x of type {type(x).__name__}"
        )
    num_classes = getattr(model, "num_classes", None)
    if labels.ndim == 2 and labels.shape[-1] > 1:
        num_classes = labels.shape[-1]
    weights = compute_class_weight(labels, num_classes=num_classes)
    logger.info("Balanced class weights: %s", weights)
    return dict(fit_kwargs, class_weight=weights)


def _checkpoint(checkpoint_dir, settings):
    if checkpoint_dir is None:
        return None
    return checkpoints.TrainingCheckpoint(checkpoint_dir, settings)


def _settings(model, x, y, fit_kwargs, **settings):
    """What identifies a run for `checkpoint_dir`: a directory holding
    another run's state must not be resumed with this one."""
    settings.update(
        model=model.name,
        weights=int(sum(np.prod(v.shape) for v in model.weights)),
        steps_per_epoch=_steps_per_epoch(x, y, fit_kwargs),
        batch_size=fit_kwargs.get("batch_size"),
    )
    return settings



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
    early_stopping=True,
    checkpoint_dir=None,
    log_dir=None,
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
        early_stopping: ``True`` (default): stop when the validation loss
            (the training loss without validation data) has not improved for
            3 epochs, and end with the best epoch's weights; an integer sets
            that patience; ``False`` trains every epoch. An `EarlyStopping`
            in `callbacks` replaces this one.
        checkpoint_dir: makes the run resumable: its state is saved there
            after every epoch, and the same call, run again after an
            interruption (even ``kill -9``), continues from the last
            completed epoch. See `fit_two_phase`.
        log_dir: write TensorBoard logs (loss, metrics, learning rate) here.
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
            `verbose`, `batch_size`, ...). ``class_weight="balanced"``
            weighs each class by ``n / (num_classes * count)`` of the
            training labels.

    Returns:
        The `keras.callbacks.History`, with a ``"phase"`` entry of 1s.

    Raises:
        NonFiniteLossError: when the loss becomes NaN or infinite; the
            message suggests a lower learning rate.

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
    early_stopping = _check_early_stopping(early_stopping)
    mode = features.check_cache_options(cache, cache_dir, cache_memory_limit)
    fit_kwargs = _class_weight(model, x, y, fit_kwargs)
    options = _Options(early_stopping, log_dir=_check_log_dir(log_dir), checkpoint=_checkpoint(
        checkpoint_dir, _settings(model, x, y, fit_kwargs, function="fit_head", epochs=epochs,
                                  learning_rate=learning_rate,
                                  optimizer=None if optimizer is None else optimizer.name)))
    with features.FeatureCache(mode, cache_dir=cache_dir,
                               memory_limit=cache_memory_limit) as session:
        return _fit_head(model, x, y, validation_data, epochs, 0, learning_rate, optimizer,
                         loss, metrics, fit_kwargs, session, options)


def _fit_head(model, x, y, validation_data, epochs, initial_epoch, learning_rate,
              optimizer, loss, metrics, fit_kwargs, cache, options):
    backbone = _backbone_of(model)
    backbone.trainable = False
    freeze_batchnorm(model)
    if optimizer is not None:
        options = dataclasses.replace(options, learning_rate_argument=None)
    with model.distribute_strategy.scope():
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    _compile(model, optimizer, loss, metrics)
    info = {"learning_rate": learning_rate, "unfrozen_blocks": []}
    return _run_phase(model, 1, x, y, validation_data, epochs, initial_epoch, fit_kwargs, info,
                      cache, options)


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
    block_learning_rate_decay=None,
    optimizer=None,
    loss="auto",
    metrics="auto",
    early_stopping=True,
    checkpoint_dir=None,
    log_dir=None,
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
        block_learning_rate_decay: discriminative learning rates: the top
            unfrozen block (and the head) learn at `learning_rate`, the block
            below at ``learning_rate * decay``, the next at ``decay**2``
            times it, and so on (e.g. 0.5). Default: one rate for all.
            Not with `from_layer` or `optimizer`.
        optimizer, loss, metrics, early_stopping, checkpoint_dir, log_dir,
        cache, cache_dir, cache_memory_limit, **fit_kwargs: as for
            `fit_head`.

    Returns:
        The `keras.callbacks.History`, with a ``"phase"`` entry of 2s.
    """
    _check_fit_kwargs(fit_kwargs, "fine_tune")
    _check_epochs(epochs, "epochs")
    early_stopping = _check_early_stopping(early_stopping)
    mode = features.check_cache_options(cache, cache_dir, cache_memory_limit)
    _check_decay(block_learning_rate_decay, from_layer, optimizer)
    if learning_rate is None:
        current = _current_learning_rate(model)
        learning_rate = FINE_TUNE_LR_FACTOR * (current or DEFAULT_LEARNING_RATE)
    fit_kwargs = _class_weight(model, x, y, fit_kwargs)
    options = _Options(early_stopping, log_dir=_check_log_dir(log_dir), checkpoint=_checkpoint(
        checkpoint_dir, _settings(model, x, y, fit_kwargs, function="fine_tune", epochs=epochs,
                                  unfreeze_blocks=unfreeze_blocks, from_layer=from_layer,
                                  learning_rate=learning_rate, warmup=warmup,
                                  block_learning_rate_decay=block_learning_rate_decay,
                                  optimizer=None if optimizer is None else optimizer.name)))
    with features.FeatureCache(mode, cache_dir=cache_dir,
                               memory_limit=cache_memory_limit) as session:
        return _fine_tune(model, x, y, validation_data, epochs, 0, unfreeze_blocks, from_layer,
                          learning_rate, warmup, block_learning_rate_decay, optimizer, loss,
                          metrics, fit_kwargs, session, options)


def _check_decay(decay, from_layer, optimizer):
    if decay is None:
        return
    if from_layer is not None or optimizer is not None:
        raise ValueError(
            "`block_learning_rate_decay` sets a learning rate per unfrozen block: it needs "
            "`unfreeze_blocks` (not `from_layer`) and the built-in optimizer (not "
            f"`optimizer`). Received: block_learning_rate_decay={decay!r}, "
            f"from_layer={from_layer!r}, optimizer={optimizer!r}"
        )
    block_multipliers({}, [], decay=decay)  # checks the value


def _fine_tune(model, x, y, validation_data, epochs, initial_epoch, unfreeze_blocks,
               from_layer, learning_rate, warmup, decay, optimizer, loss, metrics, fit_kwargs,
               cache, options):
    if from_layer is not None:
        unfrozen = unfreeze_top_blocks(model, from_layer=from_layer)
    else:
        unfrozen = unfreeze_top_blocks(model, unfreeze_blocks)
    if optimizer is not None:
        options = dataclasses.replace(options, learning_rate_argument=None)
    else:
        steps = _steps_per_epoch(x, y, fit_kwargs)
        if steps is None:
            logger.info("Unknown steps per epoch: fine-tuning at a constant learning rate.")
            schedule = learning_rate
        else:
            schedule = warmup_cosine_schedule(
                learning_rate, total_steps=max(1, steps * epochs), warmup=warmup
            )
        with model.distribute_strategy.scope():
            if decay is None:
                optimizer = keras.optimizers.Adam(learning_rate=schedule)
            else:
                multipliers = block_multipliers(get_blocks(_backbone_of(model)), unfrozen,
                                                decay=decay)
                optimizer = DiscriminativeAdam(learning_rate=schedule, multipliers=multipliers)
    _compile(model, optimizer, loss, metrics)
    info = {"learning_rate": learning_rate, "unfrozen_blocks": unfrozen}
    if decay is not None:
        info["block_learning_rate_decay"] = decay
    return _run_phase(model, 2, x, y, validation_data, epochs, initial_epoch, fit_kwargs, info,
                      cache, options)


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
    block_learning_rate_decay=None,
    loss="auto",
    metrics="auto",
    early_stopping=True,
    checkpoint_dir=None,
    log_dir=None,
    cache="auto",
    cache_dir=None,
    cache_memory_limit=None,
    **fit_kwargs,
):
    """The transfer-learning recipe in one call: `fit_head`, then `fine_tune`.

    With ``cache="auto"`` (see `fit_head`), one pass of the backbone over the
    data gives both phase 1's features and phase 2's activations below the
    unfrozen blocks; the epochs of both phases then train on those.

    **Resuming.** With `checkpoint_dir`, each phase saves its state after
    every epoch (weights, optimizer, random-seed states, early stopping's
    state, the logs so far) in its own sub-directory, writing atomically,
    and records the phase's result when it ends. Run the same code again
    after an interruption and the call restores a finished phase 1 (its
    weights and its best epoch) and continues the phase it was in from its
    last completed epoch, with the learning-rate schedule where it was. The
    final model is the one an uninterrupted run gives when the model is built
    the same way (same seed) and each epoch's data does not depend on how
    many epochs ran before: arrays (reshuffled by a seed kept in the
    directory), and datasets trained on cached features; a `tf.data`
    pipeline that trains uncached resumes at the right epoch but reshuffles
    from its start. A directory holding a run with other settings is
    refused. ``best.weights.h5`` in ``phase1/`` and ``phase2/`` keeps each
    phase's best epoch (``model.load_weights`` reads it).

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
        block_learning_rate_decay: discriminative learning rates in phase
            2 (see `fine_tune`), e.g. 0.5.
        loss, metrics: passed to `model.compile` in both phases.
        early_stopping: as for `fit_head`, in each phase: phase 1 may end
            early and phase 2 then starts from phase 1's best epoch.
        checkpoint_dir: makes the run resumable (see above).
        log_dir: TensorBoard logs of both phases, epochs numbered on.
        cache, cache_dir, cache_memory_limit: as for `fit_head`, for both
            phases.
        **fit_kwargs: any other `keras.Model.fit` argument (`callbacks`,
            `verbose`, `batch_size`, ...), used in both phases;
            ``class_weight="balanced"`` as in `fit_head`.

    Returns:
        One `keras.callbacks.History` over both phases: epochs are numbered
        on from phase 1 into phase 2, and ``history.history["phase"]`` says
        which phase each epoch belongs to.

    Raises:
        NonFiniteLossError: when the loss becomes NaN or infinite.

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
    early_stopping = _check_early_stopping(early_stopping)
    mode = features.check_cache_options(cache, cache_dir, cache_memory_limit)
    _check_decay(block_learning_rate_decay, from_layer, None)
    backbone = _backbone_of(model)
    unfrozen_ids = ()
    if fine_tune_epochs:
        # A bad unfreeze request fails before phase 1 runs, not after it.
        _, unfrozen_ids = _select_trainable(
            backbone, None if from_layer else unfreeze_blocks, from_layer
        )
    if fine_tune_learning_rate is None:
        fine_tune_learning_rate = FINE_TUNE_LR_FACTOR * learning_rate
    log_dir = _check_log_dir(log_dir)
    fit_kwargs = _class_weight(model, x, y, fit_kwargs)
    checkpoint = _checkpoint(checkpoint_dir, _settings(
        model, x, y, fit_kwargs, function="fit_two_phase", head_epochs=head_epochs,
        fine_tune_epochs=fine_tune_epochs, unfreeze_blocks=unfreeze_blocks,
        from_layer=from_layer, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, warmup=warmup,
        block_learning_rate_decay=block_learning_rate_decay))
    histories = []
    with features.FeatureCache(mode, cache_dir=cache_dir,
                               memory_limit=cache_memory_limit) as session:
        if head_epochs:
            if fine_tune_epochs:
                session.expect_fine_tune(unfrozen_ids)
            options = _Options(early_stopping, checkpoint, log_dir, "learning_rate")
            histories.append(
                _fit_head(model, x, y, validation_data, head_epochs, 0, learning_rate, None,
                          loss, metrics, dict(fit_kwargs), session, options)
            )
        if fine_tune_epochs:
            options = _Options(early_stopping, checkpoint, log_dir, "fine_tune_learning_rate")
            histories.append(
                _fine_tune(model, x, y, validation_data, fine_tune_epochs, head_epochs,
                           unfreeze_blocks, from_layer, fine_tune_learning_rate, warmup,
                           block_learning_rate_decay, None, loss, metrics, dict(fit_kwargs),
                           session, options)
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
