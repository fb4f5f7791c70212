"""Self-training on unlabelled images in the FixMatch style: `fit_self_training`.

FixMatch (Sohn et al., NeurIPS 2020): a confident prediction on a weakly
augmented unlabelled image becomes its pseudo-label, and the model learns to
predict it on a strongly augmented view of the same image, next to the usual
loss on the labelled images. The step is `tftransfer.transfer.fixmatch`, the
views `tftransfer.transfer.strong_augment`.

Self-training refines a model that already knows the task: train the head on
the labelled images first (`tftransfer.fit_two_phase`), then call
`fit_self_training` with the same labelled images and the unlabelled ones.
It trains through the augmentations, so it never runs on cached backbone
features (it logs so at INFO).
"""

import logging
import time

import keras
import numpy as np

from tftransfer.classifiers.image import ImageClassifier
from tftransfer.data.checks import check_inputs
from tftransfer.data.checks import check_labels
from tftransfer.data.checks import is_array
from tftransfer.training.checkpoints import TrainingCheckpoint
from tftransfer.training.checkpoints import history_from_logs
from tftransfer.training.checkpoints import seed_generators
from tftransfer.training.freezing import freeze_backbone
from tftransfer.training.freezing import freeze_batchnorm
from tftransfer.training.freezing import select_trainable
from tftransfer.training.freezing import unfreeze_top_blocks
from tftransfer.training.options import check_learning_rate
from tftransfer.training.schedules import warmup_cosine_schedule
from tftransfer.transfer.fixmatch import CLASS_BALANCE
from tftransfer.transfer.fixmatch import FixMatchTrainer
from tftransfer.transfer.fixmatch import steps_per_epoch
from tftransfer.transfer.fixmatch import training_batches
from tftransfer.transfer.strong_augment import StrongAugmentation
from tftransfer.transfer.strong_augment import weak_augmentation as default_weak_view

logger = logging.getLogger(__name__)

DEFAULT_UNFREEZE_BLOCKS = 2
"""Backbone blocks `fit_self_training` trains with the head by default (as
`tftransfer.fine_tune` for images)."""

PHASE = "self_training"
"""``model.training_summary[-1]["phase"]`` after `fit_self_training`."""


