"""tftransfer against the plain Keras recipe, side by side, in one process.

For each backbone, two copies of the same classifier (same random initial
weights, same data, same seed, same epochs, same optimizers and schedule) are
trained:

(a) **plain Keras**: the backbone frozen inside ``model.fit`` for the head
    epochs, then the top blocks unfrozen (BatchNormalization kept frozen) and
    fine-tuned at a tenth of the learning rate with a warmup-cosine schedule;
(b) **tftransfer**: ``tft.fit_two_phase(...)`` with its defaults
    (``cache="auto"``: cached backbone features in phase 1, cached
    activations below the unfrozen blocks in phase 2).

Both run every epoch: tftransfer's early stopping (on by default) is turned
off here, as the plain recipe has none; the epochs each recipe ran are in
the results.

It reports wall and CPU time per phase and the speedups, the final validation
accuracy of both, peak memory (and the cached features' size per 1,000
images), training images per second, and the throughput of the exported
SavedModel against ``model.predict``; it checks the targets of the speed
issue (phase 1 >= 0.8 x head epochs faster, phase 2 >= 2.5x, accuracy within
1 point, export >= 0.9x ``model.predict``) and exits with 1 when one is
missed. Results go to ``<out>/benchmark.json`` and ``<out>/benchmark.md``,
with the machine described and the load average before each recipe (other
work on the machine slows the wall times; the CPU seconds are steadier).

Usage (7-9 minutes on 2 CPU cores with the defaults)::

    python benchmarks/benchmark.py
    python benchmarks/benchmark.py --backbones mobilenet_v2 --image-size 224 --train 500
    python benchmarks/benchmark.py --phases 1 --out /tmp/phase1   # head phase only

With ``--phases 1`` only the head phase runs (and no export): tftransfer then
extracts only the features at the top of the backbone, while in a two-phase
run it also extracts phase 2's activations in the same pass.

Backbones use ``weights=None`` (no download), with their BatchNormalization
statistics set on a few training images (see `calibrate_batchnorm`): the
timings are those of the real architectures, the accuracies those of random
backbones on the digits.
"""

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tftransfer as tft  # noqa: E402
from tftransfer.data.digits import load_digits  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# Measuring


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the process's resident memory in a thread; `peak` is the
    highest value seen since `start`."""

    def __init__(self, interval=0.02):
        self.interval = interval
        self.peak = 0
        self.start_rss = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.start_rss = self.peak = _rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


class Clock:
    """Wall and CPU time (of all the process's threads) since `start`. On a
    machine shared with other work the CPU time is the steadier measure: it
    counts the work done, not the waiting for a core."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self):
        return {"seconds": time.perf_counter() - self.wall,
                "cpu_seconds": time.process_time() - self.cpu}


def _load_average():
    return [round(v, 2) for v in os.getloadavg()]


def machine():
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "tftransfer": tft.__version__,
        "load_average_at_start": _load_average(),
    }


# ---------------------------------------------------------------------------
# Data


