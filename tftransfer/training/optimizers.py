"""Discriminative learning rates: each variable's rate scaled by a factor.

Keras has no per-layer learning rate option (keras#414, #7912), and scaling
gradients does not give one for Adam, whose step does not depend on the
gradient's scale. `discriminative_optimizer` builds it from Keras's own parts:
a `keras.optimizers.MultiOptimizer` with one inner optimizer per distinct
factor, whose learning rate is the given one times the factor (a schedule is
wrapped in `ScaledSchedule`). No update rule is rewritten, so any Keras
optimizer works as Keras made it, under `tf.distribute`, XLA and mixed
precision too. `block_multipliers` computes the factors for the two-phase
recipe: deeper blocks learn slower.

What works with the returned optimizer (Keras 3.15, measured in
tests/test_optimizers.py):

- `model.save` and `keras.saving.load_model` restore the groups, their rates
  and their state (a file with a `ScaledSchedule` needs ``import tftransfer``).
- ``optimizer.learning_rate`` raises ``AttributeError`` (``hasattr`` is
  False), also through a `keras.optimizers.LossScaleOptimizer`: there is no
  single rate. Read the groups': ``{opt.name: opt.learning_rate for opt in
  optimizer.optimizers}``; the last group is the default one, factor 1 (the
  head and the top block), e.g. ``optimizer.optimizers[-1].learning_rate``.
- `keras.callbacks.ReduceLROnPlateau` multiplies every group's rate (the
  ratios stay until `min_lr` clamps the smaller ones);
  `keras.callbacks.LearningRateScheduler` calls ``schedule(epoch, lr)`` once
  per group (a schedule that ignores `lr` gives every group the same rate).
  They and `keras.callbacks.TensorBoard` log ``learning_rate_<group name>``.
  As for any optimizer, neither callback can set a `LearningRateSchedule`.
  Under mixed precision the model's optimizer is a LossScaleOptimizer around
  the MultiOptimizer: training and TensorBoard work, these two callbacks fail
  (they look for the groups on the model's optimizer only).
- A second model over the same layers can share it (``optimizer=
  model.optimizer``, as the feature cache does) when both train the same
  variables. Like every Keras optimizer it cannot then train variables it was
  not built with; unlike one, a MultiOptimizer built with more variables
  cannot apply gradients to a subset of them ("Gradients must match trainable
  variables one-to-one").
- Clipping applies per group, so ``global_clipnorm`` is refused.

`DiscriminativeAdam` and `DiscriminativeAdamW` (tftransfer 0.1.0, the update
rule rewritten) are deprecated but kept, for the `.keras` files compiled with
them: their state is one optimizer's flat list of variables (18 for the
3-block model of the tests), which a MultiOptimizer (its own iteration and
rate, then each group's: 24) cannot load; Keras skips it ("Skipping variable
loading for optimizer") and Adam's moments would restart from zero.
"""

import numbers
import re
import warnings

import keras

from tftransfer import _compat

_SCHEDULE = keras.optimizers.schedules.LearningRateSchedule
_WRAPPERS = (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer)
_OPTIMIZERS = {
    name.lower(): cls
    for name, cls in vars(keras.optimizers).items()
    if isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)
    and cls is not keras.optimizers.Optimizer and not issubclass(cls, _WRAPPERS)
}


