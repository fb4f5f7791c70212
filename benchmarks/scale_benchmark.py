"""The whole path at scale: a folder of N JPEGs through scan, pipeline, feature
cache, both phases and export, side by side with the plain Keras path on the
same folder in the same run (issue 14, items 1-4).

The folder holds the bundled handwritten digits rendered large (120-400 px a
side, each image its own size), with Gaussian noise, as JPEGs in one folder
per class. For each N it measures, per stage, wall and CPU seconds,
images/s, the peak resident memory and the disk used:

- ``read``: every file read once (``cat``-like), so that neither loader
  below gets the page cache for free (the files are then read from memory:
  this measures the CPU work, not the disk);
- ``keras_decode``: one pass of `keras.utils.image_dataset_from_directory`
  (decode and resize only, no model) over the whole folder;
- ``scan``: `tft.image_dataset_from_folder` on the folder, first time
  (every file decoded once), and ``rescan``, the second call on the unchanged
  folder (the remembered scan);
- ``pipeline``: the first pass over tftransfer's training pipeline (no
  cache), against ``keras_decode`` over the same files; ``pipeline_cached``:
  the first pass of the default pipeline (``cache="auto"``), which fills the
  cache of decoded images;

``keras_decode``, ``scan`` and ``pipeline`` run ``--rounds`` times, one after
the other in each round (a shared machine's speed drifts by 20-40% within
minutes, measured): each is reported as its median round, and the ratios
scan / Keras and pipeline / Keras as the median (and range) of the per-round
ratios;
- ``forward``: the backbone alone on synthetic batches (its rate caps any
  pipeline in front of it);
- ``tftransfer``: `tft.fit_two_phase` from the folder (features cached in
  memory; with ``--disk-cache-at`` also spilled to disk, memory-mapped), per
  phase, then ``export``;
- ``keras``: the plain Keras recipe on `image_dataset_from_directory`: the
  frozen backbone inside `fit`, then the top blocks unfrozen.

Up to ``--full-up-to`` images both recipes run the full epochs; above it one
epoch per phase each (the plain recipe's full run there would take hours on
a CPU). The backbone has random weights (``weights=None``, no download), its
BatchNormalization statistics set on a few training images: the timings are
the real architecture's; the accuracies are reported, not compared with a
pretrained model's. Growth with N is fitted as seconds = a + b * N per stage
(b given per 1,000 images) with the largest relative deviation from the line.

Usage::

    python benchmarks/scale_benchmark.py                       # N = 1,000 and 10,000
    python benchmarks/scale_benchmark.py --sizes 1000 10000 50000 --disk-cache-at 50000
    python benchmarks/scale_benchmark.py --sizes 500 --out /tmp/scale   # a quick check

Results go to ``<out>/scale.json`` and ``<out>/scale.md``. Generated folders
are kept in ``--data-dir`` (default: the system's temp dir) and reused.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import tftransfer as tft  # noqa: E402
from benchmark import Clock  # noqa: E402
from benchmark import PeakMemory  # noqa: E402
from benchmark import calibrate_batchnorm  # noqa: E402
from benchmark import machine  # noqa: E402
from tftransfer.data.digits import load_digits  # noqa: E402

# ---------------------------------------------------------------------------
# The folder


def _write_chunk(args):
    root, start, stop, seed, sizes = args
    digits, labels = load_digits()
    rng = np.random.default_rng([seed, start])
    for i in range(start, stop):
        k = int(rng.integers(len(labels)))
        height, width = (int(v) for v in rng.integers(*sizes, 2))
        image = Image.fromarray(digits[k, :, :, 0].astype("uint8")).resize(
            (width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, "float32")[..., None] * rng.uniform(0.5, 1.0, 3)
        pixels = pixels + rng.uniform(0, 80, 3) + rng.normal(0, 16, pixels.shape)
        folder = os.path.join(root, f"digit_{int(labels[k])}")
        Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(
            os.path.join(folder, f"{i:06d}.jpg"), quality=90)


def make_folder(root, n, *, seed=0, sizes=(120, 401)):
    """N JPEGs of digits (`sizes`: each side drawn from [low, high), 120-400 px
    by default; coloured, noisy), made once and reused."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for d in range(10):
        os.makedirs(os.path.join(root, f"digit_{d}"))
    chunks = [(root, s, min(n, s + 1000), seed, sizes) for s in range(0, n, 1000)]
    with futures.ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write_chunk, chunks))
    open(done, "w").close()
    return root


