"""JSON bodies whose bulk is arrays of numbers (V2 JSON tensors, /classify_pixels' JSON), parsed by simdjson: the
numbers go from the parser straight into a numpy array, never through a Python float each; the rest of the document
becomes Python objects on demand. A 64-image V2 request (1 MB of JSON) is read in under a third of the time orjson and
numpy's conversion of its lists took (docs/benchmarks.md, "Reading the V2 figures").

Arrays that are not plain numbers in a regular shape are read the exact way (`np.asarray` on Python lists), so that
every malformed array is refused as before, with numpy's own message.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import simdjson

Array = simdjson.Array
Object = simdjson.Object


# One parser per thread, reused: a fresh one per body costs its buffers' allocation for the document's size, every
# request (docs/benchmarks.md, "Measured by hand"). simdjson refuses to parse again while a view of the parser's
# last document is alive; a body that comes meanwhile (from a request that overlaps one still holding views) gets
# a new parser.
_local = threading.local()


def parse(body: bytes) -> object:
    """The document: simdjson's read-only views for its objects and arrays, Python values for the rest. Raises
    ValueError for anything that is not JSON. Drop the views once read, so that the next body reuses the parser."""
    parser = getattr(_local, "parser", None)
    if parser is not None:
        try:
            return parse_with(parser, body)
        except ParserBusy:
            pass
    _local.parser = simdjson.Parser()
    return parse_with(_local.parser, body)


class ParserBusy(Exception):
    pass


def parse_with(parser: simdjson.Parser, body: bytes) -> object:
    try:
        return parser.parse(body)
    except RuntimeError as exc:
        # simdjson raises RuntimeError both for a parser that views of its last document still hold (tested in
        # tests/unit/test_json_arrays.py) and for some malformed documents (integers past 64 bits).
        if "re-use a parser" in str(exc):
            raise ParserBusy from None
        raise ValueError(str(exc)) from None


def plain(value: object) -> object:
    """A value of the document as Python objects (dicts, lists, numbers, strings, None)."""
    if isinstance(value, Object):
        return value.as_dict()
    if isinstance(value, Array):
        return value.as_list()
    return value


def members(value: Object, keep: tuple[str, ...] = ()) -> dict:
    """An object's members as a dict, each as Python objects except those named in `keep` (still views)."""
    try:
        return {key: value[key] if key in keep else plain(value[key]) for key in value}
    except KeyError:
        # simdjson yields a key holding a NUL character (`{"\u0000": 1}`) but cannot look it up: such an object is
        # read whole as Python objects (the kept members as lists, which `to_array` reads the exact way).
        return value.as_dict()


def to_array(value: object, dtype: np.dtype) -> np.ndarray:
    """A JSON array (a view or a list; nested or flat) -> an array of `dtype` in its nested shape. Raises what
    `np.asarray(value, dtype)` raises for values it cannot convert (ValueError, TypeError, OverflowError)."""
    if isinstance(value, Array):
        fast = read_numbers(value, dtype)
        if fast is not None:
            return fast
    return np.asarray(plain(value), dtype=dtype)


def read_numbers(array: Array, dtype: np.dtype) -> np.ndarray | None:
    """The fast path: a regular array of numbers that fit `dtype`, copied out of the parser's tape; None for
    anything else (booleans, strings, ragged nesting, integers out of range, fractions for an integer type)."""
    if dtype.kind not in "fiu":
        return None
    shape = regular_shape(array)
    if shape is None:
        return None
    try:
        # simdjson copies numbers out as float64 or int64, flattening nested arrays (their shape is checked above).
        floats = dtype.kind == "f"
        flat = np.frombuffer(array.as_buffer(of_type="d" if floats else "i"), np.float64 if floats else np.int64)
    except (ValueError, TypeError):
        return None
    if flat.size != math.prod(shape):  # arrays among the last level's numbers, as in [1, [2, 3]]
        return None  # ([1, [2], 3] passes, read as [1, 2, 3]: the one irregular array this path takes)
    if dtype.kind in "iu" and flat.size:
        limits = np.iinfo(dtype)
        if flat.min() < limits.min or flat.max() > limits.max:
            return None
    return flat.astype(dtype, copy=False).reshape(shape)


def regular_shape(array: Array) -> tuple[int, ...] | None:
    """The shape of a nested array whose rows at each level have one length, or None. Leaves are not looked at
    (the copy refuses what is not a number)."""
    shape, level = [], [array]
    while True:
        try:
            lengths = {len(item) for item in level}
        except TypeError:  # a number beside arrays
            return None
        if len(lengths) != 1:
            return None
        (length,) = lengths
        shape.append(length)
        if length == 0 or not isinstance(level[0][0], Array):
            return tuple(shape)
        level = [child for item in level for child in item]
