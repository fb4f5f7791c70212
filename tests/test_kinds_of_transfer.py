"""docs/kinds-of-transfer.md: every number in its tables is the one in the results file
it comes from.

Each measured table of the page follows a marker line
``<!-- measured: NAME from benchmarks/results/FILE -->``. For each NAME, a renderer
below reads FILE and gives the table it must be, header included (cells compared as
text, ``**bold**`` ignored): a number edited on the page, or a benchmark run again
without updating the page, fails here. Every table of the page that holds a number
(a decimal, a count like 1,200, a ±) must be a measured one.

After a benchmark is run again, print the tables from the new results with

    python tests/test_kinds_of_transfer.py

and copy them into the page (and its prose, where the numbers moved).
"""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "kinds-of-transfer.md"
RESULTS = "benchmarks/results"
MARKER = re.compile(r"^<!-- measured: (?P<name>[\w-]+) from (?P<source>\S+) -->$")
NUMBER = re.compile(r"\d\.\d|\d,\d{3}|±")
"""What a measured number looks like: a decimal, a count with thousands, a spread."""


def _load(name):
    with open(ROOT / RESULTS / name, encoding="utf-8") as f:
        return json.load(f)


def _mean(values):
    return sum(values) / len(values)


def _sample_std(values):
    mean = _mean(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _pm(mean, std):
    return f"{mean:.3f} ± {std:.3f}"


# ----------------------------------------------------------------------------
# One renderer per table: (the results file, the rows, header first)
# ----------------------------------------------------------------------------

RANK_TASKS = {"digits_5_9": "digits 5-9", "inverted_5_9": "inverted noisy digits 5-9",
              "parity": "parity of 0-9"}


def feature_frozen():
    tasks = _load("rank_backbones.json")["tasks"]
    rows = [["task (100 labelled images)", "frozen, demo recipe", "fine-tuned, demo recipe",
             "frozen, long head phase", "fine-tuned, long head phase"]]
    for task, label in RANK_TASKS.items():
        cnn = tasks[task]["candidates"]["cnn"]
        rows.append([label] + [f"{cnn[key]:.3f}" for key in (
            "frozen_accuracy_demo", "accuracy_demo", "frozen_accuracy_long_head",
            "accuracy_long_head")])
    return "rank_backbones.json", rows


def feature_ranking():
    tasks = _load("rank_backbones.json")["tasks"]
    columns = {"accuracy_demo": "after `fit_two_phase`, demo recipe",
               "accuracy_long_head": "after `fit_two_phase`, long head phase",
               "frozen_accuracy_long_head": "frozen phase, long head phase"}
    rows = [["score", *columns.values()]]
    for method in ("linear_probe", "knn", "logme"):
        taus = [_mean([tasks[t]["tau"][c][method]["kendall_tau"] for t in RANK_TASKS])
                for c in columns]
        rows.append([f'`"{method}"`'] + [f"{tau:+.2f}" for tau in taus])
    return "rank_backbones.json", rows


def parameter_transfer():
    table = _load("self_training.json")["table"]
    rows = [["labels per class", "from scratch", "transfer (`tft.fit_two_phase`)"]]
    for shots, row in table.items():
        rows.append([shots] + [_pm(row[m]["mean"], row[m]["std"])
                               for m in ("scratch", "transfer")])
    return "self_training.json", rows


def parameter_lora():
    runs = _load("lora.json")["runs"]
    rows = [["phase 2", "trained parameters", "seconds per step (seeds 0, 1)",
             "held-out accuracy (seeds 0, 1)"]]
    for method, rank in (("full", None), ("lora", 4), ("lora", 8)):
        chosen = sorted((r for r in runs if r["method"] == method and r["rank"] == rank),
                        key=lambda r: r["seed"])
        label = "full fine-tuning" if rank is None else f"LoRA, rank {rank}"
        rows.append([label, f"{chosen[0]['trainable_parameters']:,}",
                     ", ".join(f"{r['seconds_per_step']:.2f}" for r in chosen),
                     ", ".join(f"{r['accuracy']:.3f}" for r in chosen)])
    return "lora.json", rows


def structure_cut():
    tasks = _load("rank_backbones.json")["tasks"]
    candidates = {"untrained_cnn": "the architecture only (random weights), pooled block3",
                  "cnn": "below the head: pooled block3", "cnn_cut_block2": "`block2_pool`",
                  "cnn_cut_block1": "`block1_pool`"}
    rows = [["source network, cut at", *RANK_TASKS.values()]]
    for name, label in candidates.items():
        rows.append([label] + [f"{tasks[t]['candidates'][name]['accuracy_long_head']:.3f}"
                               for t in RANK_TASKS])
    return "rank_backbones.json", rows


MULTITASK_RECIPES = {"short": "top block, 5 epochs at 1e-4",
                     "long": "top block, 15 epochs at 1e-3",
                     "long_2_blocks": "top 2 blocks, 15 epochs at 1e-3"}
MULTITASK = {"shared": "one shared backbone, 3 heads", "separate": "three separate models"}


def multitask():
    summary = _load("multitask.json")["summary"]
    rows = [["phase 2", "model", "digit", "parity", "loop", "parameters"]]
    for recipe, recipe_label in MULTITASK_RECIPES.items():
        for setting, label in MULTITASK.items():
            entry = summary[f"{recipe}/{setting}"]
            rows.append([recipe_label, label]
                        + [_pm(*entry["accuracy"][task]) for task in ("digit", "parity", "loop")]
                        + [f"{entry['parameters']:,}"])
    return "multitask.json", rows


DANN = {"source-only": "source only", "AdaBN": "AdaBN (`tft.adapt_batchnorm`)",
        "DANN, lambda_max=0": "DANN without the adversary (`lambda_max=0`)",
        "DANN": "DANN (`tft.fit_domain_adversarial`)",
        "fine-tune, 5/class": "fine-tuning on 5 labelled digits-M images per class"}


def domains_dann():
    summary = _load("dann.json")["summary"]
    rows = [["method", "digits-M accuracy", "seeds 0, 1, 2"]]
    for key, label in DANN.items():
        row = summary[key]
        rows.append([label, _pm(row["mean"], row["std"]),
                     ", ".join(f"{v:.3f}" for v in row["per_seed"])])
    return "dann.json", rows


SHIFTS = {"source": "the digits as trained (source)", "digits-M": "digits-M",
          "noisy": "Gaussian noise", "inverted": "inverted", "thick": "thick strokes"}


def domains_adabn():
    seeds = _load("domain_shift.json")
    rows = [["domain", "before", "after AdaBN"]]
    for key, label in SHIFTS.items():
        cells = []
        for stage in ("before", "adabn"):
            values = [seeds[s][stage][key] for s in sorted(seeds)]
            cells.append(_pm(_mean(values), _sample_std(values)))
        rows.append([label, *cells])
    return "domain_shift.json", rows


def self_training():
    table = _load("self_training.json")["table"]
    methods = {"transfer": "transfer, labels only", "augmented, labelled only":
               "the same call, unlabelled loss off", "self-training": "self-training",
               "SimCLR + self-training": "SimCLR, then self-training"}
    rows = [["labels per class", *methods.values()]]
    for shots, row in table.items():
        rows.append([shots] + [_pm(row[m]["mean"], row[m]["std"]) for m in methods])
    return "self_training.json", rows


def self_supervised_canvas():
    """The SimCLR table's rows on the demo's canvas task (the self-training benchmark)."""
    table = _load("self_training.json")["table"]
    methods = {"scratch": "from scratch",
               "transfer": "supervised source (digits 0-4, labelled)",
               "SimCLR + transfer": "SimCLR (`tft.pretrain_self_supervised`)"}
    rows = [["backbone", *(f"{shots} per class" for shots in table)]]
    for key, label in methods.items():
        rows.append([label] + [_pm(row[key]["mean"], row[key]["std"])
                               for row in table.values()])
    return "self_training.json", rows


def self_supervised():
    result = _load("self_supervised.json")
    counts = [str(c) for c in result["labels_per_class"]]
    methods = {"from scratch": "from scratch",
               "supervised source": "supervised source (digits 0-4, labelled)",
               "SimCLR": "SimCLR (`tft.pretrain_self_supervised`)"}
    rows = [["backbone", *(f"{c} per class" for c in counts)]]
    for key, label in methods.items():
        by_count = result["accuracy"][key]
        rows.append([label] + [_pm(by_count[c]["mean"], by_count[c]["std"]) for c in counts])
    return "self_supervised.json", rows


RENDERERS = {
    "feature-frozen": feature_frozen,
    "feature-ranking": feature_ranking,
    "parameter-transfer": parameter_transfer,
    "parameter-lora": parameter_lora,
    "structure-cut": structure_cut,
    "multitask": multitask,
    "domains-dann": domains_dann,
    "domains-adabn": domains_adabn,
    "self-training": self_training,
    "self-supervised": self_supervised,
    "self-supervised-canvas": self_supervised_canvas,
}


# ----------------------------------------------------------------------------
# Reading the page
# ----------------------------------------------------------------------------

def _cells(line):
    return [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]


def _is_separator(line):
    return re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()) is not None


