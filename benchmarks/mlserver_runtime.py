"""The peer of `make bench-v2`: MLServer (Seldon's Open Inference Protocol server) hosting the same ONNX file on
ONNX Runtime, the way its users would: a custom runtime, MLServer's own adaptive batching and parallel workers.

It runs in .venv-bench-v2 (requirements/bench-v2.txt), never in the serving environment; bench_v2.py writes its
settings. The model's own tensors, as digitserve's model of the card's name serves them: `image` FP32
[-1, 1, 28, 28], normalised, -> `logits` FP32 [-1, 10].
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        # As digitserve's workers: DIGITSERVE_THREADS intra-op threads (the bench passes the same count).
        options.intra_op_num_threads = int((self.settings.parameters.extra or {}).get("threads", 1))
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(await get_model_uri(self.settings), options, ["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0])
        (logits,) = self._session.run(None, {self._input: images})
        return InferenceResponse(
            model_name=self.name, id=payload.id, outputs=[NumpyCodec.encode_output("logits", logits)]
        )
