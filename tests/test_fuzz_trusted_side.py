"""The trusted side is total: every byte string a program can send back ends as a value or a clear
failure, never an exception. Random and mutated payloads go through the real result decoder, each
problem's checker and both AHC output parsers (called directly, so 10^4 payloads cost seconds);
a few real sandboxed programs write the result channel by hand on top."""

from __future__ import annotations

import io
import json
import struct
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ttd_envs.core import wire
from ttd_envs.core.judge import WrongAnswer
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.core.state import State
from ttd_envs.problems.ahc import ahc039, ahc058
from ttd_envs.problems.ahc.common import data_dir
from ttd_envs.problems.autocorrelation import AutocorrelationAC1, AutocorrelationAC2
from ttd_envs.problems.circle_packing import CirclePacking26, CirclePacking32
from ttd_envs.problems.erdos import ErdosOverlap

PAYLOADS = 10_000
OUTPUTS = 10_000


# -- payload generators --------------------------------------------------------------------------
def _random_array(rng: np.random.Generator) -> np.ndarray:
    """Arrays that are nearly right for some checker: the usual shapes, odd dtypes, NaN/inf/huge."""
    shape = [(), (0,), (1,), (26,), (32,), (26, 2), (32, 2), (26, 3), (600,), (3, 4), (2, 0, 3)][rng.integers(11)]
    dtype = ["f8", "f4", "f2", "i8", "u1", "i1", "?", "c16", ">f8", "<i4"][rng.integers(10)]
    values = rng.normal(0.5, 1.0, shape) * 10.0 ** rng.integers(-310, 310)
    array = np.asarray(values).astype(dtype) if dtype[-2:] != "c16" else values + 1j * values
    if array.size and rng.random() < 0.3:
        array.flat[rng.integers(array.size)] = [np.nan, np.inf, -np.inf, 0, -1][rng.integers(5)] \
            if array.dtype.kind in "fc" else 0
    return np.asfortranarray(array) if rng.random() < 0.2 else array


def _random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = rng.integers(9 if depth < 4 else 5)
    if kind == 0:
        return _random_array(rng)
    if kind == 1:
        return [None, True, 0, -1, 2**62, 1e308, float("nan"), float("-inf"), "", "0.5", "x" * 100][rng.integers(11)]
    if kind == 2:
        return float(rng.normal())
    if kind == 3:
        return int(rng.integers(-(2**40), 2**40))
    if kind == 4:
        return rng.random(int(rng.integers(0, 200))).tolist()
    if kind in (5, 6):
        items = [_random_value(rng, depth + 1) for _ in range(rng.integers(0, 5))]
        return tuple(items) if kind == 5 else items
    if kind == 7:
        return (_random_array(rng), float(rng.normal()), int(rng.integers(-5, 700)))
    return {str(k): _random_value(rng, depth + 1) for k in range(rng.integers(0, 4))}


def _message(header: Any, blobs: bytes = b"") -> bytes:
    text = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blobs


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _array_message(blob: bytes) -> bytes:
    """A well-formed message whose value is the one array `blob` (which may lie)."""
    return _message({"value": {"__ndarray__": 0}, "blob_sizes": [len(blob)]}, blob)


