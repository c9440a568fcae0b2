"""The LitServe peer for `make bench`: the same decode, preprocessing and model behind a `LitAPI` with LitServe's
own batching (its inference runs in a separate worker process, fed through a queue).

Run as `python benchmarks/litserve_app.py PORT`; POST /predict with the image as the multipart field `image`
(LitServe parses a request as JSON or a form: a form carries the raw file, as /classify takes it).
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np

from service.config import Settings
from service.preprocess import read_digit
from service.runtime import ModelRuntime

settings = Settings.from_env()


class DigitAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.runtime = ModelRuntime(settings.model_path, "cpu", threads=1)

    def decode_request(self, request) -> np.ndarray:
        return read_digit(request["image"].file.read(), settings.max_pixels).pixels

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.runtime.probabilities(pixels)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, p: np.ndarray) -> dict:
        return {"digit": int(p.argmax()), "confidence": float(p.max()), "probabilities": p.tolist()}


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    api = DigitAPI(max_batch_size=settings.batch_size, batch_timeout=0.001)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), num_api_servers=workers, generate_client_file=False)
