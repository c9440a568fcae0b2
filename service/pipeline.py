"""The request path behind every front door: image bytes -> digits (decode, find, frame) -> batch -> ONNX Runtime
-> predictions. One per worker process; the routes (service/api.py) and BentoML's typed API (service/app.py)
share it, and tests build it directly with explicit settings.
"""

from __future__ import annotations

import asyncio
import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from starlette.requests import Request

from service import metrics
from service.activity import Activity
from service.batching import Batcher
from service.config import Settings
from service.errors import ClientError
from service.line_reader import LineReader
from service.preprocess import Digit, read_digit
from service.reading import Choice, read_line
from service.runtime import ModelRuntime
from service.segment import MAX_DIGITS, Candidates, read_candidates, too_many_digits

# Files up to this size are decoded on the event loop (a 28x28 PNG or a drawing: the hop to a thread costs about
# as much as decoding one); larger ones, photos, in the worker's decoding thread, so that the loop keeps serving
# other requests meanwhile (measured: docs/benchmarks.md, "Photos").
INLINE_BYTES = 32_000
SURE = 0.9  # /classify refuses an image whose reading as a number finds two digits or more, each this sure


def pipeline_of(request: Request) -> Pipeline:
    """The worker's pipeline, which the app holds (service/api.py: create_app; service/app.py attaches it)."""
    return request.app.state.pipeline


