import json
import os
import subprocess
import sys

import pytest

from tftransfer import cli
from tftransfer.demos.config import DemoConfig
from tftransfer.demos.digits import run_demo


def test_cli_demo_quick_writes_report_plot_and_a_servable_export(tmp_path, capsys):
    """`tftransfer demo --quick` (in this process: the same `cli.main`)."""
    out = tmp_path / "out"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "transfer (two-phase)" in printed and "from scratch" in printed
    assert "[6/6]" in printed
    assert "Held-out accuracy by labelled images per class" in printed
    assert "logistic regression on pixels" in printed
    report = json.loads((out / "report.json").read_text())
    # What `run_demo` returned (printed by the CLI) is what it wrote.
    assert f"transfer (two-phase):  {report['transfer_accuracy']:.3f}" in printed
    for key in ("transfer_accuracy", "scratch_accuracy", "head_only_accuracy",
                "source_accuracy_inference_mode"):
        assert 0.0 <= report[key] <= 1.0
    assert set(report["seconds"]) >= {"source_pretraining", "head", "fine_tune", "scratch",
                                      "export", "total"}
    assert os.path.isfile(os.path.join(report["export_dir"], "saved_model.pb"))
    assert os.path.getsize(report["learning_curve"]) > 10_000  # a real PNG
    assert report["data"]["target_train"] == 5 * DemoConfig().shots
    served = report["served_sample"]
    assert served["tftransfer_imported"] is False
    assert len(served["predicted"]) == 8
    assert set(served["predicted"]) <= {"5", "6", "7", "8", "9"}
    assert report["history"]["transfer"]["phase"] == [1, 1, 2, 2]  # --quick: 2 + 2 epochs
    assert set(report["epochs_to_90_percent"]) == {"transfer", "scratch"}
    assert 0.5 < report["pixel_nearest_neighbour_accuracy"] <= 1.0
    curve = report["label_efficiency"]
    assert curve["labels_per_class"] == [1, 5] and curve["seeds"] == [0]
    assert list(curve["mean"]) == ["transfer", "from scratch", "1-NN on pixels",
                                   "logistic regression on pixels"]
    for runs in curve["accuracy"].values():
        assert len(runs) == 2 and all(len(seeds) == 1 for seeds in runs)
        assert all(0.0 <= a <= 1.0 for seeds in runs for a in seeds)
    assert curve["summary"].startswith("transfer is ahead")
    assert os.path.getsize(curve["plot"]) > 10_000
    assert os.path.isfile(report["evaluation"]["report"])


def test_cli_lists_backbones():
    result = subprocess.run([sys.executable, "-m", "tftransfer.cli", "backbones"],
                            capture_output=True, text=True, check=True)
    assert "efficientnet_b0" in result.stdout and "keras.applications.EfficientNetB0" in result.stdout


@pytest.mark.slow
@pytest.mark.extended  # the quick run above checks the same path at 2 + 2 epochs
def test_full_demo_transfers(tmp_path):
    """The default demo, as `tftransfer demo` runs it: digits at random
    positions on a 24-pixel canvas. Its targets: a source model right in
    inference mode; with 1-3 labels per class, transfer's seed mean at least
    10 points above the best baseline's (from scratch with its BatchNorm
    statistics recomputed, 1-NN and logistic regression on pixels); a
    from-scratch baseline that really trained (chance is 0.2)."""
    report = run_demo(tmp_path)
    assert report["source_accuracy_inference_mode"] >= 0.95
    assert report["transfer_accuracy"] >= 0.7
    assert report["head_only_accuracy"] >= 0.65
    assert report["transfer_accuracy"] >= report["head_only_accuracy"] - 0.02
    assert report["scratch_accuracy"] >= 0.4
    curve = report["label_efficiency"]
    for i, count in enumerate(curve["labels_per_class"]):
        best = max(curve["mean"][m][i] for m in curve["methods"] if m != "transfer")
        if count <= 3:
            assert curve["mean"]["transfer"][i] >= best + 0.10, (count, curve["mean"])
    assert min(curve["mean"]["from scratch"]) > 0.25  # not collapsed to chance
    served = report["served_sample"]
    assert sum(t == p for t, p in zip(served["true"], served["predicted"])) >= 4
