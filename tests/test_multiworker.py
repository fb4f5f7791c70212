"""Several workers: `is_chief`, and a real two-process MultiWorkerMirroredStrategy
run (training with `fit_two_phase`, the export from the chief only)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from helpers import images
from tftransfer import _compat

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiworker_worker.py")
CLASS_NAMES = ["ant", "bee", "cat"]  # as in multiworker_worker.py
TIMEOUT = 240  # seconds for both workers; a run takes about 30 s on 2 CPU cores


# --------------------------------------------------------------------------
# is_chief


def _resolver(cluster, task_type, task_id):
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
WITH_CHIEF = {"chief": ["127.0.0.1:0"], "worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize(
    ("cluster", "task_type", "task_id", "expected"),
    [
        (WORKERS, "worker", 0, True),
        (WORKERS, "worker", 1, False),
        (WITH_CHIEF, "chief", 0, True),
        (WITH_CHIEF, "worker", 0, False),
        (WITH_CHIEF, "worker", 1, False),
        ({**WORKERS, "evaluator": ["127.0.0.1:3"]}, "evaluator", 0, False),
        ({}, None, None, True),
    ],
)
def test_is_chief_from_a_cluster_resolver(cluster, task_type, task_id, expected):
    assert tft.is_chief(_resolver(cluster, task_type, task_id)) is expected


@pytest.mark.parametrize(("index", "expected"), [(0, True), (1, False)])
def test_is_chief_from_tf_config(monkeypatch, index, expected):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": WORKERS, "task": {"type": "worker", "index": index}}))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()  # starts nothing
    assert tft.is_chief(resolver) is expected
    assert tft.is_chief() is expected  # outside a strategy scope: TF_CONFIG
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():  # a single-process scope
        assert tft.is_chief() is True


@pytest.mark.parametrize(
    "strategy",
    [None, "default", "one_device", "mirrored"],
)
def test_a_single_process_is_the_chief(monkeypatch, strategy):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = {
        None: lambda: None,
        "default": tf.distribute.get_strategy,
        "one_device": lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
        "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0"]),
    }[strategy]()
    assert tft.is_chief(strategy) is True
    if strategy is not None:
        with strategy.scope():
            assert tft.is_chief() is True


def test_is_chief_rejects_other_arguments():
    with pytest.raises(TypeError, match=r"`strategy` must be a `tf.distribute.Strategy`.*"
                                        r"Received: strategy='worker' of type str"):
        tft.is_chief("worker")


def test_keras_fixes_are_installed_and_leave_single_process_reductions_alone():
    from keras.src.backend.tensorflow import trainer

    assert _compat.install_multi_worker_fixes() is True  # idempotent
    assert trainer.reduce_per_replica.tftransfer_wrapped
    assert trainer.TensorFlowTrainer._maybe_symbolic_build.tftransfer_wrapped
    logs = {"loss": tf.constant(1.5), "accuracy": tf.constant(0.25)}
    reduced = trainer.reduce_per_replica(logs, tf.distribute.get_strategy(), "auto")
    assert {k: float(v) for k, v in reduced.items()} == {"loss": 1.5, "accuracy": 0.25}


# --------------------------------------------------------------------------
# Two real workers on 127.0.0.1


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_workers(tmp_path, export_base, cache):
    """Starts two workers; waits for both (killing both on timeout or when
    one fails); returns their results."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs, logs, prefixes = [], [], []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"  # each worker's TMPDIR, checked below
        scratch.mkdir()
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": "worker", "index": index}}),
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TMPDIR": str(scratch),
        }
        log = open(tmp_path / f"worker{index}.log", "w+")
        prefix = tmp_path / f"result{index}"
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, str(export_base), str(prefix), cache],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path)))
        logs.append(log)
        prefixes.append(prefix)
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in procs):
            failed = any(p.returncode not in (None, 0) for p in procs)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    report = "\n".join(f"--- worker {i} (exit {p.returncode}):\n{out[-6000:]}"
                       for i, (p, out) in enumerate(zip(procs, outputs)))
    assert [p.returncode for p in procs] == [0, 0], report
    results = []
    for prefix in prefixes:
        with open(f"{prefix}.json") as f:
            result = json.load(f)
        with np.load(f"{prefix}.npz") as arrays:
            result["arrays"] = dict(arrays)
        results.append(result)
    return results


