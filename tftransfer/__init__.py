"""tftransfer: transfer learning for Keras 3 on TensorFlow, one call away.

The package reads by stage: `backbones` (what a model is built on),
`classifiers` (a frozen backbone and a new head), `data` (folders, arrays,
TFDS, text files), `training` (the two-phase recipe, on cached features where
exact: `feature_cache`), `evaluation`, `export` (TF Serving, TF-Hub format), and
the `demos` and the command line on top. Every public name is importable from
here; it is imported on first use (PEP 562), so ``import tftransfer`` and
``tftransfer --help`` do not import TensorFlow.

Example:

>>> import tftransfer as tft
>>> model = tft.build_classifier("efficientnet_b0", class_names=["a", "b"],
...                              input_shape=(32, 32, 3), weights=None)
>>> model.class_names
['a', 'b']
"""

import importlib
import importlib.abc
import importlib.machinery
import os
import sys

from tftransfer.version import __version__  # noqa: F401 - re-exported

# tftransfer is built on TensorFlow (tf.data, SavedModel, TF Serving): make it
# Keras's backend unless the user chose one before importing Keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Public name -> the module that defines it.
_EXPORTS = {
    "BackboneRanking": "tftransfer.evaluation.ranking_table",
    "BackboneSpec": "tftransfer.backbones.spec",
    "BadDataError": "tftransfer.errors",
    "ClassificationHead": "tftransfer.classifiers.head",
    "Classifier": "tftransfer.classifiers.base",
    "ContrastiveViews": "tftransfer.transfer.views",
    "DEFAULT_BLOCK_PATTERN": "tftransfer.backbones.spec",
    "DataSplits": "tftransfer.data.splits",
    "DatasetUnavailableError": "tftransfer.errors",
    "DiscriminativeAdam": "tftransfer.training.optimizers",
    "DiscriminativeAdamW": "tftransfer.training.optimizers",
    "DomainReports": "tftransfer.evaluation.domains",
    "EvaluationReport": "tftransfer.evaluation.evaluation_report",
    "GradientReversal": "tftransfer.transfer.adversarial_step",
    "HubLayer": "tftransfer.backbones.hub",
    "ImageBackbone": "tftransfer.backbones.applications",
    "ImageClassifier": "tftransfer.classifiers.image",
    "LabelEfficiency": "tftransfer.evaluation.label_efficiency",
    "LearningRateFinder": "tftransfer.training.lr_finder",
    "LinearProbeResult": "tftransfer.training.linear_probe",
    "MultiTaskModel": "tftransfer.classifiers.multitask",
    "MultiTaskReport": "tftransfer.evaluation.multitask_report",
    "NonFiniteLossError": "tftransfer.errors",
    "PixelPreprocessing": "tftransfer.layers",
    "TextClassifier": "tftransfer.classifiers.text",
    "VersionExistsError": "tftransfer.errors",
    "WeightsUnavailableError": "tftransfer.errors",
    "adapt_batchnorm": "tftransfer.transfer.adabn",
    "augmentation": "tftransfer.data.augment",
    "available_backbones": "tftransfer.backbones.applications",
    "build_classifier": "tftransfer.classifiers.image",
    "build_multitask": "tftransfer.classifiers.multitask",
    "build_regressor": "tftransfer.classifiers.multitask",
    "build_text_classifier": "tftransfer.classifiers.text",
    "classification_report": "tftransfer.evaluation.report",
    "compute_class_weight": "tftransfer.data.class_weights",
    "dataset_from_arrays": "tftransfer.data.arrays",
    "dann_lambda": "tftransfer.transfer.adversarial_step",
    "dataset_from_tfds": "tftransfer.data.tfds",
    "digits_m": "tftransfer.data.domains",
    "discriminative_optimizer": "tftransfer.training.optimizers",
    "enable_determinism": "tftransfer.training.determinism",
    "enable_lora": "tftransfer.training.lora",
    "encode_image": "tftransfer.export.rest",
    "evaluate": "tftransfer.evaluation.evaluate",
    "evaluate_domains": "tftransfer.evaluation.domains",
    "export_feature_extractor": "tftransfer.export.feature_extractor",
    "export_litert": "tftransfer.export.litert",
    "export_saved_model": "tftransfer.export.serving",
    "find_learning_rate": "tftransfer.training.lr_finder",
    "fine_tune": "tftransfer.training.recipe",
    "fit_domain_adversarial": "tftransfer.transfer.adversarial",
    "fit_head": "tftransfer.training.recipe",
    "fit_linear_probe": "tftransfer.training.linear_probe",
    "fit_self_training": "tftransfer.transfer.self_training",
    "fit_two_phase": "tftransfer.training.recipe",
    "freeze_backbone": "tftransfer.training.freezing",
    "freeze_batchnorm": "tftransfer.training.freezing",
    "get_blocks": "tftransfer.backbones.blocks",
    "has_lora": "tftransfer.training.lora",
    "heads": "tftransfer.classifiers",
    "image_dataset_from_folder": "tftransfer.data.folders",
    "is_chief": "tftransfer.distribute",
    "label_efficiency": "tftransfer.evaluation.label_efficiency",
    "labelled_subset": "tftransfer.evaluation.label_efficiency",
    "load_backbone": "tftransfer.backbones.load",
    "load_image": "tftransfer.data.decode",
    "logme": "tftransfer.evaluation.logme",
    "merge_lora": "tftransfer.training.lora",
    "nt_xent_loss": "tftransfer.transfer.self_supervised",
    "pixel_baseline": "tftransfer.evaluation.label_efficiency",
    "pretrain_self_supervised": "tftransfer.transfer.self_supervised",
    "rank_backbones": "tftransfer.evaluation.ranking",
    "read_labels": "tftransfer.formats",
    "read_metadata": "tftransfer.formats",
    "serving_request": "tftransfer.export.rest",
    "shift_digits": "tftransfer.data.domains",
    "text_dataset_from_csv": "tftransfer.data.text_files",
    "text_dataset_from_jsonl": "tftransfer.data.text_files",
    "to_rgb": "tftransfer.data.images",
    "trainable_parameters": "tftransfer.training.lora",
    "unfreeze_top_blocks": "tftransfer.training.freezing",
    "warmup_cosine_schedule": "tftransfer.training.schedules",
}

