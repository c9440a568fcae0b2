"""The API in process (harness.in_process: service/api.py, its middleware and pipeline, through an ASGI client)
with real MNIST test digits: answers, every input form, and a 4xx for every bad input."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable

import numpy as np
import pytest
from PIL import Image

from harness.digits import as_png, encode, on_canvas, on_paper, rendered
from harness.in_process import in_process, model_runtime
from service.api import prediction_endpoints
from service.contract import read_card
from service.responses import Prediction, PredictionList
from tests.conftest import MODEL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client():
    with in_process(DIGITSERVE_MAX_BATCH="64") as client:
        yield client


def classify_all(client, bodies: Iterable[bytes]) -> list[int]:
    """/classify on every body, 32 at a time (DIGITSERVE_MAX_CONCURRENCY): they share ONNX Runtime calls."""
    answers, chunk = [], []
    for body in bodies:
        chunk.append({"files": {"image": ("digit", body)}})
        if len(chunk) == 32:
            answers += client.post_together("/classify", chunk)
            chunk = []
    answers += client.post_together("/classify", chunk)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    return [a.json()["digit"] for a in answers]


JSON = {"content-type": "application/json"}


@pytest.mark.slow
def test_1000_mnist_pngs_match_the_model_on_raw_arrays(client, digits):
    images, labels = digits
    served = np.array(classify_all(client, [as_png(p) for p in images]))
    runtime = model_runtime()
    direct = runtime.probabilities(images).argmax(1)
    assert (served == labels).mean() >= 0.99
    assert np.array_equal(served, direct)


@pytest.mark.slow
def test_dark_ink_on_light_paper_off_centre(client, digits):
    images, labels = digits[0][:400], digits[1][:400]  # `make bench-photos` reads 1,000 (99.4 %)
    served = np.array(classify_all(client, rendered(on_paper, images, range(len(images)))))  # photo i: seed i
    assert (served == labels).mean() >= 0.97


@pytest.mark.slow
def test_strokes_on_a_transparent_canvas(client, digits):
    images, labels = digits[0][:400], digits[1][:400]  # `make bench-photos` reads 1,000 (99.6 %)
    served = np.array(classify_all(client, rendered(on_canvas, images)))
    assert (served == labels).mean() >= 0.97


def test_answers_are_what_the_openapi_document_says(client, digits):
    """The routes build their answers as dicts (service/responses.py): each one validates against its model, with
    no field the model does not name."""
    images, _ = digits
    png = ("d.png", as_png(images[0]))
    singles = [
        client.post("/classify", files={"image": png}),
        client.post("/classify?debug=true", files={"image": png}),
    ]
    lists = [
        client.post("/classify_batch", params={"debug": "true"}, files=[("images", png)] * 2),
        client.post(
            "/classify_pixels", content=images[:3].tobytes(), headers={"content-type": "application/octet-stream"}
        ),
    ]
    for answer, model in [(a, Prediction) for a in singles] + [(a, PredictionList) for a in lists]:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        parsed = model.model_validate(body)
        assert parsed.model_dump(exclude_none=True) == body


def test_classify_response_and_debug_image(client, digits):
    images, labels = digits
    body = client.post("/classify", params={"debug": "true"}, files={"image": ("d.png", as_png(images[0]))}).json()
    assert set(body) == {"digit", "confidence", "probabilities", "model_version", "image", "box"}
    assert body["box"] == [0, 0, 28, 28]  # an MNIST-format image is all digit
    assert body["digit"] == labels[0] and body["model_version"] == read_card(MODEL)["version"]
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
    assert body["confidence"] == max(body["probabilities"])
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
    assert np.array_equal(seen, images[0])


def test_debug_fields_only_when_asked(client, digits):
    body = client.post("/classify", files={"image": ("d.png", as_png(digits[0][0]))}).json()
    assert set(body) == {"digit", "confidence", "probabilities", "model_version"}


def test_query_options_are_documented_and_a_malformed_one_is_a_422(client, digits):
    """The routes read their query options themselves (service/api.py Options): the OpenAPI document still lists
    them, and a bad value is a 422 that names it, as FastAPI's own check was."""
    paths = client.get("/openapi.json").json()["paths"]
    documented = {p: [q["name"] for q in paths[p]["post"]["parameters"]] for p in paths if p.startswith("/classify")}
    assert documented == {
        "/classify": ["debug", "min_confidence"],
        "/classify_batch": ["debug", "min_confidence"],
        "/classify_pixels": ["min_confidence"],
    }
    png = {"image": ("d.png", as_png(digits[0][0]))}
    answer = client.post("/classify", params={"debug": "maybe"}, files=png)
    assert answer.status_code == 422 and answer.json()["error"].startswith("invalid request: query.debug: ")
    assert client.post("/classify", params={"debug": "1", "unknown": "x"}, files=png).json()["image"]


