"""What both AtCoder Heuristic Contest problems share: shipped inputs, strict token parsing, the
test set, the prompt, and `evaluate` (extract -> compile -> run every test -> judge -> reward).

A subclass gives the statement, how to read an input, how to score an output (raising
`WrongAnswer` with the rule broken), a generator for seeds beyond the shipped 150, and how the
mean per-test score becomes a reward. It may also say how one accepted output is drawn
(`output_drawing`): an AHC state holds a program, not a construction, so `program_drawing` runs
the program on test 0 the way `evaluate` does and hands that output to it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ttd_envs.core.drawing import NoDrawing
from ttd_envs.core.judge import CompileOptions, CppJudge, JudgeReport, RunLimits, TestCase, WrongAnswer, summarize
from ttd_envs.core.parsing import extract_code_block, missing_block_message
from ttd_envs.core.text import unencodable
from ttd_envs.core.problem import Evaluation, Record, TrainerDefaults
from ttd_envs.core.sandbox import GiB, MiB, Sandbox
from ttd_envs.core.state import State

log = logging.getLogger(__name__)

SHIPPED_SEEDS = 150
MAX_INTEGER_CHARS = 19
"""Longest integer token a checker reads: a sign and 18 digits always fit in 64 bits, and no
answer of either contest needs more (Python refuses to convert 4,300 digits with a ValueError)."""
_INTEGER = re.compile(rb"[+-]?[0-9]+")
_MAIN = re.compile(r"\b(int|void)\s+main\s*\(", re.IGNORECASE)


def data_dir(problem_id: str) -> Path:
    return Path(str(resources.files("ttd_envs") / "data" / "ahc" / problem_id))


def _first_line(message: str | None, prefer: str = "", limit: int = 200) -> str:
    """The first non-empty line of a verdict or compiler message that holds `prefer` (else the first
    at all), cut to `limit` characters: a note on the page is one line."""
    lines = [part.strip() for part in (message or "").splitlines() if part.strip()] or ["no message"]
    line = next((part for part in lines if prefer and prefer in part), lines[0])
    return line if len(line) <= limit else line[:limit - 3] + "..."


def parse_int(token: bytes, what: str) -> int:
    """A plain decimal integer, as the official testers read it (an optional sign; no `1_0`, `1.0`, `0x1`)."""
    if len(token) > MAX_INTEGER_CHARS:
        raise WrongAnswer(f"parse error: {what} is too long ({token[:24]!r}...): integers here have at most "
                          f"{MAX_INTEGER_CHARS - 1} digits")
    if not _INTEGER.fullmatch(token):
        raise WrongAnswer(f"parse error: {what} must be an integer, got {token[:40]!r}")
    return int(token)


class AHCProblem:
    """Base class of the AHC envs. Options (constructor kwargs, forwarded by `gymnasium.make`):

    num_tests: run seeds 0..num_tests-1 (default 150, the shipped inputs; more are generated);
    seeds: an explicit seed list instead; workers: tests run in parallel (default: CPU count);
    cache_dir: where compiled binaries are kept; compile_timeout_s; cpu_limit_s (per test, CPU
    time); wall_limit_s (kills sleeping programs); stop_early: skip the rest after a failure;
    total_wall_s: the wall-clock budget of all tests together (default: `CppJudge.total_budget_s`).
    """

    name: str
    summary: str
    record: Record | None
    info_keys = ("ahc",)
    problem_id: str
    title: str
    statement: str
    role: str
    target_mean: float
    reward_scale: float
    score_digits: int = 1
    output_bytes: int = 16 * MiB
    defaults = TrainerDefaults(model_kind="llm", group_size=8, groups_per_step=8, steps=50, max_new_tokens=20000,
                               temperature=1.0, eval_timeout_s=1000.0, cpus_per_eval=2)

    def __init__(self, num_tests: int = SHIPPED_SEEDS, seeds: Sequence[int] | None = None, workers: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, compile_timeout_s: float = 60.0,
                 cpu_limit_s: float = 2.0, wall_limit_s: float | None = None, stop_early: bool = True,
                 total_wall_s: float | None = None) -> None:
        if seeds is None:
            if int(num_tests) < 1:
                raise ValueError(f"num_tests must be >= 1, got {num_tests}")
            seeds = range(int(num_tests))
        self.seeds = [int(s) for s in seeds]
        if not self.seeds or min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)[:10]}")
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if cpu_limit_s <= 0 or compile_timeout_s <= 0 or (total_wall_s is not None and total_wall_s <= 0):
            raise ValueError("cpu_limit_s, compile_timeout_s and total_wall_s must be positive")
        self.workers = int(workers) if workers is not None else max(1, min(os.cpu_count() or 1, 16))
        self.cache_dir = cache_dir
        self.compile_options = CompileOptions(timeout_s=float(compile_timeout_s))
        self.run_limits = RunLimits(cpu_s=float(cpu_limit_s), wall_s=wall_limit_s, memory_bytes=1 * GiB,
                                    output_bytes=self.output_bytes)
        self.stop_early = stop_early
        self.total_wall_s = total_wall_s
        self._judge: CppJudge | None = None
        self._parsed: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- what a subclass provides ----------------------------------------------------------
    def parse_input(self, data: bytes) -> Any:
        raise NotImplementedError

    def score_output(self, problem_input: Any, output: bytes) -> int:
        """The per-test score of `output`; raises WrongAnswer naming the broken rule."""
        raise NotImplementedError

    def generate_input(self, seed: int) -> str:
        raise NotImplementedError

    def contest_info(self, report: JudgeReport) -> dict[str, Any]:
        return {}

    def output_drawing(self, problem_input: Any, output: bytes) -> dict[str, Any]:
        """A drawing (ttd_envs.core.drawing) of one accepted output; a contest without a simple
        picture keeps this default."""
        raise NoDrawing(f"{self.name} has no drawing of an output")

    # -- the viewer's picture ------------------------------------------------------------------
    def program_drawing(self, code: str) -> dict[str, Any]:
        """Draw what `code` prints on test 0: compiled (or reused from the judge's binary cache) and run
        in the judge's sandbox under the training limits, its output checked like in `evaluate`. The
        drawing's caption names the test; a program that fails raises NoDrawing with one line saying why."""
        seed = self.seeds[0]
        test = self.test_case(seed)
        made = f"the shipped input {self.problem_id}/inputs/{test.name}.txt" if seed < SHIPPED_SEEDS else "a generated input"
        where = f"test 0 (seed {seed}, {made})"
        compiled = self.judge.compile(code)
        if compiled.binary is None:
            raise NoDrawing(f"no drawing: the program does not compile ({_first_line(compiled.error, 'error:')})")
        outputs: list[bytes] = []

        def keep(case: TestCase, output: bytes) -> float:
            outputs.append(output)
            return self.check(case, output)

        result = self.judge.run_test(compiled.binary, test, keep)
        if not result.accepted:
            raise NoDrawing(f"no drawing: on {where} the program got {result.verdict.value}: {_first_line(result.message)}")
        drawing = self.output_drawing(self.parsed_input(test), outputs[0])
        drawing["caption"] = (f"drawn from running this program on {where} in the judge's sandbox with the training "
                              f"limits ({self.run_limits.cpu_s:g} s CPU); score on that test "
                              f"{result.score:.{self.score_digits}f}")
        return drawing

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def judge(self) -> CppJudge:
        with self._lock:
            if self._judge is None:
                self._judge = CppJudge(Sandbox(preload=(), spares=self.workers), options=self.compile_options,
                                       limits=self.run_limits, cache_dir=self.cache_dir,
                                       total_wall_s=self.total_wall_s)
            return self._judge

    def close(self) -> None:
        if self._judge is not None:
            self._judge.sandbox.close()
            self._judge = None

    def __getstate__(self) -> dict[str, Any]:
        """Problems travel to worker processes; each starts its own sandbox."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_judge", "_parsed", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._judge, self._parsed, self._lock = None, {}, threading.Lock()

    def tests(self) -> list[TestCase]:
        """Seed k < 150 is the shipped file k (the reference's inputs); later seeds are generated."""
        return [self.test_case(seed) for seed in self.seeds]

    def test_case(self, seed: int) -> TestCase:
        if seed < SHIPPED_SEEDS:
            return TestCase(f"{seed:04d}", data_dir(self.problem_id) / "inputs" / f"{seed:04d}.txt")
        return TestCase(f"{seed:04d}", self.generate_input(seed).encode())

    def parsed_input(self, test: TestCase) -> Any:
        """`parse_input` of a test, parsed once per problem."""
        with self._lock:
            parsed = self._parsed.get(test.name)
        if parsed is None:
            parsed = self.parse_input(test.input if isinstance(test.input, bytes) else Path(test.input).read_bytes())
            with self._lock:
                self._parsed[test.name] = parsed
        return parsed

    def check(self, test: TestCase, output: bytes) -> float:
        parsed = self.parsed_input(test)
        try:
            return float(self.score_output(parsed, output))
        except WrongAnswer:
            raise
        except Exception as exc:  # noqa: BLE001 - a program's output must never crash the judge
            log.warning("%s: the checker raised %s on a program's output", self.name, type(exc).__name__,
                        exc_info=True)
            raise WrongAnswer(f"the output could not be read ({type(exc).__name__}: {str(exc)[:200]})") from None

    def judge_source(self, source: str) -> JudgeReport:
        """Compile `source` and judge it on this problem's tests."""
        return self.judge.judge(source, self.tests(), self.check, workers=self.workers, stop_early=self.stop_early)

    def reward_for(self, mean: float) -> float:
        return mean / self.reward_scale

    # -- the Problem protocol -----------------------------------------------------------------
    def initial_state(self, rng: np.random.Generator) -> State:
        return State(is_initial=True, reward=None, score=None)  # nothing scored yet, as in every env

    def prompt(self, state: State) -> str:
        limits = self.run_limits
        if state.code:
            previous = f"```cpp\n{state.code.rstrip()}\n```"
        else:
            previous = "No previous attempt has been made."
        lines = [
            self.role,
            "",
            f"# {self.title}",
            self.statement.strip(),
            "",
            "# How your program is run",
            "- Answer with exactly one ```cpp fenced block holding a complete C++20 program (the last such block "
            "is used). It must read one test from standard input and write its answer to standard output.",
            "- Build: g++ -std=gnu++20 -O2 -DONLINE_JUDGE -DATCODER -march=native (GMP is available; the AtCoder "
            "Library, Boost and Eigen are not).",
            f"- Limits per test: {limits.cpu_s:g} s of CPU time, {limits.memory_bytes >> 20} MiB of memory, one "
            "thread, no network, no files outside the current directory. Measure time with CPU time "
            "(std::clock or getrusage), not the wall clock: the judging machine is shared.",
            f"- It is run on {len(self.seeds)} generated tests. The reward is the mean per-test score divided by "
            f"{self.reward_scale:g}, and 0 if any test fails (wrong answer, time or memory limit, crash).",
            "",
            "# Last program",
            previous,
        ]
        if state.score is not None and state.score > 0:
            gap = self.target_mean - state.score
            lines.append(f"Its mean per-test score: {state.score:.4f}. Target: {self.target_mean:g} "
                         f"(gap {gap:.4f}).")
        else:
            lines.append(f"Target mean per-test score: {self.target_mean:g}.")
        lines += ["", "Improve on it. Unconventional and diverse approaches are welcome; write the whole program "
                  "in one final ```cpp block."]
        return "\n".join(lines)

    def evaluate(self, action: str, state: State) -> Evaluation:
        code = extract_code_block(action, "cpp")
        if code is None or not code.strip():
            return Evaluation.failure(missing_block_message("cpp"))
        if (problem := unencodable(code)) is not None:
            return Evaluation.failure(problem, code=code)
        if not _MAIN.search(code):
            return Evaluation.failure("the cpp block has no `int main(...)`: give a complete program that reads "
                                      "standard input and writes standard output", code=code)
        try:
            report = self.judge_source(code)
        except RuntimeError as exc:  # the toolchain or the sandbox itself failed, not the program
            log.exception("judging failed")
            return Evaluation.failure(f"the judge could not run: {exc}", code=code)
        details = {"ahc": {**summarize(report), **self.contest_info(report),
                           "per_test": [{"seed": r.name, "verdict": r.verdict.value, "score": r.score,
                                         "cpu_s": round(r.cpu_s, 3)} for r in report.results]}}
        if not report.accepted:
            failure = report.first_failure
            stderr = f"[stderr of test {failure.name}]\n{failure.stderr_tail}" if failure and failure.stderr_tail else ""
            return Evaluation.failure(report.describe_failure(), code=code, stdout=stderr,
                                      elapsed_s=report.elapsed_s, details=details)
        mean = report.mean
        cpu_max = max(r.cpu_s for r in report.results)
        summary = (f"{len(report.results)}/{len(report.results)} tests accepted; mean score "
                   f"{mean:.{self.score_digits}f}; total {report.total:.0f}; max CPU {cpu_max:.2f} s")
        return Evaluation(reward=self.reward_for(mean), valid=True, score=mean, code=code, stdout=summary,
                          elapsed_s=report.elapsed_s, details=details)
