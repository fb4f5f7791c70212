"""Resumable training: a checkpoint directory a restarted run continues from.

``fit_two_phase(..., checkpoint_dir=...)`` (and `fit_head` / `fine_tune`)
keep their state here. Run the same call again after a crash, a kernel
restart or a ``kill -9``, and it goes on from the last completed epoch of the
phase it was in, ending with the same model an uninterrupted run would have
given (same seed; see `resumable` in the training docs for what must hold).

Layout::

    checkpoint_dir/
        run.json                    the call's settings and the shuffle seed
        phase1/                     one directory per phase
            epoch-0003/             the state after epoch 4 (epochs count from 0):
                model.weights.h5        weights and optimizer
                seeds.npz               the random-seed states of the layers
                state.json              logs so far, EarlyStopping's state
            latest.json             names the newest complete epoch directory
            best-epoch-0002.weights.h5  the best epoch's weights so far
            done.json               written when the phase has finished
            final.weights.h5        the weights the phase ended with
            best.weights.h5         the phase's best epoch
            seeds.npz               the random-seed states at the end
        phase2/ ...

Each phase has its own directory: with one `BackupAndRestore` directory
shared by both phases, a restarted phase 1 loads phase 2's weights and runs
0 epochs with only a warning (Keras 3.15). Every file is written under a
temporary name and renamed into place, an epoch directory is complete before
``latest.json`` names it, and ``done.json`` is written last: a process killed
at any moment leaves the previous state or the new one, never half of one.
"""

import json
import logging
import math
import os
import re
import shutil
import tempfile

import keras
import numpy as np

from tftransfer import _compat

# Keras has no public API that saves or loads a model's weights without its
# optimizer's; the phase results must load into a model compiled with another.

logger = logging.getLogger(__name__)


RUN_FILE = "run.json"


LATEST_FILE = "latest.json"


DONE_FILE = "done.json"


FINAL_WEIGHTS = "final.weights.h5"


BEST_WEIGHTS = "best.weights.h5"


_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


_BEST_EPOCH = re.compile(r"^best-epoch-(\d{4,})\.weights\.h5$")


def _write_json(path, data):
    """Writes `data` to `path` atomically (temporary file, fsync, rename)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def save_weights(model, path):
    """Saves `model`'s weights, not its optimizer's, atomically."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
    try:
        _compat.save_weights_only(model, tmp, objects_to_skip=skip)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def load_weights(model, path):
    """Loads weights saved by `save_weights` (the optimizer is left alone)."""
    skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
    _compat.load_weights_only(model, path, objects_to_skip=skip)


def seed_generators(model):
    """The `keras.random.SeedGenerator`s of `model`'s layers (Dropout,
    random augmentation), in a fixed order. Their states are not part of
    the model's weights, but a resumed run needs them to draw the same
    dropout masks."""
    generators = []
    for layer in _compat.flatten_layers(model):
        generators.extend(_compat.seed_generators(layer))
    return generators


def save_seeds(model, path):
    states = {f"s{i}": keras.ops.convert_to_numpy(g.state)
              for i, g in enumerate(seed_generators(model))}
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-seeds.npz")
    np.savez(tmp, **states)
    os.replace(tmp, path)


def load_seeds(model, path):
    if not os.path.exists(path):
        return
    with np.load(path) as stored:
        generators = seed_generators(model)
        if len(stored.files) != len(generators):
            logger.warning(
                "The checkpoint holds %d random-seed states but the model has %d seed "
                "generators; dropout masks after resuming will differ from an "
                "uninterrupted run.", len(stored.files), len(generators))
            return
        for i, generator in enumerate(generators):
            generator.state.assign(stored[f"s{i}"])


