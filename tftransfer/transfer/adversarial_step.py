"""DANN's parts: the gradient reversal, the schedules, and the training step.

`fit_domain_adversarial` (in `tftransfer.transfer.adversarial`) builds a
`DomainAdversarialTrainer` around a classifier and calls its `fit`; the
trainer's `train_step` is the one place the method's loss is written.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tftransfer import _compat


@keras.saving.register_keras_serializable(package="tftransfer")
class GradientReversal(keras.layers.Layer):
    """The identity forward; the gradient times ``-scale`` backward.

    Ganin & Lempitsky's gradient reversal layer: placed between a feature
    extractor and a domain classifier, it lets the domain classifier
    minimize its loss while the feature extractor, receiving the reversed
    gradient, maximizes it. `scale` (the paper's lambda) is a non-trainable
    variable, so a training step or a callback can change it as training
    goes (`dann_lambda`).

    Args:
        scale: the weight of the reversed gradient, ``>= 0``.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> layer = GradientReversal(scale=0.5)
    >>> x = tf.constant([[1.0, 2.0]])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(layer(x) * tf.constant([[3.0, 4.0]]))
    >>> layer(x).numpy().tolist(), tape.gradient(y, x).numpy().tolist()
    ([[1.0, 2.0]], [[-1.5, -2.0]])
    """

    def __init__(self, scale=1.0, **kwargs):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:
            raise ValueError(f"`scale` must be a non-negative number. Received: scale={scale!r}")
        super().__init__(**kwargs)
        self.scale = self.add_weight(shape=(), name="scale", trainable=False,
                                     initializer=keras.initializers.Constant(float(scale)))

    def call(self, inputs):
        scale = ops.cast(self.scale, inputs.dtype)

        @tf.custom_gradient
        def reverse(x):
            return tf.identity(x), lambda upstream: -scale * upstream

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(),
                "scale": float(keras.ops.convert_to_numpy(self.scale))}


def dann_lambda(progress, *, lambda_max=1.0):
    """The paper's schedule of the reversal weight: ``lambda_max * (2 / (1 +
    exp(-10 p)) - 1)`` at training progress ``p`` in [0, 1] (0 at the start,
    when the domain classifier is still random; 0.987 * `lambda_max` at
    half-way; `lambda_max` at the end). Takes a number or a tensor.

    Example:

    >>> [round(dann_lambda(p), 3) for p in (0.0, 0.1, 0.5, 1.0)]
    [0.0, 0.462, 0.987, 1.0]
    """
    if isinstance(progress, (int, float)):
        return lambda_max * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
    progress = ops.cast(progress, "float32")
    return lambda_max * (2.0 / (1.0 + ops.exp(-10.0 * progress)) - 1.0)


@keras.saving.register_keras_serializable(package="tftransfer")
class AnnealedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's annealing: ``initial_learning_rate / (1 + alpha p) **
    beta`` at progress ``p = step / total_steps`` (at most 1); DANN's
    defaults are 0.01, 10 and 0.75.

    Example:

    >>> schedule = AnnealedLearningRate(0.01, total_steps=100)
    >>> [round(float(schedule(s)), 5) for s in (0, 50, 100)]
    [0.01, 0.00261, 0.00166]
    """

    def __init__(self, initial_learning_rate, *, total_steps, alpha=10.0, beta=0.75):
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.alpha, self.beta = float(alpha), float(beta)

    def __call__(self, step):
        progress = ops.minimum(ops.cast(step, "float32") / max(1, self.total_steps), 1.0)
        return self.initial_learning_rate / (1.0 + self.alpha * progress) ** self.beta

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "total_steps": self.total_steps, "alpha": self.alpha, "beta": self.beta}


