"""Finding ink on paper (service/photo.py) on small synthetic pages: each step, then the whole."""

import numpy as np
import pytest
from PIL import Image

from service.errors import ClientError
from service.photo import ThinStrokes, find_digit, measure_darkness, measure_stroke_darkness, remove_lines

H, W = 300, 400


def lit_page(paper: float = 235.0) -> np.ndarray:
    """Paper under uneven light: vignetting, a gradient, and a shadow whose edge crosses the page."""
    y, x = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    light = (1 - 0.5 * ((y - 0.5) ** 2 + (x - 0.4) ** 2)) * (1 - 0.3 * x)
    # A shadow whose edge blurs over 8 px (2 % of the width): sharper than a hand's or a phone's shadow.
    light *= 1 - 0.5 / (1 + np.exp(-(x + 0.3 * y - 0.6) * W / 2))
    return (paper * light).astype(np.float32)


def with_strokes(page: np.ndarray, boxes, ink: float = 0.12) -> np.ndarray:
    """Dark strokes (a fraction `ink` of the paper's brightness under them) filling each (left, top, right, bottom)."""
    page = page.copy()
    for left, top, right, bottom in boxes:
        page[top:bottom, left:right] *= ink
    return page


def test_uneven_light_and_a_shadow_edge_are_not_ink():
    ink = measure_darkness(lit_page())
    # Far below any stroke's darkness (a band along the shadow's edge is darker, and runs edge to edge).
    assert np.percentile(ink, 99) < 0.08
    with pytest.raises(ClientError) as error:
        find_digit(lit_page())
    assert error.value.status == 422 and "no digit" in error.value.message


def test_ink_is_darkness_relative_to_the_paper_under_it():
    page = with_strokes(lit_page(), [(60, 100, 70, 200), (300, 100, 310, 200)])  # one in the light, one in shadow
    ink = measure_darkness(page)
    lit, shaded = ink[150, 62:68].mean(), ink[150, 302:308].mean()
    assert lit > 0.8 and shaded > 0.8 and abs(lit - shaded) < 0.05
    assert measure_stroke_darkness(ink) == pytest.approx(0.88, abs=0.03)


def ruled_page(tilt_degrees: float = 2.0) -> np.ndarray:
    """Paper with faint ruled lines every 24 px, slightly tilted, 2 px thick, and a margin line."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    sheared = y + x * np.tan(np.radians(tilt_degrees))
    page = np.full((H, W), 235, np.float32)
    page[(sheared % 24) < 2] = 185
    page[:, 40:42] = 170
    return page


def test_ruled_lines_are_erased_and_a_stroke_crossing_them_kept():
    page = with_strokes(ruled_page(), [(200, 60, 210, 240)])  # a "1" crossing seven lines
    crop, box, _ = find_digit(page)
    left, top, right, bottom = box
    assert abs(left - 200) <= 2 and abs(right - 210) <= 2 and abs(top - 60) <= 2 and abs(bottom - 240) <= 2
    column = crop[:, crop.shape[1] // 2]
    assert column.min() > 200, "the stroke has gaps where the lines crossed it"
    ink = measure_darkness(ruled_page())
    cleaned = remove_lines(ink, ink > 0.05)
    assert cleaned[4:-4].max() < 0.05, "line residue left"  # a line that leaves the page within 60 px may stay


def test_a_tall_one_filling_the_frame_is_not_taken_for_a_line():
    page = with_strokes(np.full((H, W), 230, np.float32), [(190, 20, 215, 280)])  # 87 % of the height
    _, (left, top, right, bottom), _ = find_digit(page)
    assert (left, top, right, bottom) == (190, 20, 215, 280)


def test_the_digits_parts_are_kept_and_specks_away_from_it_dropped():
    # A "5" written in two strokes: its body, and its flag a few pixels above; specks in a corner.
    page = with_strokes(
        np.full((H, W), 230, np.float32),
        [(150, 120, 160, 200), (150, 190, 220, 200), (150, 110, 215, 116), (20, 20, 23, 23), (380, 280, 383, 283)],
    )
    _, box, _ = find_digit(page)
    assert box == (150, 110, 220, 200)


def test_the_sheets_edge_and_a_dark_desk_are_not_the_digit():
    page = np.full((H, W), 230, np.float32)
    page[:, :80] = 40  # the desk beside the sheet, from edge to edge
    page = with_strokes(page, [(250, 100, 262, 220)])
    _, box, _ = find_digit(page)
    assert box == (250, 100, 262, 220)


def test_a_photo_of_a_digit_frames_like_mnist():
    """A real-looking stroke drawing (a "7"), photographed: the 28x28 is the drawing, framed as MNIST does."""
    from service.preprocess import fit_and_centre

    drawing = Image.new("L", (100, 100), 0)
    from PIL import ImageDraw

    ImageDraw.Draw(drawing).line([(20, 15), (80, 15), (40, 90)], fill=255, width=12)
    ink = np.asarray(drawing, np.float32) / 255
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    page = lit_page()
    page[100:200, 150:250] *= 1 - 0.85 * ink
    crop, _, _ = find_digit(page)
    digit = fit_and_centre(crop).astype(np.float32)
    reference = fit_and_centre(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] * 255).astype(np.float32)
    correlation = np.corrcoef(digit.ravel(), reference.ravel())[0, 1]
    assert correlation > 0.9


def test_a_stroke_thinner_than_a_pixel_is_thin_ink_and_a_speck_as_dark_is_not():
    """A hairline "1" one pixel wide at darkness 0.3: every 3x3 patch is mostly paper (0.1), its runs of three
    pixels are not. ThinStrokes is the 422 it was, for callers that do not look again; with thin=True its
    darkness is the run's. A speck as dark, three pixels in no line, is no digit either way."""
    paper = 235.0
    page = np.full((H, W), paper, np.float32)
    page[100:160, 200] = paper * 0.7
    ink = measure_darkness(page)
    with pytest.raises(ThinStrokes) as error:
        measure_stroke_darkness(ink)
    assert error.value.status == 422 and isinstance(error.value, ClientError)
    assert measure_stroke_darkness(ink, thin=True) == pytest.approx(0.3, abs=0.01)
    _, box, _ = find_digit(page, thin=True)
    assert box == (200, 100, 201, 160)

    specks = np.full((H, W), paper, np.float32)
    specks[100, 200] = specks[101, 202] = specks[103, 201] = paper * 0.7
    for thin in (False, True):
        with pytest.raises(ClientError) as error:
            measure_stroke_darkness(measure_darkness(specks), thin=thin)
        assert not isinstance(error.value, ThinStrokes)