class TrainingCheckpoint:
    """The checkpoint directory of one training call.

    Args:
        directory: the directory (created if missing).
        settings: a JSON-able dict of the call's settings. A directory holding
            a run with other settings is refused: resuming it would mix two
            different runs.
    """

    def __init__(self, directory, settings):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                "`checkpoint_dir` must be a directory path. "
                f"Received: checkpoint_dir={directory!r}"
            )
        self.directory = os.fspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(
                "`checkpoint_dir` must be a directory, but a file is there. "
                f"Received: checkpoint_dir={self.directory!r}"
            )
        os.makedirs(self.directory, exist_ok=True)
        settings = _jsonable(settings)
        path = os.path.join(self.directory, RUN_FILE)
        stored = _read_json(path)
        if stored is None:
            self.shuffle_seed = int(np.random.randint(2**31 - 1))
            _write_json(path, {"settings": settings, "shuffle_seed": self.shuffle_seed})
            self.resumed = False
        else:
            differences = sorted(
                key for key in set(settings) | set(stored["settings"])
                if settings.get(key) != stored["settings"].get(key)
            )
            if differences:
                details = "; ".join(
                    f"{key}: {stored['settings'].get(key)!r} there, {settings.get(key)!r} now"
                    for key in differences
                )
                raise ValueError(
                    f"`checkpoint_dir` {self.directory!r} holds a run with other settings "
                    f"({details}). Resuming it would mix two runs: pass a new "
                    "`checkpoint_dir`, or delete this one to start over. "
                    f"Received: checkpoint_dir={self.directory!r}"
                )
            self.shuffle_seed = int(stored["shuffle_seed"])
            self.resumed = True
            logger.info("Resuming the run in %s", self.directory)

    def phase(self, number):
        return PhaseCheckpoint(os.path.join(self.directory, f"phase{number}"))


class PhaseCheckpoint:
    """One phase's directory: epoch states, the best weights, the result."""

    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):  # leftovers of a process killed mid-write
            if name.startswith(".tmp-"):
                _remove(os.path.join(path, name))

    def done(self):
        """The finished phase's record, or `None`."""
        return _read_json(os.path.join(self.path, DONE_FILE))

    def latest(self):
        """The newest complete epoch state, or `None`."""
        latest = _read_json(os.path.join(self.path, LATEST_FILE))
        if latest is None:
            return None
        state = _read_json(os.path.join(self.path, latest["directory"], "state.json"))
        state["directory"] = os.path.join(self.path, latest["directory"])
        return state

    def callback(self, *, state=None, early_stopping=None):
        return _EpochCheckpoint(self, state=state, early_stopping=early_stopping)

    def restore_state_weights(self, model, state, early_stopping=None):
        """For a phase whose last epoch is saved but not its result: the
        weights it ended with (the best epoch's, if `early_stopping`
        restores them)."""
        best = state.get("best_file")
        if (early_stopping is not None and early_stopping.restore_best_weights and best
                and state.get("early_stopping", {}).get("has_best")):
            load_weights(model, os.path.join(self.path, best))
        else:
            load_weights(model, os.path.join(state["directory"], "model.weights.h5"))
        load_seeds(model, os.path.join(state["directory"], "seeds.npz"))

    def finish(self, model, logs, summary):
        """Records the finished phase: its weights, best weights, seeds and
        history; then deletes the epoch states."""
        save_weights(model, os.path.join(self.path, FINAL_WEIGHTS))
        save_seeds(model, os.path.join(self.path, "seeds.npz"))
        bests = sorted(n for n in os.listdir(self.path) if _BEST_EPOCH.match(n))
        best_path = os.path.join(self.path, BEST_WEIGHTS)
        if bests:
            os.replace(os.path.join(self.path, bests[-1]), best_path)
        else:
            shutil.copyfile(os.path.join(self.path, FINAL_WEIGHTS), best_path)
        _write_json(os.path.join(self.path, DONE_FILE), {"logs": logs, "summary": summary})
        for name in os.listdir(self.path):
            if _EPOCH_DIR.match(name) or _BEST_EPOCH.match(name) or name == LATEST_FILE:
                _remove(os.path.join(self.path, name))

    def restore_done(self, model):
        load_weights(model, os.path.join(self.path, FINAL_WEIGHTS))
        load_seeds(model, os.path.join(self.path, "seeds.npz"))


