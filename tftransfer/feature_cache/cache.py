"""`FeatureCache`: the cache of one training call."""

import logging
import math
import os
import re
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.caching import cache_options
from tftransfer.data.checks import check_labels
from tftransfer.feature_cache.cut import CachedTop
from tftransfer.feature_cache.cut import NodeSnapshot
from tftransfer.feature_cache.cut import compile_like
from tftransfer.feature_cache.cut import pack_outputs
from tftransfer.feature_cache.cut import plan_cut
from tftransfer.feature_cache.cut import replay
from tftransfer.feature_cache.extract import frozen_forward
from tftransfer.feature_cache.feed import array_dataset
from tftransfer.feature_cache.feed import as_arrays
from tftransfer.feature_cache.feed import in_order_dataset
from tftransfer.feature_cache.feed import rows
from tftransfer.feature_cache.feed import stream_dataset
from tftransfer.feature_cache.graph import flatten_graph
from tftransfer.feature_cache.graph import planned_trainability
from tftransfer.feature_cache.options import NotCacheable
from tftransfer.feature_cache.options import timed
from tftransfer.feature_cache.plans import CachedFit
from tftransfer.feature_cache.plans import UncachedFit
from tftransfer.feature_cache.sources import data_hasher
from tftransfer.feature_cache.sources import describe_source
from tftransfer.feature_cache.sources import describe_validation
from tftransfer.feature_cache.sources import hash_arrays
from tftransfer.feature_cache.store import Entry
from tftransfer.feature_cache.store import Stream
from tftransfer.feature_cache.store import Writer

logger = logging.getLogger(__name__)


