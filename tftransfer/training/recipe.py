"""The two-phase recipe: `fit_head`, `fine_tune` and `fit_two_phase`.

Each builds its phases (`tftransfer.training.phases`) and hands them to the
one runner (`tftransfer.training.runner.run_phases`): the functions differ in
which phases they run and in their defaults, nothing else.
"""

import keras

from tftransfer.training.defaults import recipe_defaults
from tftransfer.training.defaults import resolve_head_method
from tftransfer.training.linear_probe import fit_linear_probe
from tftransfer.training.lora import DEFAULT_METHOD
from tftransfer.training.lora import DEFAULT_RANK
from tftransfer.training.options import training_options
from tftransfer.training.phases import FineTunePhase
from tftransfer.training.phases import HeadPhase
from tftransfer.training.runner import run_phases
from tftransfer.training.schedules import DEFAULT_WARMUP


def fit_head(
    model,
    x,
    validation_data=None,
    *,
    y=None,
    epochs=None,
    learning_rate=None,
    optimizer=None,
    loss="auto",
    metrics="auto",
    label_smoothing=0.0,
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
        epochs: epochs of head training. Default: the model kind's
            (`tftransfer.training.defaults`): 5 for images, 10 for text.
        learning_rate: Adam's learning rate (ignored with `optimizer`).
            Default: 1e-3.
        optimizer: a Keras optimizer instead of Adam.
        loss, metrics: passed to `model.compile` (`"auto"` by default).
        label_smoothing: for ``loss="auto"``: smooth the targets by this much
            (in [0, 1), e.g. 0.1; see `tftransfer.Classifier.compile`).
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
            (never). See `tftransfer.feature_cache` for what is cached and when.
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
    options = training_options("fit_head", loss=loss, metrics=metrics,
                               label_smoothing=label_smoothing,
                               early_stopping=early_stopping, checkpoint_dir=checkpoint_dir,
                               log_dir=log_dir, cache=cache, cache_dir=cache_dir,
                               cache_memory_limit=cache_memory_limit, fit_kwargs=fit_kwargs)
    defaults = recipe_defaults(model)
    phase = HeadPhase(epochs=defaults.head_epochs if epochs is None else epochs,
                      learning_rate=defaults.learning_rate if learning_rate is None
                      else learning_rate,
                      optimizer=optimizer, learning_rate_argument="learning_rate")
    return run_phases(model, x, validation_data, y=y, phases=[phase], options=options)


def fine_tune(
    model,
    x,
    validation_data=None,
    *,
    y=None,
    epochs=None,
    unfreeze_blocks=None,
    from_layer=None,
    method=DEFAULT_METHOD,
    rank=DEFAULT_RANK,
    learning_rate=None,
    warmup=DEFAULT_WARMUP,
    block_learning_rate_decay=None,
    optimizer=None,
    loss="auto",
    metrics="auto",
    label_smoothing=0.0,
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
        epochs: epochs of fine-tuning. Default: the model kind's
            (`tftransfer.training.defaults`): 5 for images, 10 for text.
        unfreeze_blocks: how many backbone blocks to unfreeze, from the top,
            or ``"all"``. See `tftransfer.get_blocks`. Default: 2 for images,
            ``"all"`` for text.
        from_layer: instead of `unfreeze_blocks`: unfreeze from this backbone
            layer up.
        method: ``"full"`` (default) trains the unfrozen blocks' weights;
            ``"lora"`` trains instead low-rank updates of their kernels
            (Keras's `enable_lora`; in transformer blocks the attention's
            query and value projections), everything else in the backbone
            frozen: far fewer trained parameters. See
            `tftransfer.training.lora`; export a LoRA model's `merge_lora`.
        rank: the rank of the LoRA factors, with ``method="lora"``.
        learning_rate: peak learning rate. Default for images: a tenth of
            the model's current learning rate (the head phase's), or 1e-4 if
            the model has no optimizer yet; for text: 3e-5.
        warmup: fraction of the steps spent warming up.
        block_learning_rate_decay: discriminative learning rates: the top
            unfrozen block (and the head) learn at `learning_rate`, the block
            below at ``learning_rate * decay``, the next at ``decay**2``
            times it, and so on (e.g. 0.5). Default: one rate for all.
            Not with `from_layer` or `optimizer`.
        optimizer, loss, metrics, label_smoothing, early_stopping, checkpoint_dir, log_dir,
        cache, cache_dir, cache_memory_limit, **fit_kwargs: as for
            `fit_head`.

    Returns:
        The `keras.callbacks.History`, with a ``"phase"`` entry of 2s.
    """
    options = training_options("fine_tune", loss=loss, metrics=metrics,
                               label_smoothing=label_smoothing,
                               early_stopping=early_stopping, checkpoint_dir=checkpoint_dir,
                               log_dir=log_dir, cache=cache, cache_dir=cache_dir,
                               cache_memory_limit=cache_memory_limit, fit_kwargs=fit_kwargs)
    defaults = recipe_defaults(model)
    if learning_rate is None:
        current = current_learning_rate(model)
        learning_rate = defaults.fine_tune_rate(current or defaults.learning_rate)
    unfreeze_blocks = defaults.blocks(unfreeze_blocks, from_layer)
    phase = FineTunePhase(epochs=defaults.fine_tune_epochs if epochs is None else epochs,
                          learning_rate=learning_rate,
                          unfreeze_blocks=unfreeze_blocks,
                          from_layer=from_layer, warmup=warmup,
                          block_learning_rate_decay=block_learning_rate_decay,
                          optimizer=optimizer, learning_rate_argument="learning_rate",
                          method=method, rank=rank)
    return run_phases(model, x, validation_data, y=y, phases=[phase], options=options)


def fit_two_phase(
    model,
    x,
    validation_data=None,
    *,
    y=None,
    head_method=None,
    head_epochs=None,
    fine_tune_epochs=None,
    unfreeze_blocks=None,
    from_layer=None,
    method=DEFAULT_METHOD,
    rank=DEFAULT_RANK,
    learning_rate=None,
    fine_tune_learning_rate=None,
    warmup=DEFAULT_WARMUP,
    block_learning_rate_decay=None,
    optimizer=None,
    loss="auto",
    metrics="auto",
    label_smoothing=0.0,
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
        head_method: how phase 1 trains the head: ``"train"`` (Adam for
            `head_epochs`) or ``"linear_probe"`` (`tftransfer.fit_linear_probe`
            on the training data, C chosen on `validation_data`; then phase 2
            starts from the probe: LP-FT). Default: ``"linear_probe"`` for a
            text classifier with a one-layer single-label head when
            `head_epochs` is not given, else ``"train"``.
        head_epochs: epochs of phase 1 with ``head_method="train"`` (0 skips
            it). Default: the model kind's (`tftransfer.training.defaults`):
            5 for images, 10 for text.
        fine_tune_epochs: epochs of phase 2 (0 skips it). Default: 5 for
            images, 10 for text.
        unfreeze_blocks: backbone blocks unfrozen in phase 2, from the top,
            or ``"all"``. Default: 2 for images, ``"all"`` for text.
        from_layer: instead of `unfreeze_blocks`, unfreeze from this layer.
        method, rank: how phase 2 trains: ``"full"`` or ``"lora"`` with
            this rank (see `fine_tune`).
        learning_rate: phase 1's learning rate. Default: 1e-3.
        fine_tune_learning_rate: phase 2's peak learning rate. Default for
            images: a tenth of `learning_rate`; for text: 3e-5.
        warmup: fraction of phase 2's steps spent warming up.
        block_learning_rate_decay: discriminative learning rates in phase
            2 (see `fine_tune`), e.g. 0.5.
        optimizer: the optimizer both phases use instead of Adam: a Keras
            optimizer (e.g. ``keras.optimizers.AdamW(weight_decay=1e-4)``) or
            the name of one. Its class and settings are copied for each
            phase, with that phase's learning rate (phase 2: the warmup and
            cosine schedule; with `block_learning_rate_decay`, one copy per
            block), so the two phases never share optimizer state.
        loss, metrics, label_smoothing: as for `fit_head`, in both phases.
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
    options = training_options("fit_two_phase", loss=loss, metrics=metrics,
                               label_smoothing=label_smoothing,
                               early_stopping=early_stopping, checkpoint_dir=checkpoint_dir,
                               log_dir=log_dir, cache=cache, cache_dir=cache_dir,
                               cache_memory_limit=cache_memory_limit, fit_kwargs=fit_kwargs)
    defaults = recipe_defaults(model)
    head_method = resolve_head_method(model, head_method, head_epochs)
    if head_method == "linear_probe":
        head_epochs = 0  # phase 1 is the probe
    head_epochs = defaults.head_epochs if head_epochs is None else head_epochs
    fine_tune_epochs = defaults.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs
    unfreeze_blocks = defaults.blocks(unfreeze_blocks, from_layer)
    learning_rate = defaults.learning_rate if learning_rate is None else learning_rate
    if fine_tune_learning_rate is None and isinstance(learning_rate, (int, float)):
        fine_tune_learning_rate = defaults.fine_tune_rate(learning_rate)
    template = optimizer is not None
    phases = [
        HeadPhase(epochs=head_epochs, learning_rate=learning_rate, optimizer=optimizer,
                  copy_optimizer_settings=template, learning_rate_argument="learning_rate"),
        FineTunePhase(epochs=fine_tune_epochs, learning_rate=fine_tune_learning_rate,
                      unfreeze_blocks=unfreeze_blocks, from_layer=from_layer, warmup=warmup,
                      block_learning_rate_decay=block_learning_rate_decay, optimizer=optimizer,
                      copy_optimizer_settings=template,
                      learning_rate_argument="fine_tune_learning_rate",
                      method=method, rank=rank),
    ]
    if head_method == "linear_probe":
        phases[1].check(model, "fine_tune_epochs")  # fails before the probe's work
        verbose = fit_kwargs.get("verbose", "auto")
        fit_linear_probe(model, x, y, validation_data=validation_data,
                         batch_size=fit_kwargs.get("batch_size") or 32,
                         verbose=0 if verbose == 0 else 1)
    return run_phases(model, x, validation_data, y=y, phases=phases, options=options,
                      epoch_names=["head_epochs", "fine_tune_epochs"])


def current_learning_rate(model):
    """The learning rate the model's optimizer uses now (for a discriminative
    optimizer, the head's), or None before it is compiled."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        optimizer = optimizer.optimizers[-1]  # the default group: factor 1, the head
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
