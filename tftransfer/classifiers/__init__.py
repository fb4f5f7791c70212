"""Classifiers: a frozen backbone and a new head, as one `keras.Model`.
"""

from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.image import ImageClassifier
from tftransfer.classifiers.image import build_classifier
from tftransfer.classifiers.text import TextClassifier
from tftransfer.classifiers.text import build_text_classifier

__all__ = [
    "Classifier",
    "ImageClassifier",
    "TextClassifier",
    "build_classifier",
    "build_text_classifier",
]
