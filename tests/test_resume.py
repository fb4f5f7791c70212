"""Resumable training: a run killed with SIGKILL and started again ends with
the same model as an uninterrupted run."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tftransfer as tft
from helpers import labelled
from helpers import tiny_classifier
from tftransfer.training import checkpoints

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")


def _run(tmp_path, name, kill="none", *, data="arrays", cache="auto", patience="3",
         checkpoint=None):
    checkpoint = checkpoint or tmp_path / f"{name}_ckpt"
    out = str(tmp_path / f"{name}.npz")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, WORKER, str(checkpoint), out, kill, data, cache, patience],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    return result, out, checkpoint


def _load(out):
    with np.load(out) as weights, open(out + ".json") as f:
        return dict(weights), json.load(f)


@pytest.mark.parametrize(
    "kill, data, cache, patience",
    [
        # mid phase 2, on cached activations (phase 2 is the same code with a
        # cache or without, and the dataset case below resumes phase 2 cached)
        pytest.param("4:2", "arrays", "auto", "3", marks=pytest.mark.extended),
        ("1:3", "arrays", "off", "1"),  # mid phase 1, uncached, early stopping in play
        ("3:0", "dataset", "auto", "3"),  # first batch of phase 2, a shuffling tf.data
    ],
)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, kill, data, cache, patience):
    done, reference, _ = _run(tmp_path, "reference", data=data, cache=cache, patience=patience)
    assert done.returncode == 0, done.stderr[-3000:]
    killed, _, checkpoint = _run(tmp_path, "resumed", kill, data=data, cache=cache,
                                 patience=patience)
    assert killed.returncode == -9, killed.stderr[-3000:]  # really killed mid-epoch
    assert not os.path.exists(tmp_path / "resumed.npz")
    resumed, out, _ = _run(tmp_path, "resumed", data=data, cache=cache, patience=patience,
                           checkpoint=checkpoint)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, expected_log = _load(reference)
    actual, actual_log = _load(out)
    assert actual_log["cache"] == expected_log["cache"]
    assert actual_log["epoch"] == expected_log["epoch"]
    assert actual_log["history"]["phase"] == expected_log["history"]["phase"]
    np.testing.assert_allclose(actual_log["history"]["loss"], expected_log["history"]["loss"],
                               rtol=1e-5)
    assert expected.keys() == actual.keys()
    for path in expected:
        np.testing.assert_allclose(actual[path], expected[path], rtol=1e-5, atol=1e-6,
                                   err_msg=path)
    for phase in ("phase1", "phase2"):
        names = set(os.listdir(checkpoint / phase))
        assert {"done.json", "final.weights.h5", "best.weights.h5"} <= names
        assert not [n for n in names if n.startswith((".tmp-", "epoch-"))]


def test_same_seed_gives_the_same_weights_run_after_run(tmp_path):
    first, a, _ = _run(tmp_path, "first", cache="off")
    second, b, _ = _run(tmp_path, "second", cache="off")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:]
    wa, _ = _load(a)
    wb, _ = _load(b)
    for path in wa:
        np.testing.assert_array_equal(wa[path], wb[path], err_msg=path)


def test_finished_run_is_restored_not_retrained(tmp_path):
    x, y = labelled(24)
    model = tiny_classifier()
    history = tft.fit_two_phase(model, x, y=y, head_epochs=2, fine_tune_epochs=1,
                                unfreeze_blocks=1, batch_size=8, verbose=0,
                                checkpoint_dir=tmp_path)
    again = tiny_classifier()

    class Count(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            Count.batches += 1

    history2 = tft.fit_two_phase(again, x, y=y, head_epochs=2, fine_tune_epochs=1,
                                 unfreeze_blocks=1, batch_size=8, verbose=0,
                                 checkpoint_dir=tmp_path, callbacks=[Count()])
    assert Count.batches == 0
    assert history2.epoch == history.epoch and history2.history["phase"] == [1, 1, 2]
    np.testing.assert_allclose(history2.history["loss"], history.history["loss"])
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    best = tiny_classifier()
    best.load_weights(tmp_path / "phase2" / "best.weights.h5")  # a loadable best checkpoint


def test_other_settings_are_refused_with_what_differs(tmp_path):
    x, y = labelled(24)
    tft.fit_head(tiny_classifier(), x, y=y, epochs=1, batch_size=8, verbose=0,
                 checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"epochs: 1 there, 2 now.*new `checkpoint_dir`"):
        tft.fit_head(tiny_classifier(), x, y=y, epochs=2, batch_size=8, verbose=0,
                     checkpoint_dir=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="must be a directory"):
        tft.fit_head(tiny_classifier(), x, y=y, epochs=1, verbose=0,
                     checkpoint_dir=tmp_path / "file")


def test_leftovers_of_a_killed_write_are_ignored_and_cleaned(tmp_path):
    x, y = labelled(24)
    model = tiny_classifier()
    tft.fit_head(model, x, y=y, epochs=1, batch_size=8, verbose=0, checkpoint_dir=tmp_path)
    phase = tmp_path / "phase1"
    (phase / "done.json").unlink()  # as if killed after the last epoch's state
    (phase / ".tmp-epoch-x").mkdir()  # and in the middle of writing another
    state = checkpoints.PhaseCheckpoint(str(phase)).latest()
    assert state is None  # finish() removed the epoch states: nothing to resume from
    assert not (phase / ".tmp-epoch-x").exists()
