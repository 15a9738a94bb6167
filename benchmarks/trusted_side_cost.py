"""The worst trusted-side cost a program can cause, per problem and stage (parse the answer, decode
the result, check it), with the bound that now holds; the code each fix replaced runs beside it
on the same input as the naive reference.

Each input is the most expensive one we could build for that stage within what the problem
accepts: unclosed fences up to the action limit, the largest result a problem reads, 16 MiB of
C++ output (the judge's cap) shaped to be slow. Times are the best of `--repeat` runs.

    python -m benchmarks.trusted_side_cost [--repeat 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import textwrap
import time
from collections.abc import Callable

import numpy as np

from benchmarks._report import markdown_table, write_section
from ttd_envs.answers import AnswerJudge, extract_answer
from ttd_envs.core import wire
from ttd_envs.core.judge import WrongAnswer
from ttd_envs.core.parsing import extract_code_block
from ttd_envs.core.state import State
from ttd_envs.core.text import MAX_ACTION_CHARS
from ttd_envs.problems.ahc import ahc039, ahc058
from ttd_envs.problems.ahc.common import data_dir, parse_int
from ttd_envs.problems.autocorrelation import AutocorrelationAC1, AutocorrelationAC2
from ttd_envs.problems.circle_packing import CirclePacking32
from ttd_envs.problems.erdos import ErdosOverlap, c5_bound
from ttd_envs.problems.labs import parse_answer

OUTPUT_CAP = 16 << 20


# -- the code each fix replaced (naive references) ------------------------------------------------
_OLD_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)


def old_extract_code_block(text: str) -> str | None:
    blocks = [m.group(2) for m in _OLD_FENCE.finditer(text) if m.group(1).lower() in ("python", "py", "python3")]
    return blocks[-1] if blocks else None


def old_parse_polygons(output: bytes) -> object:
    """Token list, one Python int per token, one numpy array per polygon."""
    tokens = output.split()
    last, position = None, 0
    while position < len(tokens):
        m = parse_int(tokens[position], "m")
        if not 4 <= m <= ahc039.MAX_VERTICES:
            raise WrongAnswer("m out of range")
        values = [parse_int(t, "c") for t in tokens[position + 1:position + 1 + 2 * m]]
        last = np.asarray(values, dtype=np.int64).reshape(m, 2)
        position += 1 + 2 * m
    return last


def old_parse_actions(output: bytes, turns: int = 500) -> int:
    """One bytes object per line of the whole output."""
    count = 0
    for raw in output.split(b"\n"):
        if count == turns:
            break
        line = raw.strip()
        if line and not line.startswith(b"#"):
            count += 1
    return count


def old_extract_boxed(text: str) -> str | None:
    """The slice-per-candidate version (a copy of the text per unbalanced box)."""
    starts = sorted(m.end() - 1 for m in re.finditer(r"\\boxed\s*\{", text))
    limit = len(text)
    for brace in reversed(starts):
        window, depth = text[:limit], 0
        for i in range(brace, len(window)):
            depth += {"{": 1, "}": -1}.get(window[i], 0)
            if depth == 0:
                return window[brace + 1:i]
        limit = brace
    return None


# -- measuring -----------------------------------------------------------------------------------
def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            work()
        except (WrongAnswer, ValueError):
            pass
        times.append(time.perf_counter() - started)
    return min(times)


def trusted_cost(work: Callable[[], object]) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU seconds, growth of its peak RSS in MiB) while `work` runs
    (Linux: clear_refs resets the peak). The program's own time is in the wall clock only."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - started, time.process_time() - cpu, (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))


def row(problem: str, stage: str, worst: str, bound: str, new_s: float, old_s: float | None) -> list[object]:
    old = "-" if old_s is None else f"{old_s:.3f}"
    ratio = "-" if old_s is None else f"{old_s / max(new_s, 1e-6):.0f}x"
    return [problem, stage, worst, bound, f"{new_s:.4f}", old, ratio]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    r = args.repeat
    rows: list[list[object]] = []

    # Parsing the answer (every program problem; AHC with the cpp tag).
    for size in (10_000, 20_000):
        text = ("```python\n" * (size // 10))[:size]
        rows.append(row("program problems", "extract code block", f"{size // 1000} KB of unclosed ```python",
                        "linear, one pass over lines", best_of(r, lambda t=text: extract_code_block(t)),
                        best_of(1, lambda t=text: old_extract_code_block(t))))
    for text, what in ((("```python\n" * MAX_ACTION_CHARS)[:MAX_ACTION_CHARS], "unclosed ```python"),
                       (("```\n" * MAX_ACTION_CHARS)[:MAX_ACTION_CHARS], "bare ``` lines")):
        rows.append(row("program problems", "extract code block", f"400 KB (action limit) of {what}",
                        "linear, one pass over lines", best_of(r, lambda t=text: extract_code_block(t)), None))
    boxes = ("\\boxed{" * (MAX_ACTION_CHARS // 7))[:MAX_ACTION_CHARS]
    rows.append(row("MathVote / MathAnswer", "extract answer", "400 KB of unclosed \\boxed{",
                    "linear (no copies)", best_of(r, lambda: extract_answer(boxes, "last_number")),
                    best_of(1, lambda: old_extract_boxed(boxes))))
    judge = AnswerJudge()
    judge.warm_up()
    slow = ", ".join(f"99999**999999{i:02d}" for i in range(50))
    rows.append(row("MathVote / MathAnswer", "judge answer", f"{len(slow)}-char set of 50 powers sympy cannot finish",
                    f"one {judge.timeout_s:g} s symbolic budget per answer", best_of(1, lambda: judge.vote_key(slow)),
                    None))
    judge.close()
    rows.append(row("LABS", "parse answer", "400 KB answer", "refused past 100,000 characters",
                    best_of(r, lambda: parse_answer("+" * MAX_ACTION_CHARS, 64)), None))

    # Decoding and checking a Python program's result.
    erdos, ac1, ac2, cp32 = ErdosOverlap(), AutocorrelationAC1(), AutocorrelationAC2(), CirclePacking32()
    rng = np.random.default_rng(0)
    u = rng.uniform(-0.4, 0.4, erdos.max_points)
    h = 0.5 + (u - u.mean())
    for name, problem, value in (
            ("ErdosOverlap", erdos, (h, c5_bound(h), h.size)),
            ("AutocorrelationAC1", ac1, rng.random(ac1.max_len)),
            ("AutocorrelationAC2", ac2, rng.random(ac2.max_len)),
            ("CirclePacking32", cp32, (np.full((32, 2), 0.5), np.zeros(32), 0.0))):
        message = wire.encode(value)
        rows.append(row(name, "decode result", f"largest valid result ({len(message) / 1e6:.2f} MB)",
                        f"result cap {problem.result_bytes / 1e6:.2f} MB", best_of(r, lambda m=message: wire.decode(m)),
                        None))
        decoded = wire.decode(message)[0]
        scorer = "O(n^2) pairs, n = 32" if name.startswith("Circle") else "O(n log n) FFT scorer"
        rows.append(row(name, "check", "largest valid construction", scorer,
                        best_of(r, lambda p=problem, v=decoded: _check_quietly(p, v)), None))
    room = wire.MAX_HEADER_BYTES - 16
    cap = f"{wire.MAX_HEADER_BYTES >> 20} MiB"
    hostile = {
        f"{cap} header of [": b"[" * room,
        f"{cap} header: one sequence of 500k ints": b'{"__seq__": [' + b"1," * (room // 2 - 12) + b"1]}",
        f"{cap} header: 60k empty sequences": b'{"__seq__": [' + b'{"__seq__": []},' * (room // 17 - 2) + b"1]}",
        "5,000-digit integer": b"9" * 5000,
    }
    for what, body in hostile.items():
        header = b'{"value": ' + body + b"}"
        message = len(header).to_bytes(8, "little") + header
        rows.append(row("all Python problems", "decode result", what, f"header <= {cap}, depth <= 32, 64-bit ints",
                        best_of(r, lambda m=message: _decode_quietly(m)), None))

    # Memory: a program returns 960 MB (the 920 MiB case) to Erdős.
    big = textwrap.dedent("""
        import numpy as np
        def run(**kwargs):
            return np.ones(120_000_000), 0.5, 120_000_000
    """)
    small = ErdosOverlap(initial="empty", budget_s=20, timeout_s=60, cpus=1)
    wall, cpu, growth = trusted_cost(lambda: small.evaluate(f"```python\n{big}\n```", State(is_initial=True)))
    small.close()
    rows.append(row("ErdosOverlap", "read result (trusted CPU)", "960 MB result (the program ran "
                    f"{wall:.1f} s)", f"killed at {small.result_bytes / 1e6:.2f} MB; trusted peak RSS +{growth:.0f} "
                    "MiB", cpu, None))

    # C++ output (16 MiB cap per test, 150 tests).
    points, n = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
    tiny = (b"4\n0 0\n0 1\n1 1\n1 0\n" * (OUTPUT_CAP // 20))[:OUTPUT_CAP // 20 * 20]
    big_polygon = comb_polygon()
    assert ahc039.polygon_score(points, n, big_polygon) >= 0  # valid: the whole check runs
    rows.append(row("AHC039", "parse + check one test", "16 MiB of tiny polygons", "one pass, O(1) memory",
                    best_of(r, lambda: ahc039.polygon_score(points, n, tiny)),
                    best_of(1, lambda: old_parse_polygons(tiny))))
    rows.append(row("AHC039", "parse + check one test", "one 1000-vertex comb polygon", "O(m^2 + m * 10^4)",
                    best_of(r, lambda: ahc039.polygon_score(points, n, big_polygon)), None))
    junk = tiny[:-2] + b"x\n"
    rows.append(row("AHC039", "parse + check one test", "16 MiB of tiny polygons, junk last", "one pass, O(1) memory",
                    best_of(r, lambda: ahc039.polygon_score(points, n, junk)),
                    best_of(1, lambda: old_parse_polygons(junk))))
    factory = ahc058.parse_factory((data_dir("ahc058") / "inputs" / "0000.txt").read_bytes())
    for what, output in (("16 MiB of blank lines", b"\n" * OUTPUT_CAP),
                         ("16 MiB of '#' lines", b"#\n" * (OUTPUT_CAP // 2)),
                         ("one 16 MiB line", b"0 " * (OUTPUT_CAP // 2))):
        rows.append(row("AHC058", "parse + check one test", what, "one pass to the T-th action; <= 3 tokens a line",
                        best_of(r, lambda o=output: ahc058.factory_score(factory, o)),
                        best_of(1, lambda o=output: old_parse_actions(o))))

    load = os.getloadavg()
    header = ["problem", "stage", "worst input we built", "bound that holds", "seconds", "old code s", "old / new"]
    table = markdown_table(header, rows)
    text = (f"Load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other engineers at work: "
            "read ratios, not absolute times). \"old code\" is the code each fix replaced, on the same input; "
            "it is timed once.\n\n" + table)
    print(text)
    if not args.no_write:
        write_section("trusted_side_cost", text)


def comb_polygon(teeth: int = 250, pitch: int = 400, width: int = 200, base: int = 1000, top: int = 1390) -> bytes:
    """A valid 1000-vertex AHC039 net (a comb just inside the perimeter limit): the most work the
    validity check (all pairs of edges) and the fish test (every fish against every edge) can get."""
    right = pitch * (teeth - 1) + width
    vertices = [(0, 0), (right, 0), (right, top), (pitch * (teeth - 1), top), (pitch * (teeth - 1), base)]
    for i in range(teeth - 2, -1, -1):
        vertices += [(pitch * i + width, base), (pitch * i + width, top), (pitch * i, top)]
        if i:
            vertices.append((pitch * i, base))
    return (f"{len(vertices)}\n" + "\n".join(f"{x} {y}" for x, y in vertices) + "\n").encode()


def _check_quietly(problem: object, value: object) -> None:
    from ttd_envs.core.program_problem import InvalidConstruction
    try:
        problem.check(value)
    except InvalidConstruction:
        pass


def _decode_quietly(message: bytes) -> None:
    try:
        wire.decode(message)
    except wire.WireError:
        pass


if __name__ == "__main__":
    main()
