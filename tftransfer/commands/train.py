"""`tftransfer train DATA_DIR --backbone NAME --out DIR`: a folder to a model,
an export and a report."""

import json
import os
import sys

from tftransfer.backbones.applications import ARCHITECTURES
from tftransfer.backbones.applications import find_architecture
from tftransfer.backbones.load import load_backbone
from tftransfer.classifiers.image import build_classifier
from tftransfer.data.folders import image_dataset_from_folder
from tftransfer.evaluation.evaluate import evaluate
from tftransfer.export.serving import export_saved_model
from tftransfer.training.recipe import fit_two_phase

MODEL_FILE = "model.keras"
EXPORT_DIR = "export"
REPORT_FILE = "report.json"
EVALUATION_DIR = "evaluation"


def _given(args, *names):
    """The arguments the user gave: the rest keep the library's defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def backbone_and_size(backbone, given):
    """The backbone to build on and the image size: `--image-size`, else a
    name's default size, else the input size of the model the backbone loads
    as (loaded here, once, and handed on as the model)."""
    key = find_architecture(backbone)
    if given is not None or key is not None:
        return backbone, given or ARCHITECTURES[key].default_size
    model = load_backbone(backbone)
    shape = model.input_shape
    if isinstance(shape, tuple) and len(shape) == 4 and None not in shape[1:3]:
        return model, shape[1:3]
    raise ValueError(
        f"Pass --image-size: the backbone {backbone!r} does not say what size it takes. "
        "Received: --image-size=None")


def run(args):
    weights = {"none": None}.get(str(args.weights).lower(), args.weights)
    backbone, size = backbone_and_size(args.backbone, args.image_size)
    os.makedirs(args.out, exist_ok=True)
    print(f"[1/4] Scanning {args.data_dir}", flush=True)
    data = image_dataset_from_folder(
        args.data_dir, image_size=size, verbose=1,
        **_given(args, "batch_size", "validation_split", "test_split", "seed", "augmentation"))
    print(f"      {data}", flush=True)
    if data.report is not None and data.report.bad_files:
        print(f"      left out {len(data.report.bad_files)} bad files (see report.json)")
    print(f"[2/4] Building a classifier on {args.backbone}", flush=True)
    model = build_classifier(backbone, data=data, weights=weights,
                             **_given(args, "dropout"))
    print("[3/4] Training", flush=True)
    history = fit_two_phase(
        model, data, verbose=1 if sys.stdout.isatty() else 2,
        **_given(args, "head_epochs", "fine_tune_epochs", "learning_rate",
                 "fine_tune_learning_rate", "unfreeze_blocks", "label_smoothing"))
    model_path = os.path.join(args.out, MODEL_FILE)
    model.save(model_path)
    report, evaluation = None, None
    if data.test is not None or data.validation is not None:
        report = evaluate(model, data, top_k=min(5, model.num_classes), history=history)
        evaluation = report.save(os.path.join(args.out, EVALUATION_DIR))["report.html"]
    print("[4/4] Exporting for TF Serving", flush=True)
    export = export_saved_model(model, os.path.join(args.out, EXPORT_DIR))
    summary = {
        "data": {"directory": os.fspath(args.data_dir), "class_names": data.class_names,
                 "counts": data.counts,
                 "bad_files": [list(b) for b in (data.report.bad_files if data.report else [])]},
        "backbone": model.backbone_spec.get_config(),
        "training": model.training_summary,
        "evaluation": None if report is None else {
            "split": report.split, "accuracy": report.accuracy, "report": evaluation,
            "text": str(report.classification)},
        "model": model_path,
        "export": export,
    }
    with open(os.path.join(args.out, REPORT_FILE), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    if report is not None:
        print(f"{report.split} accuracy: {report.accuracy:.3f}; evaluation report: {evaluation}")
    print(f"model:  {model_path}\nexport: {export}\nreport: {os.path.join(args.out, REPORT_FILE)}")
    return 0