def history_from_logs(model, logs, *, initial_epoch=0):
    """A `keras.callbacks.History` rebuilt from per-epoch log dicts (those a
    checkpoint keeps), for a run that resumed or was restored whole."""
    history = keras.callbacks.History()
    history.set_model(model)
    history.epoch = list(range(initial_epoch, initial_epoch + len(logs)))
    keys = list(dict.fromkeys(key for entry in logs for key in entry))
    history.history = {key: [entry.get(key) for entry in logs] for key in keys}
    history.params = {"epochs": initial_epoch + len(logs)}
    return history


def _number(value):
    if value is None:
        return None
    value = float(keras.ops.convert_to_numpy(value))
    return value if math.isfinite(value) else str(value)


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves the phase's state after every epoch; restores it when training
    (re)starts. Put it after `EarlyStopping` in the callback list: it saves
    EarlyStopping's state of the same epoch."""

    def __init__(self, phase, *, state=None, early_stopping=None):
        super().__init__()
        self.phase = phase
        self.state = state
        self.early_stopping = early_stopping
        self.logs = list(state["logs"]) if state else []
        self._best = state.get("best") if state else None
        self._best_file = state.get("best_file") if state else None

    def on_train_begin(self, logs=None):
        state = self.state
        if state is None:
            return
        model = self.model
        es = self.early_stopping
        if es is not None and state.get("early_stopping"):
            saved = state["early_stopping"]
            es.wait = saved["wait"]
            es.best = saved["best"]
            es.best_epoch = saved["best_epoch"]
            es.stopped_epoch = saved["stopped_epoch"]
            if saved.get("has_best") and es.restore_best_weights and self._best_file:
                load_weights(model, os.path.join(self.phase.path, self._best_file))
                es.best_weights = model.get_weights()
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(state["directory"], "model.weights.h5"))
        load_seeds(model, os.path.join(state["directory"], "seeds.npz"))
        logger.info("Resumed phase from %s after epoch %d.", state["directory"],
                    state["epoch"] + 1)

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        entry = {key: _number(value) for key, value in (logs or {}).items()}
        self.logs.append(entry)
        es = self.early_stopping
        improved = self._improved(epoch, entry)
        if improved:
            name = f"best-epoch-{epoch:04d}.weights.h5"
            save_weights(model, os.path.join(self.phase.path, name))
            self._best_file = name
        fd_dir = tempfile.mkdtemp(prefix=".tmp-epoch-", dir=self.phase.path)
        try:
            model.save_weights(os.path.join(fd_dir, "model.weights.h5"))
            save_seeds(model, os.path.join(fd_dir, "seeds.npz"))
            state = {
                "epoch": epoch,
                "logs": self.logs,
                "stop_training": bool(model.stop_training),
                "best": self._best,
                "best_file": self._best_file,
            }
            if es is not None:
                state["early_stopping"] = {
                    "wait": es.wait,
                    "best": _number(es.best),
                    "best_epoch": es.best_epoch,
                    "stopped_epoch": es.stopped_epoch,
                    "has_best": es.best_weights is not None,
                }
            _write_json(os.path.join(fd_dir, "state.json"), state)
            target = os.path.join(self.phase.path, f"epoch-{epoch:04d}")
            _remove(target)  # an epoch re-run after a kill
            os.rename(fd_dir, target)
        except BaseException:
            _remove(fd_dir)
            raise
        _write_json(os.path.join(self.phase.path, LATEST_FILE),
                    {"directory": os.path.basename(target), "epoch": epoch})
        for name in os.listdir(self.phase.path):  # older states, superseded bests
            if (_EPOCH_DIR.match(name) and name != os.path.basename(target)) or (
                    _BEST_EPOCH.match(name) and name != self._best_file):
                _remove(os.path.join(self.phase.path, name))

    def _improved(self, epoch, entry):
        es = self.early_stopping
        if es is not None:
            return es.best_epoch == epoch and (es.best_weights is not None
                                               or not es.restore_best_weights)
        monitor = "val_loss" if "val_loss" in entry else "loss"
        value = entry.get(monitor)
        if not isinstance(value, float):
            return False
        if self._best is None or value < self._best:
            self._best = value
            return True
        return False