def fit_self_training(
    model,
    labelled,
    unlabelled,
    validation_data=None,
    *,
    threshold=0.95,
    epochs=20,
    batch_size=16,
    unlabelled_ratio=4,
    unlabelled_weight=1.0,
    learning_rate=3e-4,
    unfreeze_blocks=None,
    from_layer=None,
    class_balance="distribution_alignment",
    weak_augmentation="auto",
    strong_augmentation="auto",
    unlabelled_labels=None,
    seed=None,
    checkpoint_dir=None,
    callbacks=None,
    verbose="auto",
):
    """Trains `model` on labelled and unlabelled images with FixMatch.

    Each step takes `batch_size` labelled images and ``batch_size *
    unlabelled_ratio`` unlabelled ones, and minimizes the cross-entropy on
    the weakly augmented labelled images plus `unlabelled_weight` times the
    mean over the unlabelled batch of ``1[max p(weak) >= threshold] *
    CE(argmax p(weak), strong view)``, where p(weak) is the model's
    prediction in inference mode on the weak view, with no gradient (the
    pseudo-label). An epoch is one pass over the unlabelled images; the
    learning rate (Adam) decays with a cosine to 0 over all the steps.

    **Class balance.** With ``class_balance="distribution_alignment"``
    (ReMixMatch), p(weak) is multiplied by ``prior / running mean of
    p(weak)`` and renormalized before the threshold and the argmax: the prior
    is the class distribution of the labelled images, the running mean an
    exponential average over the unlabelled batches (starting from the mean
    prediction over all unlabelled images). A model that favours a class
    then pseudo-labels it less, and the rarer classes more
    (`tftransfer.transfer.fixmatch.align_distribution`).

    **What trains.** The head and the top `unfreeze_blocks` blocks of the
    backbone (as `tftransfer.fine_tune`; 0: the head only), or the layers
    from `from_layer` up. BatchNormalization layers stay frozen and in
    inference mode, as everywhere in tftransfer. Start from a model whose
    head is trained on the labelled images (`tftransfer.fit_two_phase`):
    pseudo-labels of an untrained head are noise.

    Args:
        model: a single-label `tftransfer.ImageClassifier`.
        labelled: ``(images, labels)``: arrays of raw pixels and integer
            labels.
        unlabelled: an array of images of the same shape, without labels.
        validation_data: ``(images, labels)`` to score after each epoch
            (``val_loss``, ``val_accuracy``), for monitoring.
        threshold: the confidence a pseudo-label needs, in (0, 1].
        epochs: passes over the unlabelled images.
        batch_size: labelled images per step (they repeat, each time
            augmented anew, when there are fewer than the steps need).
        unlabelled_ratio: unlabelled images per labelled one in a step
            (FixMatch's mu; the paper: 7).
        unlabelled_weight: the unlabelled loss's weight (lambda_u).
        learning_rate: Adam's peak learning rate.
        unfreeze_blocks: backbone blocks trained, from the top, ``"all"``,
            or 0 for the head only. Default: 2 (as `tftransfer.fine_tune`).
        from_layer: instead of `unfreeze_blocks`: train from this backbone
            layer up.
        class_balance: ``"distribution_alignment"`` or None (see above).
        weak_augmentation, strong_augmentation: ``"auto"``
            (`tftransfer.transfer.strong_augment.weak_augmentation` and
            `StrongAugmentation`, seeded from `seed`) or a Keras layer called
            with ``training=True`` on a batch of raw pixels. The defaults do
            not flip; for photographs pass ``tft.augmentation("light")``.
        unlabelled_labels: the unlabelled images' labels, when known, for
            monitoring only: they add ``pseudo_label_accuracy`` (among the
            confident) and ``unlabelled_accuracy`` to the history, and are
            never trained on.
        seed: seeds the run: the batches' order and the random-seed states
            of the model's dropout and of the augmentations, so that a model
            trained again from the same weights with the same seed ends with
            the same weights. Default: the seed kept in `checkpoint_dir`,
            else a random one.
        checkpoint_dir: makes the run resumable: the state is saved after
            every epoch, and the same call run again after an interruption
            continues from the last completed epoch, ending with the weights
            an uninterrupted run gives (see `tftransfer.fit_two_phase`).
        callbacks: Keras callbacks for the trainer's `fit`.
        verbose: Keras's `verbose`.

    Returns:
        The `keras.callbacks.History`: ``loss``, ``labelled_loss``,
        ``unlabelled_loss``, ``mask_rate`` (the share of unlabelled images
        above the threshold) and ``accuracy`` (on the labelled batches) per
        epoch. A summary is appended to ``model.training_summary``.

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    >>> model = build_classifier(backbone, num_classes=2)
    >>> x = np.random.uniform(0, 255, (6, 8, 8, 1)).astype("float32")
    >>> history = fit_self_training(model, (x, np.arange(6) % 2), x, epochs=1,
    ...                             unfreeze_blocks=0, seed=0, verbose=0)
    >>> sorted(history.history)[:3]
    ['accuracy', 'labelled_loss', 'loss']
    """
    if unfreeze_blocks is None and from_layer is None:
        unfreeze_blocks = DEFAULT_UNFREEZE_BLOCKS
    settings = _check_arguments(
        model, labelled, unlabelled, validation_data, threshold=threshold, epochs=epochs,
        batch_size=batch_size, unlabelled_ratio=unlabelled_ratio,
        unlabelled_weight=unlabelled_weight, learning_rate=learning_rate,
        unfreeze_blocks=unfreeze_blocks, from_layer=from_layer, class_balance=class_balance,
        unlabelled_labels=unlabelled_labels, seed=seed)
    weak = _view("weak_augmentation", weak_augmentation)
    strong = _view("strong_augmentation", strong_augmentation)
    x, y = np.asarray(labelled[0], "float32"), np.asarray(labelled[1]).astype("int32")
    unlabelled = np.asarray(unlabelled, "float32")
    known = None if unlabelled_labels is None else np.asarray(unlabelled_labels, "int32")
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = TrainingCheckpoint(checkpoint_dir, dict(
            settings, weak_augmentation=_name(weak_augmentation),
            strong_augmentation=_name(strong_augmentation),
            model=model.name, weights=int(sum(np.prod(v.shape) for v in model.weights))))
    if seed is None:
        seed = (checkpoint.shuffle_seed if checkpoint is not None
                else int(np.random.randint(2**31 - 1)))
    if weak == "auto":
        weak = default_weak_view(seed=seed)
    if strong == "auto":
        strong = StrongAugmentation(value_range=(0, 255), seed=seed + 10)
    if not getattr(model, "training_summary", None):
        logger.warning("Model %r has no training summary: is its head trained? Pseudo-labels "
                       "of an untrained head are noise; run tft.fit_two_phase on the labelled "
                       "images first.", model.name)
    logger.info("Self-training trains through random augmentations of every batch, so it "
                "runs uncached: the backbone runs on every step.")

    start = time.perf_counter()
    unfrozen = _set_trainable(model, unfreeze_blocks, from_layer)
    counts = np.bincount(y, minlength=model.num_classes)
    trainer = FixMatchTrainer(model, weak=weak, strong=strong, threshold=threshold,
                              unlabelled_weight=unlabelled_weight,
                              prior=counts / counts.sum(), class_balance=class_balance,
                              monitor_unlabelled=known is not None)
    for i, generator in enumerate(seed_generators(trainer)):  # dropout, augmentations
        generator.state.assign(np.array([(seed + i) % (2**31 - 1), 0], generator.state.dtype))
    steps = steps_per_epoch(len(unlabelled), batch_size, unlabelled_ratio)
    trainer.compile(optimizer=keras.optimizers.Adam(warmup_cosine_schedule(
        learning_rate, total_steps=steps * epochs, warmup=0.0)), jit_compile=False)
    if class_balance is not None:
        mean = model.probabilities(model.predict(unlabelled, batch_size=64, verbose=0))
        trainer.prediction_mean.assign(keras.ops.mean(mean, axis=0))

    state_dir = checkpoint.phase(1) if checkpoint is not None else None
    done = state_dir.done() if state_dir is not None else None
    if done is not None:
        state_dir.restore_done(trainer)
        logger.info("Self-training was finished before: its weights are restored from %s.",
                    state_dir.path)
        return _finish(model, done["logs"], done["summary"])
    state = state_dir.latest() if state_dir is not None else None
    first, previous = (state["epoch"] + 1, state["logs"]) if state else (0, [])
    callbacks = list(callbacks or [])
    if state_dir is not None:
        if state is not None and (state["stop_training"] or first >= epochs):
            state_dir.restore_state_weights(trainer, state)
            return _record(model, trainer, state_dir, previous, unfrozen, start)
        callbacks.append(state_dir.callback(state=state))
    if first < epochs:
        data = training_batches((x, y, unlabelled, known), seed, first_epoch=first,
                                epochs=epochs, batch_size=batch_size,
                                unlabelled_ratio=unlabelled_ratio)
        history = trainer.fit(data, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                              validation_data=validation_data, callbacks=callbacks,
                              shuffle=False, verbose=verbose)
        previous = previous + [{key: float(values[i]) for key, values in history.history.items()}
                               for i in range(len(history.epoch))]
    return _record(model, trainer, state_dir, previous, unfrozen, start)


