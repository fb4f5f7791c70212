"""A planned phase: on cached activations (`CachedFit`) or on the data (`UncachedFit`).

`FeatureCache.plan` returns one of the two; the trainer calls its `fit` the
same way either way, and reads `cached`, `reason` and `info` for the phase's
summary. Neither returns a sentinel: an uncached phase is a plan too.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from tftransfer.data.checks import guard_labels
from tftransfer.data.checks import is_array
from tftransfer.feature_cache.feed import array_dataset
from tftransfer.feature_cache.feed import as_arrays
from tftransfer.feature_cache.feed import steps_per_epoch
from tftransfer.feature_cache.options import timed

logger = logging.getLogger(__name__)


class CachedFit:
    """Trains the top of a model on cached activations.

    The top shares its layers, and so its weights, with the full model, so
    there is nothing to write back: `fit` leaves the full model trained.
    The callbacks get the full model (ModelCheckpoint saves it,
    EarlyStopping stops it); the top shares its training flags with it.
    """

    cached = True
    reason = None

    def __init__(self, model, top, x, y, fit_kwargs, info):
        self.model = model
        self.top = top
        self.x, self.y = x, y
        self.fit_kwargs = fit_kwargs
        self.info = info

    def fit(self, *, epochs, initial_epoch=0, callbacks=None):
        """`keras.Model.fit` of the top: trains up to epoch `epochs`, from
        `initial_epoch`; returns the `History`."""
        kwargs = dict(self.fit_kwargs)
        verbose = kwargs.get("verbose", "auto")
        callbacks = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=steps_per_epoch(self.x, kwargs),
            model=self.model,
        )
        self.model.stop_training = False
        logger.info("Training on cached features: %s", self.info)
        top = self.top
        with self.model.distribute_strategy.scope(), timed("Training on cached features"):
            if not top.optimizer.built:
                # As Keras builds it itself under a distribution strategy. Left to
                # the first call of the train function, the optimizer creates its
                # variables while that function is traced, and TensorFlow then
                # traces it a second time: for phase 2 of EfficientNetB0 (160 px)
                # the first epoch took 5.3 s instead of 8.3 s built here.
                #
                # Built over the full model's variables when they are the top's (they
                # are whenever the cut is below everything that trains), in the full
                # model's order: the optimizer's slots are saved in that order, and a
                # `.keras` file of a model with several heads, whose top orders them
                # otherwise, then loads them back onto the right variables.
                variables = top.trainable_variables
                full = self.model.trainable_variables
                if {id(v) for v in full} == {id(v) for v in variables}:
                    variables = full
                top.optimizer.build(variables)
            return top.fit(self.x, self.y, epochs=epochs, initial_epoch=initial_epoch,
                           callbacks=callbacks, **kwargs)


class UncachedFit:
    """Trains the full model on the data, with `keras.Model.fit`.

    With a `seed` (resumable runs), arrays are served so that each epoch's
    order depends on (seed, epoch) only, so a resumed run reshuffles as the
    uninterrupted one did; a `tf.data` pipeline is fed as it is.
    """

    cached = False
    info = None

    def __init__(self, model, x, y, validation_data, fit_kwargs, *, reason, seed=None,
                 first_epoch=0):
        self.model = model
        self.reason = reason
        self.validation_data = guard_labels(model, "validation", validation_data)
        x = guard_labels(model, "training", x)
        self.x, self.y, self.fit_kwargs = _resumable_inputs(x, y, fit_kwargs, seed, first_epoch)

    def fit(self, *, epochs, initial_epoch=0, callbacks=None):
        """`keras.Model.fit` up to epoch `epochs`, from `initial_epoch`."""
        return self.model.fit(self.x, self.y, validation_data=self.validation_data,
                              epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                              **self.fit_kwargs)


def _resumable_inputs(x, y, fit_kwargs, seed, first_epoch):
    fit_kwargs = dict(fit_kwargs)
    if isinstance(x, tf.data.Dataset):
        # A dataset shuffles itself; Keras warns about its default shuffle=True.
        fit_kwargs.setdefault("shuffle", False)
        if seed is not None:
            logger.info(
                "Resumable training on a tf.data pipeline: the resumed epochs are exactly "
                "those of an uninterrupted run when the backbone's features are cached, or "
                "when the pipeline's order and augmentation do not depend on how many "
                "epochs it has run.")
        return x, y, fit_kwargs
    if seed is None or y is None or fit_kwargs.get("validation_split") or not is_array(x):
        return x, y, fit_kwargs
    arrays = [np.asarray(x), as_arrays(y)]
    if fit_kwargs.get("sample_weight") is not None:
        arrays.append(as_arrays(fit_kwargs.pop("sample_weight")))
    dataset = array_dataset(
        arrays, fit_kwargs.pop("batch_size", None) or 32,
        shuffle=bool(fit_kwargs.pop("shuffle", True)), seed=seed, first_epoch=first_epoch)
    fit_kwargs["shuffle"] = False
    return dataset, None, fit_kwargs
