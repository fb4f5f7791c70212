"""The demo's label-efficiency curve: transfer against training from scratch
and two non-neural baselines, over labels per class and seeds.

Every method gets the same labelled digits 5-9 for a (seed, label count) and
is scored on the same held-out target digits, which no method trains on:

- **transfer**: the source model saved by the demo, loaded afresh each run
  and cut as in the demo, trained with `fit_two_phase` (the demo's settings);
- **from scratch**: the same architecture, randomly initialized, trained end
  to end for the same number of epochs with the same optimizer and batch
  size, then its BatchNormalization statistics recomputed on its training
  images (`tftransfer.adapt_batchnorm`). Without that step the network
  that fits its few images in training mode predicts one class in inference
  mode: with 2 labels per class it trains 20 steps, after which the moving
  averages (momentum 0.9) still hold 12% of their initial values. On the
  centred digits it scored 0.22 and 0.34 at 1 and 2 labels per class (means
  of 3 seeds; chance: 0.20) against 0.75 and 0.88 with the statistics
  recomputed (docs/evaluation.md);
- **1-nearest-neighbour** and **logistic regression** on raw pixels
  (`tftransfer.evaluation.pixel_baseline`; the regression's C chosen by
  cross-validation on the labelled images).
"""

import keras
import numpy as np

from tftransfer.backbones.load import load_backbone
from tftransfer.classifiers.image import build_classifier
from tftransfer.evaluation.label_efficiency import label_efficiency
from tftransfer.evaluation.label_efficiency import pixel_baseline
from tftransfer.training.recipe import fit_two_phase
from tftransfer.transfer.adabn import adapt_batchnorm

POOL_FRACTION = 0.4  # of the target digits; the rest is held out


def pool_and_test(images, labels, seed):
    """A fixed split of the target digits into a pool to draw labels from
    and a held-out test set."""
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(POOL_FRACTION * len(labels))
    return (images[order[:cut]], labels[order[:cut]]), (images[order[cut:]], labels[order[cut:]])


def methods(config, source_path, architecture, num_classes):
    """``{name: method}`` of the curve (see the module)."""
    names = [str(i) for i in range(num_classes)]
    epochs = config.head_epochs + config.fine_tune_epochs

    def transfer(x, y, *, seed):
        keras.utils.set_random_seed(seed)
        backbone = load_backbone(source_path, cut_at=config.cut_at)
        model = build_classifier(backbone, class_names=names, pooling=config.pooling)
        fit_two_phase(model, x, y=y, head_epochs=config.head_epochs,
                      fine_tune_epochs=config.fine_tune_epochs,
                      unfreeze_blocks=config.unfreeze_blocks, learning_rate=config.learning_rate,
                      batch_size=config.batch_size, early_stopping=False, verbose=0)
        return model

    def from_scratch(x, y, *, seed):
        model = scratch_model(config, architecture, x.shape[1:], num_classes, seed=seed)
        model.fit(x, y, epochs=epochs, batch_size=config.batch_size, verbose=0)
        adapt_batchnorm(model, x)
        return model

    return {
        "transfer": transfer,
        "from scratch": from_scratch,
        "1-NN on pixels": pixel_baseline("nearest_neighbour"),
        "logistic regression on pixels": pixel_baseline("logistic_regression"),
    }


def scratch_model(config, architecture, input_shape, num_classes, *, seed):
    """The transfer model's architecture, randomly initialized and compiled:
    the backbone cut where the demo cuts the source model, the same pooling,
    the dropout `build_classifier` uses and a linear layer."""
    keras.utils.set_random_seed(seed + 1)
    backbone = architecture(input_shape=input_shape, bn_momentum=config.bn_momentum,
                            name="scratch_backbone")
    backbone = load_backbone(backbone, cut_at=config.cut_at)
    pooler = {"flatten": keras.layers.Flatten, "avg": keras.layers.GlobalAveragePooling2D,
              "max": keras.layers.GlobalMaxPooling2D}[config.pooling]()
    x = keras.layers.Dropout(0.2)(pooler(backbone.output))
    model = keras.Model(backbone.input, keras.layers.Dense(num_classes)(x),
                        name="scratch_classifier")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def run_curve(config, target, source_path, architecture, *, report=None):
    """The curve on the target digits ``(images, labels)``, with the
    config's label counts and number of seeds."""
    pool, test = pool_and_test(*target, config.seed)
    return label_efficiency(
        methods(config, source_path, architecture, int(target[1].max()) + 1), pool, test,
        labels_per_class=config.curve_labels_per_class,
        seeds=tuple(range(config.seed, config.seed + config.curve_seeds)), report=report)