def tables(text):
    """``[(marker name or None, marker source or None, rows)]`` for each table of a
    Markdown page, outside code blocks; `rows` without the separator line. A
    table's marker is the line just before it, or before the blank lines there."""
    found, lines, in_code, i = [], text.splitlines(), False, 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not lines[i].startswith("|"):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k].strip()) if k >= 0 else None
        rows = [_cells(line) for line in lines[i:j] if not _is_separator(line)]
        found.append((marker["name"] if marker else None,
                      marker["source"] if marker else None, rows))
        i = j
    return found


def mismatches(text):
    """What differs between the page's measured tables and the results files."""
    problems, seen = [], []
    for name, source, rows in tables(text):
        if name is None:
            if any(NUMBER.search(cell) for row in rows[1:] for cell in row[1:]):
                problems.append(f"a table without a measured marker holds numbers: {rows[0]}")
            continue
        seen.append(name)
        if name not in RENDERERS:
            problems.append(f"no renderer for the measured table {name!r}")
            continue
        file, expected = RENDERERS[name]()
        if source != f"{RESULTS}/{file}":
            problems.append(f"{name}: the marker names {source}, the numbers come from "
                            f"{RESULTS}/{file}")
        if rows != expected:
            wrong = [f"  page:     {got}\n  expected: {want}"
                     for got, want in zip(rows, expected) if got != want]
            if len(rows) != len(expected):
                wrong.append(f"  {len(rows)} rows on the page, {len(expected)} expected")
            problems.append(f"{name} (from {RESULTS}/{file}):\n" + "\n".join(wrong))
    missing = sorted(set(RENDERERS) - set(seen))
    if missing:
        problems.append(f"measured tables missing from the page: {missing}")
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if twice:
        problems.append(f"measured tables on the page twice: {twice}")
    return problems


