"""One runner for every phase list: `run_phases`.

`fit_head` runs ``[HeadPhase]``, `fine_tune` ``[FineTunePhase]``,
`fit_two_phase` both. The runner checks every phase before any work starts,
resolves ``class_weight="balanced"`` once, opens the resumable checkpoint and
the feature cache for the whole call, and runs each phase: restore a finished
phase, or compile, plan the cache, `fit`, and record the phase's summary.
"""

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.classifiers.multitask import MultiTaskModel
from tftransfer.data.class_weights import compute_class_weight
from tftransfer.distribute import prepare
from tftransfer.feature_cache.cache import FeatureCache
from tftransfer.feature_cache.feed import steps_per_epoch
from tftransfer.training.callbacks import phase_callbacks
from tftransfer.training.checkpoints import TrainingCheckpoint
from tftransfer.training.checkpoints import history_from_logs
from tftransfer.training.data_checks import check_training_data
from tftransfer.training.data_checks import unpack_splits

logger = logging.getLogger(__name__)


def run_phases(model, x, validation_data, *, y, phases, options, epoch_names=None):
    """Runs `phases` (see `tftransfer.training.phases`) on `model`.

    Args:
        model: a `tftransfer.Classifier`.
        x, validation_data, y: as for `keras.Model.fit`; `x` may also be a
            `tftransfer.DataSplits` (its training and validation splits).
        phases: the phases, in order.
        options: the `TrainingOptions` of the call.
        epoch_names: the public argument naming each phase's epochs, for
            messages (e.g. ``["head_epochs", "fine_tune_epochs"]``).

    Returns:
        One `keras.callbacks.History` over the phases, epochs numbered on,
        with ``history.history["phase"]``.
    """
    epoch_names = epoch_names or ["epochs"] * len(phases)
    unfrozen = [phase.check(model, name) for phase, name in zip(phases, epoch_names)]
    x, validation_data = unpack_splits(model, x, validation_data)
    check_training_data(model, x, y, validation_data)
    fit_kwargs = resolve_class_weight(model, x, y, options.fit_kwargs)
    checkpoint = None
    if options.checkpoint_dir is not None:
        settings = {"function": options.function}
        for phase, name in zip(phases, epoch_names):
            # Named as the public arguments: "head_epochs: 1 there, 2 now".
            prefix = name[: -len("epochs")] if len(phases) > 1 else ""
            settings.update({f"{prefix}{key}": value for key, value in phase.settings().items()})
        checkpoint = TrainingCheckpoint(options.checkpoint_dir,
                                        _run_settings(model, x, fit_kwargs, **settings))
    histories, initial_epoch = [], 0
    seed = None if checkpoint is None else checkpoint.shuffle_seed
    with FeatureCache(options.cache, shuffle_seed=seed) as cache:
        for index, phase in enumerate(phases):
            if not phase.epochs:
                continue
            following = [ids for p, ids in zip(phases[index + 1:], unfrozen[index + 1:])
                         if p.epochs]
            histories.append(_run_phase(
                model, phase, x, y, validation_data, initial_epoch=initial_epoch,
                fit_kwargs=dict(fit_kwargs), cache=cache, checkpoint=checkpoint,
                options=options, next_trainable=following[0] if following else None))
            initial_epoch += phase.epochs
    if len(histories) == 1:
        return histories[0]  # also `model.history`, as after `fit`
    return _merge_histories(model, histories)


