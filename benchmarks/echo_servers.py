"""`python -m benchmarks.echo_servers KIND PORT`: a server that answers every V2 infer call with one fixed answer,
doing nothing else: what the protocol's server library costs a call on its own, the floor under any service built
on it (benchmarks/grpc_spread.py measures them beside the service).

    grpc-aio   grpcio's asyncio server on uvloop (as service/grpc_server.py runs in a worker), a ModelInferResponse
    grpc-sync  grpcio's thread-pool server, the same answer
    http       uvicorn (httptools, uvloop: as BentoML runs it) with a bare ASGI app, a V2 binary answer's bytes
"""

from __future__ import annotations

import argparse
from concurrent import futures

KINDS = ("grpc-aio", "grpc-sync", "http")
LOGITS = bytes(40)  # ten FP32 logits


def grpc_answer():
    from tritonclient.grpc import service_pb2 as pb

    answer = pb.ModelInferResponse(model_name="mnist_cnn")
    answer.outputs.add(name="logits", datatype="FP32", shape=[1, 10])
    answer.raw_output_contents.append(LOGITS)
    return answer


def serve_grpc(port: int, aio: bool) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    answer = grpc_answer()

    class Fixed(pb_grpc.GRPCInferenceServiceServicer):
        def ModelInfer(self, request, context):
            return answer

    class FixedAio(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            return answer

    if not aio:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Fixed(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def run() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(FixedAio(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    import uvloop

    uvloop.run(run())


def serve_http(port: int) -> None:
    import uvicorn

    header = b'{"model_name":"mnist_cnn","outputs":[{"name":"logits","datatype":"FP32","shape":[1,10],'
    header += b'"parameters":{"binary_data_size":40}}]}'
    body = header + LOGITS
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(header)).encode()),
    ]

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # the request's body, read as a real route would
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    if args.kind == "http":
        serve_http(args.port)
    else:
        serve_grpc(args.port, aio=args.kind == "grpc-aio")


if __name__ == "__main__":
    main()
