"""Evaluation on the target task.
"""

from tftransfer.evaluation.report import ClassificationReport
from tftransfer.evaluation.report import classification_report

__all__ = [
    "ClassificationReport",
    "classification_report",
]
