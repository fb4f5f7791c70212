"""LoRA fine-tuning: `fine_tune(method="lora")`, `fit_two_phase`, merging, saving, export."""

import keras
import numpy as np
import pytest
from helpers import labelled
from helpers import run_without_tftransfer
from helpers import tiny_classifier
from helpers import weights_by_path

import tftransfer as tft
from tftransfer.backbones.text import tiny_preset
from tftransfer.training.lora import check_lora
from tftransfer.training.lora import enable_lora
from tftransfer.training.lora import has_lora
from tftransfer.training.lora import is_lora_variable
from tftransfer.training.lora import merge_lora
from tftransfer.training.lora import trainable_parameters

LIST_VARIABLES = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_pixels"](images=tf.constant(np.load(sys.argv[2])))
print(json.dumps({
    "variables": [v.name for v in loaded.variables],
    "probabilities": out["probabilities"].numpy().tolist(),
    "modules": sorted(m for m in sys.modules if m.startswith("tftransfer")),
}))
"""


def lora_tuned(rank=2, epochs=2, **kwargs):
    keras.utils.set_random_seed(0)
    model = tiny_classifier()
    x, y = labelled()
    tft.fine_tune(model, x, y=y, epochs=epochs, unfreeze_blocks=1, method="lora", rank=rank,
                  learning_rate=1e-2, verbose=0, **kwargs)
    return model, x


def test_lora_trains_only_the_factors_bias_and_head():
    keras.utils.set_random_seed(0)
    model = tiny_classifier()
    before = weights_by_path(model)
    x, y = labelled()
    tft.fine_tune(model, x, y=y, epochs=2, unfreeze_blocks=1, method="lora", rank=2,
                  learning_rate=1e-2, verbose=0)
    conv = model.backbone.get_layer("block3_conv")  # 3x3, 8 -> 12 channels
    assert conv.lora_enabled and conv.lora_rank == 2
    head = 12 * 3 + 3
    assert trainable_parameters(model) == 3 * 3 * 8 * 2 + 2 * 12 + 12 + head
    after = weights_by_path(model)
    changed = {path for path, value in before.items() if not np.array_equal(value, after[path])}
    # The raw kernels, the lower blocks and BatchNormalization's statistics
    # stay bit-identical; the LoRA factors (new) and the bias and head train.
    assert not any(path.startswith(("tiny_backbone/block1", "tiny_backbone/block2"))
                   for path in changed), changed
    assert not any("bn" in path for path in changed), changed
    assert not any(path.endswith("block3_conv/kernel") for path in changed), changed
    assert any(path.endswith("block3_conv/bias") for path in changed)
    assert np.abs(keras.ops.convert_to_numpy(conv.lora_kernel_b)).max() > 0


def test_merged_kernel_is_kernel_plus_scaled_product():
    model, x = lora_tuned()
    conv = model.backbone.get_layer("block3_conv")
    raw = next(w for w in conv.weights if w.name == "kernel").numpy()
    a, b = conv.lora_kernel_a.numpy(), conv.lora_kernel_b.numpy()
    expected = raw + (conv.lora_alpha / conv.lora_rank) * np.einsum("hwir,ro->hwio", a, b)
    merged = merge_lora(model)
    assert has_lora(model) and not has_lora(merged)
    assert not any(is_lora_variable(v) for v in merged.weights)
    assert merged.backbone.get_layer("block3_conv").get_config().get("lora_rank") is None
    np.testing.assert_allclose(merged.backbone.get_layer("block3_conv").kernel.numpy(),
                               expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    assert merged.class_names == model.class_names
    assert merged.training_summary == model.training_summary


def test_merge_lora_of_a_model_without_lora_is_the_model():
    model = tiny_classifier()
    assert merge_lora(model) is model


def test_keras_round_trip(tmp_path):
    model, x = lora_tuned()
    path = tmp_path / "lora.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_export_merges_lora(tmp_path):
    model, x = lora_tuned()
    path = tft.export_saved_model(model, tmp_path / "serving", warmup=False)  # merges itself
    np.save(tmp_path / "x.npy", x[:4])
    served = run_without_tftransfer(LIST_VARIABLES, path, tmp_path / "x.npy")
    assert served["variables"] and not any("lora" in name for name in served["variables"])
    np.testing.assert_allclose(served["probabilities"],
                               model.predict_proba(x[:4], verbose=0), atol=1e-5)
    assert served["modules"] == []
    assert tft.read_metadata(path)["training"][-1]["method"] == "lora"
    assert tft.has_lora(model)  # the model itself keeps its LoRA layers


def test_fit_two_phase_with_lora():
    keras.utils.set_random_seed(0)
    model = tiny_classifier()
    x, y = labelled()
    history = tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1,
                                unfreeze_blocks=2, method="lora", rank=3, verbose=0)
    assert history.history["phase"] == [1, 2]
    assert [model.backbone.get_layer(f"block{b}_conv").lora_rank for b in (2, 3)] == [3, 3]
    assert not model.backbone.get_layer("block1_conv").lora_enabled
    summary = model.training_summary[-1]
    assert summary["method"] == "lora" and summary["rank"] == 3


def test_full_fine_tuning_is_unchanged():
    keras.utils.set_random_seed(0)
    model = tiny_classifier()
    x, y = labelled()
    tft.fine_tune(model, x, y=y, epochs=1, unfreeze_blocks=1, verbose=0)
    assert not has_lora(model)
    assert trainable_parameters(model) == 3 * 3 * 8 * 12 + 12 + 12 * 3 + 3


def test_a_second_lora_fine_tuning_continues_the_factors():
    model, x = lora_tuned(epochs=1)
    conv = model.backbone.get_layer("block3_conv")
    factor = conv.lora_kernel_a
    tft.fine_tune(model, x, y=labelled()[1], epochs=1, unfreeze_blocks=1, method="lora",
                  rank=2, verbose=0)
    assert conv.lora_kernel_a is factor
    assert not next(w for w in conv.weights if w.name == "kernel").trainable


def test_text_backbone_adapts_query_and_value(tmp_path):
    pytest.importorskip("keras_hub", reason='keras-hub is not installed: pip install "tftransfer[text]"')
    keras.utils.set_random_seed(0)
    model = tft.build_text_classifier(tiny_preset(str(tmp_path / "bert")),
                                      class_names=["neg", "pos"], sequence_length=8)
    names = enable_lora(model, rank=2, unfreeze_blocks=1)
    assert names == ["value", "query"]
    factors = [w.path for w in model.weights if is_lora_variable(w)]
    assert all(p.startswith("transformer_layer_1/self_attention_layer/") for p in factors)
    assert len(factors) == 4
    # Kernels (8 features, 2 heads, 4 per head): factors a (8, 2, rank) and
    # b (rank, 4), plus the (2, 4) bias; the head is Dense(8 -> 2).
    per_layer = 8 * 2 * 2 + 2 * 4 + 2 * 4
    assert trainable_parameters(model) == 2 * per_layer + 8 * 2 + 2
    texts = np.array(["a good film", "an awful book", "good", "bad"], dtype=object)
    tft.fine_tune(model, texts, y=np.array([1, 0, 1, 0]), epochs=1, unfreeze_blocks=1,
                  method="lora", rank=2, verbose=0)
    path = tmp_path / "text.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(texts, verbose=0), model.predict(texts, verbose=0),
                               atol=1e-5)
    np.testing.assert_allclose(merge_lora(model).predict(texts, verbose=0),
                               model.predict(texts, verbose=0), atol=1e-5)


@pytest.mark.parametrize("method", ["LoRA", "qlora", None, 1])
def test_bad_method(method):
    x, y = labelled()
    with pytest.raises(ValueError, match=rf"`method` must be one of .*Received: method={method!r}"):
        tft.fine_tune(tiny_classifier(), x, y=y, epochs=1, method=method)


@pytest.mark.parametrize("rank", [0, -1, 2.5, True, "8"])
def test_bad_rank(rank):
    x, y = labelled()
    with pytest.raises(ValueError, match=rf"`rank` must be a positive integer.*Received: rank={rank!r}"):
        tft.fit_two_phase(tiny_classifier(), x, y=y, head_epochs=1, fine_tune_epochs=1,
                          method="lora", rank=rank)


def test_bad_rank_fails_before_phase_one():
    model = tiny_classifier()
    before = weights_by_path(model)
    x, y = labelled()
    with pytest.raises(ValueError, match="Received: rank=0"):
        tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, method="lora",
                          rank=0, verbose=0)
    after = weights_by_path(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_no_layer_to_adapt():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="block2_depthwise")(x)
    backbone = keras.Model(inputs, x, name="depthwise_top")
    model = tft.build_classifier(backbone, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"LoRA found no layer to adapt in block2.*"
                                         r"Received: unfreeze_blocks=1, from_layer=None"):
        check_lora(model, 4, unfreeze_blocks=1)
    assert check_lora(model, 4, unfreeze_blocks=2) == ["block1_conv"]


def test_rank_differs_from_existing_lora():
    model, x = lora_tuned(epochs=1)
    with pytest.raises(ValueError, match=r"'block3_conv' has LoRA of rank 2 already.*"
                                         r"Received: rank=4"):
        tft.fine_tune(model, x, y=labelled()[1], epochs=1, unfreeze_blocks=1, method="lora",
                      rank=4)
