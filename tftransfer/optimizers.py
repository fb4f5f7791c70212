"""Discriminative learning rates: each variable's rate scaled by a factor.

Keras has no per-layer learning rates (keras#414, #7912). Scaling gradients
does not do it for Adam, whose update does not depend on the gradient's
scale, so these optimizers scale the learning rate itself in
``update_step``, per variable. `block_multipliers` computes the factors for
the two-phase recipe: deeper blocks learn slower.
"""

import keras


class _Discriminative:
    """Mixin: multiplies the learning rate of each variable by its factor."""

    def __init__(self, *, multipliers=None, **kwargs):
        super().__init__(**kwargs)
        multipliers = dict(multipliers or {})
        for path, factor in multipliers.items():
            if not isinstance(factor, (int, float)) or factor < 0:
                raise ValueError(
                    "`multipliers` maps variable paths to non-negative factors. "
                    f"Received: multipliers[{path!r}]={factor!r}"
                )
        self.multipliers = multipliers
        self._factors = []

    def build(self, variables):
        super().build(variables)
        self._factors = [float(self.multipliers.get(v.path, 1.0)) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["multipliers"] = dict(self.multipliers)
        return config


@keras.saving.register_keras_serializable(package="tftransfer")
class DiscriminativeAdam(_Discriminative, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with a learning-rate factor per variable.

    Args:
        multipliers: ``{variable.path: factor}``; variables not named get 1.
        **kwargs: `keras.optimizers.Adam` arguments.

    Example:

    >>> import numpy as np
    >>> w = keras.Variable(np.ones(2, "float32"), name="w")
    >>> opt = DiscriminativeAdam(learning_rate=0.1, multipliers={w.path: 0.0})
    >>> opt.apply([np.ones(2, "float32")], [w])
    >>> [float(v) for v in w.numpy()]
    [1.0, 1.0]
    """


@keras.saving.register_keras_serializable(package="tftransfer")
class DiscriminativeAdamW(_Discriminative, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with a learning-rate factor per variable."""


def block_multipliers(blocks, unfrozen, *, decay):
    """Learning-rate factors for the unfrozen blocks: the top block gets 1,
    the one below `decay`, the next `decay**2`, ...

    Args:
        blocks: ``{block_name: [layers]}`` from `tftransfer.get_blocks`.
        unfrozen: the names of the unfrozen blocks, bottom to top.
        decay: the factor between neighbouring blocks, in (0, 1].

    Returns:
        ``{variable.path: factor}`` for the variables of the unfrozen blocks.
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(
            "`block_learning_rate_decay` must be a number in (0, 1]: each block below the top "
            f"learns this many times slower than the one above. "
            f"Received: block_learning_rate_decay={decay!r}"
        )
    factors = {}
    for depth, name in enumerate(reversed(unfrozen)):
        for layer in blocks[name]:
            for variable in layer.weights:
                factors[variable.path] = float(decay) ** depth
    return factors
