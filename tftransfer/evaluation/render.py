"""An evaluation report as text, Markdown, one self-contained HTML page, and files.

Each renderer reads the report's `EvaluationReport.to_dict` (and the PNG
bytes of its figures), so what the pages show is what ``report.json`` holds.
Class names, file names and texts come from the user's data: the HTML page
escapes them all, the Markdown escapes what Markdown would read as markup.
"""

import base64
import html
import json
import os
import re

from tftransfer.files import write_atomically

FIGURE_TITLES = {
    "confusion_matrix": "Confusion matrix",
    "reliability": "Calibration",
    "misclassified": "Misclassified images",
    "learning_curves": "Learning curves",
}

_TEXT_SHOWN = 80  # characters of a misclassified text shown in the tables

_MARKDOWN_SPECIAL = re.compile(r"([\\`*&\[\]<>|#])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _metrics(summary):
    """``[(name, value)]`` of the headline numbers."""
    rows = [("accuracy", summary["accuracy"])]
    rows += [(f"top-{k} accuracy", v) for k, v in summary["top_k_accuracy"].items() if k != "1"]
    rows.append(("macro F1", summary["classification"]["macro_f1"]))
    bins = len(summary["reliability"]["count"])
    rows.append((f"expected calibration error ({bins} bins)",
                 summary["expected_calibration_error"]))
    return rows


def _heading(summary):
    split = f"the {summary['split']} split" if summary["split"] else "the data"
    classes = len(summary["classification"]["classes"])
    return f"Evaluation on {split}: {summary['num_examples']} examples, {classes} classes"


def _where(record):
    """A misclassified example's file, or the start of its text, or ''."""
    if record.get("file"):
        return record["file"]
    text = record.get("text")
    if text is None:
        return ""
    return text if len(text) <= _TEXT_SHOWN else text[:_TEXT_SHOWN - 1] + "\u2026"


def summary_text(summary, table):
    """The short text of ``print(report)``: the headline numbers and the
    per-class `table`."""
    numbers = "  ".join(f"{name} {value:.3f}" for name, value in _metrics(summary))
    lines = [_heading(summary), numbers, table]
    if summary["num_misclassified"]:
        lines.append(f"{summary['num_misclassified']} misclassified")
    return "\n".join(lines)


def _md(value):
    """`value` on one line, with what Markdown reads as markup escaped (an
    underscore inside a word is left alone: it is no emphasis there)."""
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(value).split()))


def _md_table(header, rows, *, numbers=()):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in numbers else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _class_rows(summary):
    return [(name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}",
             str(c["support"])) for name, c in summary["classification"]["classes"].items()]


def _misclassified_table(summary):
    """Header and rows of the misclassified examples (with a file or text
    column when they have one), and the numeric columns."""
    records = summary["misclassified"]
    where = [_where(m) for m in records]
    header = ["index", "true class", "predicted class", "confidence"]
    rows = [[str(m["index"]), m["true_class"], m["predicted_class"], f"{m['confidence']:.3f}"]
            for m in records]
    if any(where):
        header.insert(1, "file" if any(m.get("file") for m in records) else "text")
        for row, value in zip(rows, where):
            row.insert(1, value)
    return header, rows, (0, len(header) - 1)


_CLASS_HEADER = ("class", "precision", "recall", "F1", "support")


def _misclassified_title(summary):
    shown, total = len(summary["misclassified"]), summary["num_misclassified"]
    return f"Misclassified examples ({total}" + (f", first {shown} listed)" if shown < total
                                                 else ")")


def to_markdown(summary, *, images=None):
    """The report as Markdown; `images` maps figure names to the paths the
    page links to."""
    lines = ["# Evaluation report", "", _md(_heading(summary)), ""]
    lines += _md_table(("metric", "value"),
                       [(_md(name), f"{value:.3f}") for name, value in _metrics(summary)],
                       numbers=(1,))
    lines += ["", "## Per class", ""]
    lines += _md_table(_CLASS_HEADER, [(_md(row[0]), *row[1:]) for row in _class_rows(summary)],
                       numbers=(1, 2, 3, 4))
    if summary["num_misclassified"]:
        lines += ["", f"## {_misclassified_title(summary)}", ""]
        if summary["misclassified"]:
            header, rows, numbers = _misclassified_table(summary)
            lines += _md_table(header, [[_md(v) for v in row] for row in rows],
                               numbers=numbers)
    for name, path in (images or {}).items():
        title = FIGURE_TITLES.get(name, name)
        lines += ["", f"## {title}", "", f"![{title}]({path.replace(' ', '%20')})"]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
"""


def _html_table(header, rows, *, numbers=()):
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = [f"<table><thead><tr>{cells}</tr></thead><tbody>"]
    for row in rows:
        cells = "".join(
            f'<td class="number">{html.escape(v)}</td>' if i in numbers
            else f"<td>{html.escape(v)}</td>" for i, v in enumerate(row))
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def to_html(summary, *, images=None):
    """One self-contained HTML page; `images` maps figure names to PNG
    bytes, inlined as ``data:image/png;base64,`` URIs."""
    body = [f"<h1>Evaluation report</h1>\n<p>{html.escape(_heading(summary))}</p>",
            _html_table(("metric", "value"),
                        [(name, f"{value:.3f}") for name, value in _metrics(summary)],
                        numbers=(1,)),
            "<h2>Per class</h2>", _html_table(_CLASS_HEADER, _class_rows(summary),
                                              numbers=(1, 2, 3, 4))]
    if summary["num_misclassified"]:
        body.append(f"<h2>{html.escape(_misclassified_title(summary))}</h2>")
        if summary["misclassified"]:
            header, rows, numbers = _misclassified_table(summary)
            body.append(_html_table(header, rows, numbers=numbers))
    for name, png in (images or {}).items():
        title = html.escape(FIGURE_TITLES.get(name, name))
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<h2>{title}</h2>\n<img alt="{title}" src="data:image/png;base64,{data}">')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>Evaluation report</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def save_report(directory, summary, *, images):
    """Writes a PNG per figure (`images`: name to PNG bytes), ``report.md``,
    ``report.html`` and ``report.json`` into `directory`; returns
    ``{file name: path}``."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"`directory` must be a path. Received: directory={directory!r}")
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"`directory` must be a folder (it will be created if needed); a file "
                         f"is in the way. Received: directory={directory!r}")
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, png in images.items():
        paths[f"{name}.png"] = os.path.join(directory, f"{name}.png")
        write_atomically(paths[f"{name}.png"], png)
    pages = {
        "report.json": json.dumps(summary, indent=1, allow_nan=False),
        "report.md": to_markdown(summary, images={name: f"{name}.png" for name in images}),
        "report.html": to_html(summary, images=images),
    }
    for filename, text in pages.items():
        paths[filename] = os.path.join(directory, filename)
        write_atomically(paths[filename], text.encode("utf-8"))
    return paths
