"""A Keras 3 layer around a TF2 "reusable SavedModel" (TF-Hub format).

TensorFlow Hub's own `hub.KerasLayer` is a Keras 2 (tf_keras) layer and does
not work in a Keras 3 model (tensorflow/hub#920, tensorflow#65419).
`HubLayer` does the same job in Keras 3. A reusable SavedModel is an object
with

- ``__call__(inputs)``, optionally ``__call__(inputs, training=...)`` with a
  Python bool ``training``;
- ``variables`` and ``trainable_variables`` (lists of `tf.Variable`);
- optionally ``regularization_losses``: zero-argument callables, each
  returning a scalar loss.

The layer wraps each of the module's variables in a Keras variable that
shares its storage (`keras.Variable` keeps a `tf.Variable` it is given as it
is, the way `keras.layers.TFSMLayer` tracks a SavedModel's weights), so
`model.trainable_weights`, the optimizer and `.keras` files all see them,
and training them changes what the module computes.

A SavedModel is a program: loading one runs its graph. Load modules from
sources you trust.
"""

import logging
import os
import re

import keras
import tensorflow as tf

from tftransfer import _compat
from tftransfer.errors import WeightsUnavailableError

logger = logging.getLogger(__name__)


_URL = re.compile(r"^https?://", re.IGNORECASE)


_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


_TF1_HUB_FILE = "tfhub_module.pb"


def is_url(handle):
    return isinstance(handle, str) and bool(_URL.match(handle))


def is_saved_model_dir(path):
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in _SAVED_MODEL_FILES
    )


def resolve(handle):
    """Returns the local directory of `handle` (a URL or a local path).

    A URL goes through `tensorflow_hub.resolve`, which downloads the module
    once into ``$TFHUB_CACHE_DIR`` (a temporary directory by default).
    """
    if is_url(handle):
        # Imported here: tensorflow_hub imports tf_keras, which takes seconds.
        import tensorflow_hub as hub

        try:
            return hub.resolve(handle)
        except Exception as err:  # noqa: BLE001 - re-raised with the fix
            raise WeightsUnavailableError(
                f"Could not fetch the TF-Hub module {handle!r} "
                f"({type(err).__name__}: {err}). Without the internet, download "
                "the model on a machine that has it (tfhub.dev and Kaggle Models "
                "offer a .tar.gz), unpack it, and pass the directory instead: "
                "load_backbone('/path/to/model_dir'). Setting TFHUB_CACHE_DIR "
                "to a persistent directory keeps downloaded modules. "
                f"Received: handle={handle!r}"
            ) from err
    path = os.fspath(handle)
    if not os.path.isdir(path):
        raise ValueError(
            "A hub module must be a tfhub.dev / Kaggle Models URL or a local "
            f"SavedModel directory; there is no directory at {path!r}. "
            f"Received: handle={handle!r}"
        )
    return path


def load_module(handle):
    """Loads a reusable TF2 SavedModel; returns (restored object, local path)."""
    path = resolve(handle)
    if os.path.isfile(os.path.join(path, _TF1_HUB_FILE)):
        raise ValueError(
            f"{handle!r} is a TF1 Hub module (it has {_TF1_HUB_FILE}): that "
            "format has no Keras 3 support. Use the TF2 version of the model "
            "(tfhub.dev and Kaggle Models list a 'TensorFlow 2' variant of most "
            f"modules). Received: handle={handle!r}"
        )
    if not is_saved_model_dir(path):
        raise ValueError(
            f"{handle!r} is not a SavedModel: {path!r} has no saved_model.pb. "
            f"Received: handle={handle!r}"
        )
    module = tf.saved_model.load(path)
    if not callable(module):
        signatures = sorted(getattr(module, "signatures", {}) or {})
        raise ValueError(
            f"{handle!r} is a SavedModel but not a reusable TF2 model: it has no "
            "`__call__` (only the signatures "
            f"{signatures or 'none'}). A SavedModel exported for serving, e.g. "
            "by `model.export()` or `tftransfer.export_saved_model`, is not a "
            "backbone; export one with `tftransfer.export_feature_extractor`, "
            "or wrap a serving signature in `keras.layers.TFSMLayer` yourself. "
            f"Received: handle={handle!r}"
        )
    return module, path


