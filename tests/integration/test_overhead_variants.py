"""`make bench`'s "Per-request overhead" rows start the service less one change (benchmarks/overhead_variants.py):
each variant must still build its pipeline and answer, or the benchmark waits for a service whose workers crash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CLASSIFY = """
import asyncio, numpy as np
import benchmarks.overhead_variants
from service.config import Settings
from service.pipeline import Pipeline

pipeline = Pipeline(Settings.from_env({"DIGITSERVE_PROVIDER": "cpu"}))
print(type(pipeline.batcher).__name__)
digit = np.zeros((1, 28, 28), np.uint8)
digit[0, 4:24, 13:15] = 255  # a one


async def requests():
    async def one():
        with pipeline.batcher.request():
            return await pipeline.classify(digit)

    return await asyncio.gather(*(one() for _ in range(3)))  # alone, then batched together


print(sorted({answer[0]["digit"] for answer in asyncio.run(requests())}))
"""


@pytest.mark.parametrize(("undo", "batcher"), [("", "Batcher"), ("batcher", "CorkBatcher"), ("percentiles", "Batcher")])
def test_each_variant_builds_its_pipeline_and_answers(undo, batcher):
    env = {"OVERHEAD_UNDO": undo, "BENTOML_DO_NOT_TRACK": "true", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", CLASSIFY], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [batcher, "[1]"]


WIRING = """
import benchmarks.overhead_variants as variants
import service.app
from service.activity import Activity
from service.batching import Batcher
from service.middleware import RequestMiddleware

(options,) = [options for cls, options in variants.DigitService.middlewares if cls is RequestMiddleware]
direct = options["direct"]
route = "BentoML" if direct is None else "FastAPI" if direct is service.app.app else "straight"
print(route, Activity.crowded.__name__ == "crowded", Batcher.on_the_loop.__name__ == "on_the_loop")
"""


@pytest.mark.parametrize(
    ("undo", "wiring"),
    [
        ("", "straight True True"),
        ("router", "BentoML True True"),
        ("fastapi", "FastAPI True True"),
        ("options", "FastAPI True True"),
        ("rebalance", "straight False True"),
        ("thread", "straight True False"),
    ],
)
def test_the_routing_rebalance_and_thread_variants_undo_their_change_only(undo, wiring):
    env = {"OVERHEAD_UNDO": undo, "BENTOML_DO_NOT_TRACK": "true", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", WIRING], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == wiring


OPTIONS = """
import benchmarks.overhead_variants
from fastapi.testclient import TestClient
from service.api import create_app, router

for path in ("/classify", "/classify_pixels"):
    (route,) = [r for r in router.routes if r.path == path]
    solved = sorted(p.name for d in route.dependant.dependencies for p in d.query_params)
    print(path, solved, [q["name"] for q in route.openapi_extra["parameters"]])
answer = TestClient(create_app()).post("/classify_pixels?min_confidence=2", content=b"")
print(answer.status_code, answer.json()["error"].split(":")[:2])
"""


@pytest.mark.parametrize("undo", ["", "options"])
def test_the_options_variant_has_fastapi_solve_the_query_options_again(undo):
    env = {"OVERHEAD_UNDO": undo, "BENTOML_DO_NOT_TRACK": "true", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", OPTIONS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    solved = "['debug', 'min_confidence']" if undo else "[]"
    assert done.stdout.splitlines() == [
        f"/classify {solved} ['debug', 'min_confidence']",
        f"/classify_pixels {solved} ['min_confidence']",
        "422 ['invalid request', ' query.min_confidence']",  # FastAPI's check, or the route's, in the same words
    ]
