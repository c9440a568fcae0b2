"""KServe's V2 clients against a running service, in a process of their own: KServe's generated gRPC messages and
tritonclient's (which the service and the other tests import) both declare the `inference` package, and one
process's protobuf pool refuses the second. `python -m tests.integration.kserve_v2 rest|grpc ADDRESS IMAGES.npy
raw|typed` prints what the client got, as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

import kserve
import numpy as np


async def ask(protocol: str, address: str, batch: np.ndarray, binary: bool) -> dict:
    if protocol == "rest":
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60))
        at: dict = {"base_url": address}
    else:
        client = kserve.InferenceGRPCClient(address, timeout=60)
        at = {}
    try:
        ready = await client.is_server_ready(**at) and await client.is_model_ready(model_name="digits", **at)
        tensor = kserve.InferInput("pixels", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        request = kserve.InferRequest(model_name="digits", infer_inputs=[tensor], request_id="kserve-1")
        if protocol == "rest":
            response = await client.infer(address, request, model_name="digits")
        else:
            response = await client.infer(request)
        outputs = {output.name: output.as_numpy() for output in response.outputs}
        return {
            "live": await client.is_server_live(**at),
            "ready": ready,
            "id": response.id,
            "shape": list(outputs["probabilities"].shape),
            "digits": outputs["digit"].tolist(),
        }
    finally:
        await client.close()


if __name__ == "__main__":
    protocol, address, images, coding = sys.argv[1:]
    print(json.dumps(asyncio.run(ask(protocol, address, np.load(images), coding == "raw"))))
