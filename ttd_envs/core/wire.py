"""The result wire format between an untrusted program and the trusted side. Never pickle.

A message is an 8-byte header length, a JSON header, then raw `.npy` blobs. Arrays in the value
tree are replaced by {"__ndarray__": i}; the trusted side loads blobs with allow_pickle=False.
"""

from __future__ import annotations

import io
import json
import numbers
import struct
from typing import Any

import numpy as np

_HEADER = struct.Struct("<Q")
MAX_HEADER_BYTES = 8 << 20
MAX_DEPTH = 32


class WireError(ValueError):
    """The program returned something that cannot travel as plain data."""


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _tree(value: Any, blobs: list[bytes], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"return value is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        value = value.item()
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            raise WireError(f"arrays must be numeric; got dtype {value.dtype}")
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
        blobs.append(buffer.getvalue())
        return {"__ndarray__": len(blobs) - 1}
    if isinstance(value, (list, tuple)):
        if len(value) > 64 and all(_is_number(v) for v in value):
            return _tree(np.asarray(value, dtype=np.float64), blobs, depth + 1) | {"from_list": True}
        return {"__seq__": [_tree(v, blobs, depth + 1) for v in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise WireError("dict keys must be strings")
        return {"__dict__": {k: _tree(v, blobs, depth + 1) for k, v in value.items()}}
    raise WireError(
        f"cannot return a {type(value).__module__}.{type(value).__qualname__}; return numbers, strings, "
        "lists, tuples, dicts or numeric numpy arrays"
    )


def encode(value: Any) -> bytes:
    """Serialise a program's return value (called inside the sandbox)."""
    blobs: list[bytes] = []
    tree = _tree(value, blobs, 0)
    header = json.dumps({"value": tree, "blob_sizes": [len(b) for b in blobs]}).encode()
    return _HEADER.pack(len(header)) + header + b"".join(blobs)


def encode_error(message: str) -> bytes:
    header = json.dumps({"error": message[-20_000:]}).encode()
    return _HEADER.pack(len(header)) + header


def _untree(node: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(node, dict):
        if "__ndarray__" in node:
            index = node["__ndarray__"]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise WireError("malformed result: bad array reference")
            return arrays[index]
        if "__seq__" in node:
            items = [_untree(v, arrays) for v in node["__seq__"]]
            return tuple(items) if node.get("tuple") else items
        if "__dict__" in node:
            return {k: _untree(v, arrays) for k, v in node["__dict__"].items()}
        raise WireError("malformed result: unknown node")
    if isinstance(node, list):
        raise WireError("malformed result: bare list")
    return node


def decode(data: bytes) -> tuple[Any, str | None]:
    """Parse a message from an untrusted program: (value, error). Raises WireError if malformed."""
    if len(data) < _HEADER.size:
        raise WireError("the program returned no result")
    (header_len,) = _HEADER.unpack_from(data)
    if header_len > MAX_HEADER_BYTES or _HEADER.size + header_len > len(data):
        raise WireError("malformed result header")
    try:
        header = json.loads(data[_HEADER.size:_HEADER.size + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"malformed result header: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("malformed result header")
    if "error" in header:
        return None, str(header["error"])
    sizes = header.get("blob_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise WireError("malformed blob sizes")
    offset = _HEADER.size + header_len
    if offset + sum(sizes) != len(data):
        raise WireError("result length does not match its header")
    arrays = []
    for size in sizes:
        try:
            arrays.append(np.load(io.BytesIO(data[offset:offset + size]), allow_pickle=False))
        except Exception as exc:  # noqa: BLE001 - any malformed blob is the program's fault
            raise WireError(f"malformed array in result: {exc}") from None
        offset += size
    return _untree(header.get("value"), arrays), None
