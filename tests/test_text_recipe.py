"""The text recipe's defaults (LP-FT, all blocks at 3e-5) against the image
recipe's, and how `fit_two_phase`'s `head_method` resolves; on a tiny BERT."""

import pytest

keras_hub = pytest.importorskip(
    "keras_hub", reason='keras-hub is not installed: pip install "tftransfer[text]"'
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from helpers import tiny_backbone  # noqa: E402

import tftransfer as tft  # noqa: E402
from tftransfer.backbones.text import tiny_preset  # noqa: E402
from tftransfer.training.defaults import IMAGE_RECIPE  # noqa: E402
from tftransfer.training.defaults import TEXT_RECIPE  # noqa: E402
from tftransfer.training.defaults import recipe_defaults  # noqa: E402

TEXTS = np.array(["a good film", "the book is awful", "great", "bad film, bad book .",
                  "good book", "awful film", "a great book", "bad"] * 2, dtype=object)
LABELS = np.array([1, 0, 1, 0, 1, 0, 1, 0] * 2)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_preset(str(tmp_path_factory.mktemp("tiny-bert")))


def tiny(tiny_dir, **kwargs):
    keras.utils.set_random_seed(0)
    return tft.build_text_classifier(tiny_dir, class_names=["neg", "pos"], sequence_length=8,
                                     **kwargs)


def test_text_defaults_are_a_probe_then_all_blocks_at_3e_5(tiny_dir):
    model = tiny(tiny_dir)
    assert recipe_defaults(model) is TEXT_RECIPE
    history = tft.fit_two_phase(model, TEXTS[:12], (TEXTS[12:], LABELS[12:]), y=LABELS[:12],
                                fine_tune_epochs=2, early_stopping=False, verbose=0)
    probe, phase2 = model.training_summary
    assert probe["phase"] == "linear_probe" and probe["num_train"] == 12
    assert phase2["phase"] == 2 and phase2["learning_rate"] == 3e-5
    assert phase2["unfrozen_blocks"] == ["transformer_layer_0", "transformer_layer_1"]
    assert history.history["phase"] == [2, 2]


def test_the_probe_is_the_head_phase_2_starts_from(tiny_dir, monkeypatch):
    # Phase 2 with zero learning rate keeps the head where the probe put it.
    model = tiny(tiny_dir)
    tft.fit_two_phase(model, TEXTS, y=LABELS, fine_tune_epochs=0, verbose=0)
    after_probe = model.head.output_dense.kernel.numpy()
    reference = tiny(tiny_dir)
    tft.fit_linear_probe(reference, TEXTS, LABELS)
    np.testing.assert_allclose(after_probe, reference.head.output_dense.kernel.numpy())


def test_fine_tune_alone_on_text_takes_the_text_defaults(tiny_dir):
    model = tiny(tiny_dir)
    tft.fine_tune(model, TEXTS, y=LABELS, epochs=1, verbose=0)
    summary = model.training_summary[-1]
    assert summary["learning_rate"] == TEXT_RECIPE.fine_tune_learning_rate
    assert len(summary["unfrozen_blocks"]) == 2  # "all" of the tiny BERT's two


def test_head_epochs_given_means_adam_head_training(tiny_dir):
    model = tiny(tiny_dir)
    tft.fit_two_phase(model, TEXTS, y=LABELS, head_epochs=1, fine_tune_epochs=1, verbose=0)
    assert [s["phase"] for s in model.training_summary] == [1, 2]


def test_a_head_with_hidden_layers_is_trained_not_probed(tiny_dir):
    model = tiny(tiny_dir, hidden_units=(4,))
    tft.fit_two_phase(model, TEXTS, y=LABELS, fine_tune_epochs=1, early_stopping=False,
                      verbose=0)
    phases = [s["phase"] for s in model.training_summary]
    assert phases == [1, 2] and model.training_summary[0]["epochs"] == TEXT_RECIPE.head_epochs


def test_image_defaults_are_unchanged():
    model = tft.build_classifier(tiny_backbone(), num_classes=2)
    assert recipe_defaults(model) is IMAGE_RECIPE
    assert (IMAGE_RECIPE.head_method, IMAGE_RECIPE.head_epochs, IMAGE_RECIPE.fine_tune_epochs,
            IMAGE_RECIPE.unfreeze_blocks, IMAGE_RECIPE.learning_rate) == ("train", 5, 5, 2, 1e-3)
    assert IMAGE_RECIPE.fine_tune_rate(1e-3) == pytest.approx(1e-4)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3))
    tft.fit_two_phase(model, images, y=np.arange(8) % 2, fine_tune_epochs=1, verbose=0)
    head, phase2 = model.training_summary
    assert head["phase"] == 1 and head["epochs"] == 5
    assert phase2["learning_rate"] == pytest.approx(1e-4)


