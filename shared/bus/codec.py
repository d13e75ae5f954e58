"""One serialisation for Redis entries: compact JSON in a versioned envelope.

A stream entry is a flat field map ``{b"v": schema version, b"t": type name, b"d": JSON body}``;
readers refuse versions they do not know instead of mis-parsing them.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

SCHEMA_VERSION = 1

M = TypeVar("M", bound=BaseModel)


class CodecError(ValueError):
    pass


def encode(message: BaseModel) -> dict[bytes, bytes]:
    return {
        b"v": str(SCHEMA_VERSION).encode(),
        b"t": type(message).__name__.encode(),
        b"d": message.model_dump_json(exclude_defaults=True).encode(),
    }


def decode(model: type[M], fields: dict) -> M:
    fields = {(k.encode() if isinstance(k, str) else k): v for k, v in fields.items()}
    try:
        version = int(fields[b"v"])
        type_name = fields[b"t"].decode() if isinstance(fields[b"t"], bytes) else fields[b"t"]
        body = fields[b"d"]
    except (KeyError, ValueError) as exc:
        raise CodecError(f"not an encoded message: fields {sorted(fields)}") from exc
    if version != SCHEMA_VERSION:
        raise CodecError(f"schema version {version} is not supported (this code reads {SCHEMA_VERSION})")
    if type_name != model.__name__:
        raise CodecError(f"expected a {model.__name__}, got a {type_name}")
    return model.model_validate_json(body)


def encode_value(message: BaseModel) -> bytes:
    """For plain keys (``<ns>:weights``, registry hash values): the same envelope as one string."""
    return f"{SCHEMA_VERSION}|{type(message).__name__}|".encode() + message.model_dump_json().encode()


def decode_value(model: type[M], raw: bytes | str) -> M:
    raw = raw.encode() if isinstance(raw, str) else raw
    try:
        version, type_name, body = raw.split(b"|", 2)
        version_int = int(version)
    except ValueError as exc:
        raise CodecError("not an encoded value") from exc
    if version_int != SCHEMA_VERSION:
        raise CodecError(f"schema version {version_int} is not supported (this code reads {SCHEMA_VERSION})")
    if type_name.decode() != model.__name__:
        raise CodecError(f"expected a {model.__name__}, got a {type_name.decode()}")
    return model.model_validate_json(body)
