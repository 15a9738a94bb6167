"""The result wire format between an untrusted program and the trusted side. Never pickle.

A message is an 8-byte header length, a JSON header, then raw `.npy` blobs. Arrays in the value
tree are replaced by {"__ndarray__": i}. The trusted side never unpickles and never lets numpy
trust a blob: it checks each `.npy` header (numeric dtype, shape consistent with the blob length)
before it copies the data out.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import struct
from typing import Any

import numpy as np

_HEADER = struct.Struct("<Q")
MAX_HEADER_BYTES = 1 << 20
"""Arrays travel as blobs and lists of more than 64 numbers become arrays, so a header holds only
structure and scalars: kilobytes. The cap bounds the trusted side's JSON work (under a second)."""
MAX_DEPTH = 32
_NPY_HEADER_BYTES = 1 << 17  # a .npy header of format 1.0 is at most 64 KiB; ours are ~128 bytes
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


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
    if len(header) > MAX_HEADER_BYTES:
        raise WireError(f"the return value's structure takes {len(header)} bytes of JSON (at most {MAX_HEADER_BYTES}); "
                        "return bulk data as numpy arrays, not as nested lists, dicts or strings")
    header += b" " * (-(_HEADER.size + len(header)) % 64)  # blobs start aligned: decoded without a copy
    return _HEADER.pack(len(header)) + header + b"".join(blobs)


def encode_error(message: str) -> bytes:
    header = json.dumps({"error": message[-20_000:]}).encode()
    return _HEADER.pack(len(header)) + header


# -- the trusted side ------------------------------------------------------------------------
# Everything below reads bytes a hostile program may have written by hand (it can write to the
# result descriptor itself). Decoding is total: any byte string gives a value or a WireError.

def _load_array(blob: memoryview) -> np.ndarray:
    """One `.npy` blob as a numeric array; the header is checked against the blob's length before
    anything is allocated (np.load would trust a header that claims 10^12 elements). Only the
    header is read through a stream. The data is copied once into the array, or not at all when
    the message is a writable buffer (a bytearray) and the data happens to be aligned."""
    stream = io.BytesIO(blob[:_NPY_HEADER_BYTES])
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise WireError(f"unsupported .npy version {version}")
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many types on junk
        raise WireError(f"malformed array in result: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"arrays in a result must be numeric; got dtype {dtype}")
    count = math.prod(shape)
    body = blob[stream.tell():]
    if count * dtype.itemsize != len(body):
        raise WireError(f"malformed array in result: shape {shape} of {dtype} needs {count * dtype.itemsize} "
                        f"bytes, the blob holds {len(body)}")
    array = np.frombuffer(body, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C")
    return array.copy(order="K") if body.readonly or not array.flags.aligned else array


def _untree(node: Any, arrays: list[np.ndarray], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"malformed result: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, int) and not isinstance(node, bool) and not _INT64_MIN <= node <= _INT64_MAX:
        raise WireError(f"the result holds an integer of {len(str(abs(node)))} digits; integers must fit in 64 bits "
                        "(return floats or arrays for large numbers)")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        raise WireError("malformed result: bare list")
    if "__ndarray__" in node:
        index = node["__ndarray__"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(arrays):
            raise WireError("malformed result: bad array reference")
        return arrays[index]
    if "__seq__" in node:
        items = node["__seq__"]
        if not isinstance(items, list):
            raise WireError("malformed result: a sequence node without a list")
        values = [_untree(v, arrays, depth + 1) for v in items]
        return tuple(values) if node.get("tuple") is True else values
    if "__dict__" in node:
        members = node["__dict__"]
        if not isinstance(members, dict):
            raise WireError("malformed result: a dict node without members")
        return {k: _untree(v, arrays, depth + 1) for k, v in members.items()}
    raise WireError("malformed result: unknown node")


def _decode(data: bytes | bytearray | memoryview) -> tuple[Any, str | None]:
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise WireError("the program returned no result")
    (header_len,) = _HEADER.unpack_from(view)
    if header_len > MAX_HEADER_BYTES or _HEADER.size + header_len > len(view):
        raise WireError(f"malformed result header: it claims {header_len} bytes")
    try:
        header = json.loads(bytes(view[_HEADER.size:_HEADER.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"malformed result header: {exc}") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise WireError("the result holds an integer of thousands of digits; integers must fit in 64 bits "
                        "(return floats or arrays for large numbers)") from None
    except RecursionError:
        raise WireError(f"malformed result: nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(header, dict):
        raise WireError("malformed result header: not a JSON object")
    if "error" in header:
        if not isinstance(header["error"], str):
            raise WireError("malformed result header: the error is not a string")
        return None, header["error"]
    sizes = header.get("blob_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in sizes):
        raise WireError("malformed blob sizes")
    offset = _HEADER.size + header_len
    if offset + sum(sizes) != len(view):
        raise WireError(f"result length does not match its header ({len(view)} bytes, the header accounts for "
                        f"{offset + sum(sizes)})")
    arrays = []
    for size in sizes:
        arrays.append(_load_array(view[offset:offset + size]))
        offset += size
    return _untree(header.get("value"), arrays, 0), None


def decode(data: bytes | bytearray | memoryview) -> tuple[Any, str | None]:
    """Parse a message from an untrusted program: (value, error). Raises WireError, and only
    WireError, for anything malformed: wrong lengths, a header over MAX_HEADER_BYTES, junk JSON,
    deep nesting, integers beyond 64 bits, non-numeric or lying `.npy` headers. Values are
    numbers, strings, None, lists, tuples, dicts with string keys and numeric numpy arrays,
    nested at most MAX_DEPTH deep."""
    try:
        return _decode(data)
    except WireError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, MemoryError) as exc:
        raise WireError(f"malformed result ({type(exc).__name__}: {exc})") from None
