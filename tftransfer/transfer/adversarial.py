"""Domain-adversarial training (DANN; Ganin & Lempitsky, ICML 2015; Ganin et
al., JMLR 2016): `fit_domain_adversarial`.

A domain classifier learns to tell the source domain's features from the
target domain's, behind a gradient reversal layer, so the feature extractor
learns features it cannot tell apart; the label head learns the task on the
labelled source images meanwhile. The target images need no labels.

What the paper fixes and tftransfer follows: SGD with momentum 0.9, the
learning rate annealed as ``mu0 / (1 + 10 p) ** 0.75`` (`AnnealedLearningRate`)
and the reversal weight raised as ``2 / (1 + exp(-10 p)) - 1`` (`dann_lambda`)
over the progress ``p`` from 0 to 1; each step half source (labelled), half
target (unlabelled), the label loss on the source half only, the domain loss
on both; the domain classifier an MLP (100-100-1, 1024-1024-1 for wide
features) on the features the label head takes.

The stability measures taken, and why (measured on digits -> digits-M, see
docs/domains.md): **BatchNormalization statistics per domain** -- each half
of a batch is normalized with its own batch statistics, and the model ends
with the target's statistics (`adapt_batchnorm`). With BatchNormalization
frozen in inference mode on the source statistics, as tftransfer fine-tunes
otherwise, DANN diverged in one-seed trials: at the paper's learning rate
the loss was NaN by the fourth epoch (a frozen BatchNormalization
multiplies the gradients by ``gamma / sqrt(moving variance)``), and at a
hundredth of it the feature extractor won the game: the domain
classifier's accuracy fell below chance (0.16: it swapped the domains
rather than merging them) and the target accuracy from 0.52 to 0.27.
Per-domain statistics take away the first and second moments a domain
classifier would otherwise exploit, and renormalize what the reversed
gradient would blow up. Also: the domain loss on logits
(``from_logits=True``), and `lambda_max` as a cap on the reversal weight.
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
from tftransfer.training.freezing import select_trainable
from tftransfer.training.freezing import unfreeze_top_blocks
from tftransfer.training.options import check_learning_rate
from tftransfer.transfer.adabn import adapt_batchnorm
from tftransfer.transfer.adversarial_step import AnnealedLearningRate
from tftransfer.transfer.adversarial_step import DomainAdversarialTrainer
from tftransfer.transfer.adversarial_step import batchnorm_layers
from tftransfer.transfer.adversarial_step import default_domain_head
from tftransfer.transfer.adversarial_step import feature_size
from tftransfer.transfer.adversarial_step import training_batches

logger = logging.getLogger(__name__)

MOMENTUM = 0.9
"""SGD's momentum in `fit_domain_adversarial` (the paper's)."""

PHASE = "domain_adversarial"
"""``model.training_summary[-1]["phase"]`` after `fit_domain_adversarial`."""


def fit_domain_adversarial(
    model,
    source,
    unlabelled_target,
    *,
    epochs=20,
    batch_size=32,
    learning_rate=0.01,
    unfreeze_blocks="all",
    from_layer=None,
    domain_head=None,
    lambda_max=1.0,
    validation_data=None,
    seed=None,
    checkpoint_dir=None,
    callbacks=None,
    verbose="auto",
):
    """Adapts `model` to a target domain with DANN (see the module).

    Each step takes `batch_size` labelled source images and as many
    unlabelled target images and minimizes the label cross-entropy on the
    source half plus the domain classifier's cross-entropy on both halves,
    whose gradient reaches the features reversed and weighted by
    ``dann_lambda(p, lambda_max=lambda_max)``. SGD (momentum 0.9) with
    `AnnealedLearningRate`. An epoch is one pass over the source images
    (the last partial batch dropped). The features are the classifier's
    pooled backbone features, the label head's input.

    **BatchNormalization.** The backbone runs in training mode: each half of
    a batch is normalized with its own batch statistics (Dropout inside the
    backbone, if any, is active too). The scale and offset of
    BatchNormalization layers stay fixed, as everywhere in tftransfer. At
    the end the layers' statistics are the target's, recomputed exactly
    (`tftransfer.adapt_batchnorm` on `unlabelled_target`): the model is the
    target domain's; to score source images again, adapt it to them.

    Start from a model trained on the source (e.g. `tftransfer.fit_two_phase`).
    The domain classifier is built for the run and dropped after it, so the
    model stays an ordinary classifier (it saves and exports as before); the
    trained blocks are left unfrozen, as `tftransfer.fine_tune` leaves them.
    DANN trains on every step's images, never on cached features.

    Args:
        model: a single-label `tftransfer.ImageClassifier`.
        source: ``(images, labels)``: arrays of raw pixels and integer labels.
        unlabelled_target: an array of target images of the same shape.
        epochs: passes over the source images.
        batch_size: source images per step (and as many target images).
        learning_rate: the initial learning rate (the paper's mu0).
        unfreeze_blocks: backbone blocks trained with the head, from the top,
            or ``"all"`` (default: DANN trains the whole feature extractor).
        from_layer: instead of `unfreeze_blocks`: train from this backbone
            layer up.
        domain_head: a Keras layer or model from a batch of features to one
            logit per example (1: target, 0: source). Default: an MLP,
            100-100-1 (1024-1024-1 for more than 1024 features).
        lambda_max: the reversal weight at the end of the schedule (a cap).
        validation_data: labelled target ``(images, labels)`` to score after
            each epoch (``val_loss``, ``val_accuracy``), for monitoring only.
        seed: seeds the batches, the default domain head and the model's
            dropout. Default: the seed kept in `checkpoint_dir`, else random.
        checkpoint_dir: makes the run resumable: the state is saved after
            every epoch, and the same call run again after an interruption
            continues from the last completed epoch, ending with the weights
            an uninterrupted run gives (see `tftransfer.fit_two_phase`).
        callbacks: Keras callbacks for the trainer's `fit`.
        verbose: Keras's `verbose`.

    Returns:
        The `keras.callbacks.History`: ``loss``, ``label_loss``,
        ``domain_loss``, ``domain_accuracy``, ``accuracy`` (on the source
        batches) and ``lambda`` (the reversal weight at the epoch's last
        step) per epoch. A summary is appended to ``model.training_summary``.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="block1_bn")(x)
    >>> model = build_classifier(keras.Model(inputs, x), num_classes=2)
    >>> images = np.random.uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    >>> history = fit_domain_adversarial(model, (images, np.arange(8) % 2), images / 2,
    ...                                  epochs=2, batch_size=4, seed=0, verbose=0)
    >>> [round(v, 3) for v in history.history["lambda"]]
    [0.848, 0.999]
    """
    settings = _check_arguments(
        model, source, unlabelled_target, validation_data, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, unfreeze_blocks=unfreeze_blocks,
        from_layer=from_layer, domain_head=domain_head, lambda_max=lambda_max, seed=seed)
    x, y = np.asarray(source[0], "float32"), np.asarray(source[1]).astype("int32")
    target = np.asarray(unlabelled_target, "float32")
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = TrainingCheckpoint(checkpoint_dir, dict(
            settings, model=model.name,
            weights=int(sum(np.prod(v.shape) for v in model.weights))))
    if seed is None:
        seed = (checkpoint.shuffle_seed if checkpoint is not None
                else int(np.random.randint(2**31 - 1)))
    logger.info("Domain-adversarial training runs the backbone on every step (uncached): "
                "its features change as it trains.")

    start = time.perf_counter()
    unfrozen = _set_trainable(model, unfreeze_blocks, from_layer)
    features = feature_size(model)
    head = domain_head if domain_head is not None else default_domain_head(features, seed=seed)
    steps = len(x) // min(batch_size, len(x))
    trainer = DomainAdversarialTrainer(model, head, total_steps=steps * epochs,
                                       lambda_max=lambda_max)
    for i, generator in enumerate(seed_generators(trainer)):  # the head's dropout
        generator.state.assign(np.array([seed + i, 0], generator.state.dtype))
    trainer.compile(optimizer=keras.optimizers.SGD(
        AnnealedLearningRate(learning_rate, total_steps=steps * epochs), momentum=MOMENTUM),
        jit_compile=False)

    state_dir = checkpoint.phase(1) if checkpoint is not None else None
    done = state_dir.done() if state_dir is not None else None
    if done is not None:
        state_dir.restore_done(trainer)
        logger.info("Domain-adversarial training was finished before: its weights are "
                    "restored from %s.", state_dir.path)
        return _finish(model, target, unfreeze_blocks, from_layer, done["logs"],
                       done["summary"])
    state = state_dir.latest() if state_dir is not None else None
    first, logs = (state["epoch"] + 1, state["logs"]) if state else (0, [])
    callbacks = list(callbacks or [])
    if state_dir is not None:
        if state is not None and (state["stop_training"] or first >= epochs):
            state_dir.restore_state_weights(trainer, state)
            first = epochs
        else:
            callbacks.append(state_dir.callback(state=state))
    if first < epochs:
        data = training_batches(x, y, target, seed, first_epoch=first, epochs=epochs,
                                batch_size=batch_size)
        try:
            history = trainer.fit(data, epochs=epochs, initial_epoch=first,
                                  steps_per_epoch=steps, validation_data=validation_data,
                                  callbacks=callbacks, shuffle=False, verbose=verbose)
        except BaseException:  # interrupted: the freezing left as after a finished run
            _unfreeze(model, unfreeze_blocks, from_layer)
            raise
        logs = logs + [{key: float(values[i]) for key, values in history.history.items()}
                       for i in range(len(history.epoch))]
    summary = {"phase": PHASE, "epochs": len(logs), "unfrozen_blocks": unfrozen,
               "learning_rate": float(learning_rate), "lambda_max": float(lambda_max),
               "cache": None, "seconds": round(time.perf_counter() - start, 3),
               "final": dict(logs[-1]) if logs else {}}
    if state_dir is not None:
        state_dir.finish(trainer, logs, summary)
    return _finish(model, target, unfreeze_blocks, from_layer, logs, summary)


def _unfreeze(model, unfreeze_blocks, from_layer):
    if from_layer is not None:
        return unfreeze_top_blocks(model, from_layer=from_layer)
    return unfreeze_top_blocks(model, unfreeze_blocks)


def _set_trainable(model, unfreeze_blocks, from_layer):
    """The library's freezing (`unfreeze_top_blocks`), then every
    BatchNormalization layer set to run on batch statistics with its scale
    and offset kept fixed."""
    unfrozen = _unfreeze(model, unfreeze_blocks, from_layer)
    for layer in batchnorm_layers(model):
        layer.trainable = True  # Keras 3: batch statistics in training mode
        for variable in layer.trainable_variables:
            variable.trainable = False
    return unfrozen


def _finish(model, target, unfreeze_blocks, from_layer, logs, summary):
    """The model left as `fine_tune` leaves it, on the target's statistics;
    the summary recorded; the History rebuilt from the logs."""
    _unfreeze(model, unfreeze_blocks, from_layer)
    adapt_batchnorm(model, target)
    if isinstance(getattr(model, "training_summary", None), list):
        model.training_summary.append(summary)
    return history_from_logs(model, logs)


def _number(name, value, *, positive=False, integer=False):
    kinds = (int,) if integer else (int, float)
    bad = isinstance(value, bool) or not isinstance(value, kinds)
    if bad or not (value > 0 if positive else value >= 0):
        what = ("a positive integer" if integer else
                "a positive number" if positive else "a non-negative number")
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")


def _check_images(model, name, images, reference=None):
    if not is_array(images):
        raise TypeError(f"`{name}` must be an array of images. Received: {name} of type "
                        f"{type(images).__name__}")
    shape = tuple(np.shape(images))
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError(f"`{name}` holds no images: DANN needs images of both domains. "
                         f"Received: {name} of shape {shape}")
    if reference is not None and shape[1:] != reference[1:]:
        raise ValueError(
            f"The {name} images are {shape[1:]} but the source ones {reference[1:]}: both "
            f"must have the model's input shape. Received: {name} of shape {shape}, source "
            f"images of shape {reference}")
    check_inputs(model, name, images)
    return shape


def _check_arguments(model, source, target, validation_data, *, epochs, batch_size,
                     learning_rate, unfreeze_blocks, from_layer, domain_head, lambda_max, seed):
    """Every check before any work; returns the run's settings."""
    if not isinstance(model, ImageClassifier) or model.multi_label:
        raise TypeError(
            "`model` must be a single-label image classifier from `tft.build_classifier` "
            "(trained on the source first, e.g. with tft.fit_two_phase). Received: model of "
            f"type {type(model).__name__}"
            + (" with multi_label=True" if getattr(model, "multi_label", False) else ""))
    _number("epochs", epochs, positive=True, integer=True)
    _number("batch_size", batch_size, positive=True, integer=True)
    check_learning_rate(learning_rate, "learning_rate")
    _number("lambda_max", lambda_max)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"`seed` must be a non-negative integer or None. Received: seed={seed!r}")
    if unfreeze_blocks == 0 and from_layer is None:
        raise ValueError("DANN trains the feature extractor: `unfreeze_blocks` must be a "
                         "positive integer or 'all'. Received: unfreeze_blocks=0")
    if not (isinstance(source, (tuple, list)) and len(source) == 2
            and all(is_array(part) for part in source)):
        raise TypeError("`source` must be a pair (images, labels) of arrays. Received: "
                        f"source of type {type(source).__name__}")
    labels = np.asarray(source[1])
    shape = _check_images(model, "source", source[0])
    if shape[0] != len(labels) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            "`source` must hold one integer label per image. Received: source images of "
            f"shape {shape}, labels of shape {labels.shape} and dtype {labels.dtype}")
    check_labels(model, "source", labels)
    target_shape = _check_images(model, "unlabelled_target", target, reference=shape)
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise TypeError("`validation_data` must be a pair (images, labels) of arrays. "
                            f"Received: validation_data of type {type(validation_data).__name__}")
        check_inputs(model, "validation", validation_data[0])
        check_labels(model, "validation", validation_data[1])
    select_trainable(model, None if from_layer is not None else unfreeze_blocks,
                     from_layer)  # raises on a bad request
    head_name = None
    if domain_head is not None:
        head_name = _check_domain_head(domain_head, feature_size(model))
    return {"function": "fit_domain_adversarial", "epochs": epochs, "batch_size": batch_size,
            "learning_rate": float(learning_rate), "unfreeze_blocks": unfreeze_blocks,
            "from_layer": from_layer, "lambda_max": float(lambda_max),
            "domain_head": head_name, "source": int(shape[0]),
            "unlabelled_target": int(target_shape[0]), "seed": seed}


def _check_domain_head(domain_head, features):
    if not isinstance(domain_head, keras.layers.Layer):
        raise TypeError("`domain_head` must be a Keras layer or model from features to one "
                        "logit, or None for the default MLP. Received: domain_head of type "
                        f"{type(domain_head).__name__}")
    try:
        shape = tuple(domain_head.compute_output_spec(
            keras.KerasTensor((None, features))).shape)
    except Exception as error:  # noqa: BLE001 - any failure means it does not fit
        raise ValueError(
            f"`domain_head` must take the model's features, a batch of {features} values: "
            f"{error}. Received: domain_head={domain_head.name!r}") from None
    if shape[1:] != (1,):
        raise ValueError(
            f"`domain_head` must return one logit per example, shape (batch, 1). Received: "
            f"domain_head={domain_head.name!r} with output shape {shape}")
    return type(domain_head).__name__  # not its name: Keras numbers unnamed layers on
