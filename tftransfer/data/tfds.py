"""Image data sets from TensorFlow Datasets."""

import difflib
import hashlib

import tensorflow as tf

from tftransfer.data.images import check_image_size
from tftransfer.data.images import tf_to_rgb
from tftransfer.data.splits import SHUFFLE_BUFFER_BYTES
from tftransfer.data.splits import SPLITS
from tftransfer.data.splits import DataSplits
from tftransfer.data.splits import augmentation_layer
from tftransfer.data.splits import check_split_args
from tftransfer.data.splits import finish_pipeline
from tftransfer.data.splits import loader_cache_options
from tftransfer.data.splits import resolve_cache
from tftransfer.data.tf_pixels import tf_resize
from tftransfer.errors import DatasetUnavailableError


def _tfds_builder(name, data_dir, download):
    import tensorflow_datasets as tfds

    if not isinstance(name, str):
        raise TypeError(f"`name` must be a TFDS dataset name. Received: name={name!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"TFDS has no dataset {name!r}.{hint} See https://www.tensorflow.org/datasets/"
            f"catalog. Received: name={name!r}"
        ) from None
    if builder.is_prepared():
        return builder
    where = data_dir or "~/tensorflow_datasets"
    offline_help = (
        f"To use it offline, prepare it once on a machine with internet access "
        f"(`tfds.builder({name!r}).download_and_prepare()`) and copy its folder under "
        f"{where!r} (or pass `data_dir`)."
    )
    if not download:
        raise DatasetUnavailableError(
            f"TFDS dataset {name!r} is not in {where!r} and download=False. "
            f"{offline_help} Received: download=False"
        )
    try:
        builder.download_and_prepare()
    except ModuleNotFoundError as err:
        raise DatasetUnavailableError(
            f"TFDS could not prepare {name!r}: it needs the module {err.name!r} "
            f"(`pip install {err.name}`; tensorflow/datasets#11212). Received: name={name!r}"
        ) from err
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise DatasetUnavailableError(
            f"Could not download TFDS dataset {name!r} ({type(err).__name__}: {err}). "
            f"This machine may be offline. {offline_help} Received: name={name!r}"
        ) from err
    return builder


def dataset_from_tfds(
    name,
    *,
    image_size,
    split=("train[:80%]", "train[80%:]"),
    batch_size=32,
    seed=0,
    shuffle=True,
    cache="auto",
    cache_dir=None,
    cache_memory_limit=None,
    augmentation=None,
    data_dir=None,
    download=True,
):
    """Image classification data from a TensorFlow Datasets name.

    The data come from ``data_dir`` (default ``~/tensorflow_datasets``);
    when they are not there they are downloaded once (``download=True``).
    Offline and without the data, a `DatasetUnavailableError` says how to
    bring them. Class names come from the dataset's `DatasetInfo`.

    Args:
        name: a TFDS name, e.g. ``"tf_flowers"`` or ``"cats_vs_dogs:4.0.1"``.
        image_size: ``(height, width)`` or an integer.
        split: TFDS split strings for train, validation and test: one string
            (train only), or a sequence of 1 to 3. TFDS slices them by
            position (not stratified), reproducibly for a dataset version.
        batch_size, seed, shuffle, cache, cache_dir, cache_memory_limit,
        augmentation: as for `image_dataset_from_folder`.
        data_dir: where TFDS data live.
        download: download the data if they are not in `data_dir`.

    Returns:
        A `DataSplits` (``counts`` is `None`: TFDS does not store them).

    Example (downloads 218 MB the first time):

    >>> data = dataset_from_tfds("tf_flowers", image_size=224)  # doctest: +SKIP
    >>> data.class_names  # doctest: +SKIP
    ['dandelion', 'daisy', 'tulips', 'sunflowers', 'roses']
    """
    import tensorflow_datasets as tfds

    size = check_image_size(image_size)
    check_split_args(0.0, 0.0, seed, batch_size)
    cache = loader_cache_options(cache, cache_dir, cache_memory_limit)
    splits = [split] if isinstance(split, str) else list(split)
    if not 1 <= len(splits) <= 3 or not all(isinstance(s, str) for s in splits):
        raise ValueError(
            "`split` must be a TFDS split string or a sequence of 1 to 3 of them "
            f"(train, validation, test). Received: split={split!r}"
        )
    augment = augmentation_layer(augmentation, seed)
    builder = _tfds_builder(name, data_dir, download)
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise ValueError(
            f"TFDS dataset {name!r} has no (image, label) supervised keys. "
            f"Received: name={name!r}"
        )
    image_key, label_key = keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    channels = (getattr(image_feature, "shape", None) or (None,))[-1]
    if not isinstance(image_feature, tfds.features.Image) or channels not in (1, 3, 4):
        raise ValueError(
            f"TFDS dataset {name!r} is not an image classification dataset "
            f"({image_key!r} is {image_feature!r}). Received: name={name!r}"
        )
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(
            f"TFDS dataset {name!r} has no class labels ({label_key!r} is "
            f"{label_feature!r}). Received: name={name!r}"
        )
    class_names = list(label_feature.names)
    image_bytes = size[0] * size[1] * 3

    def prepare(image, label):
        image = tf_resize(tf_to_rgb(image), size)
        return tf.ensure_shape(image, (*size, 3)), tf.cast(label, tf.int32)

    datasets = {}
    for s, split_name in zip(SPLITS, splits):
        training = s == "train"
        ds = builder.as_dataset(
            split=split_name, as_supervised=True, shuffle_files=training and shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        try:
            num_examples = info.splits[split_name].num_examples
        except (KeyError, ValueError, TypeError):
            num_examples = 0
        cache_to = resolve_cache(cache, image_bytes * num_examples if num_examples else None)
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        if training and shuffle and cache_to is None:
            ds = ds.shuffle(max(1, min(num_examples, SHUFFLE_BUFFER_BYTES // image_bytes)),
                            seed=seed, reshuffle_each_iteration=True)
        key = hashlib.sha256(f"{name}\0{split_name}\0{size}".encode()).hexdigest()[:16]
        datasets[s] = finish_pipeline(
            ds, training=training, shuffle=shuffle, seed=seed, batch_size=batch_size,
            cache=cache_to, cache_name=f"tftransfer-tfds-{key}", image_bytes=image_bytes,
            augment=augment, cardinality=max(1, num_examples),
        )
    return DataSplits(
        train=datasets["train"],
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=class_names,
    )
