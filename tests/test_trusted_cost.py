"""Bounded trusted-side work: the worst inputs we built for each stage stay linear and small. The
bounds are generous (a busy 2-core CI machine) but far below what the replaced code took: a
minute for 80 KB of unclosed fences, 7.9 s for 16 MiB of tiny AHC039 polygons, GiBs of memory
for a 920 MiB result. `benchmarks/trusted_side_cost.py` measures the same cases."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable

import numpy as np
import pytest

from ttd_envs.answers import AnswerJudge, extract_answer
from ttd_envs.core import wire
from ttd_envs.core.judge import WrongAnswer
from ttd_envs.core.parsing import extract_code_block
from ttd_envs.core.state import State
from ttd_envs.core.text import MAX_ACTION_CHARS
from ttd_envs.problems.ahc import ahc039, ahc058
from ttd_envs.problems.ahc.common import data_dir
from ttd_envs.problems.erdos import ErdosOverlap

OUTPUT_CAP = 16 << 20


def seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    try:
        work()
    except (WrongAnswer, wire.WireError):
        pass
    return time.perf_counter() - started


@pytest.mark.parametrize("fragment", ["```python\n", "```\n", "``` py\n```\n", " ```cpp x\n\n"])
def test_code_block_extraction_is_linear_up_to_the_action_limit(fragment: str) -> None:
    text = (fragment * MAX_ACTION_CHARS)[:MAX_ACTION_CHARS]
    extract_code_block(text[:1000])  # warm
    assert seconds(lambda: extract_code_block(text)) < 1.0


def test_boxed_answer_extraction_is_linear() -> None:
    text = ("\\boxed{" * MAX_ACTION_CHARS)[:MAX_ACTION_CHARS]
    assert seconds(lambda: extract_answer(text, "last_number")) < 1.0


def test_hostile_result_headers_decode_quickly() -> None:
    room = wire.MAX_HEADER_BYTES - 16
    for body in (b"[" * room, b'{"__seq__": [' + b"1," * (room // 2 - 12) + b"1]}",
                 b'{"__seq__": [' + b'{"__seq__": []},' * (room // 17 - 2) + b"1]}", b"9" * 5000):
        header = b'{"value": ' + body + b"}"
        assert seconds(lambda h=header: wire.decode(len(h).to_bytes(8, "little") + h)) < 3.0


def test_ahc_checkers_read_16_mib_outputs_quickly() -> None:
    points, n = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
    factory = ahc058.parse_factory((data_dir("ahc058") / "inputs" / "0000.txt").read_bytes())
    tiny = (b"4\n0 0\n0 1\n1 1\n1 0\n" * (OUTPUT_CAP // 20))
    seconds(lambda: ahc039.polygon_score(points, n, tiny[:200]))  # warm (Numba's cache)
    assert seconds(lambda: ahc039.polygon_score(points, n, tiny)) < 2.0
    assert seconds(lambda: ahc039.polygon_score(points, n, tiny[:-2] + b"x\n")) < 2.0
    for output in (b"\n" * OUTPUT_CAP, b"#\n" * (OUTPUT_CAP // 2), b"0 " * (OUTPUT_CAP // 2)):
        assert seconds(lambda o=output: ahc058.factory_score(factory, o)) < 2.0


def _peak_rss_growth_mib(work: Callable[[], object]) -> float:
    """Growth of this process's peak RSS while `work` runs (Linux: clear_refs resets the peak)."""
    def kib(field: str) -> int:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = kib("VmRSS")
    work()
    return (kib("VmHWM") - before) / 1024


def test_an_oversized_result_is_cut_at_the_problem_cap_without_trusted_memory() -> None:
    """A 320 MB result to a problem whose answers are under a megabyte: the program is killed when
    the result passes the cap, and the trusted side holds no more than the cap."""
    code = textwrap.dedent("""
        import numpy as np
        def run(**kwargs):
            return np.ones(40_000_000), 0.5, 40_000_000
    """)
    problem = ErdosOverlap(initial="empty", budget_s=20, timeout_s=60, cpus=1)
    evaluations = []
    try:
        growth = _peak_rss_growth_mib(lambda: evaluations.append(
            problem.evaluate(f"```python\n{code}\n```", State(is_initial=True))))
    finally:
        problem.close()
    (evaluation,) = evaluations
    assert not evaluation.valid and "result" in evaluation.error, evaluation.error
    assert growth < 64, f"the trusted side grew by {growth:.0f} MiB"


def test_a_math_answer_gets_one_symbolic_budget_in_total() -> None:
    """Twelve powers that each run sympy into its time limit used to cost the limit twelve times
    over (plus a worker restart each): 18 s for six of them. Now the answer has one budget."""
    judge = AnswerJudge(timeout_s=1.0)
    judge.warm_up()
    answer = ", ".join(f"99999**999999{i:02d}" for i in range(12))
    try:
        assert seconds(lambda: judge.vote_key(answer)) < 4.0
        assert judge.vote_key(answer)[0] == "text"
    finally:
        judge.close()


def test_a_result_in_a_writable_buffer_is_decoded_without_copying_its_arrays() -> None:
    """The trusted side's own buffer is the only copy of a large result: arrays are views of it
    (blobs start aligned; one after an odd-sized blob would be copied)."""
    prediction = np.random.default_rng(0).random((500, 2000))
    message = bytearray(wire.encode((prediction, 0.5, prediction.T)))
    value, _ = wire.decode(message)
    arrays = [v for v in value if isinstance(v, np.ndarray)]
    assert all(np.shares_memory(a, np.frombuffer(message, np.uint8)) for a in arrays)
    assert np.array_equal(arrays[0], prediction) and np.array_equal(arrays[1], prediction.T)
    assert not np.shares_memory(wire.decode(bytes(message))[0][0], prediction)  # bytes: one copy
