"""Reading a request's body within the size limit, and its media type: what every route that reads its own body
needs (service/api.py, service/open_inference.py)."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect

from service.errors import ClientError


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ClientError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer: not a server error worth a traceback
        raise ClientError(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
