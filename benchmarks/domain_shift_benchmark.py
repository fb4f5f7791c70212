"""AdaBN on shifted digits: a CNN trained on the bundled digits 0-9 (1,200 images),
scored on 597 held-out digits as they are and under four shifts (digits-M, inverted, noisy,
thick), before and after `tft.adapt_batchnorm` on each domain's unlabelled images. Seeds 0-2.

    python benchmarks/domain_shift_benchmark.py   # writes benchmarks/results/domain_shift.json
"""
import json
import os

import keras
import numpy as np

import tftransfer as tft
from tftransfer.data.digits import load_digits
from tftransfer.demos.digits import digits_cnn

images, labels = load_digits(image_size=16)
order = np.random.default_rng(0).permutation(len(labels))
train, test = order[:1200], order[1200:]


def rgb(x):
    return np.repeat(x, 3, -1)


out = {}
for seed in (0, 1, 2):
    keras.utils.set_random_seed(seed)
    bb = digits_cnn(input_shape=(16, 16, 3), name="bb")
    x = keras.layers.GlobalAveragePooling2D()(bb.output)
    model = keras.Model(bb.input, keras.layers.Dense(10)(keras.layers.Dropout(0.3)(x)))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(rgb(images[train]), labels[train], epochs=15, batch_size=32, verbose=0)
    domains = {"source": (rgb(images[test]), labels[test]),
               "digits-M": (tft.digits_m(images[test], seed=seed), labels[test]),
               "inverted": (rgb(tft.shift_digits(images[test], "inverted")), labels[test]),
               "noisy": (rgb(tft.shift_digits(images[test], "noisy", seed=seed)), labels[test]),
               "thick": (rgb(tft.shift_digits(images[test], "thick")), labels[test])}
    before = tft.evaluate_domains(model, domains, top_k=1).accuracy
    weights = model.get_weights()
    after = {}
    for name, (x_t, y_t) in domains.items():
        model.set_weights(weights)
        tft.adapt_batchnorm(model, x_t)  # the target's images only, no labels
        after[name] = tft.evaluate(model, (x_t, y_t), top_k=1).accuracy
    model.set_weights(weights)
    out[seed] = {"before": before, "adabn": after}
    print(seed, {k: (round(before[k], 3), round(after[k], 3)) for k in before}, flush=True)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "domain_shift.json")
with open(RESULTS, "w") as f:
    json.dump(out, f, indent=1)