__all__ = sorted(_EXPORTS)

# The modules that register tftransfer's Keras classes (classifiers, layers,
# optimizers) under the package name "tftransfer", which `.keras` files name.
_REGISTERING = (
    "tftransfer.classifiers.image",
    "tftransfer.classifiers.multitask",
    "tftransfer.classifiers.text",
    "tftransfer.training.optimizers",
    "tftransfer.transfer.adversarial_step",
    "tftransfer.transfer.views",
)


def _register_keras_classes():
    """Imports the registering modules, so that `keras.saving.load_model`
    finds tftransfer's classes after ``import tftransfer``, as it did before
    the public names were imported lazily."""
    for module in _REGISTERING:
        importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers tftransfer's Keras classes once Keras is imported, whoever
    imports it: `import tftransfer` stays light, and a `.keras` file loads in
    a program that never touches a tftransfer name.

    When a tftransfer module imports Keras, the registration waits until the
    outermost tftransfer import running then has finished (registering in the
    middle would import modules that depend on one not yet initialized), so
    this finder also watches the imports of tftransfer's own modules. It
    leaves `sys.meta_path` once the classes are registered.
    """

    def __init__(self):
        self.depth = 0  # tftransfer modules being imported, nested
        self.pending = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith("tftransfer."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            own = name != "keras"
            self.depth += own
            try:
                execute(module)
            finally:
                self.depth -= own
            self.pending = self.pending or not own
            if self.pending and self.depth == 0:
                self.pending = False
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                _register_keras_classes()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_keras_classes()
else:
    sys.meta_path.insert(0, _RegisterAfterKeras())


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tftransfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