@pytest.mark.slow  # about 30 s each on 2 CPU cores
@pytest.mark.parametrize("cache", ["auto", "false"])
def test_two_workers_train_alike_and_only_the_chief_exports(tmp_path, cache):
    # cache="auto" trains both phases on cached features; cache="false" runs
    # Keras's own fit on the full model (the symbolic-build fix).
    export_base = tmp_path / "serving"
    chief, worker = _run_workers(tmp_path, export_base, cache)

    assert [chief["task"]["index"], worker["task"]["index"]] == [0, 1]
    assert chief["is_chief"] is True and worker["is_chief"] is False
    assert chief["exported"] == str(export_base / "1")
    assert worker["exported"] is None
    assert chief["features"] == f"{export_base}_features" and worker["features"] is None
    assert os.listdir(tmp_path / "serving_features")  # the chief's feature extractor
    # One version, no staging directories, nothing left in the workers' TMPDIRs.
    assert os.listdir(export_base) == ["1"]
    for index in range(2):
        assert not os.listdir(tmp_path / f"tmp{index}")

    # Both phases ran, on cached features where asked to.
    for result in (chief, worker):
        assert [phase["phase"] for phase in result["summary"]] == [1, 2]
        assert all((phase["cache"] is not None) == (cache == "auto")
                   for phase in result["summary"])
    assert chief["summary"][-1]["final"] == worker["summary"][-1]["final"]

    # Synchronous training: the workers end with identical weights.
    names = sorted(k for k in chief["arrays"] if k.startswith("weight_"))
    assert names and names == sorted(k for k in worker["arrays"] if k.startswith("weight_"))
    for name in names:
        np.testing.assert_array_equal(chief["arrays"][name], worker["arrays"][name],
                                      err_msg=name)

    # The published version serves the trained model.
    loaded = tf.saved_model.load(str(export_base / "1"))
    served = loaded.signatures["serving_pixels"](images=tf.constant(images(4)))
    probabilities = served["probabilities"].numpy()
    assert probabilities.shape == (4, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, chief["arrays"]["probabilities"], atol=1e-5)
    assert tft.read_labels(str(export_base / "1")) == CLASS_NAMES


def test_importing_tftransfer_wraps_nothing():
    # The fixes are installed only when a multi-worker model is trained.
    code = ("import tftransfer\n"
            "from keras.src.backend.tensorflow import trainer\n"
            "assert not getattr(trainer.reduce_per_replica, '_tftransfer_wrapped', False)\n"
            "assert not getattr(trainer.TensorFlowTrainer._maybe_symbolic_build,\n"
            "                   '_tftransfer_wrapped', False)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_replicas_on_one_machine_match_one_device_cached_or_not_and_export():
    worker = os.path.join(os.path.dirname(__file__), "mirrored_worker.py")
    result = subprocess.run(
        [sys.executable, worker, os.path.dirname(__file__)], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs["auto"]["replicas"] == 2
    assert runs["auto"]["cached"] == [True, True] and runs["False"]["cached"] == [False, False]
    np.testing.assert_allclose(runs["auto"]["loss"], runs["False"]["loss"], rtol=1e-4)
    for run in runs.values():
        # Two replicas end where one device does (same weights, data, seed and
        # global batch): far closer than the distance training moved them.
        assert run["weights_moved"] > 1e-3
        assert run["weights_difference"] < 1e-3 * run["weights_moved"]
        np.testing.assert_allclose(run["loss"], run["single_loss"], rtol=1e-5)
        # The mirrored model's export answers as the model does.
        assert run["export_difference"] < 1e-5
