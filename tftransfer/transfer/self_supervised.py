"""Self-supervised pretraining on unlabelled images: `pretrain_self_supervised`.

SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020): every image of a batch of N gives two random
views (`tftransfer.transfer.views.ContrastiveViews`); the encoder (the
backbone, then global average pooling) and a projection head (an MLP) map
each of the 2N views to a vector; the NT-Xent loss (`nt_xent_loss`) asks
each view's vector to be closer, in cosine similarity over a temperature,
to its partner's than to the 2N - 2 views of the other images. The head is
then discarded: the features below it transfer better than its output (the
paper's Figure 8), and the backbone goes on to `tftransfer.build_classifier`
and `tftransfer.fit_two_phase` like any pretrained backbone.

The training is `keras.Model.fit` on a small model with its own
`train_step` (`SimCLRTrainer`), so callbacks, `verbose` and the resumable
checkpoints of `tftransfer.training.checkpoints` work as in the recipe.
"""

import logging
import math
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.feature_cache.graph import flatten_graph
from tftransfer.training.checkpoints import TrainingCheckpoint
from tftransfer.training.checkpoints import history_from_logs
from tftransfer.training.schedules import warmup_cosine_schedule
from tftransfer.transfer.adabn import adapt_batchnorm
from tftransfer.transfer.pretraining_data import epoch_batches
from tftransfer.transfer.pretraining_data import unlabelled_images
from tftransfer.transfer.views import ContrastiveViews

logger = logging.getLogger(__name__)

METHODS = ("simclr",)
"""The methods of `pretrain_self_supervised`."""


def _check_temperature(temperature):
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not temperature > 0 or not math.isfinite(temperature)):
        raise ValueError(
            "`temperature` must be a positive number (SimCLR uses 0.1 to 0.5). "
            f"Received: temperature={temperature!r}")
    return float(temperature)


def contrastive_logits(z1, z2, temperature):
    """The (2N, 2N) logits of NT-Xent and the column of each row's positive:
    rows and columns are ``[z1; z2]``, L2-normalized, the logits their
    cosine similarities over `temperature`, the diagonal (a view with
    itself) pushed to -1e9 so that it never counts."""
    z = keras.ops.cast(keras.ops.concatenate([z1, z2], axis=0), "float32")
    z = keras.ops.normalize(z, axis=-1)
    n = keras.ops.shape(z1)[0]
    logits = keras.ops.matmul(z, keras.ops.transpose(z)) / temperature
    logits = logits - 1e9 * keras.ops.eye(2 * n, dtype="float32")
    positives = keras.ops.concatenate([keras.ops.arange(n, 2 * n), keras.ops.arange(0, n)])
    return logits, positives


def nt_xent_loss(z1, z2, *, temperature=0.5):
    """SimCLR's NT-Xent loss (normalized temperature-scaled cross entropy).

    Row i of `z1` and row i of `z2` are the two views of one example. For
    each of the 2N views, the loss is the cross entropy of picking its
    partner among the other 2N - 1 views (its positive and 2N - 2
    negatives), with logits the cosine similarities over `temperature`; the
    result is the mean over the 2N views.

    Args:
        z1, z2: ``(N, d)`` projections of the two views, N >= 2.
        temperature: divides the similarities; lower is sharper.

    Returns:
        The scalar loss (a tensor).

    Example:

    >>> import numpy as np
    >>> z = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    >>> round(float(nt_xent_loss(z, z, temperature=1.0)), 4)  # log(e + 2) - 1
    0.5514
    """
    temperature = _check_temperature(temperature)
    logits, positives = contrastive_logits(z1, z2, temperature)
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
        positives, logits, from_logits=True))


