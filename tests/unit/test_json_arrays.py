"""service/json_arrays.py reads JSON arrays as numpy would from json.loads' lists: the same values, shapes and
refusals, through simdjson's copy where it can."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import json_arrays

CASES = [
    (b"[1, 0.5, 2]", np.float32),
    (b"[[1, 2], [3, 4]]", np.uint8),
    (b"[[[1]], [[2]]]", np.int32),
    (b"[[1, 2], [3]]", np.float32),  # ragged
    (b"[[1, 2], 3]", np.float32),
    (b"[[1, 2], [3, [4, 5]]]", np.float32),
    (b"[300]", np.uint8),  # out of range
    (b"[-1]", np.uint8),
    (b"[9223372036854775807]", np.int64),
    (b"[18446744073709551615]", np.uint64),  # past int64: the exact path
    (b"[1.5, 2]", np.int32),
    (b"[true, false]", np.bool_),
    (b"[true, 2]", np.float32),
    (b'["a"]', np.float32),
    (b'[{"a": 1}]', np.float32),
    (b"[]", np.float32),
    (b"[[], []]", np.float64),
    (b"5", np.float32),
    (b'{"a": 1}', np.float32),
]


def read_both(body: bytes, dtype) -> tuple[object, object]:
    outcomes = []
    for read in (
        lambda: json_arrays.to_array(json_arrays.parse(body), np.dtype(dtype)),
        lambda: np.asarray(json.loads(body), dtype),
    ):
        try:
            outcomes.append(read())
        except (ValueError, TypeError, OverflowError) as exc:
            outcomes.append(exc)
    return tuple(outcomes)


@pytest.mark.parametrize("body, dtype", CASES)
def test_reads_what_numpy_reads_and_refuses_what_it_refuses(body, dtype):
    ours, numpys = read_both(body, dtype)
    if isinstance(numpys, Exception):
        assert isinstance(ours, Exception), (ours, numpys)
    else:
        assert ours.dtype == numpys.dtype and ours.shape == numpys.shape
        np.testing.assert_array_equal(ours, numpys)


def test_numbers_take_the_fast_path():
    images = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    flat = json_arrays.parse(json.dumps(images.ravel().tolist()).encode())
    nested = json_arrays.parse(json.dumps(images.tolist()).encode())
    np.testing.assert_array_equal(json_arrays.read_numbers(flat, np.dtype(np.float32)), images.ravel())
    np.testing.assert_array_equal(json_arrays.read_numbers(nested, np.dtype(np.float32)), images)
    pixels = json_arrays.parse(json.dumps([[0, 255], [7, 8]]).encode())
    assert json_arrays.read_numbers(pixels, np.dtype(np.uint8)).tolist() == [[0, 255], [7, 8]]


def test_the_one_irregular_array_it_takes():
    """A one-number array among numbers is read as that number (numpy refuses it): documented in the module."""
    assert json_arrays.to_array(json_arrays.parse(b"[1, [2], 3]"), np.dtype(np.float32)).tolist() == [1, 2, 3]


def test_members_keep_views_only_where_asked():
    document = json_arrays.parse(b'{"inputs": [{"data": [1, 2]}], "outputs": [{"name": "x"}], "id": "7"}')
    request = json_arrays.members(document, keep=("inputs",))
    assert isinstance(request["inputs"], json_arrays.Array)
    assert request["outputs"] == [{"name": "x"}] and request["id"] == "7"


def test_members_of_an_object_with_a_nul_key_are_read_whole():
    """Found by fuzzing: simdjson yields a key holding NUL but cannot look it up (a KeyError, then a 500)."""
    document = json_arrays.parse(b'{"inputs": [{"data": [1, 2]}], "\\u0000": 1}')
    assert json_arrays.members(document, keep=("inputs",)) == {"inputs": [{"data": [1, 2]}], "\x00": 1}


def test_not_json_is_a_value_error():
    for body in (b"{", b"", b"[1,]", b"\xff", b"[123456789012345678901234567890]"):
        with pytest.raises(ValueError):
            json_arrays.parse(body)


def test_a_body_parsed_while_views_of_the_last_are_alive():
    """Requests overlap: one holds views of its document while the next body is parsed; both stay readable."""
    first = json_arrays.parse(b"[1, 2, 3]")
    second = json_arrays.parse(b"[4, 5]")
    assert json_arrays.plain(first) == [1, 2, 3] and json_arrays.plain(second) == [4, 5]
    del first, second
    assert json_arrays.plain(json_arrays.parse(b"[6]")) == [6]


# Integers within 64 bits: past them simdjson refuses the whole document, as orjson did (test_not_json_...).
integers = st.integers(-(2**63), 2**64 - 1)
numbers = integers | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
arrays = st.recursive(
    st.lists(numbers, max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner | numbers | st.text(max_size=2), max_size=4),
    max_leaves=40,
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None)
@given(value=arrays, dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int32, np.int64, np.uint64]))
def test_any_array_reads_as_numpy_reads_it(value, dtype):
    body = json.dumps(value).encode()
    ours, numpys = read_both(body, dtype)
    if isinstance(numpys, Exception):
        # The one array numpy refuses that the fast path takes: a one-number array among numbers ([1, [2], 3]).
        assert isinstance(ours, Exception) or ours.size == np.asarray(flatten(value)).size, (body, ours)
    else:
        assert not isinstance(ours, Exception), (body, ours, numpys)
        assert ours.dtype == numpys.dtype and ours.shape == numpys.shape
        np.testing.assert_array_equal(ours, numpys)


def flatten(value):
    return [x for item in value for x in flatten(item)] if isinstance(value, list) else [value]