def _crafted(rng: np.random.Generator) -> bytes:
    """Hand-written hostile messages: the classes a program writing the channel itself can try."""
    blob = _npy(np.arange(4.0))
    choices: list[Callable[[], bytes]] = [
        lambda: _message('{"value": ' + "9" * int(rng.integers(19, 6000)) + "}"),
        lambda: _message('{"value": ' + "[" * int(rng.integers(30, 50_000)) + "]" * 3 + "}"),
        lambda: _message('{"value": ' + '{"__seq__": [' * int(rng.integers(30, 3000)) + "]}" * 3 + "}"),
        lambda: _message({"value": {"__ndarray__": [0, True, -1, 5, "0", 1.0][rng.integers(6)]},
                          "blob_sizes": [len(blob)]}, blob),
        lambda: _message({"value": {"__seq__": {"a": 1}}}),
        lambda: _message({"value": {"__dict__": [1, 2]}}),
        lambda: _message({"value": {"other": 1}}),
        lambda: _message({"value": [1, 2, 3]}),
        lambda: _message({"error": [1, {"a": 2}]}),
        lambda: _message([1, 2]),
        lambda: _message({"value": 1, "blob_sizes": [-1]}),
        lambda: _message({"value": 1, "blob_sizes": "12"}),
        lambda: _message({"value": 1, "blob_sizes": [1e3]}),
        lambda: _array_message(blob.replace(b"(4,)", b"(9999999999999,)")),
        lambda: _array_message(blob.replace(b"(4,)", b"(-4,)")),
        lambda: _array_message(blob.replace(b"<f8", b"|O8")),
        lambda: _array_message(blob[:-8]),
        lambda: _array_message(_npy(np.array(["a"]))),
        lambda: _array_message(_npy(np.zeros(2, "M8[s]"))),
        lambda: _array_message(_npy(np.zeros(2, "i4,f8"))),
        lambda: _array_message(_npy(np.zeros((2, 3), "f8")).replace(b"(2, 3)", b"(3, 2, 1)")),
        lambda: struct.pack("<Q", 2**64 - 1) + b"{}",
        lambda: struct.pack("<Q", 3) + b"{}",
        lambda: b"\x00" * int(rng.integers(0, 16)),
        lambda: _message('{"value": NaN, "x": Infinity}'),
        lambda: _message(b"\xff\xfe{}".decode("latin-1")),
    ]
    return choices[rng.integers(len(choices))]()


def _mutated(data: bytes, rng: np.random.Generator) -> bytes:
    """Bit flips, truncation, insertion, duplication and lying length prefixes of a valid message."""
    buffer = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        kind = rng.integers(6)
        if kind == 0 and buffer:
            buffer[rng.integers(len(buffer))] ^= 1 << int(rng.integers(8))
        elif kind == 1 and buffer:
            del buffer[rng.integers(len(buffer)):]
        elif kind == 2:
            at = int(rng.integers(len(buffer) + 1))
            buffer[at:at] = rng.bytes(int(rng.integers(1, 16)))
        elif kind == 3 and buffer:
            start = int(rng.integers(len(buffer)))
            buffer[start:start] = buffer[start:start + int(rng.integers(1, 64))]
        elif kind == 4 and len(buffer) >= 8:
            buffer[:8] = struct.pack("<Q", int(rng.integers(0, 2**63)) if rng.random() < 0.5
                                     else max(0, len(buffer) - 8 + int(rng.integers(-4, 5))))
        else:
            at = int(rng.integers(len(buffer) + 1))
            buffer[at:at] = [b"[", b"{", b"9" * 30, b'"__seq__"', b"\\u0000", b"NaN"][rng.integers(6)]
    return bytes(buffer)


def payloads(count: int, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    for index in range(count):
        with np.errstate(all="ignore"):
            yield _payload(index, rng)


def _payload(index: int, rng: np.random.Generator) -> bytes:
    """Random bytes, a crafted hostile message, a valid message of a random value, or a mutated one."""
    kind = index % 4
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 256)))
    if kind == 1:
        return _crafted(rng)
    message = wire.encode(_random_value(rng))
    return message if kind == 2 else _mutated(message, rng)


# -- the decoder and the checkers ----------------------------------------------------------------
@pytest.fixture(scope="module")
def checkers() -> dict[str, Callable[[Any], Any]]:
    """Each problem's real `check`, on problems small enough to check 10^4 values in seconds."""
    problems = {"erdos": ErdosOverlap(max_points=2000), "ac1": AutocorrelationAC1(max_len=2000),
                "ac2": AutocorrelationAC2(max_len=2000), "cp26": CirclePacking26(), "cp32": CirclePacking32()}
    found = {name: problem.check for name, problem in problems.items()}
    try:
        from ttd_envs.problems.denoising.problem import Denoising
        found["denoising"] = Denoising(dataset="synthetic-unit", initial="empty").check
    except ImportError:  # scanpy is the bio extra; the other checkers still run
        pass
    return found