def projection_head(input_dim, units=(256, 64), *, seed=None, name="projection_head"):
    """SimCLR's projection head g: Dense layers with ReLU between them, the
    last one linear (its output is what NT-Xent compares)."""
    layers = [keras.Input((input_dim,))]
    for i, width in enumerate(units):
        init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
        last = i == len(units) - 1
        layers.append(keras.layers.Dense(width, activation=None if last else "relu",
                                         kernel_initializer=init, name=f"dense_{i}"))
    return keras.Sequential(layers, name=name)


class SimCLRTrainer(keras.Model):
    """Encoder + projection head trained with NT-Xent on two views a batch.

    Everything trains in training mode, BatchNormalization included (it
    normalizes each batch of 2N views with their own statistics).
    """

    def __init__(self, backbone, head, views, *, temperature, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.pooling = keras.layers.GlobalAveragePooling2D(name="pooling")
        self.head = head
        self.views = views
        self.temperature = temperature
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")
        self.built = True  # its layers are (a checkpoint's weights load into it)

    def call(self, images, training=False):
        return self.head(self.pooling(self.backbone(images, training=training)),
                         training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def train_step(self, images):
        n = tf.shape(images)[0]
        views = self.views(tf.concat([images, images], axis=0), training=True)
        with tf.GradientTape() as tape:
            z = self(views, training=True)
            logits, positives = contrastive_logits(z[:n], z[n:], self.temperature)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                positives, logits, from_logits=True))
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=positives.dtype),
                                   positives), "float32")
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(tf.reduce_mean(correct))
        return {"loss": self.loss_tracker.result(),
                "contrastive_accuracy": self.accuracy_tracker.result()}


def _check_int(name, value, low, hint=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}.{hint} "
                         f"Received: {name}={value!r}")
    return int(value)


def _check_backbone(backbone):
    if not isinstance(backbone, keras.Model) or not _compat.is_functional(backbone):
        raise TypeError(
            "`backbone` must be a functional keras.Model (e.g. `tft.load_backbone(...)` or "
            "your own `keras.Model(inputs, feature_map)`) mapping images to a feature map. "
            f"Received: backbone of type {type(backbone).__name__}")
    if len(backbone.inputs) != 1 or len(backbone.outputs) != 1 or len(
            backbone.outputs[0].shape) != 4 or len(backbone.inputs[0].shape) != 4:
        raise ValueError(
            "`backbone` must take one batch of images (batch, height, width, channels) and "
            "give one 4-D feature map (batch, height, width, channels), as the backbones "
            "`tft.build_classifier` pools. Cut a classifier below its pooling with "
            f"`tft.load_backbone(model, cut_at=...)`. Received: backbone {backbone.name!r} "
            f"with inputs {[tuple(t.shape) for t in backbone.inputs]} and outputs "
            f"{[tuple(t.shape) for t in backbone.outputs]}")
    norms = [id(s.op) for s in flatten_graph(backbone).steps
             if isinstance(s.op, keras.layers.BatchNormalization)]
    if len(norms) != len(set(norms)):
        raise ValueError(
            f"Backbone {backbone.name!r} runs a BatchNormalization layer more than once, so its "
            "statistics cannot be recomputed on the images after pretraining (see "
            "`tft.adapt_batchnorm`). Received: a backbone that shares one")