def _is_factor(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0


@keras.saving.register_keras_serializable(package="tftransfer")
class ScaledSchedule(_SCHEDULE):
    """A learning-rate schedule times a constant factor.

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule`.
        factor: a non-negative number.

    Example:

    >>> decay = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    >>> scaled = ScaledSchedule(decay, 0.1)
    >>> round(float(scaled(0)), 6), round(float(scaled(10)), 6)
    (0.01, 0.005)
    """

    def __init__(self, schedule, factor):
        if not isinstance(schedule, _SCHEDULE):
            raise ValueError(
                "`schedule` must be a keras.optimizers.schedules.LearningRateSchedule. "
                f"Received: schedule={schedule!r}"
            )
        if not _is_factor(factor):
            raise ValueError(f"`factor` must be a non-negative number. Received: factor={factor!r}")
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def discriminative_optimizer(learning_rate, multipliers, *, optimizer="adam", name=None,
                             **kwargs):
    """A `keras.optimizers.MultiOptimizer` whose learning rate is scaled per variable.

    One inner optimizer per distinct factor, named after it (``adam_x0.1``);
    the variables not in `multipliers` (e.g. the head) go to the default one,
    factor 1. Variables are matched by their exact ``variable.path``.

    Args:
        learning_rate: a float or a
            `keras.optimizers.schedules.LearningRateSchedule` (each group gets
            it wrapped in `ScaledSchedule`).
        multipliers: ``{variable.path: factor}``, e.g. from `block_multipliers`.
        optimizer: the optimizer of every group: a name from
            `keras.optimizers` (``"adam"``, ``"adamw"``, ``"sgd"``, ...,
            any case) or an optimizer class.
        name: the MultiOptimizer's name.
        **kwargs: arguments of that optimizer, given to every group (e.g.
            ``weight_decay=0.01`` for AdamW, ``beta_1``, ``clipnorm``);
            ``loss_scale_factor`` goes to the MultiOptimizer.

    Returns:
        A `keras.optimizers.MultiOptimizer`, for ``model.compile(optimizer=...)``.
        It has no ``learning_rate``: read ``[o.learning_rate for o in
        optimizer.optimizers]`` (the module docstring says what works).

    Example:

    >>> body = keras.Variable(np.ones(2, "float32"), name="body")
    >>> head = keras.Variable(np.ones(2, "float32"), name="head")
    >>> opt = discriminative_optimizer(0.1, {body.path: 0.5}, optimizer="sgd")
    >>> [o.name for o in opt.optimizers]
    ['sgd_x0.5', 'sgd_x1']
    >>> opt.apply([np.ones(2, "float32")] * 2, [body, head])
    >>> [round(float(v), 6) for v in body.numpy()], [round(float(v), 6) for v in head.numpy()]
    ([0.95, 0.95], [0.9, 0.9])
    """
    cls = _optimizer_class(optimizer)
    if not (_is_factor(learning_rate) or isinstance(learning_rate, _SCHEDULE)):
        raise ValueError(
            "`learning_rate` must be a non-negative number or a "
            "keras.optimizers.schedules.LearningRateSchedule (a plain callable cannot be "
            f"scaled and saved). Received: learning_rate={learning_rate!r}"
        )
    if kwargs.get("global_clipnorm") is not None:
        raise ValueError(
            "`global_clipnorm` would clip each group of variables by its own norm, not by the "
            "norm of all gradients. Pass `clipnorm` (per variable) or `clipvalue` instead. "
            f"Received: global_clipnorm={kwargs['global_clipnorm']!r}"
        )
    loss_scale_factor = kwargs.pop("loss_scale_factor", None)
    groups = {}
    for path, factor in _checked(multipliers).items():
        if factor != 1:
            groups.setdefault(float(factor), []).append(path)
    names = set()

    def group(factor):
        group_name = f"{cls.__name__.lower()}_x{factor:g}"
        if group_name in names:  # two factors equal to 6 digits
            group_name = f"{cls.__name__.lower()}_x{factor!r}"
        names.add(group_name)
        if isinstance(learning_rate, _SCHEDULE):
            rate = learning_rate if factor == 1.0 else ScaledSchedule(learning_rate, factor)
        else:
            rate = float(learning_rate) * factor
        return cls(learning_rate=rate, name=group_name, **kwargs)

    optimizer_map = keras.optimizers.OptimizerMap(group(1.0))
    for factor in sorted(groups):
        # One key per group, not per path: `get_config`/`from_config` (unlike
        # `model.save`) rebuild each value of the map as its own optimizer, so
        # a group under several keys would come back as one optimizer per path.
        # OptimizerMap tries a key as is, then as a regular expression
        # (`re.fullmatch`); escaped, each alternative matches its path only.
        pattern = "|".join(re.escape(path) for path in sorted(groups[factor]))
        optimizer_map[pattern] = group(factor)
    return keras.optimizers.MultiOptimizer(optimizer_map, loss_scale_factor=loss_scale_factor,
                                           name=name)


def _optimizer_class(optimizer):
    cls = _OPTIMIZERS.get(optimizer.lower()) if isinstance(optimizer, str) else optimizer
    if isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer) \
            and not issubclass(cls, _WRAPPERS):
        return cls
    raise ValueError(
        f"`optimizer` must be the name of a Keras optimizer ({', '.join(sorted(_OPTIMIZERS))}) "
        "or an optimizer class; pass its arguments as keyword arguments, e.g. "
        "optimizer='adamw', weight_decay=0.01. "
        f"Received: optimizer={optimizer!r}"
    )


