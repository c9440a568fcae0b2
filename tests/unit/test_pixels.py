import io
import json

import numpy as np
import pytest

from service.errors import ClientError
from service.pixels import parse_pixels

rng = np.random.default_rng(0)
BATCH = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "body, content_type, n",
    [
        (json.dumps(BATCH[0].tolist()), "application/json", 1),
        (json.dumps(BATCH[0].ravel().tolist()), "application/json", 1),
        (json.dumps(BATCH.tolist()), "application/json", 3),
        (json.dumps(BATCH.reshape(3, 784).tolist()), "application/json", 3),
        (BATCH.tobytes(), "application/octet-stream", 3),
        (npy(BATCH), "application/x-npy", 3),
        (npy(BATCH.astype(np.float32)), "application/x-npy", 3),
    ],
)
def test_every_accepted_form_gives_the_same_pixels(body, content_type, n):
    body = body.encode() if isinstance(body, str) else body
    np.testing.assert_array_equal(parse_pixels(body, content_type, 64), BATCH[:n])


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (b"", "application/json", 400),
        (b"[1, 2", "application/json", 400),
        (b'[["a"]]', "application/json", 400),
        (b"[[1, 2], [3]]", "application/json", 400),
        (b"[[1, 2]]", "application/json", 422),
        (json.dumps([[300] * 28] * 28).encode(), "application/json", 422),
        (json.dumps([[-1] * 28] * 28).encode(), "application/json", 422),
        (b"[" + b",".join([b"NaN"] * 784) + b"]", "application/json", 422),
        (b"\x00" * 785, "application/octet-stream", 422),
        (npy(np.zeros((2, 5))), "application/x-npy", 422),
        (b"not npy", "application/x-npy", 400),
        (npy(np.array(["x"] * 784)), "application/x-npy", 422),
        (b"\x00" * 784 * 65, "application/octet-stream", 413),
        (b"\x00" * 784, "text/plain", 415),
    ],
)
def test_client_mistakes(body, content_type, status):
    with pytest.raises(ClientError) as error:
        parse_pixels(body, content_type, 64)
    assert error.value.status == status
