"""What the feature cache's modules share: the reason a phase is not cached, timing."""

import contextlib
import logging
import re
import time

logger = logging.getLogger(__name__)


# Ops whose output may change from one pass over the data to the next. Stateful
# Python functions (tf.py_function, tf.numpy_function(stateful=True)) are
# opaque, so they count; tf.numpy_function(stateful=False) ("PyFuncStateless")
# is declared deterministic by its author (tftransfer.data decodes files so).
RANDOM_OP = re.compile(
    r"Random|Multinomial|TruncatedNormal|SampleDistortedBoundingBox|RngReadAndSkip|RngSkip"
    r"|^(Eager)?PyFunc$"
)


@contextlib.contextmanager
def timed(section):
    """Logs at DEBUG level how long `section` took, in wall and CPU
    seconds (of all the process's threads)."""
    if not logger.isEnabledFor(logging.DEBUG):
        yield
        return
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        logger.debug("%s: %.3f s (%.3f CPU s).", section, time.perf_counter() - wall,
                     time.process_time() - cpu)


class NotCacheable(Exception):
    """Why a phase cannot run on cached features (logged, or raised when the
    user forced the cache)."""
