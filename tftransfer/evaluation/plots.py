"""The evaluation's plots, each a `matplotlib.figure.Figure`.

The figures are built without pyplot: no global state, no window, nothing to
close; ``figure.savefig("plot.png")`` writes one, `figure_to_png` returns
its bytes. matplotlib is imported when a plot is made.
"""

import io

import numpy as np

from tftransfer.evaluation.calibration import ReliabilityBins

FEW_CLASSES = 20  # the confusion matrix writes its cells' values up to this many classes


def _figure(width, height, **kwargs):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def figure_to_png(figure, *, dpi=100):
    """The PNG bytes of a figure.

    Example:

    >>> from tftransfer.evaluation.plots import figure_to_png, plot_confusion_matrix
    >>> figure_to_png(plot_confusion_matrix([[3, 1], [0, 4]]))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _tick_font_size(num_classes):
    return 10.0 if num_classes <= 10 else max(6.0, 10.0 - (num_classes - 10) / 16)


def plot_confusion_matrix(confusion_matrix, *, class_names=None, normalize=True):
    """The confusion matrix as a heat map, rows normalized by default.

    Row ``i`` holds the examples of true class ``i``; normalized, a cell is
    the fraction of them predicted as the column's class, so the diagonal is
    each class's recall. The figure grows with the number of classes and its
    tick labels shrink and turn, so that 50 classes stay readable; cell
    values are written for up to 20 classes.

    Args:
        confusion_matrix: ``(classes, classes)`` counts (true class ``i``
            predicted as ``j``), or a report with ``confusion_matrix`` and
            ``class_names`` (`ClassificationReport`, `EvaluationReport`).
        class_names: the names on the axes. Default: the report's, else
            ``"0"``, ``"1"``...
        normalize: divide each row by its total (the class's support).

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> from tftransfer.evaluation.plots import plot_confusion_matrix
    >>> figure = plot_confusion_matrix([[3, 1], [0, 4]], class_names=["cat", "dog"])
    >>> [label.get_text() for label in figure.axes[0].get_xticklabels()]
    ['cat', 'dog']
    """
    if class_names is None:
        class_names = getattr(confusion_matrix, "class_names", None)
    matrix = np.asarray(getattr(confusion_matrix, "confusion_matrix", confusion_matrix),
                        np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.size:
        raise ValueError(
            "`confusion_matrix` must be a square (classes, classes) matrix. "
            f"Received: confusion_matrix of shape {matrix.shape}")
    num_classes = len(matrix)
    class_names = [str(n) for n in (class_names if class_names is not None
                                    else range(num_classes))]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names for a {num_classes}x{num_classes} "
            f"matrix. Received: class_names={class_names!r}")
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = max(4.5, 0.28 * num_classes + 2.5)
    figure = _figure(side + 1.0, side)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=ax, shrink=0.8,
                    label="fraction of the true class" if normalize else "examples")
    font = _tick_font_size(num_classes)
    ticks = np.arange(num_classes)
    turn = num_classes > 10
    ax.set_xticks(ticks, labels=class_names, rotation=90 if turn else 45,
                  ha="center" if turn else "right", rotation_mode="anchor" if not turn else None,
                  fontsize=font)
    ax.set_yticks(ticks, labels=class_names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix" + (" (rows normalized: recall per class)" if normalize
                                       else ""))
    if num_classes <= FEW_CLASSES:
        threshold = 0.5 * (matrix.max() or 1.0)
        for i in range(num_classes):
            for j in range(num_classes):
                value = matrix[i, j]
                ax.text(j, i, f"{value:.2f}" if normalize else f"{int(value)}", ha="center",
                        va="center", fontsize=font - 1,
                        color="white" if value > threshold else "black")
    return figure


def history_dict(history):
    """The ``{metric: [value per epoch]}`` of a Keras `History` (or of such
    a dict), checked."""
    values = getattr(history, "history", history)
    if not isinstance(values, dict) or not all(
            isinstance(v, (list, tuple, np.ndarray)) for v in values.values()):
        raise TypeError(
            "`history` must be a keras.callbacks.History (what `fit` and "
            "`tftransfer.fit_two_phase` return) or its `history` dict of lists. "
            f"Received: history of type {type(history).__name__}")
    return {str(k): [float(x) for x in v] for k, v in values.items()}


_NOT_PLOTTED = ("phase", "learning_rate", "lr")


def phase_boundaries(phases):
    """``[(epoch, new phase)]``: the 1-based epochs where a new phase starts."""
    return [(i + 1, int(phases[i])) for i in range(1, len(phases))
            if phases[i] != phases[i - 1]]


def plot_learning_curves(history, *, metrics=None):
    """Training and validation curves per epoch, phase boundaries marked.

    Args:
        history: a Keras `History`, e.g. from `tftransfer.fit_two_phase`
            (whose ``"phase"`` entry, 1 or 2 per epoch, marks where
            fine-tuning starts: a dashed vertical line between the epochs),
            or its ``history`` dict.
        metrics: the metrics to plot, one panel each, with their ``val_``
            counterparts. Default: ``loss`` and ``accuracy`` where present,
            else every recorded metric.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> from tftransfer.evaluation.plots import plot_learning_curves
    >>> figure = plot_learning_curves({"loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.6],
    ...                                "phase": [1, 1, 2]})
    >>> boundary = figure.axes[0].get_lines()[-1]  # between epochs 2 and 3
    >>> boundary.get_xdata(), boundary.get_label()
    ([2.5, 2.5], 'fine-tuning starts')
    """
    values = history_dict(history)
    if metrics is None:
        metrics = [m for m in ("loss", "accuracy") if m in values] or [
            m for m in values if not m.startswith("val_") and m not in _NOT_PLOTTED]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    missing = [m for m in metrics if m not in values]
    if missing or not metrics:
        raise ValueError(
            f"`metrics` must name recorded metrics; the history has {sorted(values)}. "
            f"Received: metrics={metrics!r}")
    boundaries = phase_boundaries(values.get("phase", []))
    figure = _figure(5.0 * len(metrics), 3.8)
    for ax, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics):
        train = values[metric]
        ax.plot(range(1, len(train) + 1), train, marker="o", markersize=3, label="training")
        if f"val_{metric}" in values:
            val = values[f"val_{metric}"]
            ax.plot(range(1, len(val) + 1), val, marker="o", markersize=3, linestyle="--",
                    label="validation")
        for epoch, phase in boundaries:
            text = "fine-tuning starts" if phase == 2 else f"phase {phase} starts"
            ax.axvline(epoch - 0.5, color="gray", linestyle=":", linewidth=1.2, label=text)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def is_image(value):
    """Whether `value` is one image: ``(h, w)``, or ``(h, w, 1|3|4)``."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "uif" and (
        value.ndim == 2 or (value.ndim == 3 and value.shape[-1] in (1, 3, 4)))


