"""Compile and judge untrusted C++ programs: one mechanism for every "write a C++ program" problem.

Compilation runs g++ *inside the sandbox*, in the same closed view as programs (no network, no
host file beyond the OS's /usr, a wall-clock time-out, whole-run memory and process caps), so a
hostile source cannot `#include "/etc/passwd"` or a file of ours, nor hang the host; the binary
comes back over stdout and is cached by a hash of (compiler, flags, machine, source). Each test
then runs the binary in the sandbox with the contest's limits and the problem's checker turns its
stdout into a score or a Wrong Answer.

Verdict policy (per test, first match wins):
- OLE: stdout passed `RunLimits.output_bytes` (the sandbox killed the program);
- TLE: the CPU time (user+sys) of the whole run exceeded `cpu_s` (every process, children never
  waited for included: the run's cgroup, or init reaping the whole namespace; the sandbox kills a
  run that passes it), or SIGXCPU (RLIMIT_CPU at ceil(cpu_s)), or the wall-clock limit killed it
  (a sleeping program uses no CPU);
- MLE: the whole run's peak memory exceeded `memory_bytes`, or the run passed the sandbox's
  whole-run cap (`address_space_bytes`) and was killed, or the program died and its stderr says an
  allocation failed (`std::bad_alloc`, "Cannot allocate memory"): RLIMIT_AS is set to
  `address_space_bytes` (2 GiB as on the contest's runner), so a huge allocation fails rather
  than grows, and the program usually aborts;
- RE: killed by any other signal (named), or a non-zero exit code;
- WA: the checker rejected the output (its reason is kept);
- AC: the checker's score.

Over the whole evaluation, TOTAL_TLE: the tests together passed the judge's wall-clock budget
(`CppJudge.total_wall_s`; by default `TOTAL_WALL_FACTOR` x `cpu_s` per round of `workers` tests,
plus `TOTAL_WALL_SLACK_S`). Each test's own wall limit lets a program that sleeps cost several
times its CPU limit; over 150 tests that would be minutes a step. The test running when the budget
ends is cut and gets TOTAL_TLE, so does every test not started by then (SKIPPED with `stop_early`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ttd_envs.core.sandbox import GiB, MiB, Limits, Sandbox, SandboxResult

log = logging.getLogger(__name__)

CONTEST_FLAGS: tuple[str, ...] = (
    "-std=gnu++20", "-O2", "-DONLINE_JUDGE", "-DATCODER", "-Wall", "-Wextra", "-mtune=native", "-march=native",
    "-fconstexpr-depth=2147483647", "-fconstexpr-loop-limit=2147483647", "-fconstexpr-ops-limit=2147483647",
)
_ALLOCATION_FAILURE = re.compile(r"bad_alloc|cannot allocate memory|out of memory", re.IGNORECASE)
_COMPILE_ERROR_LINES = 30
TOTAL_WALL_FACTOR = 2.0
TOTAL_WALL_SLACK_S = 30.0


class WrongAnswer(Exception):
    """Raised by a checker: the output breaks a rule of the problem; the message names the rule."""


class Verdict(str, enum.Enum):
    AC = "AC"
    WA = "WA"
    TLE = "TLE"
    MLE = "MLE"
    RE = "RE"
    OLE = "OLE"
    TOTAL_TLE = "TOTAL_TLE"  # the judge's budget for all tests together ran out
    SKIPPED = "SKIPPED"  # not run: an earlier failure already made the run worthless


@dataclass(frozen=True)
class CompileOptions:
    """How to build a program. `flags` default to the contest's; libraries are linked when present."""

    compiler: str = "g++"
    flags: tuple[str, ...] = CONTEST_FLAGS
    link_flags: tuple[str, ...] | None = None  # None: -lgmpxx -lgmp if GMP's C++ library is installed
    timeout_s: float = 60.0
    memory_bytes: int = 2 * GiB
    max_binary_bytes: int = 64 * MiB

    def resolved_link_flags(self) -> tuple[str, ...]:
        return self.link_flags if self.link_flags is not None else _default_link_flags()