def _checked(multipliers):
    if not hasattr(multipliers, "items"):
        raise ValueError(
            "`multipliers` must be a dict {variable.path: factor}, e.g. from "
            f"block_multipliers. Received: multipliers={multipliers!r}"
        )
    for path, factor in multipliers.items():
        if not isinstance(path, str) or not _is_factor(factor):
            raise ValueError(
                "`multipliers` maps variable paths to non-negative factors. "
                f"Received: multipliers[{path!r}]={factor!r}"
            )
    return dict(multipliers)


class _Discriminative:
    """Mixin: multiplies the learning rate of each variable by its factor."""

    _replacement = None  # the `optimizer` argument of discriminative_optimizer

    def __init__(self, *, multipliers=None, **kwargs):
        warnings.warn(
            f"{type(self).__name__} is deprecated: use tftransfer.training.optimizers."
            "discriminative_optimizer(learning_rate, multipliers, "
            f"optimizer={self._replacement!r}), a Keras MultiOptimizer.",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(**kwargs)
        self.multipliers = _checked(multipliers or {})
        self._factors = []

    def build(self, variables):
        super().build(variables)
        self._factors = [float(self.multipliers.get(v.path, 1.0)) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[_compat.optimizer_variable_index(self, variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["multipliers"] = dict(self.multipliers)
        return config


@keras.saving.register_keras_serializable(package="tftransfer")
class DiscriminativeAdam(_Discriminative, keras.optimizers.Adam):
    """Deprecated: `keras.optimizers.Adam` with a learning-rate factor per variable.

    Use ``discriminative_optimizer(learning_rate, multipliers)``. This class
    stays so that `.keras` files compiled with it load and train on.

    Args:
        multipliers: ``{variable.path: factor}``; variables not named get 1.
        **kwargs: `keras.optimizers.Adam` arguments.

    Example:

    >>> import warnings
    >>> w = keras.Variable(np.ones(2, "float32"), name="w")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     opt = DiscriminativeAdam(learning_rate=0.1, multipliers={w.path: 0.0})
    >>> caught[0].category.__name__
    'DeprecationWarning'
    >>> opt.apply([np.ones(2, "float32")], [w])
    >>> [float(v) for v in w.numpy()]
    [1.0, 1.0]
    """

    _replacement = "adam"


@keras.saving.register_keras_serializable(package="tftransfer")
class DiscriminativeAdamW(_Discriminative, keras.optimizers.AdamW):
    """Deprecated: `keras.optimizers.AdamW` with a learning-rate factor per variable.

    Use ``discriminative_optimizer(learning_rate, multipliers, optimizer="adamw")``.
    Unlike that, this class decays every variable's weights at the unscaled
    learning rate (Keras applies weight decay before `update_step`).
    """

    _replacement = "adamw"


def block_multipliers(blocks, unfrozen, *, decay):
    """Learning-rate factors for the unfrozen blocks: the top block gets 1,
    the one below `decay`, the next `decay**2`, ...

    Args:
        blocks: ``{block_name: [layers]}`` from `tftransfer.get_blocks`.
        unfrozen: the names of the unfrozen blocks, bottom to top.
        decay: the factor between neighbouring blocks, in (0, 1].

    Returns:
        ``{variable.path: factor}`` for the variables of the unfrozen blocks,
        for `discriminative_optimizer`.

    Example:

    >>> low, top = keras.layers.Dense(1, name="low"), keras.layers.Dense(1, name="top")
    >>> low.build((None, 1)); top.build((None, 1))
    >>> block_multipliers({"b1": [low], "b2": [top]}, ["b1", "b2"], decay=0.5)
    {'top/kernel': 1.0, 'top/bias': 1.0, 'low/kernel': 0.5, 'low/bias': 0.5}
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
