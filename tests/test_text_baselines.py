"""Text baselines without pretraining: TF-IDF + logistic regression, and a
small network from scratch."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import tftransfer as tft
from tftransfer.evaluation.text_baselines import text_from_scratch
from tftransfer.evaluation.text_baselines import tfidf_logistic_regression

POSITIVE = ["a lovely warm place", "great food and kind staff", "lovely and great value",
            "kind people great view", "warm welcome lovely room", "great and kind"]
NEGATIVE = ["a cold dirty place", "awful food and rude staff", "dirty and awful value",
            "rude people awful view", "cold welcome dirty room", "awful and rude"]
TEXTS = POSITIVE + NEGATIVE
LABELS = np.array([1] * 6 + [0] * 6)


def test_tfidf_matches_scikit_learn_at_the_chosen_c():
    model = tfidf_logistic_regression(TEXTS, LABELS, c_values=(10.0,))
    reference = LogisticRegression(C=10.0, max_iter=10_000, random_state=0).fit(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(TEXTS), LABELS)
    vectors = model[0].transform(["lovely great", "rude awful"])
    np.testing.assert_allclose(model[-1].predict_proba(vectors), reference.predict_proba(vectors))
    assert model.predict(["lovely great", "rude awful"]).tolist() == [1, 0]


def test_tfidf_chooses_c_on_validation_data():
    validation = (["lovely rude place", "kind but dirty", "great awful view", "warm cold",
                   "a place", "food and staff"], [1, 0, 1, 1, 0, 1])
    c_values = (0.01, 1.0, 100.0)
    scores = {}
    for c in c_values:  # an independent sweep, each C fitted as scikit-learn's own pipeline
        probe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                              LogisticRegression(C=c, max_iter=10_000, random_state=0))
        probe.fit(np.array(TEXTS, dtype=object), LABELS)
        scores[c] = np.mean(probe.predict(validation[0]) == validation[1])
    assert len(set(scores.values())) > 1  # C matters on this validation set
    best = min(c for c in c_values if scores[c] == max(scores.values()))
    model = tfidf_logistic_regression(TEXTS, LABELS, validation_data=validation,
                                      c_values=c_values)
    assert model[-1].C == best


def test_text_from_scratch_learns_the_training_words():
    model = text_from_scratch(TEXTS, LABELS, seed=0, epochs=60)
    curve = tft.label_efficiency({"scratch": lambda x, y, *, seed: model},
                                 (np.array(TEXTS, dtype=object), LABELS),
                                 (np.array(["lovely great kind", "awful rude dirty"], dtype=object),
                                  np.array([1, 0])),
                                 labels_per_class=(6,), seeds=(0,))
    assert curve.accuracy["scratch"][0, 0] == 1.0


def test_errors():
    with pytest.raises(ValueError, match=r"`texts` must be a non-empty list of strings"):
        tfidf_logistic_regression([1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"`y` must hold one integer label per text \(12\)"):
        tfidf_logistic_regression(TEXTS, LABELS[:3])
    with pytest.raises(ValueError, match=r"`y` must hold at least 2 classes"):
        text_from_scratch(TEXTS, np.zeros(12, int))
