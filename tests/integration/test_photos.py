"""Phone photos of real MNIST test digits (harness/photos.py) through the service in process: read under every
condition, the box where the digit was found, the formats phones send, a photo cut short. That photos never stall
small requests on a real server is test_stalls.py's."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from harness.digits import encode
from harness.in_process import in_process
from harness.photos import CONDITIONS, photo_and_box, photo_set, photo_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Photos per condition (12 MP ones are slower to make): enough to prove every condition is read; its accuracy is
# `make bench-photos`' (1,000 of each: docs/benchmarks.md).
PHOTOS = int(os.environ.get("PHOTO_DIGITS", "40"))
PHOTOS_12MP = int(os.environ.get("PHOTO_DIGITS_12MP", "16"))


@pytest.fixture(scope="module")
def client():
    with in_process() as client:
        yield client


def classify(client, body: bytes, debug: bool = False, content_type: str = "image/jpeg") -> dict:
    response = client.post("/classify", params={"debug": debug}, content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    return response.json()


def overlap(a, b) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return width * height / (area(a) + area(b) - width * height)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_photos_are_read_under_every_condition(client, mnist_test_set, condition):
    images, labels = mnist_test_set
    n = PHOTOS_12MP if condition == "12mp" else PHOTOS
    photos, answers = [], []
    for data, box in photo_stream(images[:n], condition):  # read as made: the next are drawn in other processes
        photos.append((data, box))
        answers.append(classify(client, data, debug=True))
    digits = np.array([a["digit"] for a in answers])
    # One wrong digit allowed per 100, and in a smaller set too.
    wrong = np.flatnonzero(digits != labels[:n]).tolist()
    assert len(wrong) <= max(1, round(0.01 * n)), (condition, wrong)
    # The box where the digit was found, in the photo's own pixels, is where it was drawn.
    overlaps = [overlap(a["box"], box) for a, (_, box) in zip(answers, photos, strict=True)]
    assert np.median(overlaps) >= 0.8 and np.mean(np.array(overlaps) >= 0.5) >= 0.98, sorted(overlaps)[:5]


@pytest.mark.parametrize(("fmt", "content_type"), [("HEIF", "image/heic"), ("AVIF", "image/avif")])
def test_phone_formats_are_read_upright(client, mnist_test_set, fmt, content_type):
    images, labels = mnist_test_set
    for i in range(3):
        data, box = photo_and_box(images[i], "plain", seed=i)
        picture = Image.open(io.BytesIO(data))
        scale = 800 / max(picture.size)  # HEVC and AV1 encoders are slow: a smaller photo keeps the test quick
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)))
        box = [v * scale for v in box]
        # Stored lying on its side, with the EXIF orientation that turns it upright (as phones do).
        exif = Image.Exif()
        exif[0x0112] = 6
        fast = {"enc_params": {"preset": "ultrafast"}} if fmt == "HEIF" else {"speed": 10}
        stored = encode(picture.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif.tobytes(), quality=80, **fast)
        answer = classify(client, stored, debug=True, content_type=content_type)
        assert answer["digit"] == labels[i], (fmt, i)
        assert overlap(answer["box"], box) >= 0.6, (answer["box"], box)
        multipart = client.post("/classify", files={"image": ("photo.heic", stored)})
        assert multipart.status_code == 200 and multipart.json()["digit"] == labels[i]


def test_a_12_megapixel_photo_cut_short_is_a_400(client, mnist_test_set):
    images, labels = mnist_test_set
    data = photo_set(images[:1], "12mp", workers=1)[0][0]
    assert classify(client, data)["digit"] == labels[0]
    for cut in (data[: len(data) // 2], data[:1000] + bytes(100)):
        response = client.post("/classify", content=cut, headers={"content-type": "image/jpeg"})
        assert response.status_code == 400 and "corrupt or truncated" in response.json()["error"]
