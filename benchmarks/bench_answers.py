"""How long shaping an answer takes: the prediction routes' way (plain dicts from the arrays, serialised by orjson:
service/pipeline.py, service/responses.py) against the two ways it was (a dict through FastAPI's response
serialisation and JSONResponse; then pydantic models built without validation, serialised by pydantic's core), for
1 and 64 predictions per answer. In process; medians of alternating rounds.

    python benchmarks/bench_answers.py        # prints the table and writes it to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from fastapi.responses import JSONResponse, Response
from fastapi.routing import serialize_response
from fastapi.utils import create_model_field

from harness.report import write_section
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


def microseconds(shapes, probabilities: np.ndarray, loop: asyncio.AbstractEventLoop, calls: int) -> list[float]:
    """Median µs per call of each way, over ROUNDS rounds that alternate the ways (the machine's slow spells then
    hit both alike)."""
    rounds: list[list[float]] = [[] for _ in shapes]
    for _ in range(ROUNDS):
        for way, shape in enumerate(shapes):
            start = time.perf_counter()
            for _ in range(calls):
                loop.run_until_complete(shape(probabilities))
            rounds[way].append((time.perf_counter() - start) / calls * 1e6)
    return [statistics.median(r) for r in rounds]


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
        fastapi, models, dicts = microseconds(ways, probabilities, loop, calls)
        rows.append(f"| {n} | {fastapi:.1f} | {models:.1f} | {dicts:.1f} | {dicts / fastapi:.2f}× |")
    section = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python {platform.python_version()}, in "
            f"process, medians of {ROUNDS} alternating rounds (an event loop turn per call in every column):",
            "",
            *rows,
            "",
            "Command: `python benchmarks/bench_answers.py`.",
        ]
    )
    print(section)
    write_section(args.out, f"{START}\n{section}\n{END}", START, END, "## Answer serialisation (`bench_answers.py`)")


if __name__ == "__main__":
    main()
