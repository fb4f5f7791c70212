"""`tftransfer evaluate`, `predict` and `export`: commands on the `.keras`
file that `tftransfer train` writes."""

import json
import os

import keras

from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.text import TextClassifier
from tftransfer.data.folders import image_dataset_from_folder
from tftransfer.evaluation.evaluate import evaluate as evaluate_model
from tftransfer.export.litert import export_litert
from tftransfer.export.serving import export_saved_model


def load(path):
    """The classifier in a `.keras` file (safe mode), or a ValueError saying
    what the file is instead."""
    if not os.path.isfile(path):
        raise ValueError(f"There is no model file at {path!r} (tftransfer train writes "
                         "OUT/model.keras).")
    model = keras.saving.load_model(path, compile=False)  # no optimizer state needed
    if not isinstance(model, Classifier):
        raise ValueError(f"{path!r} holds a {type(model).__name__}, not a tftransfer "
                         "classifier.")
    return model


def evaluate(args):
    model = load(args.model)
    data = image_dataset_from_folder(args.data_dir, image_size=model.input_shape[1:3],
                                     validation_split=0.0, shuffle=False,
                                     class_names=model.class_names, verbose=1)
    # The folder is read whole as one split, in file order: misclassified
    # examples name their files.
    report = evaluate_model(model, data.train, top_k=min(5, model.num_classes))
    for item in report.misclassified:
        item.file = data.files["train"][item.index]
    print(report)
    if args.out:
        files = report.save(args.out)
        print(f"report: {files['report.html']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0


def predict(args):
    model = load(args.model)
    result = model.classify(list(args.files), top_k=args.top_k)
    print(json.dumps(result.to_json(), indent=2) if args.json else result)
    return 0


def export(args):
    model = load(args.model)
    if args.format == "litert":
        calibration = None
        # Text classifiers take no int8 (`export_litert` says why), so no calibration images.
        if args.calibration_dir is not None and not isinstance(model, TextClassifier):
            data = image_dataset_from_folder(args.calibration_dir,
                                             image_size=model.input_shape[1:3],
                                             validation_split=0.0, verbose=0)
            calibration = data.train.unbatch().take(300).batch(32)
        quantization = None if args.quantization == "none" else args.quantization
        path = export_litert(model, args.out, quantization=quantization,
                             representative_data=calibration)
    else:
        path = export_saved_model(model, args.out, inputs=args.inputs, top_k=args.top_k)
    print(path)
    return 0