def module_variables(module):
    """The module's variables, and the ids of the trainable ones.

    From its ``variables`` and ``trainable_variables``; a SavedModel without
    them gives the variables its ``__call__`` uses (as `TFSMLayer` finds
    them), trainable as they were saved.
    """
    if hasattr(module, "variables"):
        trainable = {id(v) for v in getattr(module, "trainable_variables", [])}
        return list(module.variables), trainable
    trainable, others = _compat.variables_used_by_functions([module.__call__])
    return trainable + others, {id(v) for v in trainable}


def has_training_argument(module):
    """Whether the module's ``__call__`` takes `training` (as hub.KerasLayer
    decides it)."""
    try:
        spec = _compat.getfullargspec(module.__call__)
    except TypeError:
        return False
    return "training" in spec.args or "training" in spec.kwonlyargs


@keras.saving.register_keras_serializable(package="tftransfer")
class HubLayer(keras.layers.Layer):
    """A TF-Hub module (a TF2 reusable SavedModel) as a Keras 3 layer.

    The layer calls the module's ``__call__``; when that takes a `training`
    argument, it passes ``training=True`` only while the layer is trainable,
    called in training mode, and not in `inference_mode` (otherwise
    ``training=False``, like `hub.KerasLayer`). A SavedModel has no Keras
    layers, so BatchNormalization inside it cannot be frozen layer by layer:
    ``training=False`` is what keeps its moving statistics fixed (and its
    dropout off), while its scale and offset train with the other weights
    when the layer is trainable. In Keras 3 a ``training=False`` written
    into a functional graph does not hold while an outer model trains (the
    outer `fit` passes ``training=True`` down to nested layers), so the
    layer has its own switch: `inference_mode`. The backbones `load_backbone`
    makes set it, as tftransfer keeps BatchNormalization in inference mode
    in both training phases.

    The module's ``regularization_losses`` are added with `add_loss` on each
    call while the layer is trainable.

    The config stores the handle: a `.keras` file re-creates the layer from
    it, then restores the weights saved in the file. Loading a SavedModel
    runs its graph, so, like `keras.layers.TFSMLayer`, the layer refuses to
    be deserialized in Keras's safe mode: load such a file with
    ``keras.saving.load_model(path, safe_mode=False)`` if you trust it and
    the module it names.

    Attributes:
        handle: the handle it was made from.
        module_path: the local SavedModel directory (for a URL, in the TF-Hub
            cache).

    Args:
        handle: a tfhub.dev / Kaggle Models URL, or the path of a local
            SavedModel directory. A SavedModel is code you run: use modules
            from sources you trust.
        trainable: whether the module's trainable variables train. Default:
            frozen.
        output_shape: the output shape without the batch dimension, when the
            module does not make it known statically, e.g. ``(1280,)``.
        inference_mode: always call the module with ``training=False``, even
            while it trains (see above). Settable.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`).

    Example:

    >>> import tempfile
    >>> inputs = keras.Input((32, 32, 3))
    >>> features = keras.layers.Conv2D(8, 3, name="block1_conv")(inputs)
    >>> path = export_feature_extractor(keras.Model(inputs, features),
    ...                                 tempfile.mkdtemp() + "/module")
    >>> layer = HubLayer(path)   # frozen; HubLayer(path, trainable=True) trains
    >>> layer(np.zeros((2, 32, 32, 3), "float32")).shape
    TensorShape([2, 8])
    """

    def __init__(self, handle, *, trainable=False, output_shape=None, inference_mode=False,
                 **kwargs):
        if not isinstance(handle, (str, os.PathLike)):
            raise TypeError(
                "`handle` must be a URL or the path of a SavedModel directory. "
                f"Received: handle={handle!r} of type {type(handle).__name__}"
            )
        if output_shape is not None:
            output_shape = tuple(output_shape)
            if not all(d is None or (isinstance(d, int) and d > 0) for d in output_shape):
                raise ValueError(
                    "`output_shape` must be the shape without the batch "
                    "dimension, a tuple of positive integers or None, e.g. "
                    f"(1280,). Received: output_shape={output_shape!r}"
                )
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle if is_url(handle) else os.fspath(handle)
        self._output_shape = output_shape
        self.inference_mode = bool(inference_mode)
        self._module, self.module_path = load_module(self.handle)
        self._has_training_argument = has_training_argument(self._module)
        self._regularization_losses = list(getattr(self._module, "regularization_losses", []))
        for loss in self._regularization_losses:
            if not callable(loss):
                raise ValueError(
                    f"The module {handle!r} has a regularization loss that is not "
                    "callable; the reusable SavedModel format wants zero-argument "
                    f"callables. Received: {loss!r}"
                )
        # Keras variables around the module's own tf.Variables (shared
        # storage, as in keras.layers.TFSMLayer).
        variables, trainable_ids = module_variables(self._module)
        for variable in variables:
            self._track_variable(
                keras.Variable(
                    initializer=variable,
                    trainable=id(variable) in trainable_ids,
                    dtype=variable.dtype,
                    name=variable.name.split(":")[0].replace("/", "_"),
                )
            )
        self._build_at_init()

    def infer_output_shape(self, input_shape):
        """The output shape for inputs of `input_shape` (batch dimension
        included). When the module does not make it known statically, the
        module runs once on zeros and the layer keeps the shape it returned,
        as if given as `output_shape`."""
        spec = self.compute_output_spec(keras.KerasTensor(tuple(input_shape)))
        if all(d is not None for d in spec.shape[1:]):
            return tuple(spec.shape[1:])
        probe = self(keras.ops.zeros((1, *tuple(input_shape)[1:])))
        self._output_shape = tuple(int(d) for d in probe.shape[1:])
        return self._output_shape

    @property
    def has_training_argument(self):
        """Whether the module's ``__call__`` takes a `training` argument."""
        return self._has_training_argument

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if x.dtype.is_floating and x.dtype != tf.float32:
            x = tf.cast(x, tf.float32)  # hub image modules take float32
        if not self._has_training_argument:
            outputs = self._module(x)
        elif not self.trainable or self.inference_mode:
            outputs = self._module(x, training=False)
        elif isinstance(training, tf.Tensor):  # a symbolic training flag
            outputs = _compat.smart_cond(
                training,
                lambda: self._module(x, training=True),
                lambda: self._module(x, training=False),
            )
        else:
            outputs = self._module(x, training=bool(training))
        if not isinstance(outputs, tf.Tensor):
            raise ValueError(
                f"The module {self.handle!r} returned {type(outputs).__name__}, "
                "not one tensor; HubLayer supports modules whose `__call__` "
                "returns a single tensor (image feature vectors, logits). "
                f"Received: handle={self.handle!r}"
            )
        if self._output_shape is not None:
            outputs = tf.ensure_shape(outputs, (None, *self._output_shape))
        if self.trainable:
            for loss in self._regularization_losses:
                self.add_loss(loss())
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "handle": self.handle,
            "output_shape": None if self._output_shape is None else list(self._output_shape),
            "inference_mode": self.inference_mode,
        })
        return config

    @classmethod
    def from_config(cls, config):
        if _compat.in_safe_mode():
            raise ValueError(
                "Requested the deserialization of a tftransfer `HubLayer`, which "
                f"loads the SavedModel {config.get('handle')!r} and runs its graph: "
                "this could execute untrusted code, so Keras's safe mode "
                "refuses it. If you trust the file and that module, load it with "
                "`keras.saving.load_model(path, safe_mode=False)`."
            )
        return cls(**config)


def contains_hub_layer(model):
    """Whether `model`'s top-level layers include a `HubLayer`."""
    return any(isinstance(layer, HubLayer) for layer in getattr(model, "layers", []))


def check_unfreeze_request(backbone, num_blocks):
    """Hub modules unfreeze all or nothing: refuses a number of blocks."""
    if num_blocks == "all" or not contains_hub_layer(backbone):
        return
    raise ValueError(
        f"Backbone {backbone.name!r} is a TF-Hub / SavedModel module: it cannot be "
        "unfrozen block by block (a SavedModel keeps no layers, only one "
        "graph and its variables; tensorflow/hub#852). Unfreeze it whole with "
        "`unfreeze_blocks='all'` (or `num_blocks='all'`), or train the head "
        f"only. Received: num_blocks={num_blocks!r}"
    )
