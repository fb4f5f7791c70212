"""tftransfer: transfer learning for Keras 3 on TensorFlow, one call away.

Example:

>>> import tftransfer as tft
>>> model = tft.build_classifier("efficientnet_b0", class_names=["a", "b"],
...                              input_shape=(32, 32, 3), weights=None)
>>> model.class_names
['a', 'b']
"""

import os as _os

# tftransfer is built on TensorFlow (tf.data, SavedModel, TF Serving): make it
# Keras's backend unless the user chose one before importing Keras.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tftransfer._hub import HubLayer
from tftransfer.augment import augmentation
from tftransfer.backbones import DEFAULT_BLOCK_PATTERN
from tftransfer.backbones import ImageBackbone
from tftransfer.backbones import WeightsUnavailableError
from tftransfer.backbones import available_backbones
from tftransfer.backbones import get_blocks
from tftransfer.backbones import load_backbone
from tftransfer.builders import ImageClassifier
from tftransfer.builders import build_classifier
from tftransfer.data import BadDataError
from tftransfer.data import DataSplits
from tftransfer.data import DatasetUnavailableError
from tftransfer.data import classification_report
from tftransfer.data import compute_class_weight
from tftransfer.data import dataset_from_arrays
from tftransfer.data import dataset_from_tfds
from tftransfer.data import image_dataset_from_folder
from tftransfer.data import load_image
from tftransfer.data import text_dataset_from_csv
from tftransfer.data import text_dataset_from_jsonl
from tftransfer.data import to_rgb
from tftransfer.distribute import is_chief
from tftransfer.export import VersionExistsError
from tftransfer.export import export_feature_extractor
from tftransfer.export import export_saved_model
from tftransfer.export import read_labels
from tftransfer.export import read_metadata
from tftransfer.layers import PixelPreprocessing
from tftransfer.text import TextClassifier
from tftransfer.text import build_text_classifier
from tftransfer.optimizers import DiscriminativeAdam
from tftransfer.optimizers import DiscriminativeAdamW
from tftransfer.training import NonFiniteLossError
from tftransfer.training import enable_determinism
from tftransfer.training import fine_tune
from tftransfer.training import fit_head
from tftransfer.training import fit_two_phase
from tftransfer.training import freeze_backbone
from tftransfer.training import freeze_batchnorm
from tftransfer.training import unfreeze_top_blocks
from tftransfer.training import warmup_cosine_schedule

__version__ = "0.1.0"

__all__ = [
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "NonFiniteLossError",
    "enable_determinism",
    "BadDataError",
    "DEFAULT_BLOCK_PATTERN",
    "DataSplits",
    "DatasetUnavailableError",
    "HubLayer",
    "ImageBackbone",
    "ImageClassifier",
    "PixelPreprocessing",
    "TextClassifier",
    "VersionExistsError",
    "WeightsUnavailableError",
    "augmentation",
    "available_backbones",
    "build_classifier",
    "build_text_classifier",
    "classification_report",
    "compute_class_weight",
    "dataset_from_arrays",
    "dataset_from_tfds",
    "export_feature_extractor",
    "export_saved_model",
    "fine_tune",
    "fit_head",
    "fit_two_phase",
    "freeze_backbone",
    "freeze_batchnorm",
    "get_blocks",
    "image_dataset_from_folder",
    "is_chief",
    "load_backbone",
    "load_image",
    "read_labels",
    "read_metadata",
    "text_dataset_from_csv",
    "text_dataset_from_jsonl",
    "to_rgb",
    "unfreeze_top_blocks",
    "warmup_cosine_schedule",
]