def default_domain_head(features, *, seed):
    """The paper's domain classifier: an MLP on the features, 100-100-1 (or
    1024-1024-1 for more than 1024 features), ending in one logit."""
    units = 1024 if features > 1024 else 100
    layers = [keras.Input((features,))]
    for i in range(2):
        layers.append(keras.layers.Dense(
            units, activation="relu", name=f"domain_dense_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i)))
    layers.append(keras.layers.Dense(1, name="domain_logit", dtype="float32",
                                     kernel_initializer=keras.initializers.GlorotUniform(
                                         seed=seed + 2)))
    return keras.Sequential(layers, name="domain_classifier")


def feature_size(model):
    """The size of the features a classifier's head takes (its pooled
    backbone features)."""
    return int(model.head.dropout_layers[0].input.shape[-1])


def batchnorm_layers(model):
    return [layer for layer in _compat.flatten_layers(model.backbone)
            if isinstance(layer, keras.layers.BatchNormalization)]


class DomainAdversarialTrainer(keras.Model):
    """Trains `classifier` and `domain_head` with DANN's loss.

    Batches are ``((source_images, labels), target_images)``; validation
    batches ``(images, labels)``. A step computes the features of each half
    separately, the backbone in training mode, so BatchNormalization
    normalizes each domain with its own batch statistics; the running
    statistics follow the target batches only (those of the source pass are
    put back), so the classifier in inference mode is the target domain's.
    The loss is the label cross-entropy on the source half plus the domain
    classifier's binary cross-entropy (on logits) over both halves, its
    input passed through a `GradientReversal` whose scale is
    ``dann_lambda(step / total_steps, lambda_max=lambda_max)``.

    Args:
        classifier: a single-label `tftransfer.ImageClassifier`.
        domain_head: a layer from features to one domain logit.
        total_steps: the run's steps (progress 1 at the end).
        lambda_max: the reversal weight's cap.
    """

    def __init__(self, classifier, domain_head, *, total_steps, lambda_max,
                 name="domain_adversarial"):
        super().__init__(name=name)
        self.classifier = classifier
        self.domain_head = domain_head
        self.reversal = GradientReversal(0.0, name="gradient_reversal")
        self.total_steps = int(total_steps)
        self.lambda_max = float(lambda_max)
        self.label_loss = classifier.default_loss()
        self.domain_loss = keras.losses.BinaryCrossentropy(from_logits=True)
        names = ["loss", "label_loss", "domain_loss", "domain_accuracy", "accuracy"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.val_trackers = {"loss": keras.metrics.Mean(name="loss"),
                             "accuracy": keras.metrics.Mean(name="accuracy")}
        self.built = True

    @property
    def metrics(self):
        return [*self.trackers.values(), *self.val_trackers.values()]

    def call(self, images, training=False):
        return self.classifier(images, training=training)

    def features(self, images):
        """The pooled backbone features, BatchNormalization on the batch's
        statistics."""
        x = self.classifier.backbone(images, training=True)
        pooler = self.classifier.pooler
        return pooler(x) if pooler is not None else x

    def _hits(self, labels, outputs):
        predicted = ops.cast(ops.argmax(outputs, axis=-1), "int32")
        return ops.cast(predicted == ops.cast(ops.reshape(labels, [-1]), "int32"), "float32")

    def train_step(self, data):
        (source, labels), target = data
        progress = ops.minimum(
            ops.cast(self.optimizer.iterations, "float32") / max(1, self.total_steps), 1.0)
        weight = dann_lambda(progress, lambda_max=self.lambda_max)
        self.reversal.scale.assign(weight)
        statistics = [v for layer in batchnorm_layers(self.classifier)
                      for v in (layer.moving_mean, layer.moving_variance)]
        with tf.GradientTape() as tape:
            before = [tf.identity(v) for v in statistics]
            source_features = self.features(source)
            with tf.control_dependencies([ops.sum(source_features)]):
                for variable, value in zip(statistics, before):
                    variable.assign(value)  # the source pass leaves no trace in them
            target_features = self.features(target)
            outputs = self.classifier.head(source_features, training=True)
            label_loss = self.label_loss(labels, outputs)
            both = ops.concatenate([source_features, target_features], axis=0)
            logits = ops.cast(self.domain_head(self.reversal(both), training=True), "float32")
            domains = ops.concatenate([ops.zeros_like(logits[: ops.shape(source)[0]]),
                                       ops.ones_like(logits[ops.shape(source)[0]:])], axis=0)
            domain_loss = self.domain_loss(domains, logits)
            loss = label_loss + domain_loss
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        right = ops.cast(ops.cast(logits > 0, "float32") == domains, "float32")
        values = {"loss": loss, "label_loss": label_loss, "domain_loss": domain_loss,
                  "domain_accuracy": ops.mean(right),
                  "accuracy": ops.mean(self._hits(labels, outputs))}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {**{n: t.result() for n, t in self.trackers.items()}, "lambda": weight}

    def test_step(self, data):
        images, labels = data[0], data[1]
        outputs = self.classifier(images, training=False)
        self.val_trackers["loss"].update_state(self.label_loss(labels, outputs))
        self.val_trackers["accuracy"].update_state(self._hits(labels, outputs))
        return {n: t.result() for n, t in self.val_trackers.items()}


def epoch_indices(seed, epoch, *, num_source, num_target, batch_size):
    """One epoch's batches as indices, ``(source, target)``, each of shape
    ``(steps, batch)``: a pass over the source images in a random order (the
    last partial batch dropped: BatchNormalization needs full batches), and
    as many target images, drawn in random orders one after the other.
    Everything depends on ``(seed, epoch)`` only, so a resumed run gets the
    batches of an uninterrupted one."""
    rng = np.random.default_rng([seed, epoch])
    batch = min(batch_size, num_source)
    steps = num_source // batch
    source = rng.permutation(num_source)[: steps * batch]
    rounds = -(-steps * batch // num_target)
    target = np.concatenate([rng.permutation(num_target) for _ in range(rounds)])
    return source.reshape(steps, batch), target[: steps * batch].reshape(steps, batch)


def training_batches(source, labels, target, seed, *, first_epoch, epochs, batch_size):
    """A `tf.data.Dataset` of the batches of epochs ``first_epoch`` to
    ``epochs - 1``, one after the other, for `DomainAdversarialTrainer`."""
    parts = [epoch_indices(seed, e, num_source=len(source), num_target=len(target),
                           batch_size=batch_size) for e in range(first_epoch, epochs)]
    source_ids = np.concatenate([p[0] for p in parts])
    target_ids = np.concatenate([p[1] for p in parts])
    source, labels = tf.constant(source, tf.float32), tf.constant(labels, tf.int32)
    target = tf.constant(target, tf.float32)

    def gather(source_id, target_id):
        return (tf.gather(source, source_id), tf.gather(labels, source_id)), tf.gather(
            target, target_id)

    dataset = tf.data.Dataset.from_tensor_slices((source_ids, target_ids))
    return dataset.map(gather).prefetch(2)