def load_data(kind, image_size, n_train, n_val, seed):
    """`n_train` + `n_val` RGB images of `image_size` pixels, raw [0, 255]."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    if kind == "digits":
        images, labels = load_digits(image_size=image_size)
        order = rng.permutation(len(labels))[:n]
        images = np.repeat(images[order], 3, axis=-1)
        labels = labels[order]
    else:  # synthetic: noise whose brightness and a bar position give the class
        labels = (np.arange(n) % 10).astype("int32")
        rng.shuffle(labels)
        images = rng.uniform(0, 120, (n, image_size, image_size, 3)).astype("float32")
        band = image_size // 10
        for i, label in enumerate(labels):
            images[i, label * band:(label + 1) * band] += 120
    images = images.astype("float32")
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def calibrate_batchnorm(backbone, images):
    """Sets every BatchNormalization layer's moving statistics to those of
    `images` (one forward pass in training mode with momentum 0).

    A randomly initialized backbone with BatchNormalization in inference mode
    (mean 0, variance 1) lets activations shrink layer after layer until the
    features carry no signal; with calibrated statistics a random backbone
    gives features a linear head can learn from, so the accuracies compared
    below mean something. Both recipes start from the same calibrated weights.
    """
    layers = [layer for layer in backbone._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    for layer in layers:
        layer.trainable, layer.momentum = True, 0.0
    backbone(images, training=True)
    for layer, (trainable, momentum) in zip(layers, saved):
        layer.trainable, layer.momentum = trainable, momentum


# ---------------------------------------------------------------------------
# The two recipes


def plain_keras_recipe(model, train, val, cfg):
    """The Keras transfer-learning guide's recipe, written with Keras calls
    only: frozen backbone in `fit`, then the top blocks unfrozen."""
    (x, y), (xv, yv) = train, val
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    phases = []

    backbone = model.backbone
    backbone.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss,
                  metrics=["accuracy"])
    keras.utils.set_random_seed(cfg.seed)
    with PeakMemory() as memory:
        clock = Clock()
        model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.head_epochs,
                  validation_data=(xv, yv), verbose=0)
        times = clock.read()
    phases.append({**times, "peak_rss": memory.peak, "start_rss": memory.start_rss,
                   "epochs_run": cfg.head_epochs})
    if cfg.phases == 1:
        return phases

    # Phase 2: the top blocks trainable, BatchNormalization frozen (inference
    # mode), Adam at a tenth of the rate, linear warmup over 10% of the steps
    # then cosine decay (what tft.warmup_cosine_schedule builds).
    blocks = tft.get_blocks(backbone)
    top = {id(layer) for name in list(blocks)[-cfg.unfreeze_blocks:] for layer in blocks[name]}
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = id(layer) in top and not isinstance(
            layer, keras.layers.BatchNormalization)
    steps = math.ceil(len(x) / cfg.batch_size) * cfg.fine_tune_epochs
    warmup = int(round(0.1 * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=cfg.learning_rate / 10,
        warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
    with PeakMemory() as memory:
        clock = Clock()
        model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.head_epochs + cfg.fine_tune_epochs,
                  initial_epoch=cfg.head_epochs, validation_data=(xv, yv), verbose=0)
        times = clock.read()
    phases.append({**times, "peak_rss": memory.peak, "start_rss": memory.start_rss,
                   "epochs_run": cfg.fine_tune_epochs})
    return phases


def tftransfer_recipe(model, train, val, cfg):
    (x, y), (xv, yv) = train, val
    options = {}
    if "early_stopping" in inspect.signature(tft.fit_two_phase).parameters:
        options["early_stopping"] = False  # every epoch runs, as in the plain recipe
    keras.utils.set_random_seed(cfg.seed)
    with PeakMemory() as memory:
        tft.fit_two_phase(model, x, (xv, yv), y=y, head_epochs=cfg.head_epochs,
                          fine_tune_epochs=cfg.fine_tune_epochs if cfg.phases == 2 else 0,
                          unfreeze_blocks=cfg.unfreeze_blocks, learning_rate=cfg.learning_rate,
                          batch_size=cfg.batch_size, verbose=0, **options)
    # Each phase's wall and CPU seconds, as the training recorded them.
    return [{"seconds": summary["seconds"], "cpu_seconds": summary["cpu_seconds"],
             "peak_rss": memory.peak, "start_rss": memory.start_rss,
             "cache": summary.get("cache"), "epochs_run": summary.get("epochs")}
            for summary in model.training_summary]


def accuracy(model, val, batch_size):
    xv, yv = val
    logits = model.predict(xv, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == yv))


def export_throughput(model, images, batch_size, repeats):
    """Images/second of the exported SavedModel's signature and of
    `model.predict`, best of `repeats` runs each, after a warm-up."""
    with tempfile.TemporaryDirectory() as base:
        path = tft.export_saved_model(model, os.path.join(base, "model"))
        serving = tf.saved_model.load(path).signatures["serving_pixels"]  # raw pixels
        batches = [tf.constant(images[i:i + batch_size]) for i in range(0, len(images),
                                                                         batch_size)]

        def run_export():
            for batch in batches:
                outputs = serving(images=batch)
            outputs["probabilities"].numpy()

        def run_predict():
            model.predict(images, batch_size=batch_size, verbose=0)

        runs = {"export": run_export, "predict": run_predict}
        for run in runs.values():
            run()  # warm-up: tracing, first allocations
        times = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for name, run in runs.items():
                times[name].append(_timed(run))
        result = {f"{name}_images_per_second": len(images) / min(t) for name, t in times.items()}
        result["ratio"] = result["export_images_per_second"] / result[
            "predict_images_per_second"]
        return result


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# One backbone


def run_backbone(name, cfg):
    train, val = load_data(cfg.data, cfg.image_size, cfg.train, cfg.val, cfg.seed)
    shape = (cfg.image_size, cfg.image_size, 3)
    models = []
    for _ in range(2):  # the same seed: the same weights and dropout seeds
        keras.utils.set_random_seed(cfg.seed)
        models.append(tft.build_classifier(name, num_classes=10, input_shape=shape,
                                           weights=None))
    plain, ours = models
    calibrate_batchnorm(plain.backbone, train[0][:cfg.calibration_images])
    ours.set_weights(plain.get_weights())  # the same initial state

    load = {}
    print(f"[{name}] plain Keras recipe ...", flush=True)
    load["plain"] = _load_average()
    plain_phases = plain_keras_recipe(plain, train, val, cfg)
    print(f"[{name}] tftransfer ...", flush=True)
    load["tftransfer"] = _load_average()
    our_phases = tftransfer_recipe(ours, train, val, cfg)
    export = {}
    if cfg.phases == 2:
        print(f"[{name}] export throughput ...", flush=True)
        try:
            export = export_throughput(ours, np.concatenate([train[0], val[0]]), cfg.batch_size,
                                       cfg.repeats)
        except Exception as err:  # noqa: BLE001 - reported, not fatal to the timing results
            export = {"error": f"{type(err).__name__}: {err}"}

    epochs = (cfg.head_epochs, cfg.fine_tune_epochs)
    phases = []
    for index, (a, b, e) in enumerate(zip(plain_phases, our_phases, epochs)):
        cache = b.get("cache") or {}
        examples = cache.get("examples", 0) + cache.get("validation_examples", 0)
        phases.append({
            "phase": index + 1,
            "epochs": e,
            "epochs_run_plain_tftransfer": [a["epochs_run"], b["epochs_run"]],
            "plain_seconds": round(a["seconds"], 2),
            "tftransfer_seconds": round(b["seconds"], 2),
            "speedup": round(a["seconds"] / b["seconds"], 2),
            "plain_cpu_seconds": round(a["cpu_seconds"], 2),
            "tftransfer_cpu_seconds": round(b["cpu_seconds"], 2),
            "cpu_speedup": round(a["cpu_seconds"] / b["cpu_seconds"], 2),
            "plain_train_images_per_second": round(cfg.train * e / a["seconds"], 1),
            "tftransfer_train_images_per_second": round(cfg.train * e / b["seconds"], 1),
            "plain_peak_rss_mib": round(a["peak_rss"] / 2**20),
            "cache": cache or None,
            "cache_mib_per_1000_images": round(cache["bytes"] / examples * 1000 / 2**20, 2)
            if cache and examples else None,
        })
    result = {
        "backbone": name,
        "load_average_before": load,
        "phases": phases,
        "plain_total_seconds": round(sum(p["seconds"] for p in plain_phases), 2),
        "tftransfer_total_seconds": round(sum(p["seconds"] for p in our_phases), 2),
        "plain_val_accuracy": accuracy(plain, val, cfg.batch_size),
        "tftransfer_val_accuracy": accuracy(ours, val, cfg.batch_size),
        "plain_peak_rss_mib": round(max(p["peak_rss"] for p in plain_phases) / 2**20),
        "tftransfer_peak_rss_mib": round(our_phases[0]["peak_rss"] / 2**20),
        "tftransfer_start_rss_mib": round(our_phases[0]["start_rss"] / 2**20),
        "export": {k: round(v, 3) if isinstance(v, float) else v for k, v in export.items()},
    }
    result["accuracy_difference_points"] = round(
        100 * (result["tftransfer_val_accuracy"] - result["plain_val_accuracy"]), 2)
    result["targets"] = targets(result, cfg)
    return result


def targets(result, cfg):
    phase1 = result["phases"][0]
    checks = {
        f"phase 1 >= {0.8 * cfg.head_epochs:g}x": phase1["speedup"] >= 0.8 * cfg.head_epochs,
    }
    if len(result["phases"]) > 1:
        checks["phase 2 >= 2.5x"] = result["phases"][1]["speedup"] >= 2.5
    checks["accuracy within 1 point"] = abs(result["accuracy_difference_points"]) <= 1.0
    checks["same epochs run"] = all(
        p["epochs_run_plain_tftransfer"][0] == p["epochs_run_plain_tftransfer"][1]
        for p in result["phases"])
    if "ratio" in result["export"]:
        checks["export >= 0.9x predict"] = result["export"]["ratio"] >= 0.9
    return checks


# ---------------------------------------------------------------------------
# Report


def markdown(report):
    m, cfg = report["machine"], report["config"]
    lines = [
        f"# tftransfer vs the plain Keras recipe ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores of {m['cpu_count']}, "
        f"{m['memory_gib']} GiB, GPUs: {', '.join(m['gpus']) or 'none'}; "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, Python {m['python']}. "
        f"Load average at start {m['load_average_at_start']}, at end "
        f"{report['load_average_at_end']} (other processes on the machine make timings "
        "noisy).",
        "",
        f"Data: {cfg['data']}, {cfg['train']} training and {cfg['val']} validation images of "
        f"{cfg['image_size']}x{cfg['image_size']} px, batch size {cfg['batch_size']}, "
        f"{cfg['head_epochs']} head epochs, "
        + (f"then {cfg['fine_tune_epochs']} epochs with the top {cfg['unfreeze_blocks']} blocks "
           "unfrozen" if cfg.get("phases", 2) == 2 else "and no phase 2 (`--phases 1`)")
        + f"; weights=None (random backbones, BatchNormalization statistics set on "
        f"{cfg['calibration_images']} training images), seed {cfg['seed']}; every epoch runs "
        "in both recipes (tftransfer's early stopping is off).",
        "",
        "| backbone | phase | plain Keras (s) | tftransfer (s) | speedup | CPU s plain / "
        "tftransfer (speedup) | train img/s plain / tftransfer | cache (MiB per 1,000 images, "
        "where) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["results"]:
        for p in r["phases"]:
            cache = p["cache"]
            where = (f"{p['cache_mib_per_1000_images']} MiB, {cache['storage']}, at "
                     f"`{cache['boundary']}`" if cache else "not cached")
            lines.append(
                f"| {r['backbone']} | {p['phase']} ({p['epochs']} epochs) | "
                f"{p['plain_seconds']} | {p['tftransfer_seconds']} | **{p['speedup']}x** | "
                f"{p['plain_cpu_seconds']} / {p['tftransfer_cpu_seconds']} "
                f"({p['cpu_speedup']}x) | "
                f"{p['plain_train_images_per_second']} / "
                f"{p['tftransfer_train_images_per_second']} | {where} |")
    lines += [
        "",
        "| backbone | val accuracy plain / tftransfer | total s plain / tftransfer | "
        "peak RSS MiB plain / tftransfer | export vs predict (img/s) | load average before "
        "plain / tftransfer | targets met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["results"]:
        e = r["export"]
        export = (f"{e['export_images_per_second']:.0f} vs {e['predict_images_per_second']:.0f}"
                  f" ({e['ratio']:.2f}x)" if "ratio" in e else e.get("error", "not run"))
        load = r.get("load_average_before", {})
        load = " / ".join(str(load[k][0]) for k in ("plain", "tftransfer") if k in load)
        met = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["targets"].items())
        lines.append(
            f"| {r['backbone']} | {r['plain_val_accuracy']:.3f} / "
            f"{r['tftransfer_val_accuracy']:.3f} | {r['plain_total_seconds']} / "
            f"{r['tftransfer_total_seconds']} | {r['plain_peak_rss_mib']} / "
            f"{r['tftransfer_peak_rss_mib']} | {export} | {load} | {met} |")
    lines += [
        "",
        "Seconds are wall time; the targets are checked on them. CPU seconds (all threads of "
        "the process) count the work done whatever else runs on the machine. Peak RSS is the "
        "process's resident memory, sampled every 20 ms; both recipes run in the same process, "
        "tftransfer after the plain recipe, so its peak includes what TensorFlow kept from "
        "before.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="mobilenet_v2,efficientnet_b0")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--unfreeze-blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", type=int, choices=(1, 2), default=2,
                        help="2: both phases and the export (default); 1: the head phase only")
    parser.add_argument("--repeats", type=int, default=5, help="export timing repeats")
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="images that set the random backbone's BatchNorm statistics")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    cfg = parser.parse_args(argv)

    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])]),
        "machine": machine(),
        "config": {k: v for k, v in vars(cfg).items() if k != "out"},
        "results": [],
    }
    for name in cfg.backbones.split(","):
        report["results"].append(run_backbone(name.strip(), cfg))
    report["load_average_at_end"] = _load_average()
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "benchmark.json"), "w") as f:
        json.dump(report, f, indent=2)
    text = markdown(report)
    with open(os.path.join(cfg.out, "benchmark.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if all(all(r["targets"].values()) for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