def encode_png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Pipeline:
    def __init__(self, settings: Settings, card: dict | None = None, activity: Activity | None = None) -> None:
        """`card`: the model's card, already read and checked (sha256) by the caller; read here otherwise.
        `activity`: this worker's requests among the server's workers (none: a worker alone, as in the tests); the
        request middleware counts them."""
        self.settings = settings
        self.runtime = ModelRuntime(
            settings.model_path,
            settings.provider,
            settings.threads,
            settings.cache_dir,
            card,
            settings.alone_threads,
            settings.cuda_tf32,
            settings.cuda_batch,
        )
        self.activity = activity or Activity(None, 0)
        self.line_reader = LineReader()  # /read's reader of whole lines of touching digits
        # Batches the model's own input: the image routes and the Open Inference Protocol's raw model share it.
        self.batcher = Batcher(self.infer, settings.batch_size, settings.batch_latency_ms, self.infer_alone)
        # One thread: photos of concurrent requests take turns, and the event loop keeps the other core's share.
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")

    def infer(self, inputs: np.ndarray, alone: bool = False) -> np.ndarray:
        """float32 [N, 1, 28, 28] -> logits [N, 10]; the batcher calls it on the images of many requests. `alone`:
        on the session that takes the idle cores (runtime.py)."""
        metrics.batch_size.observe(len(inputs))
        return self.runtime.logits(inputs, alone)

    def infer_alone(self, inputs: np.ndarray) -> np.ndarray:
        """`infer` for a request alone in the worker: the idle cores share a one-image call if the other workers
        are idle. Only one image: its matrix-vector products gain most from a second thread, and the call is over
        before another worker is likely to need its core back; a 64-image call would hold both cores long enough
        for the other worker to take work and find its core taken (docs/benchmarks.md, "Measured by hand")."""
        return self.infer(inputs, alone=len(inputs) == 1 and self.activity.others_idle())

    async def predict(self, pixels: np.ndarray, seen: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 [N, 28, 28] -> probabilities [N, 10], digits [N] and their confidences [N], batched with the
        other requests in flight; each prediction counted on /metrics (digit, confidence). `seen`: the batcher's."""
        return self.scored(await self.batcher(self.runtime.model_input(pixels), seen))

    def scored(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits [N, 10] -> `predict`'s three answers, each prediction counted on /metrics (digit, confidence):
        what every route that runs the model does with its output."""
        probabilities = self.runtime.confidences(logits)
        digits, confidences = metrics.top(probabilities)
        metrics.record_predictions(digits, confidences)
        return probabilities, digits, confidences

    async def off_loop(self, work, size: int):
        """`work()`, on the event loop for small inputs (`size` bytes) or a worker alone, else in the decoding
        thread, so that the loop keeps serving other requests meanwhile. Alone in the worker, a photo is decoded
        on the loop too: there is no one to stall, and the hop to the thread cost a lone photo more than it saved
        (the GIL handed back and forth; docs/benchmarks.md, "Photos")."""
        if size <= INLINE_BYTES or self.batcher.requests <= 1:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self.decoder, work)

    async def read_digits(self, files: list[bytes]) -> tuple[np.ndarray, list[list[int]], list[bool]]:
        """The images of one request -> uint8 [N, 28, 28], their boxes, and whether each may hold several digits
        (preprocess.Digit.several); photos off the event loop."""
        max_pixels = self.settings.max_pixels

        def read() -> list[Digit]:
            return [read_digit(f, max_pixels) for f in files]

        found = await self.off_loop(read, sum(len(f) for f in files))
        return np.stack([d.pixels for d in found]), [list(d.box) for d in found], [d.several for d in found]

    async def count_digits(self, data: bytes) -> int:
        """How many digits an image plainly holds: those of its reading as a number if every one is SURE; else 1
        (an image /classify answers as one digit). Only digits standing apart count: the pieces are not cut (a wide
        digit cut in two can read as two sure halves)."""
        try:
            _, probabilities, (chosen, digits, _) = await self.segmented(data, touching=False)
        except ClientError:
            return 1
        return len(chosen) if bool((probabilities[chosen, digits] >= SURE).all()) else 1

    async def segmented(self, data: bytes, touching: bool = True) -> tuple[Candidates, np.ndarray, Choice]:
        """An image of a written number -> its candidate digits (service/segment.py; `touching`: pieces that may
        hold touching digits cut too), their probabilities (all read together, in slices where they are more than
        a batch, with the other requests in flight), and the likeliest reading: its candidates, their digits and
        how surely each is one digit (service/reading.py, guided by service/line_reader.py where the line was read
        whole)."""
        max_pixels = self.settings.max_pixels
        candidates: Candidates = await self.off_loop(
            lambda: read_candidates(data, max_pixels, touching, self.line_reader.read), len(data)
        )
        logits = await self.batcher(self.runtime.model_input(candidates.pixels))
        probabilities = self.runtime.confidences(logits)
        return candidates, probabilities, read_line(candidates, probabilities, logits, guide=candidates.guide)

    async def read_number(self, data: bytes, debug: bool = False) -> dict:
        """An image of a written number -> its reading (a dict shaped as responses.Reading), each digit counted on
        /metrics."""
        candidates, probabilities, (chosen, read, certainty) = await self.segmented(data)
        if len(chosen) > MAX_DIGITS:
            raise too_many_digits(len(chosen))
        digits = np.array(read, np.int64)
        sure = probabilities[chosen, digits]  # the model's probability for the digit read
        # A digit's confidence: the model's for the digit, times how surely its strokes are one digit of the
        # number (touching digits read as one are the reading's likeliest mistake, and the model alone is sure).
        confidences = sure * certainty
        metrics.record_predictions(digits, confidences)
        found = [
            {
                "digit": digit,
                "confidence": confidence,
                "probabilities": probabilities[index].tolist(),
                "box": list(candidates.boxes[index]),
            }
            for index, digit, confidence in zip(chosen, digits.tolist(), confidences.tolist(), strict=True)
        ]
        if debug:
            for result, index in zip(found, chosen, strict=True):
                result["image"] = encode_png_base64(candidates.pixels[index])
        return {
            "text": "".join(str(d["digit"]) for d in found),
            "confidence": float(np.prod(confidences)),
            "digits": found,
            "model_version": self.runtime.card["version"],
        }

    async def classify(
        self, pixels: np.ndarray, debug: bool = False, boxes: list[list[int]] | None = None
    ) -> list[dict]:
        """uint8 [N, 28, 28] -> one prediction per image (a dict shaped as responses.Prediction), batched with
        other requests in flight."""
        probabilities, digits, confidences = await self.predict(pixels)
        version = self.runtime.card["version"]
        results = [
            {"digit": digit, "confidence": confidence, "probabilities": p, "model_version": version}
            for digit, confidence, p in zip(digits.tolist(), confidences.tolist(), probabilities.tolist(), strict=True)
        ]
        if debug:
            for n, result in enumerate(results):
                result["image"] = encode_png_base64(pixels[n])
                if boxes is not None:
                    result["box"] = boxes[n]
        return results