class FeatureCache:
    """Cached activations for one training call; a context manager that deletes
    its files on exit.

    Args:
        options: the `tftransfer.caching.CacheOptions` (mode ``"auto"``,
            ``"memory"``, ``"disk"`` or None for a cache that never caches;
            where the temporary directory for disk entries goes; bytes kept
            in memory in ``"auto"`` mode before entries go to disk).
            Default: ``cache_options()`` (``"auto"``).
        shuffle_seed: for resumable runs: shuffled epochs then depend on
            (seed, epoch) only. Default: a draw from NumPy's global generator.
    """

    def __init__(self, options=None, *, shuffle_seed=None):
        options = cache_options() if options is None else options
        self.mode = options.mode
        self.cache_dir = options.directory
        self.memory_limit = options.memory_limit
        self.shuffle_seed = shuffle_seed
        self.directory = None  # created on the first disk entry
        self.memory_bytes = 0
        self._entries = {}  # (data digest, cut key) -> Entry
        self._streams = {}  # data digest -> Stream (datasets)
        self._dataset_digests = {}  # id(dataset) -> (dataset, digest)
        self._forwards = {}  # cut keys -> compiled extractor
        self._snapshots = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Drops every entry, deletes the temporary directory, and takes the
        nodes that replaying added to the model's layers away again."""
        self._entries.clear()
        self._streams.clear()
        self._dataset_digests.clear()
        self._forwards.clear()
        for snapshot in self._snapshots:
            snapshot.restore()
        self._snapshots.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self.memory_bytes = 0

    def plan(self, model, x, y=None, validation_data=None, *, fit_kwargs=None,
             next_trainable=None, first_epoch=0):
        """Plans one training phase of `model` on this data.

        Args:
            model: the compiled model, with the layers this phase trains
                already unfrozen.
            x, y, validation_data: as for `keras.Model.fit`.
            fit_kwargs: the other `keras.Model.fit` arguments (``callbacks``
                excepted: they go to the plan's `fit`).
            next_trainable: the ids of the layers the *next* phase will
                unfreeze, so that this phase's pass over the data also
                extracts that phase's activations; None for none.
            first_epoch: the epoch this phase starts at (resumed runs).

        Returns:
            A `CachedFit` when the phase can train on cached activations, else
            an `UncachedFit` (its `reason` says why; logged). Both run the
            phase with ``fit(epochs=..., initial_epoch=..., callbacks=...)``.

        Raises:
            ValueError: the cache was forced (``"memory"``, ``"disk"``) and
                cannot be used; the message says why.
        """
        fit_kwargs = dict(fit_kwargs or {})
        planned = None if next_trainable is None else planned_trainability(set(next_trainable))
        if self.mode is None:
            return UncachedFit(model, x, y, validation_data, fit_kwargs, reason="cache=False",
                               seed=self.shuffle_seed, first_epoch=first_epoch)
        try:
            with timed("Planning the cut"):
                plan = self._plan(model, x, y, validation_data, fit_kwargs, planned)
            top, fit_x, fit_y, kwargs, info = self._prepare(model, *plan, fit_kwargs=fit_kwargs,
                                                            first_epoch=first_epoch)
        except NotCacheable as reason:
            if self.mode != "auto":
                raise ValueError(
                    f"Cannot train on cached features: {reason}. Pass cache='auto' to "
                    "fall back to the uncached path in such cases, or cache=False. "
                    f"Received: cache={self.mode!r}"
                ) from None
            logger.info("Not caching features: %s. Training uncached.", reason)
            if fit_kwargs.get("verbose", "auto") != 0:
                _compat.print_msg(f"Training uncached (the backbone runs every epoch): {reason}")
            return UncachedFit(model, x, y, validation_data, fit_kwargs, reason=str(reason),
                               seed=self.shuffle_seed, first_epoch=first_epoch)
        return CachedFit(model, top, fit_x, fit_y, kwargs, info)

    def _plan(self, model, x, y, validation_data, fit_kwargs, planned_trains):
        if fit_kwargs.get("steps_per_epoch"):
            raise NotCacheable("`steps_per_epoch` is set")
        if _compat.compile_config(model) is None or model.optimizer is None:
            raise NotCacheable("the model is not compiled")
        forced = self.mode != "auto"
        train = describe_source(x, y, fit_kwargs.get("sample_weight"), "training", forced=forced)
        validation = describe_validation(validation_data, forced=forced)
        for source in (train, validation):
            if source is not None and source.random_ops:
                if self.mode == "auto":
                    raise NotCacheable(
                        "the dataset's pipeline has random or opaque ops "
                        f"({', '.join(source.random_ops)}): data augmentation would be "
                        "frozen into the cache. Pass cache=True if the pipeline is "
                        "deterministic"
                    )
                logger.warning(
                    "Caching a dataset with random or opaque ops (%s): one pass of it is "
                    "cached and reused every epoch.", ", ".join(source.random_ops)
                )
        graph = flatten_graph(model)
        cut = plan_cut(model, graph=graph)
        extra = []
        if planned_trains is not None:  # phase 2's activations come from the same pass
            try:
                planned = plan_cut(model, planned_trains, graph=graph)
            except NotCacheable as reason:
                logger.info("Phase 2 will not be cached: %s.", reason)
            else:
                if planned.name != cut.name:
                    extra.append(planned)
        return cut, extra, train, validation

    def _prepare(self, model, cut, extra, train, validation, *, fit_kwargs, first_epoch=0):
        """Extracts what is missing; returns the top model, its `fit` inputs
        and the summary's cache info."""
        verbose = fit_kwargs.get("verbose", "auto")
        start = time.perf_counter()
        self._snapshots.append(NodeSnapshot(model, cut.graph))
        cuts = [cut, *extra]
        values = {}  # the frozen weights as NumPy arrays, read once
        with timed("Hashing the frozen weights"):
            keys = [c.key(values) for c in cuts]
        batch_size = fit_kwargs.get("batch_size") or 32
        train_digest, reused = self._ensure(model, graph_cuts=cuts, keys=keys, source=train,
                                            batch_size=batch_size, verbose=verbose,
                                            values=values)
        val_digest = None
        if validation is not None:
            val_batch = fit_kwargs.get("validation_batch_size") or batch_size
            val_digest, val_reused = self._ensure(model, graph_cuts=cuts, keys=keys,
                                                  source=validation, batch_size=val_batch,
                                                  verbose=verbose, values=values)
            reused = reused and val_reused
        extract_seconds = time.perf_counter() - start

        # Built in the model's strategy scope: with several replicas, a top
        # model built outside it fails in `fit` ("You must feed a value for
        # placeholder tensor ... cond/Placeholder").
        with timed("Building the top model"), model.distribute_strategy.scope():
            top = replay(cut.graph, cut.top, [cut.boundary], pack_outputs(cut.graph),
                          model_class=CachedTop, full=model, name=f"{model.name}_cached_top")
        compile_like(top, model)
        train_entry = self._entries[(train_digest, keys[0])]
        val_entry = self._entries[(val_digest, keys[0])] if validation is not None else None
        fit_x, fit_y, kwargs = self._fit_inputs(train, train_digest, train_entry, fit_kwargs,
                                                split=validation is None,
                                                first_epoch=first_epoch)
        if validation is not None:
            kwargs["validation_data"] = self._validation_inputs(
                validation, val_digest, val_entry,
                fit_kwargs.get("validation_batch_size") or batch_size,
                in_order=not fit_kwargs.get("validation_steps")
                and model.distribute_strategy.num_replicas_in_sync == 1)
        storages = {train_entry.storage} | ({val_entry.storage} if val_entry else set())
        info = {
            "boundary": cut.name,
            "storage": "+".join(sorted(storages)),
            "examples": len(train_entry.features),
            "validation_examples": len(val_entry.features) if val_entry else 0,
            "bytes": int(train_entry.features.nbytes
                         + (val_entry.features.nbytes if val_entry else 0)),
            "extract_seconds": round(extract_seconds, 3),
            "reused": bool(reused),
        }
        return top, fit_x, fit_y, kwargs, info

    # -- extraction --------------------------------------------------------

    def _digest(self, source):
        if source.kind == "dataset":
            known = self._dataset_digests.get(id(source.x))
            return known[1] if known is not None and known[0] is source.x else None
        digest = data_hasher()
        hash_arrays(digest, [source.x])
        return digest.hexdigest()

    def _ensure(self, model, *, graph_cuts, keys, source, batch_size, verbose, values=None):
        """Makes sure the entries for `source` and every cut exist; returns the
        data digest and whether they were there already. `values`: the frozen
        weights as read for `keys` (see `_Cut.key`)."""
        with timed("Hashing the data"):
            digest = self._digest(source)
        missing = [(c, k) for c, k in zip(graph_cuts, keys) if (digest, k) not in self._entries]
        if digest is not None and not missing:
            logger.info("Reusing cached features for %d examples.",
                        len(self._entries[(digest, keys[0])].features))
            return digest, True
        if digest is None:
            missing = list(zip(graph_cuts, keys))
        cuts = [c for c, _ in missing]
        with timed("Tracing the feature extractor"):
            forward = self._forward(model, cuts, [k for _, k in missing], values)
        with timed("Extracting features"):
            digest, arrays = self._extract(forward, cuts, source, batch_size, verbose, digest)
        if source.kind == "dataset":  # its labels are read now: the first chance to check them
            check_labels(model, source.what, self._streams[digest].targets[0])
        for (cut, key), array in zip(missing, arrays):
            self._entries[(digest, key)] = Entry(
                array, "disk" if isinstance(array, np.memmap) else "memory"
            )
        return digest, False

    def _forward(self, model, cuts, keys, values=None):
        """The compiled forward pass from images to the boundaries of `cuts`,
        built once per session (training and validation data share it)."""
        if tuple(keys) not in self._forwards:
            graph = cuts[0].graph
            needed = {id(step) for cut in cuts for step in cut.bottom}
            steps = [step for step in graph.steps if id(step) in needed]
            image = graph.tensors[graph.inputs[0]]
            outputs = [c.boundary for c in cuts]
            forward = frozen_forward(steps, graph.inputs[0], outputs,
                                      tf.TensorSpec((None, *image.shape[1:]), image.dtype),
                                      values=values)
            forward.dtypes = [keras.backend.standardize_dtype(graph.tensors[i].dtype)
                              for i in outputs]
            forward.input_dtype = image.dtype
            self._forwards[tuple(keys)] = forward
        return self._forwards[tuple(keys)]

    def _writer(self, cut, dtype, capacity):
        nbytes = capacity * int(np.prod(cut.shape)) * np.dtype(dtype).itemsize
        to_disk = self.mode == "disk" or (
            self.mode == "auto" and self.memory_bytes + nbytes > self.memory_limit
        )
        if not to_disk:
            self.memory_bytes += nbytes
            return Writer(cut.shape, dtype, capacity, None)
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="tftransfer-cache-", dir=self.cache_dir)
        name = re.sub(r"\W", "_", cut.name)
        path = os.path.join(self.directory, f"{name}-{len(os.listdir(self.directory))}")
        logger.info("Caching %s on disk in %s (%d bytes).", cut.name, path, nbytes)
        return Writer(cut.shape, dtype, capacity, path)

    def _extract(self, forward, cuts, source, batch_size, verbose, digest):
        if source.kind == "arrays":
            count = len(source.x)
            batches = ((source.x[i:i + batch_size], None) for i in range(0, count, batch_size))
            total = math.ceil(count / batch_size)
            hasher = None
        else:
            dataset = source.x.prefetch(tf.data.AUTOTUNE)
            batches = ((element[0], element[1:]) for element in dataset)
            total = int(source.x.cardinality())
            total = total if total >= 0 else None  # unknown: cache=True on a generator
            count = None
            hasher = data_hasher()
        progbar = None
        if verbose != 0:
            _compat.print_msg(
                f"Running the frozen backbone once over the {source.what} data (cached for "
                f"every epoch): {total or 'an unknown number of'} batches")
            progbar = keras.utils.Progbar(total, verbose=1 if verbose == "auto" else verbose,
                                          unit_name="batch")
        logger.info("Extracting features at %s over %s batches.",
                    ", ".join(c.name for c in cuts), total or "an unknown number of")
        writers, targets, structure, first_batch = None, [], None, None
        for step, (images, rest) in enumerate(batches):
            images = tf.cast(images, forward.input_dtype)
            outputs = forward(images)
            if writers is None:
                first_batch = int(images.shape[0])
                capacity = count if count is not None else (total or 64) * first_batch
                writers = [self._writer(c, d, capacity) for c, d in zip(cuts, forward.dtypes)]
            for writer, output in zip(writers, outputs):
                writer.append(output.numpy())
            if rest is not None:
                flat = [np.asarray(t) for t in tf.nest.flatten(rest)]
                structure = rest
                targets.append(flat)
                hash_arrays(hasher, [images, *flat])
            if progbar is not None:
                progbar.update(step + 1)
        if writers is None:
            raise NotCacheable("the data is empty")
        arrays = [w.finish() for w in writers]
        if hasher is not None:
            digest = hasher.hexdigest()
            self._dataset_digests[id(source.x)] = (source.x, digest)
            self._streams[digest] = Stream(
                targets=[np.concatenate(parts) for parts in zip(*targets)],
                structure=structure,
                batch_size=first_batch,
                shuffle=source.shuffle,
            )
        return digest, arrays

    # -- feeding the top model ---------------------------------------------

    def _fit_inputs(self, source, digest, entry, fit_kwargs, *, split, first_epoch=0):
        kwargs = dict(fit_kwargs)
        kwargs.pop("verbose", None)
        kwargs["verbose"] = fit_kwargs.get("verbose", "auto")
        if source.kind == "dataset":
            kwargs.pop("batch_size", None)
            kwargs["shuffle"] = False
            return stream_dataset(entry.features, self._streams[digest], seed=self.shuffle_seed,
                                   first_epoch=first_epoch), None, kwargs
        y, sample_weight = (list(source.targets) + [None])[:2]
        if entry.storage == "memory" and self.shuffle_seed is None:
            return entry.features, y, kwargs
        # A memory map is served batch by batch, so it is never loaded whole;
        # with a `shuffle_seed` (resumable runs) arrays in memory are served the
        # same way, so that each epoch's order depends on the epoch only.
        batch_size = kwargs.pop("batch_size", None) or 32
        shuffle = kwargs.pop("shuffle", True)
        kwargs["shuffle"] = False  # the dataset below shuffles itself
        kwargs.pop("sample_weight", None)
        split = kwargs.pop("validation_split", 0.0) if split else 0.0
        arrays = [entry.features, as_arrays(y)]
        if sample_weight is not None:
            arrays.append(as_arrays(sample_weight))
        if split:  # as Keras does it: the last rows, before shuffling
            at = int(math.floor(len(entry.features) * (1.0 - split)))
            kwargs["validation_data"] = array_dataset(
                [rows(a, slice(at, None)) for a in arrays], kwargs.pop("validation_batch_size", None)
                or batch_size, shuffle=False)
            arrays = [rows(a, slice(None, at)) for a in arrays]
        return array_dataset(arrays, batch_size, shuffle=bool(shuffle), seed=self.shuffle_seed,
                              first_epoch=first_epoch), None, kwargs

    def _validation_inputs(self, source, digest, entry, batch_size, *, in_order=False):
        if source.kind == "dataset":
            return stream_dataset(entry.features, self._streams[digest])
        if entry.storage == "memory":
            arrays = (entry.features, *source.targets)
            dataset = in_order_dataset(arrays, batch_size) if in_order else None
            return arrays if dataset is None else dataset
        return array_dataset([entry.features, *map(as_arrays, source.targets)], batch_size,
                              shuffle=False)
