"""One serialisation for Redis entries: a versioned envelope around JSON, with number arrays as bytes.

A stream entry is a flat field map ``{b"v": schema version, b"t": type name, b"d": JSON body,
b"a": arrays}``. Version 2 takes every list of numbers out of the JSON body (token ids, behaviour
log-probs): the body keeps a marker ``{"$a": [dtype, count]}`` in its place and the numbers follow,
in order, as little-endian bytes in ``b"a"``. Each array gets the narrowest dtype that holds its
values exactly (uint8/uint16/int32/int64 for integers, float32 when every value is a float32, else
float64), so decoding gives back the very same message. Version 1 (all JSON, no ``b"a"``) is still
read. Readers refuse versions they do not know instead of mis-parsing them.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

SCHEMA_VERSION = 2
JSON_VERSION = 1  # every field in the JSON body: written by earlier code, still read
READS = (JSON_VERSION, SCHEMA_VERSION)
VALUE_VERSION = 1  # plain keys (the weights record, the registry) stay JSON: they are small and few

ARRAY = "$a"  # the marker key that stands for an array in a version-2 body

M = TypeVar("M", bound=BaseModel)


class CodecError(ValueError):
    pass


def encode(message: BaseModel) -> dict[bytes, bytes]:
    arrays: list[bytes] = []
    body = _take_arrays(message.model_dump(mode="json", exclude_defaults=True), arrays)
    return {
        b"v": str(SCHEMA_VERSION).encode(),
        b"t": type(message).__name__.encode(),
        b"d": json.dumps(body, separators=(",", ":")).encode(),
        b"a": b"".join(arrays),
    }


def decode(model: type[M], fields: dict) -> M:
    fields = {(k.encode() if isinstance(k, str) else k): v for k, v in fields.items()}
    try:
        version = int(fields[b"v"])
        type_name = fields[b"t"].decode() if isinstance(fields[b"t"], bytes) else fields[b"t"]
        body = fields[b"d"]
    except (KeyError, ValueError) as exc:
        raise CodecError(f"not an encoded message: fields {sorted(fields)}") from exc
    if version not in READS:
        raise CodecError(f"schema version {version} is not supported (this code reads {', '.join(map(str, READS))})")
    if type_name != model.__name__:
        raise CodecError(f"expected a {model.__name__}, got a {type_name}")
    if version == JSON_VERSION:
        return model.model_validate_json(body)
    raw = fields.get(b"a", b"")
    raw = raw.encode() if isinstance(raw, str) else raw
    view = memoryview(raw)
    offset = [0]
    try:
        data = _put_arrays(json.loads(body), view, offset)
    except (ValueError, TypeError, KeyError) as exc:
        raise CodecError(f"unreadable arrays in a {type_name}: {exc}") from exc
    if offset[0] != len(raw):
        raise CodecError(f"a {type_name} carries {len(raw) - offset[0]} array bytes no field refers to")
    return model.model_validate(data)


def encode_value(message: BaseModel) -> bytes:
    """For plain keys (``<ns>:weights``, registry hash values): the same envelope as one string."""
    return f"{VALUE_VERSION}|{type(message).__name__}|".encode() + message.model_dump_json().encode()


def decode_value(model: type[M], raw: bytes | str) -> M:
    raw = raw.encode() if isinstance(raw, str) else raw
    try:
        version, type_name, body = raw.split(b"|", 2)
        version_int = int(version)
    except ValueError as exc:
        raise CodecError("not an encoded value") from exc
    if version_int != VALUE_VERSION:
        raise CodecError(f"schema version {version_int} is not supported (this code reads {VALUE_VERSION})")
    if type_name.decode() != model.__name__:
        raise CodecError(f"expected a {model.__name__}, got a {type_name.decode()}")
    return model.model_validate_json(body)


# ---------------------------------------------------------------------- arrays


def _take_arrays(value: Any, arrays: list[bytes]) -> Any:
    """``value`` with each non-empty list of numbers replaced by a marker, its bytes appended to ``arrays``."""
    if isinstance(value, dict):
        return {k: _take_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        packed = _pack(value)
        if packed is None:
            return [_take_arrays(v, arrays) for v in value]
        dtype, data = packed
        arrays.append(data)
        return {ARRAY: [dtype, len(value)]}
    return value


def _put_arrays(value: Any, raw: memoryview, offset: list[int]) -> Any:
    if isinstance(value, dict):
        if ARRAY in value and len(value) == 1:
            dtype_name, count = value[ARRAY]
            dtype = np.dtype(dtype_name)
            end = offset[0] + dtype.itemsize * int(count)
            if end > len(raw):
                raise ValueError(f"an array of {count} {dtype_name} runs past the {len(raw)} array bytes")
            array = np.frombuffer(raw[offset[0] : end], dtype=dtype)
            offset[0] = end
            return array.tolist()
        return {k: _put_arrays(v, raw, offset) for k, v in value.items()}
    if isinstance(value, list):
        return [_put_arrays(v, raw, offset) for v in value]
    return value


_INT_DTYPES = ("<u1", "<u2", "<i4", "<i8")


def _pack(values: list) -> tuple[str, bytes] | None:
    """(dtype, little-endian bytes) of a list of numbers that round-trips exactly; None for anything else.
    The list's kind is the first element's (the models' number lists hold one kind: token ids, log-probs)."""
    if not values:
        return None
    first = type(values[0])
    if first is not int and first is not float:
        return None  # strings, dicts, lists, booleans: stay JSON
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError):
        return None  # ragged, or an integer beyond int64
    if first is int and array.dtype.kind == "i":
        low, high = int(array.min()), int(array.max())
        for name in _INT_DTYPES:
            info = np.iinfo(np.dtype(name))
            if info.min <= low and high <= info.max:
                return name, array.astype(name).tobytes()
    if first is float and array.dtype.kind == "f":
        narrow = array.astype("<f4")
        # float32 only when it loses nothing (the engine's log-probs are float32 values); NaN never equals.
        if np.array_equal(narrow, array):
            return "<f4", narrow.tobytes()
        return "<f8", array.astype("<f8").tobytes()
    return None