def _record(model, trainer, state_dir, logs, unfrozen, start):
    summary = {"phase": PHASE, "epochs": len(logs), "unfrozen_blocks": unfrozen,
               "cache": None, "seconds": round(time.perf_counter() - start, 3),
               "final": dict(logs[-1]) if logs else {}}
    if state_dir is not None:
        state_dir.finish(trainer, logs, summary)
    return _finish(model, logs, summary)


def _finish(model, logs, summary):
    if isinstance(getattr(model, "training_summary", None), list):
        model.training_summary.append(summary)
    return history_from_logs(model, logs)


def _set_trainable(model, unfreeze_blocks, from_layer):
    if from_layer is not None:
        return unfreeze_top_blocks(model, from_layer=from_layer)
    if unfreeze_blocks == 0:
        freeze_backbone(model)
        freeze_batchnorm(model)
        return []
    return unfreeze_top_blocks(model, unfreeze_blocks)


def _name(view):
    return view if isinstance(view, str) else type(view).__name__


def _view(name, value):
    if (isinstance(value, str) and value == "auto") or isinstance(value, keras.layers.Layer):
        return value
    raise ValueError(f"`{name}` must be 'auto' or a Keras layer (e.g. "
                     f"tft.augmentation('light')). Received: {name}={value!r}")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


