"""Export format 2: encoded images in (TF Serving REST bodies with base64),
raw pixels on a second signature, wrong sizes and bad images refused."""

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import tftransfer as tft
from helpers import run_without_tftransfer
from helpers import tiny_classifier

# Decodes a TF Serving REST body by TF Serving's own JSON rules
# (tensorflow/serving g3doc/api_rest.md, util/json_tensor.cc), feeds it to the
# loaded signature and answers as the server would: row format (instances) ->
# {"predictions": [{output: value}]}, columnar (inputs) -> {"outputs": {...}}.
# It runs without tftransfer, as TF Serving does.
REST = r"""
import base64, json, sys
import tensorflow as tf

def value(v):
    # Any string tensor value may be {"b64": ...}: the server decodes it to bytes.
    if isinstance(v, dict):
        if set(v) != {"b64"}:
            raise ValueError(f"an object value must be {{'b64': ...}}, got {sorted(v)}")
        return base64.b64decode(v["b64"])
    if isinstance(v, list):
        return [value(e) for e in v]
    return v

with open(sys.argv[2]) as f:
    body = json.load(f)
if ("instances" in body) == ("inputs" in body):
    raise ValueError("a body has exactly one of 'instances' and 'inputs'")
loaded = tf.saved_model.load(sys.argv[1])
signature = loaded.signatures[body.get("signature_name", "serving_default")]
names = sorted(signature.structured_input_signature[1])
if "instances" in body:  # row format: one entry per example
    rows = body["instances"]
    if all(isinstance(r, dict) and set(r) <= set(names) and "b64" not in r for r in rows):
        feeds = {n: [value(r[n]) for r in rows] for n in names}
    else:  # a single input: each row is its value
        feeds = {names[0]: [value(r) for r in rows]}
else:  # columnar format: {name: [values]}, or the one input's values
    inputs = body["inputs"]
    feeds = ({n: value(inputs[n]) for n in names} if isinstance(inputs, dict)
             and "b64" not in inputs else {names[0]: value(inputs)})
try:
    out = signature(**{n: tf.constant(v) for n, v in feeds.items()})
except tf.errors.InvalidArgumentError as err:
    print(json.dumps({"error": err.message}))
    sys.exit(0)
def text(v):  # TF Serving answers strings as text (or b64 where not UTF-8)
    return [text(e) for e in v] if isinstance(v, list) else (
        v.decode() if isinstance(v, bytes) else v)

out = {k: text(v.numpy().tolist()) for k, v in out.items()}
if "instances" in body:
    n = len(next(iter(out.values())))
    print(json.dumps({"predictions": [{k: v[i] for k, v in out.items()} for i in range(n)]}))
else:
    print(json.dumps({"outputs": out}))
"""


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _photos(n=4, size=(45, 60)):
    """Smooth images (JPEG keeps them close to their pixels)."""
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    return [np.stack([(xx * (3 + i)) % 256, (yy * 4) % 256, (xx + yy * i) % 256],
                     -1).astype("uint8") for i in range(n)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_classifier(class_names=["ant", "bee", "cat"])
    base = tmp_path_factory.mktemp("serving")
    return model, tft.export_saved_model(model, base, top_k=2)


def _serve(path, body, tmp_path):
    request = tmp_path / "body.json"
    request.write_text(json.dumps(body))
    return run_without_tftransfer(REST, path, request)


def _expected(model, files):
    pixels = np.stack([tft.load_image(f, image_size=model.input_shape[1:3]) for f in files])
    return model.predict_proba(pixels.astype("float32"), verbose=0)


@pytest.mark.parametrize("form", ["instances", "inputs"])
def test_rest_bodies_of_base64_jpegs_are_served(exported, tmp_path, form):
    model, path = exported
    files = []
    for i, photo in enumerate(_photos()):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(_jpeg(photo))
    body = tft.serving_request(files, format=form)
    answer = _serve(path, body, tmp_path)
    expected = _expected(model, files)
    if form == "instances":
        rows = answer["predictions"]
        got = np.array([r["probabilities"] for r in rows])
        names = [r["class_names"] for r in rows]
        top = [r["top_k_class_names"] for r in rows]
    else:
        got = np.array(answer["outputs"]["probabilities"])
        names = answer["outputs"]["class_names"]
        top = answer["outputs"]["top_k_class_names"]
    # The serving graph decodes JPEGs as training does (test_decoders_agree).
    np.testing.assert_allclose(got, expected, atol=0.02)
    assert names == [model.class_names[i] for i in got.argmax(-1)]
    assert [t[0] for t in top] == names and all(len(t) == 2 for t in top)


def test_decoders_agree(tmp_path):
    """TensorFlow's decoders (serving) against Pillow's (training), after the
    resize: within 1 level for lossless formats; the same pixels for JPEG,
    which training decodes with TensorFlow's JPEG decoder too."""
    import tensorflow as tf

    from tftransfer.data.images import tf_decode_images

    photo = _photos(1, (90, 120))[0]
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, "uint8")])
    cases = [("jpg", "JPEG", photo, 0.0), ("png", "PNG", photo, 1.0),
             ("rgba.png", "PNG", rgba, 1.0), ("bmp", "BMP", photo, 1.0),
             ("webp", "WEBP", photo, 1.0)]
    files, limits = [], []
    for name, fmt, array, limit in cases:
        files.append(tmp_path / f"x.{name}")
        Image.fromarray(array).save(files[-1], fmt, **({"lossless": True} if fmt == "WEBP"
                                                        else {}))
        limits.append(limit)
    decoded = tf_decode_images(tf.constant([f.read_bytes() for f in files]), (32, 40)).numpy()
    for file, got, limit in zip(files, decoded, limits):
        reference = tft.load_image(file, image_size=(32, 40)).astype("float32")
        assert np.abs(got - reference).max() <= limit, file.name