def markdown_table(rows):
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------

def test_page_tables_equal_the_results_files():
    problems = mismatches(PAGE.read_text(encoding="utf-8"))
    assert not problems, (
        "docs/kinds-of-transfer.md disagrees with benchmarks/results/; print the current "
        "tables with `python tests/test_kinds_of_transfer.py`:\n" + "\n".join(problems))


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_an_edited_number_fails(name):
    text = PAGE.read_text(encoding="utf-8")
    _, rows = RENDERERS[name]()
    original = markdown_table(rows)
    assert original in text.replace("**", ""), f"{name}: the page's table is not the rendered one"
    number = re.search(r"\d\.\d{2,3}|\d{2,}", "\n".join(original.splitlines()[2:]))
    digit = number.end() - 1
    offset = len("\n".join(original.splitlines()[:2])) + 1
    position = offset + digit
    bumped = str((int(original[position]) + 1) % 10)
    edited = original[:position] + bumped + original[position + 1:]
    problems = mismatches(text.replace("**", "").replace(original, edited))
    assert any(problem.startswith(name) for problem in problems), problems


def test_an_unmarked_table_with_numbers_fails():
    text = "| method | accuracy |\n| --- | --- |\n| DANN | 0.538 |\n"
    assert any("without a measured marker" in p for p in mismatches(text))
    assert not any("without a measured marker" in p
                   for p in mismatches("| term | calls |\n| --- | --- |\n| DANN | `x` |\n"))


def test_tables_skip_code_blocks():
    text = ("```text\n| not | a table |\n```\n"
            "<!-- measured: x from benchmarks/results/y.json -->\n\n| a | b |\n| --- | --- |\n"
            "| 1 | **2** |\n")
    assert tables(text) == [("x", "benchmarks/results/y.json", [["a", "b"], ["1", "2"]])]


if __name__ == "__main__":
    for table_name, renderer in RENDERERS.items():
        results_file, table_rows = renderer()
        print(f"<!-- measured: {table_name} from {RESULTS}/{results_file} -->\n")
        print(markdown_table(table_rows) + "\n")
