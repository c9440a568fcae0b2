"""Property-based fuzzing of the request path before the model: whatever the bytes, decoding and preprocessing
end in a 28x28 digit or in the documented client error (a ClientError with a 4xx status), never anything else;
and so does reading them as a number (/read: service/segment.py), its candidates in bounds and a path through
them whatever the model says.

CI runs a short budget; `make fuzz FUZZ_EXAMPLES=20000` runs a long one and prints how many inputs it tried.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.digits import encode
from service.decode import decode_image
from service.errors import ClientError
from service.pixels import parse_pixels
from service.preprocess import read_digit
from service.reading import best_reading
from service.segment import read_candidates

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow's notes on the corrupt files we feed it

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
MAX_PIXELS = int(os.environ.get("FUZZ_MAX_PIXELS", "4000000"))  # the service's limit is 25 M: `make fuzz` raises it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK", "I", "F")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "HEIF", "AVIF")


def outcome(data: bytes) -> str:
    """The request path up to the model, as /classify and as /read take it: 'digit', or the client error's
    status (the same for both, where /read reads digits). Anything else escapes."""
    reading = read_as_number(data)
    try:
        digit = read_digit(data, MAX_PIXELS)
    except ClientError as exc:
        assert 400 <= exc.status < 500, exc.status
        assert exc.message
        assert reading in ("digits", str(exc.status)), (reading, exc.status)
        return str(exc.status)
    assert digit.pixels.shape == (28, 28) and digit.pixels.dtype == np.uint8
    left, top, right, bottom = digit.box
    width, height = Image.open(io.BytesIO(data)).size
    assert 0 <= left < right <= width + 1 and 0 <= top < bottom <= height + 1, (digit.box, width, height)
    return "digit"


def read_as_number(data: bytes) -> str:
    """/read's path up to the model, then a path through its candidates for random probabilities: 'digits', or
    the client error's status."""
    try:
        candidates = read_candidates(data, MAX_PIXELS)
    except ClientError as exc:
        assert 400 <= exc.status < 500 and exc.message, exc.status
        return str(exc.status)
    count = len(candidates.spans)
    assert candidates.pixels.shape == (count, 28, 28) and candidates.pixels.dtype == np.uint8
    width, height = Image.open(io.BytesIO(data)).size
    for left, top, right, bottom in candidates.boxes:
        assert 0 <= left < right <= width + 1 and 0 <= top < bottom <= height + 1, ((left, top, right, bottom), width)
    rng = np.random.default_rng(count)
    probabilities = rng.dirichlet(np.ones(10), count)
    chosen = best_reading(candidates, probabilities, rng.normal(0, 5, (count, 10)))
    assert chosen and candidates.spans[chosen[0]][0] == 0
    assert candidates.spans[chosen[-1]][1] == candidates.pieces
    return "digits"


def sample_files() -> list[bytes]:
    """A real-looking digit in every format the service takes."""
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    image = Image.fromarray(digit)
    return [encode(image.convert("RGB") if f == "JPEG" else image, f) for f in FORMATS]


SAMPLES = sample_files()


@st.composite
def images(draw) -> bytes:
    """Valid images: random mode, size, aspect ratio and content (blank, all ink, noise, shapes), any format."""
    width = draw(st.integers(1, 600))
    height = draw(st.integers(1, 600))
    kind = draw(st.sampled_from(["blank", "ink", "noise", "stroke"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "blank":
        gray = np.full((height, width), draw(st.integers(0, 255)), np.uint8)
    elif kind == "ink":
        gray = np.zeros((height, width), np.uint8)
        gray[height // 4 : max(height // 4 + 1, 3 * height // 4), width // 3 : max(width // 3 + 1, 2 * width // 3)] = (
            255
        )
    elif kind == "noise":
        gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
    else:
        gray = np.full((height, width), 230, np.uint8)
        gray[rng.integers(0, height), :] = 20
    mode = draw(st.sampled_from(MODES))
    image = Image.fromarray(gray).convert(mode)
    fmt = draw(st.sampled_from(FORMATS))
    try:
        return encode(image, fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode: store it as PNG or TIFF
        return encode(image, "TIFF" if mode in ("I", "F", "CMYK") else "PNG")


@st.composite
def mutated(draw) -> bytes:
    """Real files with bytes flipped, cut, repeated or inserted: what a broken upload or an attacker sends."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 256))] * draw(st.integers(1, 4))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    assert outcome(data) != "digit" or data  # empty bodies are a 400


@FUZZ
@given(mutated())
def test_mutated_real_files(data):
    outcome(data)


@FUZZ
@given(images())
def test_valid_images_of_any_mode_size_and_content(data):
    outcome(data)


@FUZZ
@given(st.binary(max_size=8000), st.sampled_from(["application/json", "application/octet-stream", "application/x-npy"]))
def test_pixel_bodies(body, content_type):
    try:
        pixels = parse_pixels(body, content_type, 64)
    except ClientError as exc:
        assert 400 <= exc.status < 500
    else:
        assert pixels.dtype == np.uint8 and pixels.shape[1:] == (28, 28) and 1 <= len(pixels) <= 64


def test_the_image_at_the_pixel_limit_is_decoded_and_one_past_it_refused():
    side = int(MAX_PIXELS**0.5)
    at_limit = encode(Image.new("L", (side, side), 0), "PNG")
    assert outcome(at_limit) == "422"  # decoded fully: no ink, so no digit
    over = encode(Image.new("L", (side + 1, side + 1), 0), "PNG")
    with pytest.raises(ClientError) as refused:
        decode_image(over, MAX_PIXELS)
    assert refused.value.status == 413
    assert io.BytesIO(over).getbuffer().nbytes < 100_000  # refused from the header, small as the file is
