import io

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageDraw

from harness.digits import encode, sample_digits
from harness.plain import cut_to_ink
from service.contract import standardise, to_model_input
from service.decode import MAX_SIDE, MIN_SIDE, decode_image
from service.errors import ClientError
from service.preprocess import SIZE, fit_and_centre, light_background, read_digit, to_gray, to_mnist

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
    image = decode_image(gif.getvalue(), LIMIT).image
    assert np.asarray(image.convert("L")).min() == 255


def test_exif_orientation_is_honoured():
    image = digit_image((100, 60))  # 100 wide, 60 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif), LIMIT)
    assert decoded.image.size == decoded.size == (60, 100)
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270), float)
    assert np.abs(np.asarray(decoded.image, float) - expected).mean() < 3


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_keeps_its_full_size():
    photo = digit_image((4032, 3024)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # held upright: displayed 3024 wide, 4032 high
    decoded = decode_image(encode(photo, "JPEG", exif=exif), LIMIT)
    assert decoded.size == (3024, 4032)
    # 1/8 by the decoder's DCT scaling (378x504), then halved into the working size.
    assert MIN_SIDE <= max(decoded.image.size) <= MAX_SIDE and decoded.image.size == (189, 252)
    assert decoded.image.mode == "L"  # luminance only: the decoder skips the colour
    assert decoded.scale == (16, 16)


def test_a_large_png_is_reduced_to_the_working_size():
    decoded = decode_image(encode(digit_image((2000, 1500))), LIMIT)
    assert decoded.size == (2000, 1500) and MIN_SIDE <= max(decoded.image.size) <= MAX_SIDE


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_heic_and_avif_with_their_orientation(fmt):
    image = digit_image((100, 60)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image, fmt, exif=exif.tobytes(), quality=90)
    decoded = decode_image(data, LIMIT)
    assert decoded.image.size == decoded.size == (60, 100)
    expected = np.asarray(image.convert("L").transpose(Image.Transpose.ROTATE_270), float)
    assert np.abs(np.asarray(decoded.image.convert("L"), float) - expected).mean() < 8
    with pytest.raises(ClientError) as error:
        decode_image(data[: len(data) // 2], LIMIT)
    assert error.value.status == 400


def test_heif_pixel_limit_is_checked_from_the_header():
    data = encode(Image.new("RGB", (1200, 1000), "white"), "HEIF", quality=50)
    with pytest.raises(ClientError) as error:
        decode_image(data, max_pixels=1_000_000)
    assert error.value.status == 413
    assert pillow_heif.register_heif_opener  # the opener the service registers


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"])
def test_every_mode_gives_the_same_digit(mode):
    reference = to_mnist(digit_image()).pixels
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
        got = read_digit(encode(converted, fmt), LIMIT).pixels
        assert np.abs(got.astype(int) - reference).mean() < 3, (mode, fmt)


def test_strokes_on_a_transparent_canvas_survive():
    canvas = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    canvas.paste((0, 0, 0, 255), (45, 10, 55, 90))  # black strokes: lost if alpha were dropped
    digit = to_mnist(canvas)
    assert digit.pixels.max() == 255 and digit.pixels[0].max() == 0
    assert digit.box == (45, 10, 55, 90)


def test_paper_is_light_and_screens_are_dark():
    gray = to_gray(digit_image())
    assert light_background(gray) and not light_background(255 - gray)
    shadowed = gray * np.linspace(0.3, 1, gray.shape[1])[None, :]  # most of the border in a deep shadow
    assert light_background(shadowed)


def test_a_digit_cut_to_its_ink_is_read_in_either_polarity():
    # A "1" and a "0" cut to their ink touch every edge: a fifth of the border is bright on black.
    images, labels = sample_digits()
    for label in (0, 1):
        pixels = images[list(labels).index(label)]
        cut = cut_to_ink(pixels).repeat(4, 0).repeat(4, 1)
        assert not light_background(cut.astype(np.float32)) and light_background(255 - cut.astype(np.float32))
        white, black = to_mnist(Image.fromarray(cut)), to_mnist(Image.fromarray(255 - cut))
        full = (0, 0, cut.shape[1], cut.shape[0])  # within a source pixel (4 px): faint edges may fall outside
        assert np.abs(np.subtract(white.box, full)).max() <= 4 and np.abs(np.subtract(black.box, full)).max() <= 4
        assert np.abs(white.pixels.astype(int) - black.pixels).mean() < 3, label


def test_digit_fits_20x20_centred_by_mass():
    digit = to_mnist(digit_image()).pixels
    assert digit.shape == (SIZE, SIZE) and digit.dtype == np.uint8
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
    cy, cx = (np.indices(digit.shape) * digit).reshape(2, -1).sum(1) / digit.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_fit_and_centre_keeps_the_aspect_ratio():
    crop = np.zeros((100, 20), np.float32)
    crop[:, 5:15] = 255
    digit = fit_and_centre(crop)
    cols = np.flatnonzero(digit.max(0) > 128)
    assert digit.max(1).astype(bool).sum() == 20 and 1 <= len(cols) <= 3


def test_the_box_is_in_the_full_images_pixels():
    # digit_image at 10x, 1200x1600: its bar and foot span columns 550-1000 and rows 300-1300.
    page = Image.fromarray(np.asarray(digit_image()).repeat(10, 0).repeat(10, 1))
    left, top, right, bottom = read_digit(encode(page.convert("RGB"), "JPEG", quality=95), LIMIT).box
    assert abs(left - 550) <= 12 and abs(right - 1000) <= 12 and abs(top - 300) <= 12 and abs(bottom - 1300) <= 12


def test_a_hairline_digit_is_read_in_the_image_enlarged_and_boxed_in_its_own_pixels():
    """A "7" drawn one pixel wide in light grey (a Hairline font's strokes at a small size): no 3x3 patch is dark
    enough to be ink, so it is looked for again in the image enlarged; the box is in the image's own pixels,
    and the digit the model sees is the drawing's shape, not a blank."""
    page = Image.new("L", (60, 60), 235)
    ImageDraw.Draw(page).line([(20, 15), (40, 15), (28, 45)], fill=170, width=1)
    digit = to_mnist(page)
    left, top, right, bottom = digit.box
    assert abs(left - 20) <= 1 and abs(top - 15) <= 1 and abs(right - 41) <= 1 and abs(bottom - 46) <= 1
    reference = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(reference).line([(20, 15), (40, 15), (28, 45)], fill=255, width=3)
    expected = to_mnist(reference).pixels.astype(np.float32)
    assert np.corrcoef(digit.pixels.astype(np.float32).ravel(), expected.ravel())[0, 1] > 0.8


def test_noise_specks_do_not_widen_the_crop():
    clean = np.asarray(digit_image(), np.float32)
    noisy = clean.copy()
    noisy[2, 2] = noisy[-3, -3] = 150  # faint specks far from the digit
    np.testing.assert_allclose(
        to_mnist(Image.fromarray(noisy.astype(np.uint8))).pixels, to_mnist(digit_image()).pixels, atol=2
    )


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_images_have_no_digit(value):
    for size in ((28, 28), (200, 100)):
        with pytest.raises(ClientError) as error:
            to_mnist(Image.new("L", size, value))
        assert error.value.status == 422 and "no digit" in error.value.message


def test_mnist_format_passes_through_unchanged():
    images = sample_digits()[0][:50]
    for pixels in images:
        digit = read_digit(encode(Image.fromarray(pixels)), LIMIT)
        assert np.array_equal(digit.pixels, pixels) and digit.box == (0, 0, 28, 28)


def test_model_input_looks_up_what_the_formula_gives_for_every_byte():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    expected = standardise(pixels.astype(np.float32) / 255.0, 0.1307, 0.3081)[:, None]
    assert np.array_equal(to_model_input(pixels, 0.1307, 0.3081), expected)
    assert np.array_equal(to_model_input(pixels.astype(np.float64), 0.1307, 0.3081), expected)  # not bytes: computed


def test_model_input_scales_pixels_as_the_card_says():
    pixels = np.array([[[0] * 28] * 27 + [[255] * 28]], dtype=np.uint8)
    inputs = to_model_input(pixels, 0.1307, 0.3081)
    assert inputs.shape == (1, 1, 28, 28) and inputs.dtype == np.float32
    np.testing.assert_allclose(inputs[0, 0, 0, 0], -0.1307 / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(inputs[0, 0, 27, 0], (1 - 0.1307) / 0.3081, rtol=1e-6)


@pytest.mark.parametrize("size", [(2000, 1), (1, 3000)])
def test_a_jpeg_strip_one_pixel_thin_is_decoded_not_a_crash(size):
    """Found by the fuzzer: the reduced-scale JPEG decode asked Pillow for a 0-pixel side (a ZeroDivisionError)."""
    decoded = decode_image(encode(Image.new("L", size, 128), "JPEG"), LIMIT)
    assert decoded.size == size and min(decoded.image.size) == 1
