import io

import numpy as np
import pytest
from PIL import Image

from service.decode import decode_image
from service.errors import ClientError
from service.preprocess import SIZE, frame_digit, normalise, to_gray, to_mnist, white_on_black
from tests.digits import encode

LIMIT = 25_000_000


def digit_image(size=(120, 160)) -> Image.Image:
    """A black '1'-like bar and a foot on white paper, away from the centre."""
    page = np.full(size[::-1], 240, np.uint8)
    page[30:130, 70:82] = 10
    page[120:130, 55:100] = 10
    return Image.fromarray(page)


def test_decode_rejects_client_mistakes_with_their_status():
    png = encode(digit_image())
    cases = {
        b"": 400,
        b"just some text": 415,
        png[: len(png) // 2]: 400,  # truncated
        png[:100] + bytes(200) + png[300:]: 400,  # corrupt pixel data
    }
    for data, status in cases.items():
        with pytest.raises(ClientError) as error:
            decode_image(data, LIMIT)
        assert error.value.status == status, data[:20]
    with pytest.raises(ClientError) as error:
        decode_image(png, max_pixels=100 * 100)
    assert error.value.status == 413 and "pixels" in error.value.message


def test_pixel_limit_is_checked_before_decompressing():
    bomb = encode(Image.new("L", (6000, 6000)))  # tiny file, 36 megapixels
    assert len(bomb) < 100_000
    with pytest.raises(ClientError) as error:
        decode_image(bomb, LIMIT)
    assert error.value.status == 413


def test_first_frame_of_a_multi_frame_image():
    frames = [Image.new("L", (40, 40), 255), Image.new("L", (40, 40), 0)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    image = decode_image(gif.getvalue(), LIMIT)
    assert np.asarray(image.convert("L")).min() == 255


def test_exif_orientation_is_honoured():
    image = digit_image((100, 60))  # 100 wide, 60 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif), LIMIT)
    assert decoded.size == (60, 100)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"])
def test_every_mode_gives_the_same_digit(mode):
    reference = to_mnist(digit_image())
    image = digit_image()
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(image, np.uint16) * 257)
    elif mode == "1":
        converted = image.convert(mode, dither=Image.Dither.NONE)  # dithering would spray the paper with dots
    else:
        converted = image.convert(mode)
    for fmt in ("PNG", "TIFF"):
        if mode == "CMYK" and fmt == "PNG":
            continue
        got = to_mnist(decode_image(encode(converted, fmt), LIMIT))
        assert np.abs(got.astype(int) - reference).mean() < 3, (mode, fmt)


def test_strokes_on_a_transparent_canvas_survive():
    canvas = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    canvas.paste((0, 0, 0, 255), (45, 10, 55, 90))  # black strokes: lost if alpha were dropped
    digit = to_mnist(canvas)
    assert digit.max() == 255 and digit[0].max() == 0


def test_light_backgrounds_are_inverted_and_dark_ones_kept():
    gray = to_gray(digit_image())
    assert white_on_black(gray).mean() < 50
    assert np.array_equal(white_on_black(255 - gray), 255 - gray)


def test_digit_fits_20x20_centred_by_mass():
    digit = frame_digit(white_on_black(to_gray(digit_image())))
    assert digit.shape == (SIZE, SIZE) and digit.dtype == np.uint8
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
    cy, cx = (np.indices(digit.shape) * digit).reshape(2, -1).sum(1) / digit.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_noise_specks_do_not_widen_the_crop():
    gray = white_on_black(to_gray(digit_image()))
    noisy = gray.copy()
    noisy[2, 2] = noisy[-3, -3] = 40  # faint specks far from the digit
    np.testing.assert_allclose(frame_digit(noisy), frame_digit(gray), atol=2)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_images_have_no_digit(value):
    for size in ((28, 28), (200, 100)):
        with pytest.raises(ClientError) as error:
            to_mnist(Image.new("L", size, value))
        assert error.value.status == 422 and "no digit" in error.value.message


def test_mnist_format_passes_through_unchanged(mnist_dir):
    from training.data import load_split

    images = load_split("test", mnist_dir).images[:50]
    for pixels in images:
        assert np.array_equal(to_mnist(decode_image(encode(Image.fromarray(pixels)), LIMIT)), pixels)


def test_normalise_matches_training():
    from training.data import normalise as training_normalise

    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(normalise(pixels, 0.1307, 0.3081), training_normalise(pixels))