def test_a_batch_with_a_bad_image_fails_naming_its_index(exported, tmp_path):
    _, path = exported
    good = _jpeg(_photos(1)[0])
    body = {"instances": [{"images": {"b64": base64.b64encode(b).decode()}}
                          for b in (good, good, b"not an image")]}
    answer = _serve(path, body, tmp_path)
    assert "images[2] is not a JPEG, PNG, GIF, BMP or WebP image (12 bytes)" in answer["error"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_truncated_image_with_a_valid_header_fails_naming_its_index(exported, tmp_path, fmt):
    """An interrupted upload: the header is right, the data end early. The
    decoder's own error names no index; the signature's does."""
    _, path = exported
    buffer = io.BytesIO()
    Image.fromarray(_photos(1)[0]).save(buffer, fmt)
    good = buffer.getvalue()
    cut = good[:len(good) // 2]
    for batch, index in (([good, cut, good], 1), ([cut], 0)):
        body = {"instances": [{"images": {"b64": base64.b64encode(b).decode()}} for b in batch]}
        answer = _serve(path, body, tmp_path)
        assert f"images[{index}] is truncated or corrupt" in answer["error"], answer


def test_pixel_signature_refuses_another_size(exported, tmp_path):
    _, path = exported
    body = {"signature_name": "serving_pixels",
            "instances": np.zeros((1, 40, 40, 3)).tolist()}  # the model takes 32x32
    answer = _serve(path, body, tmp_path)
    assert "must be raw pixels of shape [batch, 32, 32, 3]" in answer["error"]


def test_metadata_and_the_pixels_option(exported, tmp_path):
    model, path = exported
    metadata = tft.read_metadata(path)
    assert metadata["format"] == "tftransfer-export/2"
    assert sorted(metadata["signatures"]) == ["serving_default", "serving_pixels"]
    assert metadata["signatures"]["serving_default"]["inputs"]["images"]["dtype"] == "string"
    pixels = tft.export_saved_model(model, tmp_path / "pixels", inputs="pixels")
    signatures = tft.read_metadata(pixels)["signatures"]
    assert list(signatures) == ["serving_default"]
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "float32"


def test_export_option_errors(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ValueError, match=r"`inputs` must be one of \('bytes', 'pixels'\).*"
                                         r"Received: inputs='jpeg'"):
        tft.export_saved_model(model, tmp_path / "a", inputs="jpeg")
    with pytest.raises(ValueError, match=r"`top_k` must be an integer from 1 to the number of "
                                         r"classes \(3\).*Received: top_k=4"):
        tft.export_saved_model(model, tmp_path / "b", top_k=4)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_encode_image_applies_the_exif_orientation(tmp_path):
    photo = _photos(1, (20, 30))[0]
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    sent = Image.open(io.BytesIO(tft.encode_image(path)))
    assert sent.size == (20, 30)  # upright: width and height swapped
    plain = tmp_path / "plain.jpg"
    image.save(plain, "JPEG")
    assert tft.encode_image(plain) == plain.read_bytes()  # sent as it is


def test_serving_request_argument_errors():
    with pytest.raises(ValueError, match=r"`format` must be 'instances'.*Received: format='rows'"):
        tft.serving_request([b"x"], format="rows")
    with pytest.raises(TypeError, match=r"`image` must be a file path.*float64"):
        tft.encode_image(np.zeros((2, 2)))


def test_the_warmup_file_holds_a_valid_request_per_signature(exported):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed")
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    records = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    loaded = tf.saved_model.load(path)
    names = []
    for record in tf.data.TFRecordDataset(records):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        names.append(request.model_spec.signature_name)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](
            **{k: tf.constant(v) for k, v in inputs.items()})
        assert out["probabilities"].shape[0] == 2  # the request runs: two examples
    assert names == ["serving_default", "serving_pixels"]
