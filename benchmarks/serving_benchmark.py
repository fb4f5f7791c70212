"""Serving and LiteRT benchmark: what export format 2 and `export_litert` cost.

Measures, in one process, on JPEG files of real photos (crops of
scikit-learn's bundled sample photos):

- the SavedModel's ``serving_default`` fed the files' bytes (decode and resize
  in the graph) against a client that decodes with Pillow (`tft.load_image`)
  and feeds ``serving_pixels``: images per second, end to end from the files;
- the size of a TF Serving REST body for one image: base64 file against
  pixels as JSON numbers;
- LiteRT files for each quantization: size and CPU latency per image under
  the ai-edge-litert interpreter.

Throughput depends on the weights not at all, so the backbone is randomly
initialized (offline). Results go to ``--out`` as JSON and Markdown:

    python benchmarks/serving_benchmark.py --out benchmarks/results
"""

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

import tftransfer as tft  # noqa: E402


def photos(count, size=(240, 320), seed=0):
    """JPEG bytes of random crops of the sample photos (real content)."""
    rng = np.random.default_rng(seed)
    sources = load_sample_images().images
    files = []
    for i in range(count):
        source = sources[i % len(sources)]
        top = rng.integers(0, source.shape[0] - size[0])
        left = rng.integers(0, source.shape[1] - size[1])
        buffer = io.BytesIO()
        Image.fromarray(source[top:top + size[0], left:left + size[1]]).save(
            buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    return files


def timed(function, repeats):
    """Seconds of each of `repeats` runs, after one warm-up run."""
    function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def spread(values):
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


def serving(model, files, batch_size, repeats, work):
    path = tft.export_saved_model(model, os.path.join(work, "serving"))
    loaded = tf.saved_model.load(path)
    by_bytes, by_pixels = loaded.signatures["serving_default"], loaded.signatures["serving_pixels"]
    size = model.input_shape[1:3]
    paths = []
    for i, data in enumerate(files):
        paths.append(os.path.join(work, f"{i}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(data)

    def bytes_in():
        for start in range(0, len(paths), batch_size):
            batch = []
            for p in paths[start:start + batch_size]:
                with open(p, "rb") as f:
                    batch.append(f.read())
            by_bytes(images=tf.constant(batch))["probabilities"].numpy()

    def client_decode():
        for start in range(0, len(paths), batch_size):
            pixels = np.stack([tft.load_image(p, image_size=size)
                               for p in paths[start:start + batch_size]]).astype("float32")
            by_pixels(images=tf.constant(pixels))["probabilities"].numpy()

    result = {}
    for name, function in (("bytes_in_serving_default", bytes_in),
                           ("client_decode_serving_pixels", client_decode)):
        seconds = timed(function, repeats)
        result[name] = {"images_per_second": spread([len(paths) / s for s in seconds])}
    pixels = tft.load_image(paths[0], image_size=size)
    result["rest_body_bytes"] = {
        "base64_file": len(json.dumps(tft.serving_request([paths[0]]))),
        "pixels_as_json": len(json.dumps({"instances": [pixels.astype(float).tolist()]})),
        "jpeg_file": os.path.getsize(paths[0]),
    }
    return result


def litert(model, files, repeats, work):
    from ai_edge_litert.interpreter import Interpreter

    size = model.input_shape[1:3]
    images = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR)) for f in files]).astype("float32")
    reference = model.predict_proba(images, verbose=0).argmax(-1)
    result = {}
    for quantization in (None, "dynamic", "float16", "int8"):
        path = tft.export_litert(model, os.path.join(work, f"litert-{quantization}"),
                                 quantization=quantization, representative_data=images[:50])
        file = os.path.join(path, "model.tflite")
        run = Interpreter(model_path=file).get_signature_runner("serving_default")
        latencies = []
        for _ in range(repeats):
            for image in images[:50]:
                start = time.perf_counter()
                run(images=image[None])
                latencies.append(1000 * (time.perf_counter() - start))
        predicted = np.array([run(images=image[None])["probabilities"].argmax()
                              for image in images])
        result[str(quantization)] = {
            "file_bytes": os.path.getsize(file),
            "latency_ms_per_image": {**spread(latencies), "median": statistics.median(latencies)},
            "top1_agreement_with_keras": float(np.mean(predicted == reference)),
        }
    return result


def cli_help(repeats):
    """Seconds of `tftransfer --help` in a new process (it imports no TensorFlow)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tftransfer.cli", "--help"], check=True,
                       capture_output=True)
        seconds.append(time.perf_counter() - start)
    return spread(seconds)


def markdown(results):
    s = results["serving"]
    lines = [
        "# Serving benchmark", "",
        f"{results['backbone']} at {results['image_size']} px, randomly initialized "
        f"(throughput does not depend on the weights); {results['images']} JPEG crops of "
        f"real photos; batches of {results['batch_size']}; {results['repeats']} timed runs "
        f"after a warm-up (mean, min-max). {results['machine']}.", "",
        "| path | images/s |", "| --- | --- |",
    ]
    for name in ("bytes_in_serving_default", "client_decode_serving_pixels"):
        ips = s[name]["images_per_second"]
        lines.append(f"| {name} | {ips['mean']:.1f} ({ips['min']:.1f}-{ips['max']:.1f}) |")
    body = s["rest_body_bytes"]
    cli = results["cli_help_seconds"]
    lines += ["", f"`tftransfer --help` in a new process: {cli['mean']:.3f} s "
                  f"({cli['min']:.3f}-{cli['max']:.3f})."]
    lines += ["", f"REST body for one image: {body['base64_file']:,} bytes as a base64 file "
                  f"(the JPEG is {body['jpeg_file']:,}), {body['pixels_as_json']:,} bytes as "
                  "pixels in JSON.", "",
              "| LiteRT quantization | file | latency per image (ms, median; min-max) | "
              "top-1 agreement with Keras |", "| --- | --- | --- | --- |"]
    note = ("The agreement of a randomly initialized model says little (its outputs are "
            "near-uniform); tests/test_litert.py measures it on a model trained on digits.")
    for name, r in results["litert"].items():
        lat = r["latency_ms_per_image"]
        lines.append(f"| {name} | {r['file_bytes'] / 1e6:.2f} MB | {lat['median']:.2f} "
                     f"({lat['min']:.2f}-{lat['max']:.2f}) | "
                     f"{r['top1_agreement_with_keras']:.3f} |")
    return "\n".join(lines + ["", note]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    files = photos(args.images)
    model = tft.build_classifier(args.backbone, num_classes=10, image_size=args.image_size,
                                 weights=None)
    with tempfile.TemporaryDirectory() as work:
        results = {
            "backbone": args.backbone, "image_size": args.image_size, "images": args.images,
            "batch_size": args.batch_size, "repeats": args.repeats,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"TensorFlow {tf.__version__}, Python {sys.version.split()[0]}",
            "serving": serving(model, files, args.batch_size, args.repeats, work),
            "litert": litert(model, files, args.repeats, work),
            "cli_help_seconds": cli_help(args.repeats),
        }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "serving.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "serving.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":  # re-render a results file
        with open(sys.argv[2]) as f:
            print(markdown(json.load(f)), end="")
    else:
        main()
