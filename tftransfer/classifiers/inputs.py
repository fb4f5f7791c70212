"""What a classifier takes, settled before any weights load: its input size
(from `input_shape`, else `image_size`, else the data) and its classes (from
`class_names` / `num_classes`, else the data), each checked against the others."""

from tftransfer.backbones.spec import image_shape
from tftransfer.data.splits import DataSplits


def _size(shape):
    return "x".join(str(d) for d in shape)


def requested_input_shape(*, input_shape=None, image_size=None, data=None):
    """The input shape the caller asks for, or None (the backbone's default).

    `input_shape` wins, then `image_size`, then the data's images; two that
    are given and disagree are an error naming both.
    """
    given = []
    if input_shape is not None:
        given.append(("input_shape", image_shape(input_shape, name="input_shape")))
    if image_size is not None:
        given.append(("image_size", image_shape(image_size, name="image_size")))
    if data is not None:
        shape = data_image_shape(data)
        if shape is not None:
            given.append(("data", shape))
    for (name, shape), (other, other_shape) in zip(given, given[1:]):
        if shape != other_shape:
            what = "the data's images are" if other == "data" else f"`{other}` asks for"
            raise ValueError(
                f"`{name}` asks for {_size(shape)} images but {what} {_size(other_shape)}. "
                "Pass one of them, or make them agree (the loader's `image_size` decides the "
                f"data's). Received: {name}={shape!r}, "
                + (f"data with images of shape {other_shape!r}" if other == "data"
                   else f"{other}={other_shape!r}"))
    return given[0][1] if given else None


def data_image_shape(data):
    """The shape of one image of `data` (a `DataSplits`), or None."""
    if not isinstance(data, DataSplits):
        raise TypeError(
            "`data` must be a `tftransfer.DataSplits` (what `image_dataset_from_folder`, "
            "`dataset_from_arrays` and `dataset_from_tfds` return). "
            f"Received: data of type {type(data).__name__}")
    return data.input_shape


def resolve_classes(*, num_classes=None, class_names=None, data=None):
    """`num_classes` and `class_names`, filled in from `data` when given there;
    a disagreement with the data is an error naming both."""
    if data is None:
        return num_classes, class_names
    names = list(data.class_names)
    if class_names is not None and list(class_names) != names:
        raise ValueError(
            f"`class_names` ({len(class_names)}) disagree with the data's classes "
            f"({len(names)}: {', '.join(names)}). Leave `class_names` out to take the "
            f"data's. Received: class_names={list(class_names)!r}")
    if num_classes is not None and num_classes != len(names):
        raise ValueError(
            f"`num_classes` is {num_classes} but the data has {len(names)} classes "
            f"({', '.join(names)}). Leave `num_classes` out to take the data's. "
            f"Received: num_classes={num_classes!r}")
    return None, names


def check_backbone_input(backbone, shape, *, source):
    """Refuses a backbone whose fixed input differs from `shape` (channels
    included: a grayscale model does not take RGB data)."""
    if shape is None:
        return
    expected = tuple(backbone.inputs[0].shape[1:])
    if len(expected) != 3 or all(d is None or d == s for d, s in zip(expected, shape)):
        return
    if expected[2] is not None and expected[2] != shape[2]:
        raise ValueError(
            f"The backbone {backbone.name!r} takes {expected[2]}-channel images but {source} "
            f"{shape[2]}-channel ones (tftransfer's loaders give RGB). Use a backbone made "
            f"for {shape[2]} channels, e.g. retrain the source model on RGB images. "
            f"Received: a backbone with input shape {expected}, {source} {shape}")
    raise ValueError(
        f"The backbone {backbone.name!r} takes {_size(expected)} images but {source} "
        f"{_size(shape)}. A model or `.keras` backbone keeps its input size: load the data "
        f"with image_size={expected[:2]!r}, or use a backbone by name, which is built at any "
        f"size. Received: a backbone with input shape {expected}, {source} {shape}")
