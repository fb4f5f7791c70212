"""Evaluation on the target task.
"""

from tftransfer.baselines import baseline_accuracy
from tftransfer.baselines import logistic_regression
from tftransfer.baselines import nearest_neighbour
from tftransfer.evaluation.calibration import ReliabilityBins
from tftransfer.evaluation.calibration import expected_calibration_error
from tftransfer.evaluation.calibration import reliability_bins
from tftransfer.evaluation.domains import DomainReports
from tftransfer.evaluation.domains import evaluate_domains
from tftransfer.evaluation.evaluate import evaluate
from tftransfer.evaluation.evaluation_report import EvaluationReport
from tftransfer.evaluation.evaluation_report import MisclassifiedExample
from tftransfer.evaluation.label_efficiency import LabelEfficiency
from tftransfer.evaluation.label_efficiency import label_efficiency
from tftransfer.evaluation.label_efficiency import labelled_subset
from tftransfer.evaluation.label_efficiency import pixel_baseline
from tftransfer.evaluation.logme import logme
from tftransfer.evaluation.multitask_report import MultiTaskReport
from tftransfer.evaluation.plots import plot_confusion_matrix
from tftransfer.evaluation.plots import plot_learning_curves
from tftransfer.evaluation.plots import plot_misclassified
from tftransfer.evaluation.plots import plot_reliability
from tftransfer.evaluation.ranking import rank_backbones
from tftransfer.evaluation.ranking_table import BackboneRanking
from tftransfer.evaluation.ranking_table import RankedBackbone
from tftransfer.evaluation.report import ClassificationReport
from tftransfer.evaluation.report import classification_report
from tftransfer.evaluation.text_baselines import text_from_scratch
from tftransfer.evaluation.text_baselines import tfidf_logistic_regression
from tftransfer.training.linear_probe import LinearProbeResult
from tftransfer.training.linear_probe import fit_linear_probe

__all__ = [
    "BackboneRanking",
    "ClassificationReport",
    "DomainReports",
    "EvaluationReport",
    "LabelEfficiency",
    "LinearProbeResult",
    "MisclassifiedExample",
    "MultiTaskReport",
    "RankedBackbone",
    "ReliabilityBins",
    "baseline_accuracy",
    "classification_report",
    "evaluate",
    "evaluate_domains",
    "expected_calibration_error",
    "fit_linear_probe",
    "label_efficiency",
    "labelled_subset",
    "logistic_regression",
    "logme",
    "nearest_neighbour",
    "pixel_baseline",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_misclassified",
    "plot_reliability",
    "rank_backbones",
    "reliability_bins",
    "text_from_scratch",
    "tfidf_logistic_regression",
]
