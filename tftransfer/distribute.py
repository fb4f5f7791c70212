"""Distribution strategies: which process is the chief, and Keras 3 under
several workers.

tftransfer takes a `tf.distribute` strategy the Keras way: build the model
inside ``with strategy.scope():`` and every later step (`fit_two_phase`,
`export_saved_model`, ...) uses the strategy the model was built under
(``model.distribute_strategy``). With `tf.distribute.MultiWorkerMirroredStrategy`
every machine runs the same script; `is_chief` tells the one process whose
outputs count, and `export_saved_model` publishes from it only.

Keras 3 under several workers
-----------------------------
Keras 3 (checked up to 3.15) cannot run ``Model.fit`` under a
`tf.distribute.MultiWorkerMirroredStrategy` with two or more workers
(tensorflow/tensorflow#72388):

- ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first batch with
  ``strategy.reduce("MEAN", batch, axis=None)``, and under several workers
  the batch ``(images, labels)`` is a tuple of per-replica values, which the
  collective reduce cannot convert to a tensor ("Attempt to convert a value
  (PerReplica...) to a Tensor"). The build needs only shapes and dtypes.
- ``reduce_per_replica`` averages the logged loss and metrics with
  ``strategy.reduce("MEAN", value, axis=0)``, which fails for scalars
  ("Invalid reduction dimension 0 for input with 0 dimensions").

The first time tftransfer compiles a model built under a
`MultiWorkerMirroredStrategy` (in `fit_head`, `fine_tune`, `fit_two_phase`),
it therefore wraps these two Keras functions (logged at info level); nothing
is wrapped in any other program. The wrappers hand every call to Keras's own
code except in exactly that case (a
multi-worker `MultiWorkerMirroredStrategy`, which fails without them): there
the build takes this worker's first replica's batch (same shapes and dtypes),
and the logs are averaged over replicas with ``axis=None``. If a Keras
version moves these internals, nothing is wrapped (logged at debug level)
and ``tests/test_multiworker.py`` fails, which is the signal to look again.
"""

import logging

import tensorflow as tf

from tftransfer import _compat

logger = logging.getLogger(__name__)


_WORKER_JOBS = ("chief", "worker")


def is_chief(strategy=None):
    """Whether this process writes the shared outputs of a training run.

    Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the
    same script; exports, checkpoints meant to be kept and reports should
    come from one of them. That is the ``"chief"`` task of the cluster, or,
    when the cluster has no ``"chief"`` job, ``"worker"`` 0 (as the strategy
    itself decides it). Other tasks (other workers, an ``"evaluator"``, a
    ``"ps"``) are not chiefs. Without a cluster (no strategy, the default strategy,
    `tf.distribute.MirroredStrategy`, `tf.distribute.OneDeviceStrategy`, a
    `MultiWorkerMirroredStrategy` without ``TF_CONFIG``, a single-host
    `tf.distribute.TPUStrategy`) the one process is the chief.

    Args:
        strategy: a `tf.distribute.Strategy` (e.g. ``model.distribute_strategy``)
            or a `tf.distribute.cluster_resolver.ClusterResolver` (e.g. a
            `tf.distribute.cluster_resolver.TFConfigClusterResolver`, which
            reads ``TF_CONFIG`` without starting anything). Default: the
            strategy of the current ``strategy.scope()``; outside any scope,
            this process's task in ``TF_CONFIG`` (the chief when it is unset).

    Returns:
        `True` for the chief, `False` for every other task.

    Example:

    >>> is_chief()
    True
    >>> cluster = tf.train.ClusterSpec({"worker": ["host1:2222", "host2:2222"]})
    >>> resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
    ...     cluster, task_type="worker", task_id=1)
    >>> is_chief(resolver)
    False
    """
    if strategy is None:
        # Outside a scope get_strategy() is the default strategy, which knows
        # no cluster: TF_CONFIG tells this process's task there.
        strategy = (tf.distribute.get_strategy() if tf.distribute.has_strategy()
                    else tf.distribute.cluster_resolver.TFConfigClusterResolver())
    if isinstance(strategy, tf.distribute.cluster_resolver.ClusterResolver):
        resolver = strategy
    elif isinstance(strategy, tf.distribute.Strategy):
        resolver = strategy.cluster_resolver  # None for single-process strategies
    else:
        raise TypeError(
            "`strategy` must be a `tf.distribute.Strategy` (e.g. "
            "`model.distribute_strategy`), a `tf.distribute.cluster_resolver."
            "ClusterResolver`, or None for the current strategy. Received: "
            f"strategy={strategy!r} of type {type(strategy).__name__}"
        )
    if resolver is None:
        return True
    return _is_chief_task(resolver.cluster_spec().as_dict(), resolver.task_type,
                          resolver.task_id)


def _is_chief_task(cluster, task_type, task_id):
    if not any(cluster.get(job) for job in _WORKER_JOBS) or task_type is None:
        return True  # no cluster: a single process
    if task_type == "chief":
        return True
    if task_type == "worker":
        return not cluster.get("chief") and not task_id
    return False


def prepare(strategy):
    """Installs the multi-worker fixes when `strategy` needs them."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        already = _compat.multi_worker_fixes_installed()
        if _compat.install_multi_worker_fixes() and not already:
            logger.info("Wrapped two Keras functions that fail under several workers "
                        "(tensorflow/tensorflow#72388); see tftransfer.distribute.")
