"""Text data sets from CSV and JSON Lines files."""

import csv
import json
import logging
import os

import numpy as np

from tftransfer.data.arrays import splits_from_indexed
from tftransfer.data.splits import BadFile
from tftransfer.data.splits import ScanReport
from tftransfer.data.splits import bad_data_error
from tftransfer.data.splits import check_class_names
from tftransfer.data.splits import check_policy
from tftransfer.data.splits import check_split_args

logger = logging.getLogger(__name__)


def _text_label(value):
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, (int, str)):
        return str(value).strip() or None
    return None


def _text_splits(rows, bad, path, on_bad_row, class_names, **kwargs):
    for item in bad:
        logger.warning("Skipping %s: %s", item.path, item.reason)
    if bad and on_bad_row == "error":
        raise bad_data_error(bad, "rows", "on_bad_row")
    report = ScanReport(source=path, class_counts={}, bad_files=bad, ignored=[])
    texts = np.array([t for t, _ in rows], dtype=object)
    labels = np.array([label for _, label in rows], dtype=object)
    return splits_from_indexed(texts.astype(str) if len(texts) else np.array([], dtype=str),
                         labels.astype(str), class_names, image_size=None,
                         augmentation=None, report=report, **kwargs)


def _check_text_args(path, text_column, label_column, on_bad_row):
    check_policy(on_bad_row, "on_bad_row")
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be an existing file. Received: path={path!r}")
    for name, value in (("text_column", text_column), ("label_column", label_column)):
        if not isinstance(value, str):
            raise TypeError(
                f"`{name}` must be a column name (a string). Received: {name}={value!r}"
            )


def _row(path, line, text, label):
    """(row, None) or (None, BadFile)."""
    where = f"{path}:{line}"
    if not isinstance(text, str) or not text.strip():
        return None, BadFile(where, "no text")
    label = _text_label(label)
    if label is None:
        return None, BadFile(where, "no label (or not a string or integer)")
    return (text, label), None


def text_dataset_from_csv(
    path,
    *,
    text_column="text",
    label_column="label",
    delimiter=None,
    encoding="utf-8-sig",
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    class_names=None,
    on_bad_row="skip",
    shuffle=True,
):
    """Text classification data from a CSV (or TSV) file with a header row.

    Rows without text or label are skipped and reported in
    ``result.report.bad_files`` as ``"file:line"`` (or raise a `BadDataError`
    with ``on_bad_row="error"``). Splits are stratified per class and keyed by
    the text, so duplicates share a split.

    Args:
        path: the file; quoted fields may span lines.
        text_column, label_column: header names of the text and the label.
        delimiter: field separator. Default: tab for ``.tsv``, else comma.
        encoding: file encoding (the default also strips a byte-order mark).
        batch_size, validation_split, test_split, seed, class_names,
        shuffle: as for `dataset_from_arrays`.
        on_bad_row: ``"skip"`` or ``"error"``.

    Returns:
        A `DataSplits` of ``(string texts, int32 labels)`` batches.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reviews.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("review,stars\\n" + "".join(
    ...         f'"text {i}, with a comma",{1 + i % 2}\\n' for i in range(20)) + ",2\\n")
    >>> data = text_dataset_from_csv(path, text_column="review", label_column="stars")
    >>> data.class_names, data.report.bad_files
    (['1', '2'], [BadFile(path='.../reviews.csv:22', reason='no text')])
    """
    path = os.fspath(path)
    _check_text_args(path, text_column, label_column, on_bad_row)
    check_split_args(validation_split, test_split, seed, batch_size)
    class_names = check_class_names(class_names)
    if delimiter is None:
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
    rows, bad = [], []
    with open(path, newline="", encoding=encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        for name, value in (("text_column", text_column), ("label_column", label_column)):
            if value not in header:
                raise ValueError(
                    f"`{name}` {value!r} is not a column of {path!r}; its header is "
                    f"{header}. Received: {name}={value!r}"
                )
        line = reader.line_num
        for record in reader:
            row, problem = _row(path, line + 1, record.get(text_column),
                                record.get(label_column))
            line = reader.line_num
            if row:
                rows.append(row)
            else:
                bad.append(problem)
    return _text_splits(rows, bad, path, on_bad_row, class_names, batch_size=batch_size,
                        validation_split=validation_split, test_split=test_split, seed=seed,
                        shuffle=shuffle)


def text_dataset_from_jsonl(
    path,
    *,
    text_column="text",
    label_column="label",
    encoding="utf-8",
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    class_names=None,
    on_bad_row="skip",
    shuffle=True,
):
    """Text classification data from a JSON Lines file (one object a line).

    Like `text_dataset_from_csv`; lines that are not JSON objects, or lack
    the text or a string/integer label, are skipped and reported. Blank
    lines are ignored.

    Example:

    >>> import json, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.jsonl")
    >>> with open(path, "w") as f:
    ...     for i in range(10):
    ...         _ = f.write(json.dumps({"text": f"t{i}", "label": i % 2}) + "\\n")
    ...     _ = f.write("{not json\\n")
    >>> data = text_dataset_from_jsonl(path)
    >>> data.class_names, [str(b) for b in data.report.bad_files]
    (['0', '1'], ['...data.jsonl:11: not a JSON object: Expecting property name ...'])
    """
    path = os.fspath(path)
    _check_text_args(path, text_column, label_column, on_bad_row)
    check_split_args(validation_split, test_split, seed, batch_size)
    class_names = check_class_names(class_names)
    rows, bad = [], []
    with open(path, encoding=encoding) as f:
        for line, content in enumerate(f, start=1):
            if not content.strip():
                continue
            try:
                record = json.loads(content)
            except json.JSONDecodeError as err:
                bad.append(BadFile(f"{path}:{line}", f"not a JSON object: {err}"))
                continue
            if not isinstance(record, dict):
                bad.append(BadFile(f"{path}:{line}", "not a JSON object"))
                continue
            row, problem = _row(path, line, record.get(text_column), record.get(label_column))
            if row:
                rows.append(row)
            else:
                bad.append(problem)
    return _text_splits(rows, bad, path, on_bad_row, class_names, batch_size=batch_size,
                        validation_split=validation_split, test_split=test_split, seed=seed,
                        shuffle=shuffle)