def _check_arguments(model, labelled, unlabelled, validation_data, *, threshold, epochs,
                     batch_size, unlabelled_ratio, unlabelled_weight, learning_rate,
                     unfreeze_blocks, from_layer, class_balance, unlabelled_labels, seed):
    """Every check before any work; returns the run's settings."""
    if not isinstance(model, ImageClassifier) or model.multi_label:
        raise TypeError(
            "`model` must be a single-label image classifier from `tft.build_classifier` "
            "(trained on the labelled images first, e.g. with tft.fit_two_phase). Received: "
            f"model of type {type(model).__name__}"
            + (" with multi_label=True" if getattr(model, "multi_label", False) else ""))
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            0 < threshold <= 1):
        raise ValueError("`threshold` must be a confidence in (0, 1], e.g. 0.95 (FixMatch's). "
                         f"Received: threshold={threshold!r}")
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_int("unlabelled_ratio", unlabelled_ratio)
    if isinstance(unlabelled_weight, bool) or not isinstance(
            unlabelled_weight, (int, float)) or not unlabelled_weight >= 0:
        raise ValueError("`unlabelled_weight` must be a non-negative number, e.g. 1.0. "
                         f"Received: unlabelled_weight={unlabelled_weight!r}")
    check_learning_rate(learning_rate, "learning_rate")
    if class_balance not in CLASS_BALANCE:
        raise ValueError(f"`class_balance` must be one of {CLASS_BALANCE}. "
                         f"Received: class_balance={class_balance!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"`seed` must be a non-negative integer or None. Received: seed={seed!r}")
    if not (isinstance(labelled, (tuple, list)) and len(labelled) == 2
            and all(is_array(part) for part in labelled)):
        raise TypeError("`labelled` must be a pair (images, labels) of arrays. Received: "
                        f"labelled of type {type(labelled).__name__}")
    images, labels = np.asarray(labelled[0]), np.asarray(labelled[1])
    if len(images) == 0 or len(images) != len(labels) or labels.ndim != 1 or (
            labels.dtype.kind not in "iu"):
        raise ValueError(
            "`labelled` must hold at least one image and one integer label per image. "
            f"Received: labelled images of shape {images.shape}, labels of shape "
            f"{labels.shape} and dtype {labels.dtype}")
    check_inputs(model, "labelled", images)
    check_labels(model, "labelled", labels)
    if not is_array(unlabelled):
        raise TypeError("`unlabelled` must be an array of images. Received: unlabelled of "
                        f"type {type(unlabelled).__name__}")
    shape = np.shape(unlabelled)
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError("`unlabelled` holds no images: self-training needs unlabelled "
                         f"images. Received: unlabelled of shape {shape}")
    if tuple(shape[1:]) != images.shape[1:]:
        raise ValueError(
            f"The unlabelled images are {shape[1:]} but the labelled ones "
            f"{images.shape[1:]}: both must have the model's input shape. Received: "
            f"unlabelled of shape {shape}, labelled images of shape {images.shape}")
    if unlabelled_labels is not None:
        known = np.asarray(unlabelled_labels)
        if known.shape != (shape[0],):
            raise ValueError("`unlabelled_labels` must hold one label per unlabelled image. "
                             f"Received: unlabelled_labels of shape {known.shape}, "
                             f"{shape[0]} unlabelled images")
        check_labels(model, "unlabelled", known)
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise TypeError("`validation_data` must be a pair (images, labels) of arrays. "
                            f"Received: validation_data of type {type(validation_data).__name__}")
        check_inputs(model, "validation", validation_data[0])
        check_labels(model, "validation", validation_data[1])
    if unfreeze_blocks != 0:
        select_trainable(model, unfreeze_blocks, from_layer)  # raises on a bad request
    return {"function": "fit_self_training", "threshold": float(threshold), "epochs": epochs,
            "batch_size": batch_size, "unlabelled_ratio": unlabelled_ratio,
            "unlabelled_weight": float(unlabelled_weight),
            "learning_rate": float(learning_rate), "unfreeze_blocks": unfreeze_blocks,
            "from_layer": from_layer, "class_balance": class_balance,
            "labelled": len(images), "unlabelled": int(shape[0]), "seed": seed}
