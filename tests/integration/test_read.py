"""POST /read in process (harness.in_process): numbers made of real MNIST test digits (harness/numbers.py) in
every form /classify takes, the answer's contract, and a 4xx for every bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from harness.digits import encode, sample_digits
from harness.in_process import in_process
from harness.numbers import hairline_number, number_image, number_set, number_strip
from service.responses import Reading
from service.segment import MAX_DIGITS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client():
    with in_process() as client:
        yield client


@pytest.fixture(scope="module")
def number(digits) -> tuple[np.ndarray, str]:
    """A strip of five MNIST test digits and the number it shows."""
    images, labels = digits
    return number_strip(images[:5], np.random.default_rng(0)), "".join(map(str, labels[:5]))


def test_a_photo_of_a_number_is_read_digit_by_digit(client, number) -> None:
    strip, want = number
    answer = client.post("/read", content=number_image(strip, "plain", 1), headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200, answer.text
    reading = Reading.model_validate(answer.json())
    assert reading.text == want
    assert [d.digit for d in reading.digits] == [int(c) for c in want]
    assert reading.confidence == pytest.approx(np.prod([d.confidence for d in reading.digits]))
    # Digits apart can only be cut one way: each digit's confidence is the model's.
    assert all(d.confidence == pytest.approx(max(d.probabilities), abs=1e-6) for d in reading.digits)
    lefts = [d.box[0] for d in reading.digits]
    width, height = Image.open(io.BytesIO(number_image(strip, "plain", 1))).size
    assert lefts == sorted(lefts) and all(0 <= d.box[0] < d.box[2] <= width for d in reading.digits)
    assert all(0 <= d.box[1] < d.box[3] <= height for d in reading.digits)
    assert all(abs(sum(d.probabilities) - 1) < 1e-4 for d in reading.digits)
    assert "image" not in answer.json()["digits"][0]


def touching_reading(client, first: int) -> Reading:
    """/read's answer for three sample digits (harness.digits) from `first` on, drawn touching on a canvas."""
    images, _ = sample_digits()
    strip = number_strip(images[first : first + 3], np.random.default_rng(0), touching=True)
    answer = client.post("/read", content=number_image(strip, "canvas", 1), headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    reading = Reading.model_validate(answer.json())
    assert all(d.confidence <= max(d.probabilities) + 1e-9 for d in reading.digits)
    return reading


def test_touching_digits_that_could_be_cut_two_ways_are_read_unsurely(client) -> None:
    """Three MNIST test digits ("454", samples 145-147) drawn touching: the reading's cuts have a rival ("4154",
    the first 4 cut in two), and the first digit's confidence (the model's, times how surely its strokes make one
    digit) says so, where the model alone is sure of every digit: 0.87 when written (0.52 with the line reader
    before the shipped one, which found "4154" likelier than "454")."""
    reading = touching_reading(client, 145)
    assert reading.text == "454"
    assert reading.digits[0].confidence < 0.9 * max(reading.digits[0].probabilities)
    assert reading.confidence < 0.9 < np.prod([max(d.probabilities) for d in reading.digits])


def test_touching_digits_that_the_two_models_agree_on_are_read_surely(client) -> None:
    """ "715" (samples 39-41) drawn touching: the path search alone cuts it as "75", which the line reader finds
    unlikely; "715", which both models read, is the reading, and a sure one (its one rival, "115", the 7 read as
    its second likeliest digit, far behind)."""
    reading = touching_reading(client, 39)
    assert reading.text == "715" and reading.confidence > 0.85


def test_numbers_whose_digits_all_touch_are_read_with_the_line_reader(client, digits) -> None:
    """20 numbers of four MNIST test digits, each touching its neighbours (1-4 px, as `make bench-read`'s touching
    set), drawn on a canvas and as a phone photo: the line reader tells /read how many digits each holds. Measured
    when written: 19 of 20 (the path search alone: 14)."""
    images, labels = digits
    rng = np.random.default_rng(5)
    right = 0
    for n in range(20):
        strip = number_strip(images[4 * n : 4 * n + 4], rng, touching=True)
        body = number_image(strip, "canvas" if n % 2 else "plain", n)
        answer = client.post("/read", content=body, headers={"content-type": "image/png" if n % 2 else "image/jpeg"})
        assert answer.status_code == 200, answer.text
        right += answer.json()["text"] == "".join(map(str, labels[4 * n : 4 * n + 4]))
    assert right >= 17


@pytest.mark.parametrize("rendering", ["canvas", "transparent", "12mp"])
def test_multipart_drawings_and_large_photos(client, number, rendering: str) -> None:
    strip, want = number
    answer = client.post("/read", files={"image": ("number", number_image(strip, rendering, 2))})
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"] == want


def test_debug_adds_each_digits_28x28_image(client, number) -> None:
    strip, want = number
    answer = client.post("/read", params={"debug": "true"}, files={"image": ("n", number_image(strip, "canvas", 3))})
    digits = answer.json()["digits"]
    assert len(digits) == len(want)
    assert all(Image.open(io.BytesIO(base64.b64decode(d["image"]))).size == (28, 28) for d in digits)


def test_a_digit_below_min_confidence_is_a_422_with_the_whole_reading(client, number) -> None:
    strip, want = number
    body = {"files": {"image": ("n", number_image(strip, "canvas", 3))}}
    confidences = [d["confidence"] for d in client.post("/read", **body).json()["digits"]]
    threshold = sorted(confidences)[1] + 1e-9  # the two least sure fall below it
    answer = client.post("/read", params={"min_confidence": threshold}, **body)
    assert answer.status_code == 422
    error = answer.json()
    assert error["not_confident"] == sorted(np.argsort(confidences)[:2].tolist())
    assert error["reading"]["text"] == want and "unsure" in error["error"]


def test_more_digits_than_allowed_is_a_422_that_says_so(client, digits) -> None:
    images, _ = digits
    strip = number_strip(images[: MAX_DIGITS + 4], np.random.default_rng(1))
    answer = client.post("/read", files={"image": ("n", number_image(strip, "canvas", 4))})
    assert answer.status_code == 422
    assert answer.json()["digits"] > MAX_DIGITS and f"more than {MAX_DIGITS}" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400),
        ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 415),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415),
        ({"files": {"other": ("x.png", b"x")}}, 422),
        ({"content": encode(Image.new("L", (200, 60), 255)), "headers": {"content-type": "image/png"}}, 422),
        ({"content": encode(Image.new("L", (200, 60), 0)), "headers": {"content-type": "image/png"}}, 422),
    ],
    ids=["empty", "not an image", "json", "no image field", "blank paper", "blank screen"],
)
def test_bad_input_is_a_json_4xx(client, body: dict, status: int) -> None:
    answer = client.post("/read", **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]