@dataclass(frozen=True)
class RunLimits:
    """Per-test limits. `cpu_s` decides TLE (measured CPU time, not wall time: shared machines are
    noisy); `wall_s` only stops programs that sleep or wait (default: max(4 x cpu_s, cpu_s + 4))."""

    cpu_s: float = 2.0
    wall_s: float | None = None
    memory_bytes: int = 1 * GiB
    address_space_bytes: int = 2 * GiB
    output_bytes: int = 64 * MiB
    disk_bytes: int = 64 * MiB
    max_processes: int = 4

    @property
    def wall_limit_s(self) -> float:
        return self.wall_s if self.wall_s is not None else max(4 * self.cpu_s, self.cpu_s + 4)

    def sandbox_limits(self) -> Limits:
        """The whole run (every process) may hold `address_space_bytes` before it is killed; MLE is
        decided above `memory_bytes` of peak (see `CppJudge.classify`)."""
        return Limits(wall_s=self.wall_limit_s, cpu_s=self.cpu_s, memory_bytes=self.address_space_bytes,
                      address_space_bytes=self.address_space_bytes, max_processes=self.max_processes,
                      disk_bytes=self.disk_bytes, output_bytes=self.output_bytes, nice=0)


@dataclass(frozen=True)
class TestCase:
    """One input: a file path (not copied) or bytes."""

    name: str
    input: bytes | Path

    __test__ = False  # not a pytest class


Checker = Callable[[TestCase, bytes], float]


@dataclass(frozen=True)
class JudgeBudget:
    """The wall-clock budget of one evaluation's tests together (see `CppJudge.start_budget`).
    `deadline` is wall-clock time (`time.time()`), not a per-process clock: the judge's Ray tasks
    check it in other processes and on other nodes (whose clocks a cluster keeps in step)."""

    deadline: float
    message: str

    def left_s(self) -> float:
        return self.deadline - time.time()


@dataclass
class TestResult:
    name: str
    verdict: Verdict
    score: float | None = None
    message: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    max_rss_bytes: int = 0
    stderr_tail: str = ""

    __test__ = False

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.AC


@dataclass
class CompileResult:
    binary: Path | None
    error: str | None
    cached: bool
    elapsed_s: float


@dataclass
class JudgeReport:
    """A whole run. `compile_error` set means nothing ran (every test is CE)."""

    compile_error: str | None
    results: list[TestResult] = field(default_factory=list)
    compile_s: float = 0.0
    cached: bool = False
    elapsed_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.compile_error is None and bool(self.results) and all(r.accepted for r in self.results)

    @property
    def counts(self) -> dict[str, int]:
        if self.compile_error is not None:
            return {"CE": len(self.results) or 1}
        return dict(Counter(r.verdict.value for r in self.results))

    @property
    def total(self) -> float:
        """Sum of per-test scores; a failed or skipped test counts 0."""
        return float(sum(r.score or 0.0 for r in self.results if r.accepted))

    @property
    def mean(self) -> float:
        return self.total / len(self.results) if self.results else 0.0

    @property
    def first_failure(self) -> TestResult | None:
        return next((r for r in self.results if r.verdict not in (Verdict.AC, Verdict.SKIPPED)), None)

    def describe_failure(self) -> str:
        if self.compile_error is not None:
            return self.compile_error
        failure = self.first_failure
        if failure is None:
            return ""
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"test {failure.name}: {failure.verdict.value}: {failure.message} (verdicts: {counts})"