def _run_phase(model, phase, x, y, validation_data, *, initial_epoch, fit_kwargs, cache,
               checkpoint, options, next_trainable):
    start = (time.perf_counter(), time.process_time())
    optimizer, info = phase.prepare(model, steps_per_epoch(x, fit_kwargs))
    prepare(model.distribute_strategy)
    with model.distribute_strategy.scope():
        extra = {"label_smoothing": options.label_smoothing} if options.label_smoothing else {}
        model.compile(optimizer=optimizer, loss=options.loss, metrics=options.metrics, **extra)
    state_dir = checkpoint.phase(phase.number) if checkpoint is not None else None
    done = state_dir.done() if state_dir is not None else None
    if done is not None:
        state_dir.restore_done(model)
        logger.info("Phase %d was finished before: its weights are restored from %s.",
                    phase.number, state_dir.path)
        return _finish_phase(model, number=phase.number, logs=done["logs"],
                             initial_epoch=initial_epoch, summary=done["summary"])
    state = state_dir.latest() if state_dir is not None else None
    callbacks, early_stopping = phase_callbacks(
        phase.number, fit_kwargs, validation_data, learning_rate=info["learning_rate"],
        argument=phase.message_argument(), early_stopping=options.early_stopping,
        log_dir=options.log_dir)
    previous_logs, first = [], initial_epoch
    if state is not None:
        previous_logs = state["logs"]
        first = state["epoch"] + 1
        if state["stop_training"] or first >= initial_epoch + phase.epochs:
            # The phase ended before its result was recorded.
            state_dir.restore_state_weights(model, state, early_stopping)
            return _record_phase(model, number=phase.number, logs=previous_logs,
                                 initial_epoch=initial_epoch, info=info, start=start,
                                 cache_info=None, state_dir=state_dir)
    if state_dir is not None:
        callbacks.append(state_dir.callback(state=state, early_stopping=early_stopping))
    logger.info("Phase %d: %s", phase.number, info)
    if fit_kwargs.get("verbose", "auto") != 0:
        _compat.print_msg(f"Phase {phase.number}: {phase.title(info)}, epochs "
                          f"{first + 1}-{initial_epoch + phase.epochs}")
    plan = cache.plan(model, x, y, validation_data, fit_kwargs=fit_kwargs,
                      next_trainable=next_trainable, first_epoch=first)
    history = plan.fit(epochs=initial_epoch + phase.epochs, initial_epoch=first,
                       callbacks=callbacks)
    logs = previous_logs + [
        {key: float(values[i]) for key, values in history.history.items()}
        for i in range(len(history.epoch))
    ]
    return _record_phase(model, number=phase.number, logs=logs, initial_epoch=initial_epoch,
                         info=info, start=start, cache_info=plan.info, state_dir=state_dir,
                         history=history if not previous_logs else None)


def _record_phase(model, *, number, logs, initial_epoch, info, start, cache_info, state_dir,
                  history=None):
    summary = dict(info, phase=number, epochs=len(logs),
                   seconds=round(time.perf_counter() - start[0], 3),
                   cpu_seconds=round(time.process_time() - start[1], 3), cache=cache_info)
    summary["final"] = dict(logs[-1]) if logs else {}
    if state_dir is not None:
        state_dir.finish(model, logs, summary)
    return _finish_phase(model, number=number, logs=logs, initial_epoch=initial_epoch,
                         summary=summary, history=history)


def _finish_phase(model, *, number, logs, initial_epoch, summary, history=None):
    """The phase's History: `fit`'s own, or one rebuilt from the logs of a
    resumed phase; the summary goes into ``model.training_summary``."""
    if isinstance(getattr(model, "training_summary", None), list):
        model.training_summary.append(summary)
    if history is not None:
        history.history["phase"] = [number] * len(history.epoch)
        return history
    history = history_from_logs(model, logs, initial_epoch=initial_epoch)
    history.history["phase"] = [number] * len(logs)
    model.history = history
    return history


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


def _run_settings(model, x, fit_kwargs, **settings):
    """What identifies a run for `checkpoint_dir`: a directory holding
    another run's state must not be resumed with this one."""
    settings.update(
        model=model.name,
        weights=int(sum(np.prod(v.shape) for v in model.weights)),
        steps_per_epoch=steps_per_epoch(x, fit_kwargs),
        batch_size=fit_kwargs.get("batch_size"),
    )
    return settings


def resolve_class_weight(model, x, y, fit_kwargs):
    """Resolves ``class_weight="balanced"`` from the training labels (a
    multi-task model's: of its heads)."""
    value = fit_kwargs.get("class_weight")
    if value is not None and isinstance(model, MultiTaskModel):
        raise ValueError(
            "Keras's `class_weight` applies to models with one output; give each task's "
            "head its own: tft.heads.classification(10, class_weight={0: 2.0, ...}) or "
            f"tft.heads.binary(class_weight=[1.0, 3.0]). Received: class_weight={value!r}")
    if isinstance(model, MultiTaskModel):
        model.balance_class_weights(x, y)  # its heads' class_weight="balanced"
        return dict(fit_kwargs)
    if not isinstance(value, str):
        return dict(fit_kwargs)
    if value != "balanced":
        raise ValueError(
            "`class_weight` must be a dict {class_index: weight} or 'balanced'. "
            f"Received: class_weight={value!r}"
        )
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
