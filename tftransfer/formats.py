"""The on-disk contract of tftransfer's exports: file names and their readers.

An export holds a SavedModel and, in ``assets.extra/`` (the SavedModel place
for files the graph does not load), ``labels.txt`` and ``tftransfer.json``.
This module imports nothing else of tftransfer, so every stage can read it.
"""

import json
import os

IMAGE_INPUT = "images"
"""The serving signature's input of image models: float32 raw pixels in [0, 255]."""
TEXT_INPUT = "text"
"""The serving signature's input of text models: strings."""
LABELS_FILE = "labels.txt"
METADATA_FILE = "tftransfer.json"
EXTRA_DIR = "assets.extra"  # the SavedModel place for files the graph does not load


def read_labels(export_dir):
    """Reads ``labels.txt`` of an exported version directory."""
    with open(os.path.join(export_dir, EXTRA_DIR, LABELS_FILE), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_metadata(export_dir):
    """Reads ``tftransfer.json`` of an exported version directory."""
    with open(os.path.join(export_dir, EXTRA_DIR, METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


FEATURE_EXTRACTOR_FORMAT = "tftransfer-feature-extractor"
FEATURES_OUTPUT = "features"


def read_feature_extractor_metadata(path):
    """The metadata `export_feature_extractor` writes, or {}."""
    metadata_path = os.path.join(path, EXTRA_DIR, METADATA_FILE)
    if not os.path.isfile(metadata_path):
        return {}
    with open(metadata_path, encoding="utf-8") as f:
        metadata = json.load(f)
    if not str(metadata.get("format", "")).startswith(FEATURE_EXTRACTOR_FORMAT):
        return {}
    return metadata
