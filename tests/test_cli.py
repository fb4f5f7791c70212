"""`tftransfer train / predict / evaluate / export`: a folder to a served model
from the command line (issue 10, item 5)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import tftransfer as tft
from helpers import run_without_tftransfer
from test_serving_bytes import REST
from tftransfer import cli

pytestmark = pytest.mark.slow  # trains and exports a model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 50x70 JPEGs, plus a broken and a truncated file."""
    root = tmp_path_factory.mktemp("photos")
    yy, xx = np.mgrid[0:50, 0:70]
    for c in range(3):
        os.makedirs(root / f"class_{c}")
        for i in range(6):
            photo = np.stack([(xx * (c + 2)) % 256, (yy * (i + 1)) % 256,
                              np.full_like(xx, 80 * c)], -1).astype("uint8")
            Image.fromarray(photo).save(root / f"class_{c}" / f"{i}.jpg", quality=95)
    (root / "class_0" / "broken.jpg").write_bytes(b"not a jpeg")
    good = (root / "class_1" / "0.jpg").read_bytes()
    (root / "class_1" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = cli.main(["train", str(folder), "--backbone", "mobilenet_v3_small", "--weights",
                     "none", "--image-size", "40", "--out", str(out), "--head-epochs", "1",
                     "--fine-tune-epochs", "1", "--test-split", "0.2"])
    assert code == 0
    return out


def test_train_writes_the_model_the_export_and_a_report(trained):
    assert sorted(os.listdir(trained)) == ["evaluation", "export", "model.keras", "report.json"]
    assert {"report.html", "report.json", "report.md", "confusion_matrix.png",
            "reliability.png", "learning_curves.png"} <= set(os.listdir(trained / "evaluation"))
    report = json.loads((trained / "report.json").read_text())
    assert report["data"]["class_names"] == ["class_0", "class_1", "class_2"]
    assert sorted(os.path.basename(b[0]) for b in report["data"]["bad_files"]) == [
        "broken.jpg", "truncated.jpg"]
    assert [s["phase"] for s in report["training"]] == [1, 2]
    assert report["evaluation"]["split"] == "test"
    assert report["evaluation"]["report"] == str(trained / "evaluation" / "report.html")
    assert tft.read_metadata(report["export"])["backbone"]["input_shape"] == [40, 40, 3]


def test_the_export_answers_a_rest_body_of_base64_jpegs(trained, folder, tmp_path):
    files = [folder / "class_2" / "1.jpg", folder / "class_0" / "3.jpg"]
    body = tmp_path / "body.json"
    body.write_text(json.dumps(tft.serving_request(files)))
    answer = run_without_tftransfer(REST, trained / "export" / "1", body)
    names = [p["class_names"] for p in answer["predictions"]]
    assert len(names) == 2 and set(names) <= {"class_0", "class_1", "class_2"}


def test_predict_evaluate_and_export_take_the_model_file(trained, folder, tmp_path, capsys):
    model = str(trained / "model.keras")
    assert cli.main(["predict", model, str(folder / "class_1" / "2.jpg"), "--json",
                     "--top-k", "2"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted[0]["source"].endswith("2.jpg") and len(predicted[0]["top_k"]) == 2
    assert cli.main(["evaluate", model, str(folder), "--json", str(tmp_path / "r.json"),
                     "--out", str(tmp_path / "evaluation")]) == 0
    assert "accuracy" in capsys.readouterr().out
    written = json.loads((tmp_path / "r.json").read_text())
    assert written == json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert written["num_examples"] == 18  # the folder's good images
    page = (tmp_path / "evaluation" / "report.html").read_text()
    assert all(f"<td>class_{i}</td>" in page for i in range(3)), page[:2000]  # per-class rows
    for item in written["misclassified"]:  # the files, as the folder holds them
        assert os.path.basename(os.path.dirname(item["file"])) == item["true_class"]
    assert cli.main(["export", model, "--out", str(tmp_path / "served"), "--inputs",
                     "pixels"]) == 0
    version = capsys.readouterr().out.strip().splitlines()[-1]
    assert list(tft.read_metadata(version)["signatures"]) == ["serving_default"]
    assert cli.main(["export", model, "--out", str(tmp_path / "phone"), "--format", "litert",
                     "--quantization", "int8", "--calibration-dir", str(folder)]) == 0
    assert sorted(os.listdir(tmp_path / "phone")) == ["labels.txt", "model.tflite",
                                                      "tftransfer.json"]


def test_errors_are_one_line_with_exit_code_1_and_usage_is_2(trained, capsys):
    assert cli.main(["predict", str(trained / "model.keras"), "no/such.jpg"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tftransfer: error: There is no file or folder at 'no/such.jpg'. "
                   "Received: inputs[0]='no/such.jpg'"]
    with pytest.raises(SystemExit) as usage:
        cli.main(["train"])
    assert usage.value.code == 2
    assert cli.main(["predict", str(trained / "nothing.keras"), "x.jpg"]) == 1
    assert "There is no model file" in capsys.readouterr().err


def test_rank_backbones_scores_candidates_on_the_folder(trained, folder, tmp_path, capsys):
    model = str(trained / "model.keras")  # a classifier's file gives its backbone
    assert cli.main(["rank-backbones", str(folder), "--candidates", "mobilenet_v3_small", model,
                     "--weights", "none", "--image-size", "40", "--method", "logme",
                     "--out", str(tmp_path / "rank")]) == 0
    printed = capsys.readouterr().out
    assert "mobilenet_v3_small" in printed and "model.keras" in printed
    ranking = json.loads((tmp_path / "rank" / "ranking.json").read_text())
    assert ranking["method"] == "logme" and len(ranking["rows"]) == 2
    assert (tmp_path / "rank" / "ranking.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["rank-backbones", str(folder), "--candidates", "mobilenet_v3_small",
                     "efficientnet_b1", "--weights", "none"]) == 1
    assert "Pass --image-size" in capsys.readouterr().err
