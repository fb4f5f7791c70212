"""One shared backbone, one head per task: `MultiTaskModel`, `build_multitask`,
`build_regressor`.

A multi-task model is a functional `keras.Model`: the frozen backbone, called
in inference mode as in `ImageClassifier`, one pooling layer, and one head
per task on the pooled features (`tftransfer.heads`), its outputs a dict
``{task: logits or values}``. It trains with Keras's own multi-output
machinery (dict labels, one `MaskedLoss`, loss weight and metrics per task)
and goes through `tftransfer.fit_head` / `fine_tune` / `fit_two_phase`
(feature caching, resume) and `tftransfer.export_saved_model` as a classifier
does. A model with one task (`build_regressor`) has a single output instead
of a dict, so it trains on plain labels.
"""

import copy
import re

import keras
import tensorflow as tf

from tftransfer.backbones.blocks import feature_rank
from tftransfer.backbones.load import load_backbone
from tftransfer.backbones.spec import BackboneSpec
from tftransfer.backbones.spec import backbone_spec
from tftransfer.backbones.spec import with_spec
from tftransfer.classifiers.heads import HeadSpec
from tftransfer.classifiers.heads import regression
from tftransfer.classifiers.image import check_pooling
from tftransfer.classifiers.image import dtype_policy
from tftransfer.classifiers.image import image_serving_spec
from tftransfer.classifiers.inputs import check_backbone_input
from tftransfer.classifiers.inputs import requested_input_shape
from tftransfer.classifiers.task_options import balanced_class_weights
from tftransfer.classifiers.task_options import task_top_k
from tftransfer.classifiers.task_options import training_labels
from tftransfer.formats import IMAGE_INPUT
from tftransfer.layers import InferenceModeCall

_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = ("images", "pooling", "frozen_backbone_call")


def check_tasks(tasks):
    """``{name: HeadSpec}`` from `tasks`, checked (names usable as layer and
    signature output names; every value a head)."""
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(
            "`tasks` must be a non-empty dict {task_name: head}, e.g. {'digit': "
            "tft.heads.classification(10), 'even': tft.heads.binary()}. "
            f"Received: tasks={tasks!r}")
    checked = {}
    for name, head in tasks.items():
        if not isinstance(name, str) or not _TASK_NAME.match(name) or name in _RESERVED:
            raise ValueError(
                "Task names must start with a letter and hold only letters, digits and "
                f"underscores (they name layers and export outputs), and not be one of "
                f"{_RESERVED}. Received: task name {name!r}")
        if isinstance(head, dict):  # from a saved config
            head = HeadSpec.from_config(head)
        if not isinstance(head, HeadSpec):
            raise TypeError(
                f"Each task's head must be a `tft.heads` head (e.g. tft.heads.binary()). "
                f"Received: tasks[{name!r}]={head!r} of type {type(head).__name__}")
        checked[name] = head
    return checked