def disk_bytes(path):
    if not os.path.exists(path):
        return 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def image_files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                  if f.endswith(".jpg"))


# ---------------------------------------------------------------------------
# Stages


def stage(function, *, images=None):
    """Runs `function()`; its wall and CPU seconds, peak RSS, and images/s."""
    with PeakMemory() as memory:
        clock = Clock()
        value = function()
        times = clock.read()
    out = {**times, "peak_rss": memory.peak, "start_rss": memory.start_rss}
    if images:
        out["images"] = images
        out["images_per_second"] = images / times["seconds"]
    return out, value


def median_run(runs):
    """The run of median images/s."""
    return sorted(runs, key=lambda r: r["images_per_second"])[len(runs) // 2]


def one_pass(dataset):
    count = 0
    for x, _ in dataset:
        count += int(x.shape[0])
    return count


def keras_folder(root, cfg, subset=None):
    kwargs = dict(image_size=(cfg.image_size, cfg.image_size), batch_size=cfg.batch_size,
                  verbose=False, seed=cfg.seed)
    if subset is None:
        return keras.utils.image_dataset_from_directory(root, shuffle=False, **kwargs)
    return keras.utils.image_dataset_from_directory(
        root, validation_split=cfg.validation_split, subset="both", shuffle=True, **kwargs)


def build_model(cfg, calibration):
    keras.utils.set_random_seed(cfg.seed)
    model = tft.build_classifier(cfg.backbone, num_classes=10, weights=None,
                                 input_shape=(cfg.image_size, cfg.image_size, 3))
    calibrate_batchnorm(model.backbone, calibration)
    return model


def forward_rate(model, cfg):
    batch = tf.random.uniform((cfg.batch_size, cfg.image_size, cfg.image_size, 3), 0, 255)
    backbone = model.backbone
    backbone(batch, training=False)
    step = tf.function(lambda x: backbone(x, training=False))
    step(batch)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < 10.0:
        step(batch).numpy()
        count += cfg.batch_size
    return count / (time.perf_counter() - start)


def plain_keras(model, train, validation, cfg, epochs):
    """The Keras guide's recipe on `image_dataset_from_directory`'s pipelines."""
    head_epochs, fine_tune_epochs = epochs
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.backbone.trainable = False
    model.compile(keras.optimizers.Adam(cfg.learning_rate), loss, metrics=["accuracy"])
    phase1, _ = stage(lambda: model.fit(train, validation_data=validation,
                                        epochs=head_epochs, verbose=0))
    blocks = tft.get_blocks(model.backbone)
    top = {id(layer) for name in list(blocks)[-cfg.unfreeze_blocks:] for layer in blocks[name]}
    model.backbone.trainable = True
    for layer in model.backbone.layers:
        layer.trainable = id(layer) in top and not isinstance(
            layer, keras.layers.BatchNormalization)
    model.compile(keras.optimizers.Adam(cfg.learning_rate / 10), loss, metrics=["accuracy"])
    phase2, history = stage(lambda: model.fit(train, validation_data=validation,
                                              epochs=fine_tune_epochs, verbose=0))
    return {"phase1": phase1, "phase2": phase2,
            "val_accuracy": float(history.history["val_accuracy"][-1])}


class PeakDisk(threading.Thread):
    """Samples the bytes under a directory every half second (the training
    functions delete their feature cache when they return)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.peak, self.done = path, 0, threading.Event()

    def run(self):
        while not self.done.wait(0.5):
            self.peak = max(self.peak, disk_bytes(self.path))

    def __exit__(self, *exc):
        self.done.set()
        self.join()

    def __enter__(self):
        self.start()
        return self


def train_tftransfer(model, data, options, epochs, cfg):
    with PeakDisk(options.get("cache_dir") or tempfile.gettempdir()) as disk:
        run, _ = stage(lambda: tft.fit_two_phase(
            model, data.train, data.validation, head_epochs=epochs[0],
            fine_tune_epochs=epochs[1], unfreeze_blocks=cfg.unfreeze_blocks,
            learning_rate=cfg.learning_rate, early_stopping=False, verbose=0, **options))
    entry = {"total": run,
             "phases": [{"seconds": s["seconds"], "cpu_seconds": s["cpu_seconds"],
                         "cache": s.get("cache")} for s in model.training_summary],
             "val_accuracy": float(np.mean(np.concatenate([
                 np.argmax(model.predict(x, verbose=0), -1) == y.numpy()
                 for x, y in data.validation])))}
    if "cache_dir" in options:
        entry["feature_cache_bytes"] = disk.peak
        shutil.rmtree(options["cache_dir"], ignore_errors=True)
    return entry


def warm_up(cfg):
    """Both loaders once on 200 images, unrecorded: TensorFlow's first
    functions and thread pools would otherwise count against the first N."""
    root = make_folder(os.path.join(cfg.data_dir, "scale-warm-up"), 200, seed=cfg.seed + 1)
    one_pass(keras_folder(root, cfg))
    os.environ["TFTRANSFER_CACHE_DIR"] = tempfile.mkdtemp(prefix="tftransfer-scale-cache-")
    one_pass(tft.image_dataset_from_folder(root, image_size=(cfg.image_size, cfg.image_size),
                                           validation_split=cfg.validation_split, cache=False,
                                           verbose=0).train)


def run_size(n, cfg):
    root = make_folder(os.path.join(cfg.data_dir, f"scale-{n}"), n, seed=cfg.seed)
    files = image_files(root)
    result = {"n": len(files), "folder_bytes": disk_bytes(root)}
    cache_home = tempfile.mkdtemp(prefix="tftransfer-scale-cache-")
    os.environ["TFTRANSFER_CACHE_DIR"] = cache_home  # a first scan, not a remembered one

    def read_all():
        for path in files:
            with open(path, "rb") as f:
                f.read()

    result["read"], _ = stage(read_all, images=len(files))
    size = (cfg.image_size, cfg.image_size)
    load = dict(image_size=size, validation_split=cfg.validation_split, batch_size=cfg.batch_size,
                seed=cfg.seed, verbose=0)
    rounds = {"keras_decode": [], "scan": [], "pipeline": []}
    for _ in range(cfg.rounds):
        rounds["keras_decode"].append(stage(lambda: one_pass(keras_folder(root, cfg)),
                                            images=len(files))[0])
        os.environ["TFTRANSFER_CACHE_DIR"] = tempfile.mkdtemp(dir=cache_home)  # a first scan
        scan, data = stage(lambda: tft.image_dataset_from_folder(root, cache=False, **load),
                           images=len(files))
        rounds["scan"].append(scan)
        train_n = sum(data.counts["train"])
        rounds["pipeline"].append(stage(lambda d=data: one_pass(d.train), images=train_n)[0])
    for name, runs in rounds.items():
        result[name] = median_run(runs)
        result[f"{name}_rounds"] = [r["images_per_second"] for r in runs]
    for name in ("scan", "pipeline"):
        ratios = [a["images_per_second"] / b["images_per_second"]
                  for a, b in zip(rounds[name], rounds["keras_decode"])]
        result[f"{name}_over_keras"] = float(np.median(ratios))
        result[f"{name}_over_keras_range"] = [min(ratios), max(ratios)]
    result["rescan"], _ = stage(
        lambda: tft.image_dataset_from_folder(root, cache=False, **load), images=len(files))
    result["scan_index_bytes"] = disk_bytes(os.environ["TFTRANSFER_CACHE_DIR"])
    cached = tft.image_dataset_from_folder(root, cache="auto", **load)
    result["pipeline_cached"], _ = stage(lambda: one_pass(cached.train), images=train_n)

    full = n <= cfg.full_up_to
    epochs = (cfg.head_epochs, cfg.fine_tune_epochs) if full else (1, 1)
    result["epochs"] = list(epochs)
    calibration = np.concatenate([x for x, _ in data.train.take(2)])
    model = build_model(cfg, calibration)
    result["forward_images_per_second"] = forward_rate(model, cfg)

    recipes = {"memory": {"cache": "memory"}}
    if n in cfg.disk_cache_at:
        recipes["disk"] = {"cache": "disk", "cache_dir": tempfile.mkdtemp(
            prefix="tftransfer-scale-features-", dir=cfg.feature_dir)}
    for name, options in recipes.items():
        data = tft.image_dataset_from_folder(root, cache="auto", **load)
        model = build_model(cfg, calibration)
        result[f"tftransfer_{name}"] = train_tftransfer(model, data, options, epochs, cfg)
    with tempfile.TemporaryDirectory() as base:
        result["export"], path = stage(lambda: tft.export_saved_model(
            model, os.path.join(base, "model")))
        result["export"]["bytes"] = disk_bytes(path)

    train, validation = keras_folder(root, cfg, subset="both")
    result["keras"] = plain_keras(build_model(cfg, calibration), train, validation, cfg, epochs)
    shutil.rmtree(cache_home, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------
# Growth and the report

STAGES = ("read", "keras_decode", "scan", "rescan", "pipeline")


def growth(results):
    """seconds = a + b * N per stage, least squares over the sizes: b per
    1,000 images, and the largest relative distance of a point from the line."""
    if len(results) < 2:
        return {}
    ns = np.array([r["n"] for r in results], float)
    series = {s: [r[s]["seconds"] for r in results] for s in STAGES}
    for i, name in enumerate(("phase1", "phase2")):
        series[f"tftransfer {name}"] = [r["tftransfer_memory"]["phases"][i]["seconds"]
                                        / max(1, r["epochs"][i]) for r in results]
        series[f"keras {name}"] = [r["keras"][name]["seconds"] / max(1, r["epochs"][i])
                                   for r in results]
    out = {}
    for name, seconds in series.items():
        seconds = np.array(seconds, float)
        b, a = np.polyfit(ns, seconds, 1)
        fitted = a + b * ns
        out[name] = {"seconds_per_1000": 1000 * b, "intercept": a,
                     "max_relative_deviation": float(np.max(np.abs(seconds - fitted)
                                                            / np.maximum(seconds, 1e-9)))}
    return out


def markdown(report):
    lines = ["# Scale: the whole path on N JPEGs", "",
             f"Generated by `benchmarks/scale_benchmark.py` on {report['machine']['cpu']} "
             f"({report['machine']['usable_cores']} cores); backbone {report['config']['backbone']} at "
             f"{report['config']['image_size']} px, random weights; load average at the start "
             f"{report['load_average_start']}, at the end {report['load_average_end']}.", "",
             (f"Keras decode, scan and pipeline: the median of {report['config']['rounds']} "
              "rounds; the ratios to Keras: the median (and range) of the per-round ratios."), "",
             "| N | read img/s | Keras decode img/s | scan s (img/s) | scan / Keras | rescan s "
             "| rescan speedup | pipeline img/s | pipeline / Keras | cached first pass img/s "
             "| backbone forward img/s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def ratio(r, name):
        low, high = r[f"{name}_over_keras_range"]
        return f"{r[f'{name}_over_keras']:.2f} ({low:.2f}-{high:.2f})"

    for r in report["results"]:
        lines.append(
            f"| {r['n']:,} | {r['read']['images_per_second']:,.0f} | "
            f"{r['keras_decode']['images_per_second']:,.0f} | {r['scan']['seconds']:.1f} "
            f"({r['scan']['images_per_second']:,.0f}) | {ratio(r, 'scan')} | "
            f"{r['rescan']['seconds']:.2f} | "
            f"{r['scan']['seconds'] / r['rescan']['seconds']:.0f}x | "
            f"{r['pipeline']['images_per_second']:,.0f} | {ratio(r, 'pipeline')} | "
            f"{r['pipeline_cached']['images_per_second']:,.0f} | "
            f"{r['forward_images_per_second']:,.0f} |")
    lines += ["", "Training, per phase (wall seconds; epochs per phase in brackets):", "",
              "| N | epochs | tftransfer phase 1 | phase 2 | Keras phase 1 | phase 2 | "
              "speedup 1 | speedup 2 | val acc tftransfer / Keras | peak RSS GB tft / Keras |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in report["results"]:
        t, k = r["tftransfer_memory"], r["keras"]
        t1, t2 = (p["seconds"] for p in t["phases"])
        k1, k2 = k["phase1"]["seconds"], k["phase2"]["seconds"]
        lines.append(
            f"| {r['n']:,} | {r['epochs'][0]} + {r['epochs'][1]} | {t1:.0f} | {t2:.0f} | {k1:.0f} "
            f"| {k2:.0f} | {k1 / t1:.1f}x | {k2 / t2:.1f}x | {t['val_accuracy']:.3f} / "
            f"{k['val_accuracy']:.3f} | {t['total']['peak_rss'] / 1e9:.1f} / "
            f"{max(k['phase1']['peak_rss'], k['phase2']['peak_rss']) / 1e9:.1f} |")
    disk = [r for r in report["results"] if "tftransfer_disk" in r]
    if disk:
        lines += ["", "Feature cache in memory against spilled to disk (memory-mapped), the same "
                  "data and epochs:", "",
                  "| N | memory: phase 1 s | phase 2 s | peak RSS GB | disk: phase 1 s | "
                  "phase 2 s | peak RSS GB | cache on disk GB |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in disk:
            m, d = r["tftransfer_memory"], r["tftransfer_disk"]
            lines.append(
                f"| {r['n']:,} | {m['phases'][0]['seconds']:.0f} | {m['phases'][1]['seconds']:.0f}"
                f" | {m['total']['peak_rss'] / 1e9:.1f} | {d['phases'][0]['seconds']:.0f} | "
                f"{d['phases'][1]['seconds']:.0f} | {d['total']['peak_rss'] / 1e9:.1f} | "
                f"{d['feature_cache_bytes'] / 1e9:.2f} |")
    lines += ["", "Disk: " + "; ".join(
        f"N = {r['n']:,}: folder {r['folder_bytes'] / 1e6:.0f} MB, scan index "
        f"{r['scan_index_bytes'] / 1e3:.0f} kB, export {r['export']['bytes'] / 1e6:.1f} MB"
        for r in report["results"]) + "."]
    if report["growth"]:
        lines += ["", "Growth, seconds = a + b N (training stages per epoch):", "",
                  "| stage | b: seconds per 1,000 images | a: seconds | largest deviation from "
                  "the line |", "| --- | ---: | ---: | ---: |"]
        for name, g in report["growth"].items():
            lines.append(f"| {name} | {g['seconds_per_1000']:.2f} | {g['intercept']:.2f} | "
                         f"{100 * g['max_relative_deviation']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--full-up-to", type=int, default=10000)
    parser.add_argument("--disk-cache-at", type=int, nargs="*", default=[])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--unfreeze-blocks", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of Keras's decode pass, the scan and the pipeline")
    parser.add_argument("--data-dir", default=tempfile.gettempdir())
    parser.add_argument("--feature-dir", default=None, help="where the disk cache goes")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    cfg = parser.parse_args(argv)
    for n in cfg.sizes:
        if n < 100:
            parser.error(f"--sizes: each N must be at least 100. Received: {n}")
    report = {"machine": machine(), "config": vars(cfg),
              "load_average_start": [round(v, 2) for v in os.getloadavg()], "results": []}
    warm_up(cfg)
    for n in cfg.sizes:
        report["results"].append(run_size(n, cfg))
        print(json.dumps({k: v for k, v in report["results"][-1].items()
                          if k in STAGES}, default=float)[:600], flush=True)
    report["growth"] = growth(report["results"])
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "scale.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    with open(os.path.join(cfg.out, "scale.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
