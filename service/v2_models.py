"""The Open Inference Protocol's models, whichever transport asks (HTTP: service/open_inference.py, gRPC:
service/grpc_server.py): which models a worker serves, their metadata and Triton-style configuration, and running
one on a checked input tensor. Two models, both on the worker's one pipeline, so that requests of either protocol
join the same batches:

    <card name> (mnist_cnn, or mnist_cnn_int8 ... as served)  the ONNX model's own tensors:
        image   FP32 [-1, 1, 28, 28], normalised as the card says  ->  logits  FP32 [-1, 10]
    digits  for clients that hold raw pixels:
        pixels  UINT8 [-1, 28, 28], MNIST format (white ink on black, 0-255)
            ->  probabilities  FP32 [-1, 10],  digit  INT64 [-1]
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from service import __version__
from service.errors import ClientError
from service.pipeline import Pipeline
from service.runtime import CUDA
from service.v2_codec import Model, models_of

SERVER = "digitserve"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
PIXELS_MODEL = "digits"
PLATFORM = "onnxruntime_onnx"


@lru_cache(maxsize=1)  # a worker has one pipeline; a bound keeps no other (a test's) alive
def models(pipeline: Pipeline) -> dict[str, Model]:
    """The models this worker's pipeline serves (made once: they follow from its card)."""
    return models_of(pipeline.runtime.card, PIXELS_MODEL)


def find_model(pipeline: Pipeline, name: str, model_version: str | None) -> Model:
    """The model called `name` (at `model_version`, if one is given): 404 if there is none."""
    served = models(pipeline)
    model = served.get(name)
    if model is None:
        raise ClientError(404, f"unknown model {name!r}: this server has {', '.join(served)}")
    if model_version not in (None, "", model.version):
        raise ClientError(404, f"model {name!r} has version {model.version!r} only, not {model_version!r}")
    return model


def server_metadata() -> dict:
    return {"name": SERVER, "version": __version__, "extensions": EXTENSIONS}


def model_metadata(model: Model) -> dict:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [tensor.metadata() for tensor in model.inputs],
        "outputs": [tensor.metadata() for tensor in model.outputs],
    }


def model_config(pipeline: Pipeline, model: Model) -> dict:
    """Triton's model configuration (its JSON form), which perf_analyzer reads before it sends a request."""
    on_gpu = pipeline.runtime.provider == CUDA
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": pipeline.settings.max_batch,
        "input": [tensor.config() for tensor in model.inputs],
        "output": [tensor.config() for tensor in model.outputs],
        # Greedy adaptive batching (service/batching.py): no queue delay, batches of up to DIGITSERVE_BATCH_SIZE.
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "preferred_batch_size": [pipeline.settings.batch_size]},
        "instance_group": [{"kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
    }


async def run(
    pipeline: Pipeline, model: Model, array: np.ndarray, seen: bool = True
) -> tuple[dict[str, np.ndarray], list[int]]:
    """A checked input tensor (v2_codec.checked_input) -> every output of `model` by name, and the predicted digits
    (for the access log). `seen`: the batcher's (service/batching.py)."""
    if model.name == PIXELS_MODEL:
        probabilities, digits, _ = await pipeline.predict(array, seen)
        return {"probabilities": probabilities, "digit": digits}, digits.tolist()
    logits = await pipeline.batcher(np.ascontiguousarray(array), seen)
    return {model.outputs[0].name: logits}, logits.argmax(1).tolist()  # softmax keeps the order
