"""Request bodies of MNIST-format pixels (JSON, raw uint8 or .npy) -> uint8 [N, 28, 28]."""

from __future__ import annotations

import io
import json

import numpy as np

from service import json_arrays
from service.errors import ClientError

PIXELS = 28 * 28
JSON_TYPES = ("application/json",)
BINARY_TYPES = ("application/octet-stream",)
NPY_TYPES = ("application/x-npy", "application/npy")


def check_pixels(array: np.ndarray, max_batch: int) -> np.ndarray:
    """Any of [28, 28], [784], [N, 28, 28], [N, 784] with values 0-255 -> uint8 [N, 28, 28]."""
    if array.dtype.kind not in "uif" or array.size == 0:
        raise ClientError(422, "pixels must be a non-empty array of numbers")
    if array.shape in ((28, 28), (PIXELS,)):
        array = array.reshape(1, 28, 28)
    elif (array.ndim == 3 and array.shape[1:] == (28, 28)) or (array.ndim == 2 and array.shape[1] == PIXELS):
        array = array.reshape(-1, 28, 28)
    else:
        raise ClientError(
            422, f"pixels have shape {list(array.shape)}; expected [28, 28], [784], [N, 28, 28] or [N, 784]"
        )
    if len(array) > max_batch:
        raise ClientError(413, f"{len(array)} images in one request, more than the limit of {max_batch}")
    if array.dtype == np.uint8:  # raw bytes: in range by construction
        return array
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ClientError(422, "pixels must be finite numbers (no NaN or infinity)")
    if array.min() < 0 or array.max() > 255:
        raise ClientError(422, "pixel values must lie in 0-255 (white ink on black)")
    return np.rint(array).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)


def read_json(body: bytes) -> np.ndarray:
    try:
        document = json_arrays.parse(body)
    except ValueError:  # not strict JSON; the json module also reads NaN and Infinity, which json.dumps writes
        document = json.loads(body)
    return json_arrays.to_array(document, np.dtype(np.float64))


def parse_pixels(body: bytes, content_type: str, max_batch: int) -> np.ndarray:
    if not body:
        raise ClientError(400, "empty body: send pixels as JSON, raw uint8 bytes or .npy")
    if content_type in JSON_TYPES:
        try:
            array = read_json(body)
        except (ValueError, TypeError, RecursionError):
            raise ClientError(400, "body is not a JSON array of numbers of a regular shape") from None
        return check_pixels(array, max_batch)
    if content_type in BINARY_TYPES:
        if len(body) % PIXELS:
            raise ClientError(422, f"raw body of {len(body)} bytes is not a whole number of 784-byte images")
        return check_pixels(np.frombuffer(body, dtype=np.uint8).reshape(-1, PIXELS), max_batch)
    if content_type in NPY_TYPES:
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ClientError(400, f"body is not a readable .npy array: {exc}") from None
        return check_pixels(np.asarray(array), max_batch)
    accepted = ", ".join(JSON_TYPES + BINARY_TYPES + NPY_TYPES)
    raise ClientError(415, f"content type {content_type or 'missing'!r} not accepted here; use one of {accepted}")
