"""The baseline for `make bench`: a minimal FastAPI app on uvicorn doing the same decode and inference.

Run as `uvicorn benchmarks.baseline_app:app --workers 2`; it has none of BentoML's probes, metrics or limits.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from service.config import Settings
from service.preprocess import read_digit
from service.runtime import ModelRuntime

settings = Settings.from_env()
runtime = ModelRuntime(settings.model_path, "cpu", threads=1)
app = FastAPI()


@app.post("/classify")
async def classify(request: Request) -> dict:
    pixels = read_digit(await request.body(), settings.max_pixels).pixels[None]
    p = runtime.probabilities(pixels)[0]
    return {"digit": int(p.argmax()), "confidence": float(p.max()), "probabilities": p.tolist()}
