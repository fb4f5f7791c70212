"""Classifiers: a frozen backbone and a new head, as one `keras.Model`; and
multi-task models, one backbone shared by several heads (`heads`).
"""

from tftransfer.classifiers import heads
from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.image import ImageClassifier
from tftransfer.classifiers.image import build_classifier
from tftransfer.classifiers.multitask import MultiTaskModel
from tftransfer.classifiers.multitask import build_multitask
from tftransfer.classifiers.multitask import build_regressor
from tftransfer.classifiers.text import TextClassifier
from tftransfer.classifiers.text import build_text_classifier

__all__ = [
    "Classifier",
    "ImageClassifier",
    "MultiTaskModel",
    "TextClassifier",
    "build_classifier",
    "build_multitask",
    "build_regressor",
    "build_text_classifier",
    "heads",
]
