"""Client mistakes and refusals: the one exception type, and the table of what each status means (the OpenAPI
document is made from it, and a status missing from it cannot be raised)."""

from __future__ import annotations

STATUSES = {
    400: "not an image, corrupt, no digit found, or pixels out of shape or range",
    401: "DIGITSERVE_API_KEY is set and the request lacks `Authorization: Bearer <key>`",
    404: "no such model or version (the Open Inference Protocol's /v2/models routes)",
    413: "body, image or batch over its limit",
    415: "unsupported content type",
    422: "missing or malformed field or parameter; or, with min_confidence, not confidently a digit",
    429: "more than DIGITSERVE_MAX_CONCURRENCY requests in flight in the worker; retry later (Retry-After)",
    503: "overloaded: not served within DIGITSERVE_BATCH_LATENCY_MS; retry later",
}


class ClientError(Exception):
    """Answered as `status` with the JSON body {"error": message, **details}."""

    def __init__(self, status: int, message: str, details: dict | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status} is not in service/errors.py's STATUSES: document it there first")
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}
