"""FixMatch's training step, as a small `keras.Model` around a classifier.

`FixMatchTrainer.train_step` takes one labelled batch and one unlabelled
batch (`unlabelled_ratio` times larger) and minimizes

    CE(labelled, weak view)
      + unlabelled_weight * mean over the unlabelled batch of
        1[max p(weak) >= threshold] * CE(argmax p(weak), strong view)

where p(weak) is the classifier's prediction in inference mode on the
weakly augmented images, with no gradient through it (the pseudo-label).
With ``class_balance="distribution_alignment"`` p(weak) is first aligned
(`align_distribution`, ReMixMatch's distribution alignment) before the
threshold and the argmax. `fit` of the trainer updates the classifier's
weights: they are the same variables.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

CLASS_BALANCE = ("distribution_alignment", None)
"""The values of ``class_balance``."""

ALIGNMENT_MOMENTUM = 0.9
"""The running mean of the predictions on unlabelled batches: an exponential
average of the batch means with this momentum (about the last 10 batches)."""


def align_distribution(probabilities, prior, running_mean):
    """ReMixMatch's distribution alignment: scales each row of
    `probabilities` by ``prior / running_mean`` and renormalizes it.

    A model that predicts one class too often (its mean prediction, the
    `running_mean`, above the `prior` for that class) gets that class scaled
    down and the rarer ones up: the classes of the pseudo-labels move towards
    the prior (in `fit_self_training`, the class distribution of the
    labelled examples). Rows equal to the running mean become the prior.

    Example:

    >>> p = np.array([[0.9, 0.1], [0.6, 0.4]], "float32")
    >>> aligned = align_distribution(p, prior=[0.5, 0.5], running_mean=[0.75, 0.25])
    >>> np.round(np.asarray(aligned, "float64"), 3).tolist()
    [[0.75, 0.25], [0.333, 0.667]]
    """
    probabilities = ops.convert_to_tensor(probabilities, "float32")
    prior = ops.convert_to_tensor(prior, "float32")
    running_mean = ops.convert_to_tensor(running_mean, "float32")
    scaled = probabilities * prior / ops.maximum(running_mean, 1e-6)
    return scaled / ops.maximum(ops.sum(scaled, axis=-1, keepdims=True), 1e-12)


class FixMatchTrainer(keras.Model):
    """Trains `classifier` (its trainable variables) with FixMatch's loss.

    Batches are ``((labelled_images, labels), unlabelled_images)``, or
    ``((labelled_images, labels), (unlabelled_images, their_labels))`` when
    the unlabelled labels are known for monitoring only (the
    ``pseudo_label_accuracy`` and ``unlabelled_accuracy`` metrics; they never
    enter the loss). Validation batches are ``(images, labels)``.

    Args:
        classifier: a single-label `tftransfer.Classifier`.
        weak, strong: the two augmentation layers (called with
            ``training=True``); the strong view is made from the original
            image.
        threshold: the confidence a pseudo-label needs.
        unlabelled_weight: the weight of the unlabelled loss.
        prior: the class distribution pseudo-labels are aligned to.
        class_balance: one of `CLASS_BALANCE`.
    """

    def __init__(self, classifier, *, weak, strong, threshold, unlabelled_weight, prior,
                 class_balance, monitor_unlabelled=False, name="fixmatch"):
        super().__init__(name=name)
        self.classifier = classifier
        self.weak = weak
        self.strong = strong
        self.threshold = float(threshold)
        self.unlabelled_weight = float(unlabelled_weight)
        self.class_balance = class_balance
        self.monitor_unlabelled = monitor_unlabelled
        self.from_logits = classifier.activation is None
        prior = np.asarray(prior, "float32")
        self.prior = self.add_weight(shape=prior.shape, name="class_prior", trainable=False,
                                     initializer=keras.initializers.Constant(prior))
        self.prediction_mean = self.add_weight(
            shape=prior.shape, name="prediction_mean", trainable=False,
            initializer=keras.initializers.Constant(prior))
        names = ["loss", "labelled_loss", "unlabelled_loss", "mask_rate", "accuracy"]
        if monitor_unlabelled:
            names += ["pseudo_label_accuracy", "unlabelled_accuracy"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.val_trackers = {"loss": keras.metrics.Mean(name="loss"),
                             "accuracy": keras.metrics.Mean(name="accuracy")}
        self.built = True

    @property
    def metrics(self):
        return [*self.trackers.values(), *self.val_trackers.values()]

    def call(self, images, training=False):
        return self.classifier(images, training=training)

    def _cross_entropy(self, labels, outputs):
        return keras.losses.sparse_categorical_crossentropy(labels, outputs,
                                                            from_logits=self.from_logits)

    def pseudo_labels(self, weak_images):
        """``(aligned probabilities, mask)`` of unlabelled weak views (also
        updates the running mean of the predictions)."""
        outputs = self.classifier(weak_images, training=False)
        probabilities = ops.stop_gradient(self.classifier.probabilities(outputs))
        if self.class_balance == "distribution_alignment":
            mean = (ALIGNMENT_MOMENTUM * self.prediction_mean
                    + (1 - ALIGNMENT_MOMENTUM) * ops.mean(probabilities, axis=0))
            self.prediction_mean.assign(mean)
            probabilities = align_distribution(probabilities, self.prior, mean)
        mask = ops.cast(ops.max(probabilities, axis=-1) >= self.threshold, "float32")
        return probabilities, mask

    def train_step(self, data):
        (labelled, labels), unlabelled = data
        unlabelled_labels = None
        if isinstance(unlabelled, (tuple, list)):
            unlabelled, unlabelled_labels = unlabelled
        labelled_weak = self.weak(labelled, training=True)
        probabilities, mask = self.pseudo_labels(self.weak(unlabelled, training=True))
        pseudo = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
        unlabelled_strong = self.strong(unlabelled, training=True)
        count = ops.shape(labelled)[0]
        with tf.GradientTape() as tape:
            outputs = self.classifier(ops.concatenate([labelled_weak, unlabelled_strong], 0),
                                      training=True)
            labelled_loss = ops.mean(self._cross_entropy(labels, outputs[:count]))
            unlabelled_loss = ops.mean(mask * self._cross_entropy(pseudo, outputs[count:]))
            loss = labelled_loss + self.unlabelled_weight * unlabelled_loss
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        hits = _hits(outputs[:count], labels)
        values = {"loss": loss, "labelled_loss": labelled_loss,
                  "unlabelled_loss": unlabelled_loss, "mask_rate": ops.mean(mask),
                  "accuracy": ops.mean(hits)}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        if self.monitor_unlabelled:
            right = ops.cast(pseudo == ops.cast(unlabelled_labels, "int32"), "float32")
            self.trackers["pseudo_label_accuracy"].update_state(right, sample_weight=mask)
            self.trackers["unlabelled_accuracy"].update_state(right)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, data):
        images, labels = data[0], data[1]
        outputs = self.classifier(images, training=False)
        self.val_trackers["loss"].update_state(ops.mean(self._cross_entropy(labels, outputs)))
        self.val_trackers["accuracy"].update_state(_hits(outputs, labels))
        return {name: tracker.result() for name, tracker in self.val_trackers.items()}


def _hits(outputs, labels):
    predicted = ops.cast(ops.argmax(outputs, -1), "int32")
    return ops.cast(predicted == ops.cast(labels, "int32"), "float32")


def epoch_indices(seed, epoch, *, num_labelled, num_unlabelled, batch_size, unlabelled_ratio):
    """The batches of one epoch, as indices: ``(labelled, unlabelled)`` of
    shapes ``(steps, batch_size)`` and ``(steps, batch_size * ratio)``.

    An epoch is one pass over the unlabelled examples in a random order (the
    last batch filled up from the start of that order); the labelled ones
    are drawn in random orders, one after the other, as often as the steps
    need. Everything depends on ``(seed, epoch)`` only, so a resumed run
    gets the batches of an uninterrupted one.
    """
    rng = np.random.default_rng([seed, epoch])
    size = batch_size * unlabelled_ratio
    steps = steps_per_epoch(num_unlabelled, batch_size, unlabelled_ratio)
    order = rng.permutation(num_unlabelled)
    order = np.resize(order, steps * size)  # repeats from the start to fill the last batch
    rounds = -(-steps * batch_size // num_labelled)
    drawn = np.concatenate([rng.permutation(num_labelled) for _ in range(rounds)])
    return (drawn[: steps * batch_size].reshape(steps, batch_size),
            order.reshape(steps, size))


def steps_per_epoch(num_unlabelled, batch_size, unlabelled_ratio):
    return -(-num_unlabelled // (batch_size * unlabelled_ratio))


def training_batches(data, seed, *, first_epoch, epochs, batch_size, unlabelled_ratio):
    """A `tf.data.Dataset` of the batches of epochs ``first_epoch`` to
    ``epochs - 1``, one after the other, for `FixMatchTrainer`.

    Args:
        data: ``(labelled_images, labels, unlabelled_images,
            unlabelled_labels or None)``, arrays.
    """
    x, y, unlabelled, unlabelled_labels = data
    parts = [epoch_indices(seed, e, num_labelled=len(x), num_unlabelled=len(unlabelled),
                           batch_size=batch_size, unlabelled_ratio=unlabelled_ratio)
             for e in range(first_epoch, epochs)]
    labelled_ids = np.concatenate([p[0] for p in parts])
    unlabelled_ids = np.concatenate([p[1] for p in parts])
    x, y = tf.constant(x, tf.float32), tf.constant(y, tf.int32)
    unlabelled = tf.constant(unlabelled, tf.float32)
    known = None if unlabelled_labels is None else tf.constant(unlabelled_labels, tf.int32)

    def gather(labelled_id, unlabelled_id):
        batch = (tf.gather(x, labelled_id), tf.gather(y, labelled_id))
        images = tf.gather(unlabelled, unlabelled_id)
        if known is None:
            return batch, images
        return batch, (images, tf.gather(known, unlabelled_id))

    dataset = tf.data.Dataset.from_tensor_slices((labelled_ids, unlabelled_ids))
    return dataset.map(gather).prefetch(2)
