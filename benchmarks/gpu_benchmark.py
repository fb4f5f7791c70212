"""Does the input pipeline keep a GPU busy? (issue 14, item 6; at most 5 minutes.)

For MobileNetV2 and EfficientNetB0 at 224 px with mixed precision
(``mixed_float16`` on a GPU), it times, in images/s:

- **model alone**: the backbone on synthetic tensors already on the device,
  in the two ways training runs it: ``extract`` (inference, what the feature
  cache's pass and phase 1 do) and ``train`` (a training step with the top 2
  blocks unfrozen, what phase 2 does uncached);
- **pipeline alone**: `tft.image_dataset_from_folder`'s first pass over a
  folder of JPEGs (decoded, resized), and a pass from its in-memory cache;
- **end to end**: the same two model steps fed by that pipeline, first pass
  (decoding as it goes);

and reports end to end as a fraction of model alone (the aim: at least 80%).
The folder is generated (the bundled digits rendered at 160-640 px, noisy,
coloured; ``--images`` of them) into ``--data-dir`` and reused.

Usage::

    python benchmarks/gpu_benchmark.py                     # on the GPU machine
    python benchmarks/gpu_benchmark.py --smoke             # a CPU check of the script (1 min)

Results go to ``<out>/gpu.json`` and ``<out>/gpu.md``. Backbones have random
weights (``weights=None``): the timings are those of the real architectures.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tftransfer as tft  # noqa: E402
from benchmark import machine  # noqa: E402
from scale_benchmark import make_folder  # noqa: E402


def timed_rate(step, batches, *, seconds):
    """Images/s of `step` over `batches` (an iterator of (x, y)), after one
    warm-up batch, for about `seconds` or until the batches run out."""
    x, y = next(batches)
    float(tf.reduce_sum(step(x, y)))
    count, start, result = 0, time.perf_counter(), None
    for x, y in batches:
        result = step(x, y)
        count += int(x.shape[0])
        if time.perf_counter() - start > seconds:
            break
    float(tf.reduce_sum(result))  # waits for the device to finish
    return count / (time.perf_counter() - start)


def model_steps(name, cfg):
    """The two jitted steps ``extract`` and ``train`` of a classifier on
    backbone `name`."""
    model = tft.build_classifier(name, num_classes=10, weights=None,
                                 input_shape=(cfg.image_size, cfg.image_size, 3))
    backbone = model.backbone

    @tf.function(jit_compile=False)
    def extract(x, y):
        return backbone(x, training=False)

    tft.unfreeze_top_blocks(model, 2)
    optimizer = keras.optimizers.Adam(1e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return loss

    return {"extract": extract, "train": train}


def synthetic(cfg):
    x = tf.random.uniform((cfg.batch_size, cfg.image_size, cfg.image_size, 3), 0, 255)
    y = tf.zeros((cfg.batch_size,), tf.int32)
    while True:
        yield x, y


def run(cfg):
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and not cfg.float32:
        keras.mixed_precision.set_global_policy("mixed_float16")
    root = make_folder(os.path.join(cfg.data_dir, f"gpu-{cfg.images}"), cfg.images, seed=0,
                       sizes=(160, 641))
    os.environ.setdefault("TFTRANSFER_CACHE_DIR", tempfile.mkdtemp())
    size = (cfg.image_size, cfg.image_size)

    def folder(cache):
        return tft.image_dataset_from_folder(root, image_size=size, batch_size=cfg.batch_size,
                                             validation_split=0.0, cache=cache, verbose=0)

    report = {"machine": machine(), "gpus": [g.name for g in gpus],
              "policy": keras.mixed_precision.global_policy().name, "config": vars(cfg),
              "pipeline": {}, "backbones": {}}
    data = folder(False)
    start = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in data.train)
    report["pipeline"]["first_pass"] = count / (time.perf_counter() - start)
    cached = folder("memory").train
    for _ in cached:
        pass
    start = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in cached)
    report["pipeline"]["cached_pass"] = count / (time.perf_counter() - start)
    for name in cfg.backbones:
        steps = model_steps(name, cfg)
        entry = {}
        for kind, step in steps.items():
            alone = timed_rate(step, synthetic(cfg), seconds=cfg.seconds)
            fed = timed_rate(step, iter(folder(False).train), seconds=cfg.seconds)
            entry[kind] = {"model_alone": alone, "end_to_end": fed, "fraction": fed / alone}
        report["backbones"][name] = entry
        print(name, json.dumps(entry), flush=True)
    return report


def markdown(report):
    lines = ["# Input pipeline against the model", "",
             f"Generated by `benchmarks/gpu_benchmark.py` on {', '.join(report['gpus']) or 'no GPU'} "
             f"({report['machine']['cpu']}, {report['machine']['usable_cores']} cores), policy "
             f"{report['policy']}, {report['config']['image_size']} px, batch "
             f"{report['config']['batch_size']}.", "",
             f"Pipeline alone: first pass {report['pipeline']['first_pass']:,.0f} images/s, "
             f"from the memory cache {report['pipeline']['cached_pass']:,.0f} images/s.", "",
             "| backbone | step | model alone img/s | end to end img/s | fraction |",
             "| --- | --- | ---: | ---: | ---: |"]
    for name, entry in report["backbones"].items():
        for kind, r in entry.items():
            lines.append(f"| {name} | {kind} | {r['model_alone']:,.0f} | {r['end_to_end']:,.0f} | "
                         f"{100 * r['fraction']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "efficientnet_b0"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--float32", action="store_true", help="no mixed precision")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script")
    parser.add_argument("--data-dir", default=tempfile.gettempdir())
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    cfg = parser.parse_args(argv)
    if cfg.smoke:
        cfg.backbones, cfg.image_size, cfg.batch_size = ["mobilenet_v2"], 96, 16
        cfg.images, cfg.seconds = 200, 2.0
    report = run(cfg)
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "gpu.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(cfg.out, "gpu.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