@keras.saving.register_keras_serializable(package="tftransfer")
class MultiTaskModel(keras.Model):
    """A frozen backbone shared by several task heads.

    The model takes raw pixels in [0, 255] and returns a dict ``{task:
    outputs}`` (logits for classification, binary and multi-label heads,
    values for regression), or, with one task, that task's outputs alone.
    Train it on labels in the same structure: a dict ``{task: labels}`` for
    arrays (``fit(x, {"digit": y1, "even": y2})``) or the second element of a
    dataset's ``(images, {task: labels})``. A label of -1 (NaN for regression)
    is missing: it is masked out of that task's loss and metrics
    (`tftransfer.classifiers.masked`). Keras's ``class_weight`` does not apply
    to several outputs: give each head its own (``tft.heads.classification(
    10, class_weight={...})``, or ``"balanced"``: see `balance_class_weights`).

    Prefer `build_multitask`, which also loads a backbone by name.

    Args:
        backbone: a `keras.Model` from images to a feature map or vector.
        tasks: ``{task_name: head}``, heads from `tftransfer.heads`.
        pooling: ``"avg"``, ``"max"`` or ``"flatten"`` on a feature map.
        backbone_spec: the backbone's `BackboneSpec`. Default: its own.

    Attributes:
        backbone, backbone_spec, pooling: as for `tftransfer.ImageClassifier`.
        tasks: the ``{task_name: HeadSpec}`` dict, in output order.
        task_heads: ``{task_name: ClassificationHead layer}``.
        resolved_class_weight: ``{task: weights}`` of the heads built with
            ``class_weight="balanced"``, counted on the last training labels
            (`balance_class_weights`); ``compile(loss="auto")`` uses them.
        training_summary: one dict per training phase (see `Classifier`).
    """

    serving_inputs = ("bytes", "pixels")
    """The kinds of input `serving_spec` takes, the default first."""

    def __init__(self, *, backbone, tasks, pooling="avg", backbone_spec=None, **kwargs):
        check_pooling(pooling)
        tasks = check_tasks(tasks)
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                "`backbone` must be a `keras.Model` (use `build_multitask` to load one by "
                f"name). Received: backbone={backbone!r} of type {type(backbone).__name__}")
        rank = feature_rank(backbone)
        if backbone_spec is not None:
            backbone = with_spec(backbone, backbone_spec)

        # === Layers ===
        self.backbone = backbone
        self.backbone_spec = backbone_spec if backbone_spec is not None else _spec(backbone)
        self.pooling = pooling
        self.tasks = tasks
        self.training_summary = []  # filled by tftransfer.training
        self.resolved_class_weight = {}  # filled by balance_class_weights
        self.backbone.trainable = True  # by way of True: see Classifier._freeze_backbone
        self.backbone.trainable = False
        self.pooler = {
            "avg": keras.layers.GlobalAveragePooling2D,
            "max": keras.layers.GlobalMaxPooling2D,
            "flatten": keras.layers.Flatten,
        }[pooling](name="pooling") if rank == 4 else None
        self.task_heads = {name: head.layer(name) for name, head in tasks.items()}

        # === Functional model ===
        inputs = keras.Input(shape=backbone.input.shape[1:], name=IMAGE_INPUT)
        x = InferenceModeCall(backbone, name="frozen_backbone_call")(inputs)
        if self.pooler is not None:
            x = self.pooler(x)
        outputs = {name: layer(x) for name, layer in self.task_heads.items()}
        if len(outputs) == 1:
            outputs = next(iter(outputs.values()))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    # Read by the recipe (`fit_two_phase` picks a linear probe only for a
    # single-label, one-layer head): a multi-task model's heads train with Adam.
    hidden_units = property(lambda self: tuple(
        u for head in self.tasks.values() for u in head.hidden_units))
    multi_label = property(lambda self: any(
        head.kind == "multi_label" for head in self.tasks.values()))

    def named_outputs(self, outputs):
        """``{task: outputs}`` from the model's outputs (a dict, or one
        tensor for a model with one task)."""
        if isinstance(outputs, dict):
            return {name: outputs[name] for name in self.tasks}
        return {next(iter(self.tasks)): outputs}

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", loss_weights="auto",
                label_smoothing=0.0, **kwargs):
        """Configures the model for training, with `"auto"` defaults.

        Args:
            optimizer: `"auto"` (Adam, learning rate 1e-3) or a Keras optimizer.
            loss: `"auto"`: each head's `MaskedLoss`; or, as Keras takes it, a
                dict ``{task: loss}``.
            metrics: `"auto"`: each head's metrics (`MaskedMetric`); or a
                dict ``{task: [metrics]}``.
            loss_weights: `"auto"`: each head's `loss_weight`; or a dict.
            label_smoothing: for ``loss="auto"``: smoothing of the
                classification, binary and multi-label targets, in [0, 1).
            **kwargs: passed to `keras.Model.compile`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        if loss == "auto":
            loss = {name: head.loss(label_smoothing=label_smoothing,
                                    class_weight=self.resolved_class_weight.get(name))
                    for name, head in self.tasks.items()}
        if metrics == "auto":
            metrics = {name: head.metric_objects() for name, head in self.tasks.items()}
        if loss_weights == "auto":
            loss_weights = {name: float(head.loss_weight) for name, head in self.tasks.items()}
        if len(self.tasks) == 1:  # one output: Keras takes them unwrapped
            loss, metrics, loss_weights = (_only(value) for value in (loss, metrics,
                                                                      loss_weights))
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics,
                        loss_weights=loss_weights, **kwargs)

    def balance_class_weights(self, x, y=None):
        """Counts the training labels for the heads built with
        ``class_weight="balanced"`` (missing labels left out) and keeps
        their weights in `resolved_class_weight` for the next
        ``compile(loss="auto")``. The training functions call it; call it
        before `compile` to train such a model with plain `fit`.

        Args:
            x: the training data: an array with `y`, or a `tf.data.Dataset`
                of ``(inputs, {task: labels})`` (read once).
            y: ``{task: labels}`` for arrays.

        Returns:
            `resolved_class_weight`.
        """
        if any(head.class_weight == "balanced" for head in self.tasks.values()):
            self.resolved_class_weight = balanced_class_weights(self.tasks,
                                                                training_labels(x, y))
        return self.resolved_class_weight

    def compile_from_config(self, config):
        # Called when a `.keras` file is loaded (as `Classifier.compile_from_config`).
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def predictions(self, outputs):
        """``{task: array}``: probabilities (classification, binary: ``[batch,
        2]``), scores (multi-label) or values (regression) from the model's
        outputs."""
        return {name: self.tasks[name].predictions(value)
                for name, value in self.named_outputs(outputs).items()}

    def predict_tasks(self, x, **kwargs):
        """`predict`, as ``{task: NumPy array}`` of `predictions`.

        Example:

        >>> model = build_multitask("mobilenet_v3_small", tasks={
        ...     "digit": heads.classification(10), "even": heads.binary()},
        ...     input_shape=(32, 32, 3), weights=None)
        >>> out = model.predict_tasks(np.zeros((2, 32, 32, 3)), verbose=0)
        >>> out["digit"].shape, out["even"].shape
        ((2, 10), (2, 2))
        """
        outputs = self.predict(x, **kwargs)
        return {name: keras.ops.convert_to_numpy(value)
                for name, value in self.predictions(outputs).items()}

    def serving_outputs(self, outputs, *, top_k=1):
        """The export's outputs, ``{name: tensor}`` over the tasks (see
        `tftransfer.heads.HeadSpec.serving_outputs`); `top_k`: an integer
        for every classification task or ``{task: k}`` (see
        `tftransfer.export_saved_model`)."""
        best = task_top_k(self.tasks, top_k)
        served = {}
        for name, value in self.named_outputs(outputs).items():
            served.update(self.tasks[name].serving_outputs(name, value,
                                                           top_k=best.get(name, 1)))
        return served

    def serving_spec(self, inputs="bytes"):
        """How `tftransfer.export_saved_model` serves this model: encoded
        images (``"bytes"``) or raw pixels (``"pixels"``), as
        `ImageClassifier.serving_spec`."""
        return image_serving_spec(self, inputs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "backbone_spec": self.backbone_spec.get_config(),
            "tasks": {name: head.get_config() for name, head in self.tasks.items()},
            "pooling": self.pooling,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras's deserialization empties what it reads
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        config["backbone_spec"] = BackboneSpec.from_config(config["backbone_spec"])
        return cls(**config)


def _spec(backbone):
    return backbone_spec(backbone)


def _only(value):
    return next(iter(value.values())) if isinstance(value, dict) else value


def build_multitask(backbone, tasks, *, input_shape=None, image_size=None, weights="imagenet",
                    pooling="avg", name=None, cut_at=None, block_pattern=None, dtype=None):
    """Builds a multi-task model: one frozen backbone, one head per task.

    Args:
        backbone: anything `tftransfer.load_backbone` takes (see
            `build_classifier`).
        tasks: ``{task_name: head}`` with heads from `tftransfer.heads`:
            ``classification``, ``binary``, ``multi_label``, ``regression``.
            Task names start with a letter and hold letters, digits and
            underscores; they name the outputs, the logs
            (``val_<task>_accuracy``) and the export's outputs.
        input_shape, image_size, weights, pooling, name, cut_at,
        block_pattern, dtype: as for `build_classifier`.

    Returns:
        A compiled `MultiTaskModel` with its backbone frozen.

    Example:

    >>> model = build_multitask("mobilenet_v3_small", tasks={
    ...     "digit": heads.classification(10), "even": heads.binary(),
    ...     "size": heads.regression()}, input_shape=(32, 32, 3), weights=None)
    >>> list(model.tasks), sorted(model.output)
    (['digit', 'even', 'size'], ['digit', 'even', 'size'])
    """
    return _build(backbone, tasks, suffix="multitask", input_shape=input_shape,
                  image_size=image_size, weights=weights, pooling=pooling, name=name,
                  cut_at=cut_at, block_pattern=block_pattern, dtype=dtype)


def _build(backbone, tasks, *, suffix, input_shape=None, image_size=None, weights="imagenet",
           pooling="avg", name=None, cut_at=None, block_pattern=None, dtype=None):
    tasks = check_tasks(tasks)
    shape = requested_input_shape(input_shape=input_shape, image_size=image_size)
    check_pooling(pooling)
    with dtype_policy(dtype):
        backbone = load_backbone(backbone, input_shape=shape, weights=weights, cut_at=cut_at,
                                 block_pattern=block_pattern)
        check_backbone_input(backbone, shape, source="`input_shape` / `image_size` ask for")
        if name is None:
            name = f"{backbone_spec(backbone).name or backbone.name}_{suffix}"
        model = MultiTaskModel(backbone=backbone, tasks=tasks, pooling=pooling, name=name)
        model.compile()
    return model


def build_regressor(backbone, *, units=1, task="value", head=None, name=None, **kwargs):
    """Builds a regression model: a frozen backbone and one regression head.

    It is a `MultiTaskModel` with one task, so it trains on plain float
    targets (``[batch]`` or ``[batch, units]``; NaN for missing), goes
    through the same recipe and exports ``<task>`` (float32) per example.

    Args:
        backbone: anything `tftransfer.load_backbone` takes.
        units: number of values predicted per example.
        task: the task's name: the export's output name.
        head: a `tftransfer.heads.regression(...)` head instead of `units`
            (its loss, hidden layers, dropout).
        name: model name. Default: ``"<backbone>_regressor"``.
        **kwargs: as for `build_multitask` (`input_shape`, `weights`, ...).

    Example:

    >>> model = build_regressor("mobilenet_v3_small", input_shape=(32, 32, 3),
    ...                         weights=None)
    >>> model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 1)
    """
    if head is None:
        head = regression(units)
    elif not isinstance(head, HeadSpec) or head.kind != "regression":
        raise ValueError(
            "`head` must be a regression head, e.g. tft.heads.regression(2, loss='mae'). "
            f"Received: head={head!r}")
    return _build(backbone, {task: head}, suffix="regressor", name=name, **kwargs)


def check_targets(model, what, y):
    """Checks labels against a `MultiTaskModel`'s tasks: a dict with one entry
    per task (or plain labels with one task), class labels in range or -1."""
    if y is None or not isinstance(model, MultiTaskModel):
        return
    if len(model.tasks) > 1 or isinstance(y, dict):
        if not isinstance(y, dict):
            raise ValueError(
                f"The {what} labels of a multi-task model must be a dict {{task: labels}} "
                f"with the tasks {list(model.tasks)} (-1, or NaN for regression, where an "
                f"example has no label). Received: {what} labels of type {type(y).__name__}")
        missing = [t for t in model.tasks if t not in y]
        unknown = [t for t in y if t not in model.tasks]
        if missing or unknown:
            raise ValueError(
                f"The {what} labels must hold one entry per task {list(model.tasks)}; give "
                "an absent task's labels as -1 (NaN for regression). Received: "
                f"{what} labels for {list(y)}"
                + (f", missing {missing}" if missing else "")
                + (f", unknown {unknown}" if unknown else ""))
    for task, labels in model.named_outputs(y).items():
        head = model.tasks[task]
        if head.kind == "regression" or isinstance(labels, tf.data.Dataset):
            continue
        try:
            values = tf.convert_to_tensor(labels).numpy()
        except (TypeError, ValueError, AttributeError):
            continue
        labelled = values[values >= 0] if values.size else values
        bound = 2 if head.kind != "classification" else len(head.labels)
        if labelled.size and (labelled.max() >= bound or (values < -1).any()):
            raise ValueError(
                f"Task {task!r} ({head.kind}) takes labels in [0, {bound}) and -1 for a "
                f"missing label. Received: {what} labels from {values.min()} to "
                f"{values.max()}")