def test_bad_head_method(tiny_dir):
    model = tiny(tiny_dir)
    with pytest.raises(ValueError, match=r"`head_method` must be one of .*head_method='probe'"):
        tft.fit_two_phase(model, TEXTS, y=LABELS, head_method="probe")
    with pytest.raises(ValueError, match=r"`head_epochs` counts .*head_epochs=3"):
        tft.fit_two_phase(model, TEXTS, y=LABELS, head_method="linear_probe", head_epochs=3)
    assert model.training_summary == []


def test_a_bad_unfreeze_request_fails_before_the_probe(tiny_dir):
    model = tiny(tiny_dir)
    with pytest.raises(ValueError, match="Cannot unfreeze 7 blocks"):
        tft.fit_two_phase(model, TEXTS, y=LABELS, unfreeze_blocks=7)
    assert model.training_summary == []


def test_sequence_length_auto_holds_99_percent_of_the_texts(tiny_dir, tmp_path):
    # "a good film": 3 word pieces, 5 tokens with [CLS] and [SEP] -> 8.
    keras.utils.set_random_seed(0)
    model = tft.build_text_classifier(tiny_dir, num_classes=2, sequence_length="auto",
                                      texts=["a good film"] * 10 + ["bad"] * 10)
    features = model.text_preprocessing(np.array(["a good film"], dtype=object))
    assert features["token_ids"].shape == (1, 8)
    # 12 word pieces in one text of 200: the 99% quantile is below it.
    long_text = " ".join(["good"] * 12)
    short = tft.build_text_classifier(tiny_dir, num_classes=2, sequence_length="auto",
                                      texts=["bad"] * 199 + [long_text])
    assert short.text_preprocessing(np.array([long_text], dtype=object))[
        "token_ids"].shape == (1, 8)
    # Longer than the encoder's 32 positions: capped there.
    capped = tft.build_text_classifier(tiny_dir, num_classes=2, sequence_length="auto",
                                       texts=[" ".join(["good"] * 40)])
    assert capped.text_preprocessing(np.array(["good"], dtype=object))[
        "token_ids"].shape == (1, 32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.text_preprocessing(np.array(["a good film"], dtype=object))[
        "token_ids"].shape == (1, 8)


def test_sequence_length_auto_needs_texts(tiny_dir):
    with pytest.raises(ValueError, match=r"`texts` must be a non-empty list of strings .*"
                                         r"Received: texts of type NoneType"):
        tft.build_text_classifier(tiny_dir, num_classes=2, sequence_length="auto")
    with pytest.raises(ValueError, match=r"`texts` is read only with sequence_length='auto'.*"
                                         r"sequence_length=8 and 1 texts"):
        tft.build_text_classifier(tiny_dir, num_classes=2, sequence_length=8, texts=["a"])


def test_the_defaults_table_in_the_training_docs_is_the_code():
    import os
    import re

    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "training.md")).read()
    table = text.split("<!-- recipe-defaults:", 1)[1].split("\n\n", 1)[0]
    rows = {m.group(1): (m.group(2).strip(), m.group(3).strip())
            for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", table, re.M)}

    def shown(recipe, field):
        value = getattr(recipe, field)
        if field == "fine_tune_learning_rate" and value is None:
            return "a tenth of `learning_rate`"
        return f"`{value}`" if field == "head_method" else str(value)

    fields = ("head_method", "head_epochs", "fine_tune_epochs", "unfreeze_blocks",
              "learning_rate", "fine_tune_learning_rate")
    assert set(rows) == set(fields)
    for field in fields:
        assert rows[field] == (shown(IMAGE_RECIPE, field), shown(TEXT_RECIPE, field)), field


def test_the_measured_table_in_the_text_docs_is_the_benchmarks():
    # docs/text.md repeats benchmarks/results/text_runs.jsonl: kept equal here.
    import importlib.util
    import os

    root = os.path.join(os.path.dirname(__file__), "..")
    spec = importlib.util.spec_from_file_location(
        "text_benchmark", os.path.join(root, "benchmarks", "text_benchmark.py"))
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    records = benchmark.read_runs(os.path.join(root, "benchmarks", "results", "text_runs.jsonl"))
    page = open(os.path.join(root, "docs", "text.md"), encoding="utf-8").read()
    assert records and benchmark.docs_table(records) in page


def test_the_learning_rate_finder_unfreezes_what_fine_tune_would(tiny_dir, monkeypatch):
    from tftransfer.training import lr_finder

    seen = []

    class Spy(lr_finder.FineTunePhase):
        def __init__(self, **kwargs):
            seen.append(kwargs["unfreeze_blocks"])
            super().__init__(**kwargs)

    monkeypatch.setattr(lr_finder, "FineTunePhase", Spy)
    tft.find_learning_rate(tiny(tiny_dir), TEXTS, LABELS, phase="fine_tune", num_steps=5,
                           batch_size=8, verbose=0)
    image_model = tft.build_classifier(tiny_backbone(), num_classes=2)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3))
    tft.find_learning_rate(image_model, images, np.arange(8) % 2, phase="fine_tune",
                           num_steps=5, batch_size=4, verbose=0)
    assert seen == [TEXT_RECIPE.unfreeze_blocks, IMAGE_RECIPE.unfreeze_blocks] == ["all", 2]
