"""The channel between the judge (trusted) and the harness (in the sandbox): framed `wire` messages
over one Unix stream socket pair, and the two computations both sides make on output values.

A frame is an 8-byte little-endian length and one `wire` message (JSON plus `.npy`, never
pickle). The judge reads frames the program may have written by hand: each is capped before it
is read, and decoding is total. No torch at import: the sandbox and the judge pass their module.
"""

from __future__ import annotations

import socket
import struct
import time
import types
from typing import Any

from ttd_envs.core import wire

_LENGTH = struct.Struct("<Q")


class ChannelError(Exception):
    """The other side closed the channel, sent a malformed or oversized frame, or was too slow."""


def send(sock: socket.socket, message: dict[str, Any], deadline: float | None = None) -> None:
    """Write one message (before the monotonic `deadline`, when given)."""
    payload = wire.encode(message)
    try:
        sock.settimeout(None if deadline is None else max(1e-3, deadline - time.monotonic()))
        sock.sendall(_LENGTH.pack(len(payload)) + payload)
    except OSError as exc:
        raise ChannelError(f"the channel failed ({exc})") from None


def receive(sock: socket.socket, limit: int, deadline: float) -> dict[str, Any]:
    """One message of at most `limit` bytes, before the monotonic `deadline` (inf: wait)."""
    (length,) = _LENGTH.unpack(_read(sock, _LENGTH.size, deadline))
    if length > limit:
        raise ChannelError(f"a message of {length} bytes (at most {limit} fit what was asked)")
    try:
        value, error = wire.decode(_read(sock, length, deadline))
    except wire.WireError as exc:
        raise ChannelError(f"a malformed message ({exc})") from None
    if error is not None or not isinstance(value, dict) or not isinstance(value.get("op"), str):
        raise ChannelError("a message that is not an operation")
    return value


def _read(sock: socket.socket, count: int, deadline: float) -> bytearray:
    buffer = bytearray(count)
    view, filled = memoryview(buffer), 0
    while filled < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelError("no answer before the time limit")
        sock.settimeout(None if remaining == float("inf") else remaining)
        try:
            got = sock.recv_into(view[filled:])
        except TimeoutError:
            raise ChannelError("no answer before the time limit") from None
        except OSError as exc:
            raise ChannelError(f"the channel failed ({exc})") from None
        if not got:
            raise ChannelError("the channel was closed (the process exited or closed it)")
        filled += got
    return buffer


def comparable(torch: types.ModuleType, tensor: Any, dtype_name: str) -> Any:
    """`tensor` flattened, rounded to the compared dtype and held as float32 (exact for fp32,
    bf16 and fp16): the values both sides talk about."""
    return tensor.detach().reshape(-1).to(getattr(torch, dtype_name)).to(torch.float32)


DIGEST_GROUPS = 16
"""Signed sums per timed output: one sum lets an unfinished output through about one time in six
(its error is one Gaussian draw that can land near zero); 16 independent ones, about 1e-12."""
DIGEST_CHUNK = 1 << 24
"""Elements drawn for at a time, so the digest's extra memory stays bounded on large outputs."""


def signed_sums(torch: types.ModuleType, flat: Any, seed: int, signed: bool = True) -> list[float]:
    """Σ s_i·flat_i over each of `DIGEST_GROUPS` groups, with signs s_i = ±1 and a group per element
    drawn from `seed` on `flat`'s device, accumulated in float64 (`signed=False`: the plain sums
    over the same groups, which the judge uses for its tolerance bound). The judge picks the seed
    after the call returned: only a program holding every element can answer with the right
    sums, so a partial or deferred result cannot pass."""
    generator = torch.Generator(device=flat.device).manual_seed(seed)
    sums = torch.zeros(DIGEST_GROUPS, dtype=torch.float64, device=flat.device)
    for start in range(0, flat.numel(), DIGEST_CHUNK):
        part = flat[start:start + DIGEST_CHUNK].double()
        draws = torch.randint(0, 2 * DIGEST_GROUPS, part.shape, generator=generator, device=flat.device,
                              dtype=torch.int32)
        if signed:
            part = torch.where(draws % 2 == 1, part, -part)
        sums.index_add_(0, draws // 2, part)
    return sums.tolist()
