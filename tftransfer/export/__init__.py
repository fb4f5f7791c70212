"""Export: SavedModels for TF Serving, and backbones as TF-Hub-format feature extractors.
"""

from tftransfer.export.feature_extractor import export_feature_extractor
from tftransfer.export.serving import export_saved_model

__all__ = [
    "export_feature_extractor",
    "export_saved_model",
]