def test_raw_body_with_an_image_content_type(client, digits):
    images, labels = digits
    for fmt, content_type in (("PNG", "image/png"), ("BMP", "image/bmp"), ("WEBP", "image/webp")):
        data = encode(Image.fromarray(images[1]), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        response = client.post("/classify", content=data, headers={"content-type": content_type})
        assert response.status_code == 200 and response.json()["digit"] == labels[1], fmt


def test_batch_keeps_the_order(client, digits):
    images, _ = digits
    files = [("images", (f"{i}.png", as_png(images[i]))) for i in range(10)]
    results = client.post("/classify_batch", files=files).json()["results"]
    expected = model_runtime().probabilities(images[:10]).argmax(1)  # the model's own answers, in order
    assert [r["digit"] for r in results] == expected.tolist()


def test_pixels_in_every_form_agree(client, digits):
    images, labels = digits
    batch = images[:32]
    buffer = io.BytesIO()
    np.save(buffer, batch)
    answers = [
        client.post("/classify_pixels", json=batch.tolist()),
        client.post("/classify_pixels", content=batch.tobytes(), headers={"content-type": "application/octet-stream"}),
        client.post("/classify_pixels", content=buffer.getvalue(), headers={"content-type": "application/x-npy"}),
    ]
    digits_by_form = [[r["digit"] for r in a.json()["results"]] for a in answers]
    assert digits_by_form[0] == digits_by_form[1] == digits_by_form[2]
    assert np.mean(np.array(digits_by_form[0]) == labels[:32]) >= 0.96
    single = client.post("/classify_pixels", json=images[0].tolist()).json()["results"]
    assert len(single) == 1 and single[0]["digit"] == labels[0]


def bad_inputs(png: bytes) -> list[tuple[str, str, dict, int]]:
    """(name, path, httpx request arguments, expected status)."""
    frames = [Image.new("L", (30, 30), 0), Image.new("L", (30, 30), 255)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    big = encode(Image.new("L", (5100, 5100)))  # 26 megapixels in a small file
    return [
        ("not an image", "/classify", {"files": {"image": ("x.png", b"hello")}}, 415),
        ("truncated", "/classify", {"files": {"image": ("x.png", png[: len(png) // 2])}}, 400),
        ("empty file", "/classify", {"files": {"image": ("x.png", b"")}}, 400),
        ("empty raw body", "/classify", {"content": b"", "headers": {"content-type": "image/png"}}, 400),
        ("text in file field", "/classify", {"files": {"image": (None, "http://127.0.0.1:1/x.png")}}, 422),
        ("form-urlencoded", "/classify", {"data": {"image": "x"}}, 415),
        ("no image field", "/classify", {"files": {"other": ("x.png", png)}}, 422),
        ("wrong content type", "/classify", {"content": b"{}", "headers": {"content-type": "application/json"}}, 415),
        ("over 12 MB", "/classify", {"content": b"\0" * 12_000_001, "headers": {"content-type": "image/png"}}, 413),
        ("too many pixels", "/classify", {"content": big, "headers": {"content-type": "image/png"}}, 413),
        ("blank", "/classify", {"files": {"image": ("x.png", encode(Image.new("L", (64, 64), 255)))}}, 422),
        ("multi-frame, blank first", "/classify", {"files": {"image": ("x.gif", gif.getvalue())}}, 422),
        ("too many in batch", "/classify_batch", {"files": [("images", ("x.png", png))] * 65}, 413),
        ("batch of text", "/classify_batch", {"files": {"images": (None, "x")}}, 422),
        ("pixels wrong shape", "/classify_pixels", {"json": [[1, 2, 3]]}, 422),
        ("pixels out of range", "/classify_pixels", {"json": [[256] * 28] * 28}, 422),
        (
            "pixels NaN",
            "/classify_pixels",
            {"content": b"[" + b",".join([b"NaN"] * 784) + b"]", "headers": {"content-type": "application/json"}},
            422,
        ),
        (
            "pixels not JSON",
            "/classify_pixels",
            {"content": b"[1,", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("pixels wrong type", "/classify_pixels", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
        (
            "pixels too many",
            "/classify_pixels",
            {"content": b"\0" * 784 * 65, "headers": {"content-type": "application/octet-stream"}},
            413,
        ),
    ]


def test_every_bad_input_gets_its_4xx_and_the_api_keeps_answering(client, digits):
    png = as_png(digits[0][0])
    for name, path, request, status in bad_inputs(png):
        response = client.post(path, **request)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert isinstance(response.json()["error"], str), name
        ok = client.post("/classify", files={"image": ("d.png", png)})
        assert ok.status_code == 200 and ok.json()["digit"] == digits[1][0], name


def test_prediction_routes_answer_the_same_called_straight_as_through_fastapi(digits):
    """The service calls the prediction routes' endpoints straight (service/api.py direct_routes): every answer,
    good or bad, as FastAPI's stack gives it, and what is not a POST to one of them still goes to FastAPI."""
    assert set(prediction_endpoints()) == {"/classify", "/classify_batch", "/classify_pixels", "/read"}
    images, _ = digits
    png = as_png(images[0])
    requests = [
        ("one image", "/classify", {"files": {"image": ("d.png", png)}}),
        ("debug", "/classify?debug=true", {"content": png, "headers": {"content-type": "image/png"}}),
        ("batch", "/classify_batch", {"files": [("images", ("d.png", as_png(i))) for i in images[:3]]}),
        ("pixels", "/classify_pixels", {"json": images[:5].tolist()}),
        ("unsure", "/classify_pixels?min_confidence=1", {"json": images[:2].tolist()}),
        ("bad option", "/classify?min_confidence=2", {"files": {"image": ("d.png", png)}}),
        ("read", "/read?debug=true", {"files": {"image": ("d.png", png)}}),
        ("read unsure", "/read?min_confidence=1", {"content": png, "headers": {"content-type": "image/png"}}),
        *((name, path, request) for name, path, request, _ in bad_inputs(png)),
    ]
    with in_process() as straight, in_process(through_fastapi=True) as through:
        for name, path, request in requests:
            a, b = straight.post(path, **request), through.post(path, **request)
            assert a.status_code < 500, (name, a.text)
            assert (a.status_code, a.headers["content-type"], a.json()) == (
                b.status_code,
                b.headers["content-type"],
                b.json(),
            ), name
        for method, path, status in [("GET", "/classify", 405), ("POST", "/classify/", 307), ("GET", "/model", 200)]:
            assert straight.request(method, path).status_code == through.request(method, path).status_code == status


def test_metrics_count_the_answers(client, digits):
    def count(text: str, line: str) -> float:
        return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line))

    ok = 'digitserve_requests_total{endpoint="/classify",status="200"}'
    before = client.get("/metrics")
    client.post("/classify", files={"image": ("d.png", as_png(digits[0][0]))})
    after = client.get("/metrics")
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    assert count(after.text, ok) == count(before.text, ok) + 1