def plot_misclassified(examples, *, columns=5):
    """A grid of misclassified images titled "true / predicted (confidence)".

    Images may be uint8, or floats of raw pixels in [0, 255] or scaled to
    [0, 1] (the scale is read from the largest value of all the images);
    grayscale images are shown in gray.

    Args:
        examples: `MisclassifiedExample`s holding images (`EvaluationReport`'s
            ``misclassified``), or an `EvaluationReport`.
        columns: images per row.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> from tftransfer.evaluation.evaluate import MisclassifiedExample
    >>> from tftransfer.evaluation.plots import plot_misclassified
    >>> example = MisclassifiedExample(index=3, true_class="cat", predicted_class="dog",
    ...                                confidence=0.8, input=np.zeros((8, 8, 3)))
    >>> plot_misclassified([example]).axes[0].get_title()
    'cat / dog (80%)'
    """
    examples = getattr(examples, "misclassified", examples)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"`columns` must be a positive integer. Received: columns={columns!r}")
    shown = [e for e in examples if is_image(getattr(e, "input", None))]
    if not shown:
        raise ValueError(
            "`examples` holds no images to show (only image inputs of shape (h, w) or "
            f"(h, w, channels) can be drawn). Received: {len(examples)} examples")
    pixels = [e.input.astype(np.float64) for e in shown]
    integer = all(e.input.dtype.kind in "ui" for e in shown)
    scale = 255.0 if integer or max(p.max() for p in pixels) > 1.0 else 1.0
    columns = min(columns, len(shown))
    rows = -(-len(shown) // columns)
    figure = _figure(2.1 * columns, 2.3 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, example, image in zip(axes, shown, pixels):
        image = np.clip(image / scale, 0.0, 1.0)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
        title = f"{example.true_class} / {example.predicted_class} ({example.confidence:.0%})"
        if len(title) > 30:  # long class names: two lines
            title = title.replace(" / ", "\n/ ", 1)
        ax.set_title(title, fontsize=8)
    figure.suptitle("Misclassified: true / predicted (confidence)")
    return figure


def plot_reliability(bins):
    """A reliability diagram: accuracy per confidence bin against the
    diagonal of perfect calibration, the ECE in the title, and the number
    of examples per bin below.

    Args:
        bins: `ReliabilityBins` (see `reliability_bins`), or an
            `EvaluationReport`.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> from tftransfer.evaluation.calibration import reliability_bins
    >>> from tftransfer.evaluation.plots import plot_reliability
    >>> bins = reliability_bins([[0.9, 0.1], [0.3, 0.7]], [0, 0], num_bins=5)
    >>> plot_reliability(bins).axes[0].get_title()
    'Reliability diagram (ECE = 0.400)'
    """
    bins = getattr(bins, "reliability", bins)
    if not isinstance(bins, ReliabilityBins):
        raise TypeError(
            "`bins` must be ReliabilityBins (from `reliability_bins`) or an "
            f"EvaluationReport. Received: bins of type {type(bins).__name__}")
    width = 1.0 / bins.num_bins
    left = bins.edges[:-1]
    full = bins.count > 0
    figure = _figure(5.0, 5.6)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(left[full], bins.accuracy[full], width=width, align="edge", color="tab:blue",
            edgecolor="white", label="accuracy")
    top.bar(left[full], bins.confidence[full] - bins.accuracy[full], width=width,
            bottom=bins.accuracy[full], align="edge", color="tab:red", alpha=0.3,
            edgecolor="white", label="gap to confidence")
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
            title=f"Reliability diagram (ECE = {bins.expected_calibration_error:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(left, bins.count, width=width, align="edge", color="tab:gray",
               edgecolor="white")
    if bins.num_bins <= 20:
        for x, count in zip(left[full], bins.count[full]):
            bottom.text(x + width / 2, count, str(int(count)), ha="center", va="bottom",
                        fontsize=7)
    bottom.set(xlabel="confidence (probability of the predicted class)", ylabel="examples")
    return figure
