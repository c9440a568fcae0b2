"""What the prediction routes answer: these models are the OpenAPI document of the JSON sent, which the routes build as
plain dicts (json_response)."""

from __future__ import annotations

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.errors import STATUSES


class Prediction(BaseModel):
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(ge=0, le=1, description="probability of `digit`")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="of digits 0-9, summing to 1")
    model_version: str
    image: str | None = Field(None, description="with ?debug=true: the 28x28 image the model saw, base64 PNG")
    box: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="with ?debug=true: where the digit was found, [left, top, right, bottom] in pixels of the "
        "image as displayed (EXIF orientation applied), right and bottom exclusive",
    )


class PredictionList(BaseModel):
    results: list[Prediction] = Field(description="one per image, in the order sent")


class ReadDigit(BaseModel):
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(
        ge=0, le=1, description="probability of `digit`, times how surely these strokes are one digit of the number"
    )
    probabilities: list[float] = Field(min_length=10, max_length=10, description="of digits 0-9, summing to 1")
    box: list[int] = Field(
        min_length=4,
        max_length=4,
        description="where the digit is, [left, top, right, bottom] in pixels of the image as displayed (EXIF "
        "orientation applied), right and bottom exclusive",
    )
    image: str | None = Field(None, description="with ?debug=true: the 28x28 image the model saw, base64 PNG")


class Reading(BaseModel):
    text: str = Field(description="the digits read, left to right", examples=["2026"])
    confidence: float = Field(ge=0, le=1, description="the product of the digits' confidences")
    digits: list[ReadDigit] = Field(description="one per digit, left to right")
    model_version: str


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in words")


# 504 (past DIGITSERVE_TIMEOUT) comes from BentoML, in its own format.
TIMEOUT = {504: {"description": "request timed out"}}


def documented_responses(model: type[BaseModel]) -> dict:
    """OpenAPI responses of a prediction route: its result, our JSON errors, BentoML's timeout."""
    return {
        200: {"model": model},
        **{status: {"model": ErrorBody, "description": text} for status, text in STATUSES.items()},
        **TIMEOUT,
    }


def json_response(answer: dict) -> Response:
    """An answer built as plain dicts and lists in the shape of the models above (Prediction, PredictionList: the
    document), serialised by orjson: building 64 pydantic models cost more than the rest of the answer
    (benchmarks/bench_answers.py). tests/integration/test_api.py validates the answers against the models."""
    return Response(orjson.dumps(answer), media_type="application/json")
