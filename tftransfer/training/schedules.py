"""Learning-rate schedules."""

import keras

DEFAULT_WARMUP = 0.1


def warmup_cosine_schedule(learning_rate, *, total_steps, warmup=DEFAULT_WARMUP):
    """Linear warmup from 0 to `learning_rate`, then cosine decay to 0.

    Args:
        learning_rate: the peak learning rate.
        total_steps: training steps in all (epochs x steps per epoch).
        warmup: fraction of `total_steps` spent warming up, in [0, 1).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Example:

    >>> schedule = warmup_cosine_schedule(1e-4, total_steps=100, warmup=0.1)
    >>> [round(float(schedule(s)), 6) for s in (0, 10, 100)]
    [0.0, 0.0001, 0.0]
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"`warmup` must be in [0, 1). Received: warmup={warmup!r}")
    warmup_steps = int(round(warmup * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
