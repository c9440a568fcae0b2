"""How long shaping an answer takes: the prediction routes' way (plain dicts from the arrays, serialised by orjson:
service/pipeline.py, service/responses.py) against the two ways it was (a dict through FastAPI's response
serialisation and JSONResponse; then pydantic models built without validation, serialised by pydantic's core), for
1 and 64 predictions per answer. Then the request's other steps around the model call that were made cheaper, each
against the way it was: the predictions recorded for /metrics (confidences observed one by one; now in bulk,
service/metrics.py observe_all). In process; medians of alternating rounds.

    python benchmarks/bench_answers.py        # prints the table and writes it to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# As under `bentoml serve`: the metrics' values in memory-mapped files (set before prometheus_client is imported).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench_answers_metrics_"))

import numpy as np
from fastapi.responses import JSONResponse, Response
from fastapi.routing import serialize_response
from fastapi.utils import create_model_field

from harness.report import write_section
from service import metrics
from service.responses import Prediction, PredictionList, json_response

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_answers:start -->", "<!-- bench_answers:end -->"
ROUNDS = 15
AS_DICT = create_model_field(name="Response_dict", type_=dict, mode="serialization")


async def as_dict(probabilities: np.ndarray) -> bytes:
    results = [
        {"digit": int(p.argmax()), "confidence": float(p.max()), "probabilities": [float(v) for v in p]}
        | {"model_version": "1.0.0"}
        for p in probabilities
    ]
    return JSONResponse(await serialize_response(field=AS_DICT, response_content={"results": results})).body


async def as_models(probabilities: np.ndarray) -> bytes:
    results = [
        Prediction.model_construct(
            digit=int(p.argmax()), confidence=float(p.max()), probabilities=p.tolist(), model_version="1.0.0"
        )
        for p in probabilities
    ]
    return Response(PredictionList.model_construct(results=results).model_dump_json(exclude_none=True)).body


async def as_dicts(probabilities: np.ndarray) -> bytes:
    """What Pipeline.classify and json_response do."""
    digits = probabilities.argmax(1)
    confidences = probabilities[np.arange(len(digits)), digits]
    results = [
        {"digit": digit, "confidence": confidence, "probabilities": p, "model_version": "1.0.0"}
        for digit, confidence, p in zip(digits.tolist(), confidences.tolist(), probabilities.tolist(), strict=True)
    ]
    return json_response({"results": results}).body


def record_one_by_one(probabilities: np.ndarray) -> None:
    """metrics.record_predictions as it was: each confidence observed on its own (two file writes each)."""
    digits = probabilities.argmax(1)
    for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
        if count:
            metrics.digit_counter(digit).inc(count)
    for value in probabilities[np.arange(len(digits)), digits].tolist():
        metrics.confidence.observe(value)


def steps_table() -> list[str]:
    """The steps made cheaper, before and now, for 1 and 64 images: median µs per call of alternating rounds."""
    rows = ["| step | images | before, µs | now, µs | now / before |", "|---|---:|---:|---:|---:|"]
    assert "Mmaped" in type(metrics.confidence._sum).__name__, "the metrics should be in files, as when served"
    for n, calls in ((1, 2000), (64, 500)):
        probabilities = np.random.default_rng(n).dirichlet(np.full(10, 0.1), n).astype(np.float32)
        ways = [record_one_by_one, lambda p: metrics.record_predictions(*metrics.top(p))]
        was, now = microseconds([partial(way, probabilities) for way in ways], calls)
        step = "predictions recorded (`metrics.record_predictions`)"
        rows.append(f"| {step} | {n} | {was:.1f} | {now:.1f} | {now / was:.2f}× |")
    return rows


def microseconds(ways: list[Callable[[], object]], calls: int) -> list[float]:
    """Median µs per call of each way, over ROUNDS rounds that alternate the ways (the machine's slow spells then
    hit both alike)."""
    rounds: list[list[float]] = [[] for _ in ways]
    for _ in range(ROUNDS):
        for way, call in enumerate(ways):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            rounds[way].append((time.perf_counter() - start) / calls * 1e6)
    return [statistics.median(r) for r in rounds]


def answered(loop: asyncio.AbstractEventLoop, shape, probabilities: np.ndarray) -> bytes:
    """One answer shaped one way, an event loop turn included, as a route runs it."""
    return loop.run_until_complete(shape(probabilities))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    ways = (as_dict, as_models, as_dicts)
    rows = [
        "| predictions per answer | dict via FastAPI, µs | pydantic models, µs | dicts via orjson, µs "
        "| orjson / FastAPI |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, calls in ((1, 2000), (64, 200)):
        probabilities = np.random.default_rng(n).dirichlet(np.ones(10), n).astype(np.float32)
        sent = [json.loads(loop.run_until_complete(way(probabilities))) for way in ways]
        assert sent[0] == sent[1] == sent[2], "the ways must send the same JSON"
        fastapi, models, dicts = microseconds([partial(answered, loop, way, probabilities) for way in ways], calls)
        rows.append(f"| {n} | {fastapi:.1f} | {models:.1f} | {dicts:.1f} | {dicts / fastapi:.2f}× |")
    section = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python {platform.python_version()}, in "
            f"process, medians of {ROUNDS} alternating rounds (an event loop turn per call in every column):",
            "",
            *rows,
            "",
            "The other steps of a request around the model call made cheaper, before and now (the metrics in "
            "memory-mapped files, as under `bentoml serve`):",
            "",
            *steps_table(),
            "",
            "Command: `python benchmarks/bench_answers.py`.",
        ]
    )
    print(section)
    write_section(args.out, f"{START}\n{section}\n{END}", START, END, "## Answer serialisation (`bench_answers.py`)")


if __name__ == "__main__":
    main()
