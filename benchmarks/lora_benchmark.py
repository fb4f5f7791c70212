"""LoRA against full fine-tuning, on the text demo (all-MiniLM-L6-v2, offline).

For each method (full fine-tuning, LoRA of rank 4 and 8) and seed: a text
classifier on the local all-MiniLM-L6-v2 (`tftransfer.demos.text`), trained
with `tft.fit_two_phase` on the demo's 48 training reviews (head phase, then
the top 2 transformer blocks: fully, or LoRA on their query and value
projections), fixed epochs, no early stopping; each run in a fresh process,
so that its peak RSS (`resource.getrusage`) is its own. Recorded: trainable
parameters in phase 2, peak RSS, RSS growth during phase 2, seconds per
phase-2 step, held-out accuracy on the demo's 48 test reviews.

    python benchmarks/lora_benchmark.py --out benchmarks/results

About 5 minutes on 2 CPU cores. The "Reading" section at the end of
``results/lora.md`` was written by hand after the recorded run.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

CONFIGS = [("full", None), ("lora", 4), ("lora", 8)]


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(method, rank, seed, *, head_epochs, fine_tune_epochs, batch_size):
    import keras
    import numpy as np

    import tftransfer as tft
    from tftransfer.demos import text as text_demo
    from tftransfer.training.lora import trainable_parameters

    keras.utils.set_random_seed(seed)
    data = text_demo.review_data()
    model = tft.build_text_classifier(text_demo.minilm_directory(),
                                      class_names=list(text_demo.CLASS_NAMES),
                                      sequence_length=32)
    x, y = data["train"]
    tft.fit_head(model, x, y=y, epochs=head_epochs, early_stopping=False, verbose=0,
                 batch_size=batch_size)
    rss_before = _rss_mib()
    extra = {"method": "lora", "rank": rank} if method == "lora" else {}
    tft.fine_tune(model, x, y=y, epochs=fine_tune_epochs, unfreeze_blocks=2,
                  learning_rate=1e-4 if method == "full" else 1e-3,
                  early_stopping=False, verbose=0, batch_size=batch_size, **extra)
    summary = model.training_summary[-1]
    steps = -(-len(x) // batch_size) * fine_tune_epochs
    test_x, test_y = data["test"]
    predicted = model.predict(test_x, verbose=0).argmax(-1)
    return {"method": method, "rank": rank, "seed": seed,
            "trainable_parameters": trainable_parameters(model),
            "total_parameters": int(sum(int(np.prod(w.shape)) for w in model.weights)),
            "peak_rss_mib": round(_rss_mib(), 1),
            "phase2_rss_growth_mib": round(_rss_mib() - rss_before, 1),
            "seconds_per_step": round(summary["seconds"] / steps, 4),
            "phase2_seconds": summary["seconds"],
            "accuracy": float(np.mean(predicted == test_y))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "RANK", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {"head_epochs": args.head_epochs, "fine_tune_epochs": args.fine_tune_epochs,
                "batch_size": args.batch_size}
    if args.one:
        method, rank, seed = args.one
        result = run_one(method, None if rank == "-" else int(rank), int(seed), **settings)
        print(json.dumps(result))
        return
    rows = []
    for seed in range(args.seeds):
        for method, rank in CONFIGS:
            command = [sys.executable, __file__, "--one", method, str(rank or "-"), str(seed),
                       "--head-epochs", str(args.head_epochs), "--fine-tune-epochs",
                       str(args.fine_tune_epochs), "--batch-size", str(args.batch_size)]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    os.makedirs(args.out, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    with open(os.path.join(args.out, "lora.json"), "w") as f:
        json.dump({"settings": settings, "machine": machine, "runs": rows}, f, indent=1)
    lines = ["# LoRA against full fine-tuning (all-MiniLM-L6-v2, text demo)", "",
             (f"Machine: {machine}. Settings: {settings}; phase 2 unfreezes the top 2 "
             "transformer blocks; 48 training and 48 held-out reviews (one review is about "
             "2 points of accuracy). Each run in its own process."), "",
             ("| method | rank | seed | trainable params (phase 2) | peak RSS MiB | "
             "RSS growth in phase 2 MiB | s / step | held-out accuracy |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['rank'] or '-'} | {r['seed']} | "
                     f"{r['trainable_parameters']:,} | {r['peak_rss_mib']} | "
                     f"{r['phase2_rss_growth_mib']} | {r['seconds_per_step']} | "
                     f"{r['accuracy']:.3f} |")
    with open(os.path.join(args.out, "lora.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