def test_decoder_and_every_checker_are_total(checkers: dict[str, Callable[[Any], Any]]) -> None:
    """10^4 payloads: decode gives a value or WireError; each value through each checker gives a
    construction with a finite score or InvalidConstruction with a message. Nothing else escapes."""
    decoded = rejected = accepted = 0
    for payload in payloads(PAYLOADS, seed=12):
        try:
            value, error = wire.decode(payload)
        except wire.WireError as exc:
            assert str(exc), payload[:200]
            rejected += 1
            continue
        decoded += 1
        if error is not None:
            assert isinstance(error, str)
            continue
        for name, check in checkers.items():
            try:
                _, score = check(value)
            except InvalidConstruction as exc:
                assert str(exc), (name, payload[:200])
                continue
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{name}.check raised {type(exc).__name__}: {exc} on {payload[:300]!r}")
            assert np.isfinite(score), (name, payload[:200])
            accepted += 1
    assert decoded + rejected == PAYLOADS
    assert decoded > PAYLOADS // 4 and rejected > PAYLOADS // 4  # both paths are exercised


def test_wire_rejects_each_hostile_class_with_a_message() -> None:
    cases = {
        "5,000-digit integer": (_message('{"value": ' + "9" * 5000 + "}"), "64 bits"),
        "deep lists": (_message('{"value": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested deeper"),
        "deep nodes": (_message('{"value": ' + '{"__seq__": [' * 100 + "]}" * 100 + "}"), "nested deeper"),
        "lying .npy shape": (_array_message(_npy(np.arange(4.0)).replace(b"(4,)", b"(9999999999999,)")),
                             "needs 79999999999992 bytes"),
        "object array": (_array_message(_npy(np.arange(4.0)).replace(b"<f8", b"|O8")), "array"),
        "string array": (_array_message(_npy(np.array(["a"]))), "numeric"),
        "error that is not text": (_message({"error": [1]}), "not a string"),
        "header longer than the message": (struct.pack("<Q", 2**64 - 1) + b"{}", "claims"),
    }
    for name, (payload, words) in cases.items():
        with pytest.raises(wire.WireError, match=words):
            wire.decode(payload)
        assert name


# -- the AHC output parsers ----------------------------------------------------------------------
def _ahc039_output(rng: np.random.Generator) -> bytes:
    polygons = []
    for _ in range(rng.integers(0, 4)):
        m = int(rng.choice([4, 6, 1000, 3, 1001, 0, -4]))
        coordinates = rng.integers(-2, 100_003, size=max(0, 2 * m + int(rng.integers(-2, 2))))
        polygons.append(f"{m}\n" + "\n".join(map(str, coordinates)))
    return "\n".join(polygons).encode()


AHC058_LINES = (b"-1",) * 12 + (b"0 0",) * 4 + (b"1 3", b"3 9", b"#", b"", b"  ", b"-1 0", b"4 0", b"0 10",
                                                   b"+0 -0", b"0\t1", b"# 1 2 3", b"\r")


def _ahc058_output(rng: np.random.Generator) -> bytes:
    """Mostly well-formed action lists (so the simulation runs), with every kind of bad line mixed in."""
    return b"\n".join(AHC058_LINES[i] for i in rng.integers(0, len(AHC058_LINES), size=int(rng.integers(0, 520))))


def _junk_token(rng: np.random.Generator) -> bytes:
    return [b"9" * int(rng.integers(18, 5000)), b"1.0", b"0x1", b"1_0", b"+", b"-", b"--1", b"\x00", b"\xff",
            "٣".encode(), b"1e5", b"inf", b"\x1c", b"\r"][rng.integers(14)]


def outputs(generate: Callable[[np.random.Generator], bytes], count: int, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    for index in range(count):
        output = generate(rng)
        if index % 3 == 1:
            at = int(rng.integers(len(output) + 1))
            output = output[:at] + _junk_token(rng) + output[at:]
        elif index % 3 == 2:
            output = _mutated(output, rng)
        yield output


def test_ahc039_parser_is_total() -> None:
    points, n = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
    verdicts = {"ok": 0, "wa": 0}
    for output in outputs(_ahc039_output, OUTPUTS, seed=39):
        try:
            score = ahc039.polygon_score(points, n, output)
        except WrongAnswer as exc:
            assert str(exc)
            verdicts["wa"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"the AHC039 checker raised {type(exc).__name__}: {exc} on {output[:300]!r}")
        assert isinstance(score, int) and score >= 0
        verdicts["ok"] += 1
    assert verdicts["ok"] > 100 and verdicts["wa"] > 100


def test_ahc058_parser_is_total() -> None:
    factory = ahc058.parse_factory((data_dir("ahc058") / "inputs" / "0000.txt").read_bytes())
    verdicts = {"ok": 0, "wa": 0}
    for output in outputs(_ahc058_output, OUTPUTS, seed=58):
        try:
            score = ahc058.factory_score(factory, output)
        except WrongAnswer as exc:
            assert str(exc)
            verdicts["wa"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"the AHC058 checker raised {type(exc).__name__}: {exc} on {output[:300]!r}")
        assert isinstance(score, int)
        verdicts["ok"] += 1
    assert verdicts["wa"] > 100


def test_huge_integers_in_cpp_output_are_wrong_answers() -> None:
    points, n = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
    factory = ahc058.parse_factory((data_dir("ahc058") / "inputs" / "0000.txt").read_bytes())
    digits = b"9" * 5000
    for output in (digits, b"4\n0 0\n0 " + digits + b"\n1 1\n1 0\n"):
        with pytest.raises(WrongAnswer, match="too long"):
            ahc039.polygon_score(points, n, output)
    for output in (digits + b" 0\n", b"0 " + digits + b"\n"):
        with pytest.raises(WrongAnswer, match="too long"):
            ahc058.factory_score(factory, output)


# -- real sandboxed programs that write the result channel themselves -----------------------------
RAW_WRITERS = {
    "a 5,000-digit integer": "b'{\"value\": ' + b'9' * 5000 + b'}'",
    "deep nesting": "b'{\"value\": ' + b'[' * 100000 + b']' * 100000 + b'}'",
    "a bad array reference": "b'{\"value\": {\"__ndarray__\": 7}}'",
    "junk after the header": "b'{\"value\": 1}' + bytes(range(256))",
    "a type confusion": "b'{\"value\": {\"__seq__\": {\"a\": 1}}}'",
}


@pytest.fixture(scope="module")
def erdos() -> Iterator[ErdosOverlap]:
    problem = ErdosOverlap(initial="empty", budget_s=5, timeout_s=20, cpus=1)
    yield problem
    problem.close()


@pytest.mark.parametrize("what", sorted(RAW_WRITERS))
def test_program_writing_the_result_channel_is_an_invalid_step(erdos: ErdosOverlap, what: str) -> None:
    """The program writes its own bytes to the result descriptor (fd 3) and exits: the step is
    invalid with a message, whatever the bytes."""
    code = textwrap.dedent(f"""
        import os, struct
        def run(**kwargs):
            header = {RAW_WRITERS[what]}
            os.write(3, struct.pack('<Q', len(header)) + header)
            os._exit(0)
    """)
    evaluation = erdos.evaluate(f"```python\n{code}\n```", State(is_initial=True))
    assert not evaluation.valid and evaluation.reward == 0.0
    assert evaluation.error and len(evaluation.error) < 3000
