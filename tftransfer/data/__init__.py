"""Data in: folders of images, arrays, TFDS, text files; splits, bad files, class weights.
"""

from tftransfer.data.arrays import dataset_from_arrays
from tftransfer.data.augment import augmentation
from tftransfer.data.class_weights import compute_class_weight
from tftransfer.data.decode import load_image
from tftransfer.data.folders import image_dataset_from_folder
from tftransfer.data.images import to_rgb
from tftransfer.data.splits import BadFile
from tftransfer.data.splits import DataSplits
from tftransfer.data.splits import ScanReport
from tftransfer.data.text_files import text_dataset_from_csv
from tftransfer.data.text_files import text_dataset_from_jsonl
from tftransfer.data.tfds import dataset_from_tfds

__all__ = [
    "BadFile",
    "DataSplits",
    "ScanReport",
    "augmentation",
    "compute_class_weight",
    "dataset_from_arrays",
    "dataset_from_tfds",
    "image_dataset_from_folder",
    "load_image",
    "text_dataset_from_csv",
    "text_dataset_from_jsonl",
    "to_rgb",
]