def _unnamed(config):
    """A layer's config without its (and its sublayers') names, which Keras
    numbers anew for every layer made in a process."""
    if isinstance(config, dict):
        return {k: _unnamed(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_unnamed(v) for v in config]
    return config


def pretrain_self_supervised(backbone, unlabelled, *, method="simclr", epochs=100,
                             batch_size=128, temperature=0.5, projection_units=(256, 64),
                             learning_rate=1e-3, warmup=0.1, optimizer=None, augmentation=None,
                             seed=None, checkpoint_dir=None, callbacks=None, verbose="auto",
                             return_history=False):
    """Pretrains `backbone` on unlabelled images, without labels (SimCLR).

    Each step takes `batch_size` images, draws two random views of each
    (`augmentation`), and trains the backbone, global average pooling and a
    projection head with NT-Xent (`nt_xent_loss`). Everything trains, in
    training mode: the backbone's layers are made trainable for the call
    (their `trainable` flags are restored afterwards). The head is then
    discarded, and the BatchNormalization statistics of the backbone are
    recomputed exactly on the unlabelled images as they are, unaugmented
    (`tftransfer.adapt_batchnorm`): the moving averages of pretraining
    follow augmented views in training mode, and the transfer runs on plain
    images in inference mode. The backbone's weights change in place.

    It runs uncached: each step augments anew, so the backbone runs on every
    view (said at INFO level in the logs).

    Args:
        backbone: a functional `keras.Model` from images (raw pixels in
            [0, 255]) to a 4-D feature map, such as `tft.load_backbone`
            gives or your own network (its preprocessing inside).
        unlabelled: the images: an array ``(count, height, width,
            channels)``, or a `tf.data.Dataset` of images or image batches,
            or of ``(images, ...)`` tuples (labels are ignored).
        method: ``"simclr"``.
        epochs: passes over the images.
        batch_size: images per step (2 views each, so 2 * batch_size views
            through the backbone); each view has 2 * batch_size - 2
            negatives. The last incomplete batch of an epoch is dropped.
        temperature: NT-Xent's temperature, > 0.
        projection_units: the projection head's Dense sizes; the last is
            the projection's size.
        learning_rate: Adam's peak rate, reached after the first `warmup`
            fraction of the steps, then cosine decay to 0 (ignored with
            `optimizer`).
        warmup: that fraction, in [0, 1).
        optimizer: a Keras optimizer instead.
        augmentation: the layer drawing one random view per image, called
            with ``training=True``. Default: `ContrastiveViews` seeded with
            `seed`.
        seed: seeds the shuffling, the views and the head's initial weights.
            Default: a draw from NumPy's global generator (which
            `keras.utils.set_random_seed` seeds); with `checkpoint_dir`, the
            directory's seed.
        checkpoint_dir: makes the run resumable as `tft.fit_two_phase` is:
            the state is saved after each epoch, and the same call after an
            interruption continues from the last completed epoch and ends
            with the weights of an uninterrupted run (for arrays; a
            `tf.data` pipeline is resumed at the right epoch but read from
            its start). A finished run is restored, not repeated.
        callbacks: Keras callbacks for `fit`.
        verbose: Keras's `verbose`.
        return_history: also return the `keras.callbacks.History` (loss and
            ``contrastive_accuracy``: how often a view's nearest other view
            is its partner).

    Returns:
        `backbone`, pretrained; with ``return_history=True``,
        ``(backbone, history)``.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    >>> backbone = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    >>> images = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 1))
    >>> backbone, history = pretrain_self_supervised(
    ...     backbone, images, epochs=1, batch_size=4, seed=0, verbose=0,
    ...     return_history=True)
    >>> sorted(history.history)
    ['contrastive_accuracy', 'loss']
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}. Received: method={method!r}")
    _check_backbone(backbone)
    epochs = _check_int("epochs", epochs, 1)
    batch_size = _check_int("batch_size", batch_size, 2,
                            " NT-Xent contrasts each image with the others of its batch.")
    temperature = _check_temperature(temperature)
    if (not isinstance(projection_units, (tuple, list)) or not projection_units or any(
            isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in projection_units)):
        raise ValueError("`projection_units` must be a non-empty tuple of positive integers, "
                         f"e.g. (256, 64). Received: projection_units={projection_units!r}")
    if optimizer is None and (isinstance(learning_rate, bool) or not isinstance(
            learning_rate, (int, float)) or not learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a positive number. "
                         f"Received: learning_rate={learning_rate!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
        raise ValueError(f"`warmup` must be in [0, 1). Received: warmup={warmup!r}")
    if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError("`optimizer` must be a keras.optimizers.Optimizer or None. "
                        f"Received: optimizer of type {type(optimizer).__name__}")
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        raise TypeError(
            "`augmentation` must be a Keras layer drawing one random view per image, e.g. "
            "`tft.ContrastiveViews(crop_scale=(0.3, 1.0))`, or None. "
            f"Received: augmentation of type {type(augmentation).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
    data, plain, steps = unlabelled_images(unlabelled, backbone, batch_size)
    arrays = isinstance(data, np.ndarray)

    checkpoint = None
    if checkpoint_dir is not None:
        settings = {
            "function": "pretrain_self_supervised", "method": method, "epochs": epochs,
            "batch_size": batch_size, "temperature": temperature, "steps_per_epoch": steps,
            "projection_units": list(projection_units), "learning_rate": learning_rate,
            "warmup": warmup, "seed": seed, "images": len(data) if arrays else None,
            "optimizer": None if optimizer is None else type(optimizer).__name__,
            "augmentation": None if augmentation is None else _unnamed(augmentation.get_config()),
            "backbone": backbone.name,
            "weights": int(sum(np.prod(v.shape) for v in backbone.weights))}
        checkpoint = TrainingCheckpoint(checkpoint_dir, settings)
    if seed is None:
        seed = checkpoint.shuffle_seed if checkpoint else int(np.random.randint(2**31 - 1))
    logger.info("Self-supervised pretraining (%s) runs uncached: every step augments the "
                "images anew (two random views each), so the backbone runs on every view.",
                method)
    start = time.perf_counter()
    views = augmentation if augmentation is not None else ContrastiveViews(seed=seed)
    head = projection_head(int(backbone.outputs[0].shape[-1]), tuple(projection_units),
                           seed=seed)
    trainer = SimCLRTrainer(backbone, head, views, temperature=temperature, name="simclr")
    if optimizer is None:
        optimizer = keras.optimizers.Adam(warmup_cosine_schedule(
            learning_rate, total_steps=epochs * steps, warmup=warmup))
    trainer.compile(optimizer=optimizer, jit_compile=False)
    flags = [(layer, layer.trainable) for layer in _compat.flatten_layers(backbone)]
    backbone.trainable = True
    try:
        logs = _fit(trainer, data, arrays=arrays, epochs=epochs, batch_size=batch_size,
                    seed=seed, checkpoint=checkpoint, callbacks=list(callbacks or []),
                    verbose=verbose, start=start)
    finally:
        for layer, flag in flags:
            layer.trainable = flag
    adapt_batchnorm(backbone, plain, batch_size=batch_size)
    if return_history:
        return backbone, history_from_logs(trainer, logs)
    return backbone


def _fit(trainer, data, *, arrays, epochs, batch_size, seed, checkpoint, callbacks, verbose,
         start):
    """Runs (or resumes, or restores) the training; returns the epochs' logs."""
    phase = checkpoint.phase(1) if checkpoint is not None else None
    done = phase.done() if phase is not None else None
    if done is not None:
        phase.restore_done(trainer)
        logger.info("Pretraining was finished before: its weights are restored from %s.",
                    phase.path)
        return done["logs"]
    state = phase.latest() if phase is not None else None
    previous, first = ([], 0) if state is None else (state["logs"], state["epoch"] + 1)
    if state is not None and first >= epochs:
        phase.restore_state_weights(trainer, state)
        logs = previous
    else:
        if phase is not None:
            callbacks.append(phase.callback(state=state))
        batches = (epoch_batches(data, batch_size, seed=seed, first_epoch=first)
                   if arrays else data)
        history = trainer.fit(batches, epochs=epochs, initial_epoch=first, callbacks=callbacks,
                              verbose=verbose, shuffle=False)
        logs = previous + [{key: float(values[i]) for key, values in history.history.items()}
                           for i in range(len(history.epoch))]
    if phase is not None:
        phase.finish(trainer, logs, {"epochs": len(logs),
                                     "seconds": round(time.perf_counter() - start, 3)})
    return logs
