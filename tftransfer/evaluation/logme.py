"""LogME: how well frozen features suit a labelled task, from one pass, with no training.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models
for Transfer Learning", ICML 2021 (Algorithm 1). For each class ``c`` the
one-vs-rest target ``y_c`` (1 for the class, 0 otherwise) is modelled as a
Bayesian linear regression on the features ``F`` (``n x d``): weights
``w ~ N(0, I / alpha)``, ``y_c | F, w ~ N(F w, I / beta)``. Its log evidence
(marginal likelihood) is, in closed form, with ``A = alpha I + beta F^T F``
and the posterior mean ``m = beta A^-1 F^T y_c``::

    L(alpha, beta) = n/2 log beta + d/2 log alpha - n/2 log 2 pi
                     - beta/2 ||F m - y_c||^2 - alpha/2 ||m||^2 - 1/2 log |A|

LogME maximizes it over ``alpha`` and ``beta`` with MacKay's fixed-point
iteration (``gamma = sum beta s_i / (alpha + beta s_i)`` over the eigenvalues
``s_i`` of ``F^T F``; ``alpha <- gamma / ||m||^2``, ``beta <- (n - gamma) /
||F m - y_c||^2``), made cheap by one SVD of ``F`` shared by all classes, and
returns the mean over classes of the maximum divided by ``n``. Higher is
better; the value is comparable between feature extractors on the same
labels, not between data sets. It has no hyperparameters, and it does not
change when the features are multiplied by a constant.
"""

import numpy as np

MAX_ITERATIONS = 1000
"""Fixed-point steps per class at most (it usually converges in a few)."""

TOLERANCE = 1e-10
"""Stop when ``alpha / beta`` changes by less than this, relatively."""

_TINY = 1e-300  # keeps the updates finite when a norm is zero


def _check(features, labels):
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1 or (
            features.dtype.kind not in "biuf"):
        raise ValueError(
            "`features` must be a numeric array of shape (examples >= 2, dimensions >= 1). "
            f"Received: features of shape {features.shape} and dtype {features.dtype}")
    if not np.all(np.isfinite(features)):
        raise ValueError(
            "`features` must be finite; they hold NaN or infinite values (check the "
            "backbone's outputs). Received: features with "
            f"{int(np.sum(~np.isfinite(features)))} non-finite values")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "biu":
        raise ValueError(
            "`labels` must be a 1-D array of integer class indices. "
            f"Received: labels of shape {labels.shape} and dtype {labels.dtype}")
    if len(labels) != len(features):
        raise ValueError(
            f"`features` and `labels` must have one row per example: {len(features)} and "
            f"{len(labels)}. Received: features of shape {features.shape}, "
            f"labels of shape {labels.shape}")
    if len(np.unique(labels)) < 2:
        raise ValueError(
            "`labels` must hold at least 2 classes (LogME scores one-vs-rest targets). "
            f"Received: labels with classes {np.unique(labels).tolist()}")
    return features.astype(np.float64), labels


def _max_evidence(z, outside, eigenvalues, n, d):
    """The maximum over (alpha, beta) of the log evidence of one target,
    from its coordinates `z` on the left singular vectors of F and the
    squared norm `outside` of its part outside their span."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        shrink = alpha + beta * eigenvalues
        gamma = float(np.sum(beta * eigenvalues / shrink))
        m_norm = float(np.sum((beta * np.sqrt(eigenvalues) * z / shrink) ** 2))
        residual = float(np.sum((alpha * z / shrink) ** 2)) + outside
        new_alpha = gamma / max(m_norm, _TINY)
        new_beta = max(n - gamma, _TINY) / max(residual, _TINY)
        converged = abs(new_alpha / new_beta - alpha / beta) <= TOLERANCE * (alpha / beta)
        alpha, beta = max(new_alpha, _TINY), max(new_beta, _TINY)
        if converged:
            break
    shrink = alpha + beta * eigenvalues
    m_norm = float(np.sum((beta * np.sqrt(eigenvalues) * z / shrink) ** 2))
    residual = float(np.sum((alpha * z / shrink) ** 2)) + outside
    log_det = float(np.sum(np.log(shrink))) + (d - len(eigenvalues)) * np.log(alpha)
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * residual - alpha / 2 * m_norm - log_det / 2)


def logme(features, labels):
    """LogME of frozen features for integer labels (You et al., ICML 2021).

    The mean over classes of the maximized log evidence of a Bayesian linear
    model of each one-vs-rest target, divided by the number of examples (see
    the module's docstring). Higher means the features suit the labels
    better; it takes one SVD, no training and no hyperparameters. The
    features are used as they are (no centring or scaling, as in the paper);
    only the classes present in `labels` are scored.

    Args:
        features: ``(examples, dimensions)`` array, e.g. a backbone's pooled
            outputs.
        labels: ``(examples,)`` integer class indices, at least 2 classes.

    Returns:
        A float (typically between -2 and 2 for such targets).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(40) % 2
    >>> informative = np.eye(2)[labels] + 0.1 * rng.normal(size=(40, 2))
    >>> noise = rng.normal(size=(40, 2))
    >>> logme(informative, labels) > logme(noise, labels)
    True
    """
    features, labels = _check(features, labels)
    n, d = features.shape
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    eigenvalues = singular**2
    evidences = []
    for c in np.unique(labels):
        target = (labels == c).astype(np.float64)
        z = u.T @ target
        outside = max(float(target @ target - z @ z), 0.0)
        evidences.append(_max_evidence(z, outside, eigenvalues, n, d) / n)
    return float(np.mean(evidences))