def default_cache_dir() -> Path:
    """$TTD_CPP_CACHE, else $XDG_CACHE_HOME/ttd/cpp, else ~/.cache/ttd/cpp."""
    if os.environ.get("TTD_CPP_CACHE"):
        return Path(os.environ["TTD_CPP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttd" / "cpp"


@lru_cache(maxsize=None)
def _default_link_flags() -> tuple[str, ...]:
    import ctypes.util

    return ("-lgmpxx", "-lgmp") if ctypes.util.find_library("gmpxx") else ()


@lru_cache(maxsize=None)
def _toolchain_fingerprint(compiler: str) -> str:
    """What besides the source decides the binary: the compiler's version and, for -march=native,
    the CPU model."""
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"the C++ compiler {compiler!r} could not be run ({exc}); install g++ "
                           "(e.g. apt-get install g++) or pass CompileOptions(compiler=...)") from exc
    cpu = ""
    try:
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{version.splitlines()[0] if version else compiler}|{platform.machine()}|{cpu}"


class CppJudge:
    """Compile (cached) and run C++ programs on tests in the sandbox. Thread-safe."""

    def __init__(self, sandbox: Sandbox, *, options: CompileOptions = CompileOptions(),
                 limits: RunLimits = RunLimits(), cache_dir: str | os.PathLike[str] | None = None,
                 total_wall_s: float | None = None) -> None:
        if total_wall_s is not None and total_wall_s <= 0:
            raise ValueError(f"total_wall_s must be positive, got {total_wall_s}")
        self.sandbox = sandbox
        self.options = options
        self.limits = limits
        self.total_wall_s = total_wall_s
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._compiler = shutil.which(options.compiler)
        if self._compiler is None:
            raise RuntimeError(f"C++ compiler {options.compiler!r} not found on PATH; install g++ "
                               "(e.g. apt-get install g++) to judge C++ programs")

    # -- compilation -------------------------------------------------------------------------
    def cache_key(self, source: str) -> str:
        digest = hashlib.sha256()
        for part in (_toolchain_fingerprint(self._compiler), *self.options.flags, "|",
                     *self.options.resolved_link_flags(), "|", source):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()

    def compile(self, source: str) -> CompileResult:
        """Build `source` into a cached, world-executable binary, or say why it does not compile."""
        started = time.perf_counter()
        target = self.cache_dir / (self.cache_key(source) + ".bin")
        if target.is_file():
            return CompileResult(target, None, True, time.perf_counter() - started)
        result = self.sandbox.run_binary("/bin/sh", argv=("-c", self._compile_script()), stdin=source.encode(),
                                         limits=self._compile_limits())
        error = self._compile_error(result)
        if error is not None:
            return CompileResult(None, error, False, time.perf_counter() - started)
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(result.stdout_bytes)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        log.info("compiled %s in %.1f s", target.name[:12], time.perf_counter() - started)
        return CompileResult(target, None, False, time.perf_counter() - started)

    def _compile_script(self) -> str:
        """Runs in the sandbox's private work dir: save the source, build, send the binary to stdout."""
        command = [self._compiler, *self.options.flags, "-o", "a.out", "Main.cpp", *self.options.resolved_link_flags()]
        return f"cat > Main.cpp && {shlex.join(command)} >&2 && cat a.out"

    def _compile_limits(self) -> Limits:
        return Limits(wall_s=self.options.timeout_s, memory_bytes=self.options.memory_bytes, max_processes=16,
                      disk_bytes=4 * self.options.max_binary_bytes, output_bytes=self.options.max_binary_bytes,
                      nice=0)

    def _compile_error(self, result: SandboxResult) -> str | None:
        if result.timed_out:
            return (f"compilation error: compilation did not finish within the {self.options.timeout_s:g} s "
                    "compile time-out; avoid heavy template or constexpr computation")
        if result.output_exceeded:
            return (f"compilation error: the compiler's output or the binary passed "
                    f"{self.options.max_binary_bytes >> 20} MiB; shrink static data and fix the errors")
        if result.ok and result.stdout_bytes.startswith(b"\x7fELF"):
            return None
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        head = "\n".join(lines[:_COMPILE_ERROR_LINES]) or (result.error or "the compiler failed without a message")
        more = f"\n[... {len(lines) - _COMPILE_ERROR_LINES} more lines]" if len(lines) > _COMPILE_ERROR_LINES else ""
        return f"compilation error (g++ {' '.join(self.options.flags[:2])}):\n{head}{more}"

    # -- running -------------------------------------------------------------------------------
    def total_budget_s(self, tests: int, workers: int) -> float:
        """The wall-clock budget for `tests` tests on `workers` threads (see the module docstring)."""
        if self.total_wall_s is not None:
            return self.total_wall_s
        rounds = -(-tests // max(1, workers))
        return TOTAL_WALL_FACTOR * self.limits.cpu_s * rounds + TOTAL_WALL_SLACK_S

    def start_budget(self, tests: int, workers: int) -> JudgeBudget:
        """Start the clock of `total_budget_s` for `tests` tests on `workers` parallel lanes."""
        budget = self.total_budget_s(tests, workers)
        return JudgeBudget(time.time() + budget, (
            f"judge time limit exceeded: the {tests} tests together passed the judge's {budget:g} s "
            f"wall-clock budget ({self.limits.cpu_s:g} s CPU per test; does the program sleep or wait?)"))

    def run_within(self, budget: JudgeBudget, binary: Path, test: TestCase, checker: Checker) -> TestResult:
        """`run_test`, cut to what is left of `budget`; a test that starts past it is TOTAL_TLE, not run."""
        left = budget.left_s()
        if left <= 0:
            return TestResult(test.name, Verdict.TOTAL_TLE, message=f"{budget.message}; not run")
        return self.run_test(binary, test, checker, wall_cap_s=left, budget_message=budget.message)

    def run_test(self, binary: Path, test: TestCase, checker: Checker, *, wall_cap_s: float | None = None,
                 budget_message: str = "") -> TestResult:
        """Run one test and decide its verdict (see the module docstring for the policy).
        `wall_cap_s`: what is left of the judge's budget; a run it cuts is TOTAL_TLE."""
        started = time.perf_counter()
        limits = self.limits.sandbox_limits()
        cut = wall_cap_s is not None and wall_cap_s < limits.wall_s
        if cut:
            limits = dataclasses.replace(limits, wall_s=max(0.01, wall_cap_s))
        run = self.sandbox.run_binary(binary, stdin=test.input, limits=limits)
        result = TestResult(test.name, Verdict.AC, cpu_s=run.cpu_s or 0.0, max_rss_bytes=run.max_rss_bytes or 0,
                            stderr_tail=run.stderr[-300:])
        verdict, message = self.classify(run)
        within_cpu = not run.cpu_exceeded and (run.cpu_s or 0.0) <= self.limits.cpu_s
        if cut and run.timed_out and verdict is Verdict.TLE and within_cpu:  # the budget, not this test's limit
            verdict, message = Verdict.TOTAL_TLE, f"{budget_message}; this test was cut after {limits.wall_s:.2f} s"
        if verdict is None:
            try:
                result.score = float(checker(test, run.stdout_bytes))
            except WrongAnswer as exc:
                verdict, message = Verdict.WA, f"wrong answer: {exc}"
        result.verdict, result.message = verdict or Verdict.AC, message
        result.wall_s = time.perf_counter() - started
        return result

    def classify(self, run: SandboxResult) -> tuple[Verdict | None, str]:
        """The verdict a run gets before its output is checked; None means "check the output"."""
        limits = self.limits
        cpu = run.cpu_s or 0.0
        if run.output_exceeded:
            return Verdict.OLE, f"output limit exceeded: more than {limits.output_bytes} bytes"
        if cpu > limits.cpu_s or run.signal == signal.SIGXCPU or run.cpu_exceeded:
            if cpu > limits.cpu_s:
                return Verdict.TLE, f"time limit exceeded: {cpu:.2f} s CPU used, the limit is {limits.cpu_s:g} s"
            # stopped by the limit itself: the CPU time read just before the kill is a little short of it
            return Verdict.TLE, f"time limit exceeded: stopped at the {limits.cpu_s:g} s CPU limit"
        if run.timed_out:
            return Verdict.TLE, (f"time limit exceeded: killed after {limits.wall_limit_s:g} s wall clock "
                                 f"(only {cpu:.2f} s CPU: the program sleeps or waits)")
        rss = run.max_rss_bytes or 0
        failed = run.signal is not None or run.exit_code != 0
        if rss > limits.memory_bytes or run.memory_exceeded or (failed and _ALLOCATION_FAILURE.search(run.stderr)):
            return Verdict.MLE, (f"memory limit exceeded: peak RSS {rss / MiB:.0f} MiB (limit "
                                 f"{limits.memory_bytes / MiB:.0f} MiB; allocations above "
                                 f"{limits.address_space_bytes / MiB:.0f} MiB of address space fail)")
        if run.signal is not None:
            name = signal.Signals(run.signal).name if run.signal in signal.Signals._value2member_map_ else str(run.signal)
            return Verdict.RE, f"runtime error: killed by {name}"
        if run.exit_code != 0:
            return Verdict.RE, f"runtime error: exit code {run.exit_code}" + (
                f" ({run.error})" if run.exit_code is None and run.error else "")
        return None, ""

    def judge(self, source: str, tests: Sequence[TestCase], checker: Checker, *, workers: int = 1,
              stop_early: bool = True) -> JudgeReport:
        """Compile, then run every test on `workers` threads within the judge's wall-clock budget
        (`total_budget_s`). With `stop_early`, the first failing test marks the tests not yet
        started SKIPPED (the run's reward is 0 anyway)."""
        started = time.perf_counter()
        compiled = self.compile(source)
        report = JudgeReport(compiled.error, compile_s=compiled.elapsed_s, cached=compiled.cached)
        if compiled.binary is None:
            report.elapsed_s = time.perf_counter() - started
            return report
        failed = threading.Event()
        budget = self.start_budget(len(tests), workers)

        def one(test: TestCase) -> TestResult:
            if stop_early and failed.is_set():
                return TestResult(test.name, Verdict.SKIPPED, message="not run: an earlier test failed")
            result = self.run_within(budget, compiled.binary, test, checker)
            if not result.accepted:
                failed.set()
            return result

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ttd-judge") as pool:
            report.results = list(pool.map(one, tests))
        report.elapsed_s = time.perf_counter() - started
        return report


def summarize(report: JudgeReport) -> dict[str, Any]:
    """Plain data for `info`: verdict counts, totals, timings and the first failure."""
    return {
        "verdicts": report.counts,
        "total": report.total,
        "mean": report.mean,
        "tests": len(report.results),
        "accepted": report.accepted,
        "compile_s": round(report.compile_s, 3),
        "compile_cached": report.cached,
        "judge_s": round(report.elapsed_s, 3),
        "cpu_s_max": max((r.cpu_s for r in report.results), default=0.0),
        "failure": report.describe_failure() or None,
    }