def test_reads_are_counted_under_their_own_endpoint(client, number) -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("digitserve_requests_total", {"endpoint": "/read", "status": "200"}) or 0.0

    before = count()
    client.post("/read", files={"image": ("n", number_image(number[0], "canvas", 5))})
    assert count() == before + 1


def test_classify_refuses_an_image_of_several_digits_and_says_how_many(client, number) -> None:
    strip, want = number
    for rendering in ("plain", "canvas"):
        answer = client.post("/classify", files={"image": ("n", number_image(strip, rendering, 6))})
        assert answer.status_code == 422, answer.text
        assert answer.json() == {"error": f"the image holds {len(want)} digits: POST it to /read", "digits": len(want)}


def test_a_number_in_hairline_strokes_is_read_and_classify_says_how_many_digits(client) -> None:
    image, boxes = hairline_number()
    read = client.post("/read", files={"image": ("n", image)})
    assert read.status_code == 200, read.text
    assert read.json()["text"] == "174" and [d["box"] for d in read.json()["digits"]] == [list(b) for b in boxes]
    answer = client.post("/classify", files={"image": ("n", image)})
    assert answer.status_code == 422 and answer.json()["digits"] == 3, answer.text


def test_classify_still_answers_one_digit_with_specks_and_lines(client, digits) -> None:
    from harness.photos import photo

    images, labels = digits
    answers = [
        client.post("/classify", content=photo(images[n], condition, n), headers={"content-type": "image/jpeg"})
        for condition in ("ruled", "shadowed")
        for n in range(40, 70)
    ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert np.mean([a.json()["digit"] for a in answers] == np.tile(labels[40:70], 2)) >= 0.95


@pytest.mark.parametrize(
    ("condition", "n"),
    [("shadowed", 149), ("blue_ink", 149), ("shadowed", 219), ("plain", 33), ("blue_ink", 33), ("ruled", 164)],
)
def test_a_wide_digit_alone_in_a_photo_is_one_digit(client, digits, condition, n) -> None:
    """A 2 with a long tail and a 5 with a long flag (MNIST test digits 149, 219), one piece of ink each: cut, they
    read as two sure digits ("21", "65"); the model reads the whole surely, so /read answers what /classify does.
    So too where the line reader finds two digits, but not surely (service/reading.py, SEVERAL): a 4 open at the
    top (33), that it reads "21", and a 6 with a long stem (164), "16"; in blue ink, 33 is 1.26 times as wide as
    tall (WHOLE_ASPECT)."""
    from harness.photos import photo

    images, labels = digits
    body = photo(images[n], condition, n)
    read = client.post("/read", content=body, headers={"content-type": "image/jpeg"})
    classified = client.post("/classify", content=body, headers={"content-type": "image/jpeg"})
    assert read.status_code == 200 and classified.status_code == 200, (read.text, classified.text)
    assert read.json()["text"] == str(classified.json()["digit"]) == str(labels[n])


@pytest.mark.parametrize(
    ("rendering", "count", "want", "was"),
    [
        ("canvas", 92, "791524", "791529"),
        ("transparent", 82, "915249038", "915299038"),
        ("shadowed", 68, "70200", "76200"),
    ],
)
def test_numbers_written_apart_are_read_with_the_line_reader_too(
    client, mnist_test_set, rendering, count, want, was
) -> None:
    """Numbers of test digits from 2,000 written with gaps (`make bench-read`'s kind, not its digits), each with a
    digit whose crop the model alone reads as its second likeliest (what the path search read: `was`). The line
    reader reads the whole line right, and its reading is weighed in wherever the line was read, not only where
    pieces were cut (service/reading.py, RELAX_APART)."""
    images, labels = mnist_test_set
    body, truth = number_set(images[2000:], labels[2000:], count, rendering, seed=0)[-1]
    answer = client.post("/read", files={"image": ("number", body)})
    assert answer.status_code == 200, answer.text
    assert truth == want != was and answer.json()["text"] == want
