"""Text baselines: what a model must beat on a text task without transfer.

- `tfidf_logistic_regression`: TF-IDF of words and word pairs, then a
  logistic regression whose C is chosen as `logistic_regression` chooses it.
- `text_from_scratch`: a small Keras text classifier (its own vocabulary
  from the training texts, a word embedding trained from random
  initialization, mean-pooled, a linear layer), the "no pretraining" network.

Both return a fitted model with ``predict(texts)``: class labels for the
first, one score per class for the second (`tftransfer.label_efficiency`
reads both).
"""

import keras
import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from tftransfer.baselines import DEFAULT_C_VALUES
from tftransfer.baselines import MAX_ITER
from tftransfer.baselines import fit_choosing_c

TEXT_FROM_SCRATCH_EPOCHS = 30
EMBEDDING_DIM = 32


def _texts(texts, name):
    array = np.asarray(texts, dtype=object)
    if array.ndim != 1 or len(array) == 0 or not all(isinstance(t, str) for t in array):
        raise ValueError(f"`{name}` must be a non-empty list of strings. Received: {name} of "
                         f"type {type(texts).__name__}")
    return array


def _labels(y, count, name="y"):
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != count:
        raise ValueError(f"`{name}` must hold one integer label per text ({count}). Received: "
                         f"{name} of shape {y.shape} and dtype {y.dtype}")
    if len(np.unique(y)) < 2:
        raise ValueError(f"`{name}` must hold at least 2 classes. Received: classes "
                         f"{np.unique(y).tolist()}")
    return y


def tfidf_logistic_regression(texts, y, *, validation_data=None, c_values=DEFAULT_C_VALUES,
                              seed=0):
    """Fits TF-IDF (words and word pairs, sublinear term frequencies) and a
    logistic regression on `texts`, choosing C as `logistic_regression`
    does (on `validation_data` ``(texts, labels)``, else by cross-validation,
    else 1.0 with one text in a class).

    Returns:
        The fitted `sklearn.pipeline.Pipeline`; ``model[-1].C`` is the C.

    Example:

    >>> model = tfidf_logistic_regression(
    ...     ["good film", "great film", "bad film", "awful film"], [1, 1, 0, 0])
    >>> model.predict(["a good one", "an awful one"]).tolist()
    [1, 0]
    """
    texts = _texts(texts, "texts")
    y = _labels(y, len(texts))
    if validation_data is not None:
        x_val = _texts(validation_data[0], "validation_data[0]")
        validation_data = (x_val, _labels(validation_data[1], len(x_val),
                                          "validation_data[1]"))

    def build(c):
        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed))

    return fit_choosing_c(build, texts, y, validation_data=validation_data,
                          c_values=c_values, seed=seed)


def text_from_scratch(texts, y, *, seed=0, epochs=TEXT_FROM_SCRATCH_EPOCHS, batch_size=8,
                      learning_rate=1e-2, sequence_length=64):
    """Trains a small text classifier from random initialization on `texts`:
    a vocabulary of the training texts' words (`TextVectorization`), a
    `EMBEDDING_DIM`-wide embedding, mean pooling over the words, dropout and
    a linear layer; Adam, `epochs` epochs.

    Returns:
        The trained `keras.Model` (strings in, one logit per class out).
    """
    texts = _texts(texts, "texts")
    y = _labels(y, len(texts))
    keras.utils.set_random_seed(seed)
    vectorize = keras.layers.TextVectorization(output_sequence_length=sequence_length)
    vectorize.adapt(list(texts))
    inputs = keras.Input((), dtype="string", name="text")
    tokens = vectorize(inputs)
    embedded = keras.layers.Embedding(vectorize.vocabulary_size(), EMBEDDING_DIM,
                                      mask_zero=True)(tokens)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    outputs = keras.layers.Dense(int(y.max()) + 1)(keras.layers.Dropout(0.2)(pooled))
    model = keras.Model(inputs, outputs, name="text_from_scratch")
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tf.constant(list(texts)), y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model
