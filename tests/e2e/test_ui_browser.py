"""The draw-a-digit page in real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium),
served by the real service: draw digits stroke by stroke with the mouse, clear, upload a photo, see errors."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.server import running_service
from tests.conftest import ROOT

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = ROOT / "reports" / "screenshots"  # git-ignored: the test's artefacts
SAMPLES = ROOT / "loadtests" / "samples"

# Strokes on the 280x280 pad, in pad pixels: lists of points, each list one press-move-release.
ONE = [[(140, 40), (140, 240)]]
SEVEN = [[(70, 50), (210, 50)], [(210, 50), (120, 240)]]
FOUR = [[(90, 40), (70, 150), (200, 150)], [(170, 60), (170, 250)]]


@pytest.fixture(scope="module")
def page_url():
    with running_service({"DIGITSERVE_WORKERS": "1"}) as url:
        yield f"{url}/ui/"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        missing = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI installs them (.ci/run): a skip there would hide a broken setup
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",  # no network here: no calls home
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=900,700",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def draw(browser, strokes: list[list[tuple[int, int]]], width: int = 280) -> None:
    """Press, move through the points, release, for each stroke, as a mouse would (points in the pad's own
    coordinates: 280x280, or `width`x280 for a number)."""
    pad = browser.find_element(By.ID, "pad")
    size = pad.size  # CSS pixels
    for stroke in strokes:
        actions = ActionChains(browser, duration=10)
        x, y = stroke[0]
        actions.move_to_element_with_offset(
            pad, x * size["width"] / width - size["width"] / 2, y * size["height"] / 280 - size["height"] / 2
        )
        actions.click_and_hold()
        for x, y in stroke[1:]:
            for _ in range(4):  # several small moves, as a hand makes, not one jump
                actions.move_by_offset(0, 0)
            actions.move_to_element_with_offset(
                pad, x * size["width"] / width - size["width"] / 2, y * size["height"] / 280 - size["height"] / 2
            )
        actions.release()
        actions.perform()


def answers(browser) -> int:
    return int(browser.execute_script("return document.body.dataset.answers || '0'"))


def shown_digit(browser, after: int) -> str:
    """The digit the page shows once its answer to the last request has come: `after` answers were shown before."""
    # Each stroke's end sends the drawing: the answer to the last one is the one that counts.
    WebDriverWait(browser, 15).until(
        lambda d: answers(d) > after and d.find_element(By.ID, "confidence").text not in ("classifying…", "reading…")
    )
    return browser.find_element(By.ID, "digit").text


def screenshot(browser, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


@pytest.mark.parametrize(("strokes", "digit"), [(ONE, "1"), (SEVEN, "7"), (FOUR, "4")], ids=["one", "seven", "four"])
def test_drawn_digits_are_recognised(browser, page_url, strokes, digit):
    browser.get(page_url)
    for stroke in strokes:
        before = answers(browser)
        draw(browser, [stroke])
        shown = shown_digit(browser, before)
    assert shown == digit
    # The bar chart and the image the model saw came with the answer.
    top = browser.find_element(By.CSS_SELECTOR, "#bars li.top")
    assert top.find_element(By.TAG_NAME, "span").text == digit
    seen = browser.find_element(By.ID, "seen").get_attribute("src")
    assert seen.startswith("data:image/png;base64,")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(seen.split(",", 1)[1]))))
    assert pixels.shape == (28, 28) and 20 < (pixels > 128).sum() < 400  # the stroke, framed as MNIST frames ink
    screenshot(browser, f"drawn-{digit}")  # an artefact for people to look at (reports/screenshots)


def test_before_the_first_drawing_no_empty_image_is_shown(browser, page_url):
    browser.get(page_url)
    assert not browser.find_element(By.ID, "seen-figure").is_displayed()
    assert not browser.find_element(By.ID, "seen").is_displayed()


def shifted(strokes: list[list[tuple[int, int]]], dx: int) -> list[list[tuple[int, int]]]:
    return [[(x + dx, y) for x, y in stroke] for stroke in strokes]


def test_a_drawn_number_is_read_with_a_box_and_confidence_per_digit(browser, page_url):
    browser.get(page_url)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="number"]').click()
    assert browser.execute_script("return document.getElementById('pad').width") == 840
    for stroke in [*ONE, *shifted(SEVEN, 280), *shifted(FOUR, 560)]:
        before = answers(browser)
        draw(browser, [stroke], width=840)
        shown = shown_digit(browser, before)
    assert shown == "174"
    boxes = browser.find_elements(By.CSS_SELECTOR, "#pad-frame .number-box")
    assert [b.text.split(" ")[0] for b in boxes] == ["1", "7", "4"]
    lefts = [b.location["x"] for b in boxes]
    assert lefts == sorted(lefts)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#digits li img")) == 3
    screenshot(browser, "drawn-number")
    browser.find_element(By.ID, "clear").click()
    assert not browser.find_elements(By.CSS_SELECTOR, ".number-box")


def test_an_uploaded_photo_of_a_number_is_read(browser, page_url, mnist_dir, tmp_path):
    from harness.numbers import number_image, number_strip
    from training.data import load_split

    test = load_split("test", mnist_dir)
    path = tmp_path / "number.jpg"
    path.write_bytes(number_image(number_strip(test.images[:4], np.random.default_rng(0)), "plain", 0))
    browser.get(page_url)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="number"]').click()
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert shown_digit(browser, 0) == "".join(map(str, test.labels[:4]))
    WebDriverWait(browser, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#photo-frame .number-box")) == 4)
    browser.execute_script("document.getElementById('photo-figure').scrollIntoView()")
    screenshot(browser, "photo-of-a-number")


def test_clear_resets_the_pad_and_the_answer(browser, page_url):
    browser.get(page_url)
    draw(browser, ONE)
    shown_digit(browser, 0)
    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "digit").text == "–"
    blank = browser.execute_script(
        "const c = document.getElementById('pad');"
        "return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 0);"
    )
    assert blank, "the pad still has ink after Clear"


def test_uploaded_photo_is_classified(browser, page_url):
    browser.get(page_url)
    photo = SAMPLES / "paper_24.jpg"  # dark ink on light paper, a real MNIST test digit
    label = json.loads((SAMPLES / "labels.json").read_text())[photo.name]
    browser.find_element(By.ID, "file").send_keys(str(photo))
    assert shown_digit(browser, 0) == str(label)
    screenshot(browser, "uploaded-photo")


def test_a_phone_photo_shows_where_the_digit_was_found(browser, page_url, mnist_dir, tmp_path):
    from harness.photos import photo
    from training.data import load_split

    test = load_split("test", mnist_dir)
    path = tmp_path / "ruled.jpg"
    path.write_bytes(photo(test.images[3], "ruled", seed=3))
    service_url = page_url.removesuffix("/ui/")
    expected = httpx.post(f"{service_url}/classify?debug=true", files={"image": path.read_bytes()}).json()
    browser.get(page_url)
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert shown_digit(browser, 0) == str(test.labels[3]) == str(expected["digit"])
    box = browser.find_element(By.ID, "photo-box")
    WebDriverWait(browser, 10).until(lambda d: box.is_displayed())
    shown = browser.execute_script(
        "const p = document.getElementById('photo').getBoundingClientRect();"
        "const b = document.getElementById('photo-box').getBoundingClientRect();"
        "const i = document.getElementById('photo');"
        "return [b.left - p.left, b.top - p.top, b.right - p.left, b.bottom - p.top,"
        "        p.width / i.naturalWidth, p.height / i.naturalHeight];"
    )
    *rect, sx, sy = shown
    left, top, right, bottom = expected["box"]
    assert sx > 0 and np.allclose(rect, [left * sx, top * sy, right * sx, bottom * sy], atol=1.5), (rect, expected)
    browser.execute_script("document.getElementById('photo-figure').scrollIntoView()")
    screenshot(browser, "photo-with-box")


def test_errors_are_shown_in_words(browser, page_url, tmp_path):
    browser.get(page_url)
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (64, 64), 255).save(blank)
    browser.find_element(By.ID, "file").send_keys(str(blank))
    error = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "error").text or False)
    assert "no digit found" in error
    assert browser.find_element(By.ID, "digit").text == "?"
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    browser.find_element(By.ID, "file").send_keys(str(not_an_image))
    WebDriverWait(browser, 15).until(lambda d: "not an image" in d.find_element(By.ID, "error").text)
    screenshot(browser, "error")
