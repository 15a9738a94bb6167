"""The C++ judge: compilation (errors, cache, compile bomb) and hostile programs through
ttd/AHC039-v0. Each hostile program must be a zero-reward, valid=False step with the right verdict
and leave no process and no file behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

from ttd_envs.core.judge import CompileOptions, CppJudge, RunLimits, TestCase, Verdict, WrongAnswer
from ttd_envs.core.sandbox import Sandbox
from timing import within

SQUARE = r'std::puts("4\n0 0\n0 100000\n100000 100000\n100000 0");'
HOST_MARKERS = [Path.cwd() / "ttd_hostile_marker", Path("/etc/ttd_hostile_marker"), Path("/root/ttd_hostile_marker")]


@pytest.fixture(autouse=True)
def nothing_left_running(leftover_processes):
    """Every test here ends with no sandboxed process of ours alive."""
    yield
    assert leftover_processes() == [], "a sandboxed process outlived its test"


def cpp(body: str, includes: str = "") -> str:
    return f"```cpp\n#include <bits/stdc++.h>\n{includes}\nint main() {{\n{body}\n}}\n```"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cpp-cache")


@pytest.fixture(scope="module")
def env(cache: Path):
    env = gym.make("ttd/AHC039-v0", seeds=[0, 1, 2, 3], workers=2, cache_dir=str(cache), wall_limit_s=4.0,
                   compile_timeout_s=8.0)
    env.reset(seed=0)
    yield env
    env.unwrapped.problem.close()


def failed_step(env, answer: str) -> dict:
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(answer)
    assert reward == 0.0 and info["valid"] is False and terminated
    return info


# -- compilation -----------------------------------------------------------------------------------
def test_compile_error_shows_the_compiler_message(env) -> None:
    info = failed_step(env, cpp("int x = undefined_name; return x;"))
    assert info["error"].startswith("compilation error")
    assert "undefined_name" in info["error"] and "Main.cpp" in info["error"]
    assert info["ahc"]["verdicts"] == {"CE": 1}


def test_binaries_are_cached_by_source(cache: Path) -> None:
    with Sandbox(preload=()) as box:
        judge = CppJudge(box, cache_dir=cache)
        source = "#include <cstdio>\nint main(){ std::puts(\"cached\"); }\n"
        first, second = judge.compile(source), judge.compile(source)
        assert first.binary == second.binary and not first.cached and second.cached
        within(second.elapsed_s, 0.2, "a cache hit (a compile takes seconds)")
        assert os.stat(first.binary).st_mode & 0o777 == 0o755
        assert judge.compile(source + "// other\n").binary != first.binary


def test_compile_bomb_hits_the_compile_timeout(cache: Path) -> None:
    bomb = ("constexpr long long spin() { long long s = 0; for (long long i = 0; i < (1LL << 60); ++i) s += i ^ (s >> 3);"
            " return s; }\nconstexpr long long value = spin();\nint main() { return value == 7; }\n")
    with Sandbox(preload=()) as box:
        judge = CppJudge(box, cache_dir=cache, options=CompileOptions(timeout_s=4.0))
        started = time.monotonic()
        result = judge.compile(bomb)
        within(time.monotonic() - started, 15, "a compile bomb with a 4 s compile timeout")
    assert result.binary is None and "compile time-out" in result.error


def test_missing_main_is_rejected_before_compiling(env) -> None:
    info = failed_step(env, "```cpp\nint helper() { return 1; }\n```")
    assert "int main" in info["error"]


# -- hostile programs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roomy_env(cache: Path):
    """A wall limit far above the CPU limit: on a loaded machine (a program getting a fraction of
    a core) the CPU limit must still be what stops a busy loop."""
    env = gym.make("ttd/AHC039-v0", seeds=[0, 1, 2, 3], workers=2, cache_dir=str(cache), wall_limit_s=30.0,
                   compile_timeout_s=30.0)
    env.reset(seed=0)
    yield env
    env.unwrapped.problem.close()


def test_infinite_loop_is_tle_by_cpu_time_and_stops_the_run_early(roomy_env) -> None:
    info = failed_step(roomy_env, cpp("volatile unsigned long x = 0; for (;;) x++;"))
    assert "TLE" in info["ahc"]["verdicts"] and info["ahc"]["verdicts"].get("SKIPPED", 0) >= 1
    assert "CPU" in info["error"] and "wall clock" not in info["error"], info["error"]
    used = re.search(r"(\d+\.\d+) s CPU used, the limit is 2 s", info["error"])
    assert (used and float(used.group(1)) >= 2) or "stopped at the 2 s CPU limit" in info["error"], info["error"]
    limit = roomy_env.unwrapped.problem.run_limits.cpu_s
    tle = [t["cpu_s"] for t in info["ahc"]["per_test"] if t["verdict"] == "TLE"]
    # stopped by SIGXCPU at the limit (tick-granular: a little under it) or by the 50 ms whole-run
    # poll (a little over): 10 % under and 75 % over leave room for a loaded machine
    print(f"TLE tests' CPU s: {tle}; CPU limit {limit} s, accepted {0.9 * limit:.2f}-{1.75 * limit:.2f} s")
    assert tle and all(0.9 * limit <= cpu <= 1.75 * limit for cpu in tle), tle


def test_the_whole_judge_has_a_wall_clock_budget(cache: Path) -> None:
    """Each test sleeps within its own wall limit; together they pass the judge's budget."""
    with Sandbox(preload=(), spares=2) as box:
        judge = CppJudge(box, cache_dir=cache, limits=RunLimits(cpu_s=0.5, wall_s=3.0), total_wall_s=2.5)
        tests = [TestCase(f"t{i}", b"") for i in range(6)]
        started = time.monotonic()
        report = judge.judge("#include <unistd.h>\nint main() { usleep(1200000); return 0; }\n", tests,
                             lambda test, out: 1.0, workers=2, stop_early=False)
        elapsed = time.monotonic() - started
    verdicts = [r.verdict for r in report.results]
    print(f"judge wall {elapsed:.2f} s (budget 2.5 s + compile {report.compile_s:.2f} s); verdicts {verdicts}")
    assert Verdict.AC in verdicts and Verdict.TOTAL_TLE in verdicts and not report.accepted, verdicts
    within(elapsed - report.compile_s, 2.5 + 2.0, "the judge's run with a 2.5 s budget (+ a sandbox start-up "
           "and tear-down under load)")
    assert "judge time limit exceeded" in report.describe_failure() and "2.5 s" in report.describe_failure()
    assert verdicts[:2] == [Verdict.AC, Verdict.AC] and set(verdicts[4:]) == {Verdict.TOTAL_TLE}, verdicts
    assert all(("not run" in r.message or "was cut after" in r.message) for r in report.results[4:])


def test_the_default_judge_budget_scales_with_tests_and_workers(cache: Path) -> None:
    judge = CppJudge(Sandbox(preload=()), cache_dir=cache, limits=RunLimits(cpu_s=2.0))
    assert judge.total_budget_s(150, 1) == 2.0 * 2.0 * 150 + 30.0
    assert judge.total_budget_s(150, 16) == 2.0 * 2.0 * 10 + 30.0
    with pytest.raises(ValueError, match="total_wall_s"):
        CppJudge(judge.sandbox, cache_dir=cache, total_wall_s=0)
    judge.sandbox.close()


def test_sleeping_busy_loop_is_killed_by_the_wall_limit(env) -> None:
    started = time.monotonic()
    info = failed_step(env, cpp("for (;;) usleep(1000);", "#include <unistd.h>"))
    elapsed = time.monotonic() - started
    judging = info["ahc"]["judge_s"] - info["ahc"]["compile_s"]
    assert info["ahc"]["verdicts"].get("TLE", 0) >= 1 and "wall clock" in info["error"]
    within(elapsed, 20, "a sleeping loop killed at its wall limit")
    within(judging, 8.0, "judging two tests at once, each killed at its 4 s wall limit, with start-up and tear-down")


def test_allocating_4_gib_is_mle(env) -> None:
    info = failed_step(env, cpp("std::vector<char> big(4ULL << 30, 1); std::printf(\"%d\", big[123]);"))
    assert "MLE" in info["ahc"]["verdicts"] and "memory limit" in info["error"]


def test_peak_rss_over_1_gib_is_mle(cache: Path) -> None:
    with Sandbox(preload=()) as box:
        # Touching 1.4 GiB costs 1-2 s of kernel CPU time in page faults, more on a loaded machine;
        # a generous CPU limit keeps this test about memory, not about the time limit.
        judge = CppJudge(box, cache_dir=cache, limits=RunLimits(cpu_s=10.0))
        source = ("#include <bits/stdc++.h>\nint main(){ std::vector<char> v(1400ULL << 20); "
                  "for (size_t i = 0; i < v.size(); i += 4096) v[i] = 1; std::printf(\"%d\", v[4096]); }\n")
        report = judge.judge(source, [TestCase("t", b"")], lambda test, out: 1.0)
    assert report.results[0].verdict is Verdict.MLE and report.results[0].max_rss_bytes > 1 << 30


def test_fork_bomb_is_contained(env) -> None:
    info = failed_step(env, cpp("for (;;) fork();", "#include <unistd.h>"))
    assert info["ahc"]["verdicts"].get("TLE", 0) >= 1


def test_network_is_unreachable(env) -> None:
    body = """
    int curl = std::system("curl -s -m 3 http://example.com -o /dev/null");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{}; addr.sin_family = AF_INET; addr.sin_port = htons(80);
    inet_pton(AF_INET, "1.1.1.1", &addr.sin_addr);
    bool connected = fd >= 0 && connect(fd, (sockaddr*)&addr, sizeof addr) == 0;
    if (curl == 0 || connected) { """ + SQUARE + """ return 0; }
    return 3;"""
    info = failed_step(env, cpp(body, "#include <sys/socket.h>\n#include <netinet/in.h>\n#include <arpa/inet.h>"))
    assert "RE" in info["ahc"]["verdicts"] and "exit code 3" in info["error"]


def test_writing_outside_its_directory_fails_and_leaves_nothing(env) -> None:
    paths = ", ".join(f'"{p}"' for p in HOST_MARKERS)
    body = (f"const char* paths[] = {{{paths}}}; bool wrote = false;\n"
            "for (auto p : paths) if (FILE* f = std::fopen(p, \"w\")) { std::fputs(\"x\", f); std::fclose(f); wrote = true; }\n"
            "std::FILE* own = std::fopen(\"scratch.txt\", \"w\"); if (!own) return 5; std::fclose(own);\n"
            "if (wrote) { " + SQUARE + " return 0; }\nreturn 4;")
    info = failed_step(env, cpp(body))
    assert "exit code 4" in info["error"]
    assert not any(p.exists() for p in HOST_MARKERS)


def test_printing_1_gb_is_ole(env) -> None:
    info = failed_step(env, cpp("std::string line(1 << 20, '7'); for (int i = 0; i < 1024; i++) "
                                "std::fwrite(line.data(), 1, line.size(), stdout);"))
    assert "OLE" in info["ahc"]["verdicts"] and "output limit" in info["error"]


@pytest.mark.parametrize(("body", "signal_name"), [
    ("volatile int* p = nullptr; *p = 1;", "SIGSEGV"),
    ("std::abort();", "SIGABRT"),
])
def test_crashes_are_re_with_the_signal(env, body: str, signal_name: str) -> None:
    info = failed_step(env, cpp(body))
    assert "RE" in info["ahc"]["verdicts"] and signal_name in info["error"]


def test_checker_reason_becomes_the_wa_message(cache: Path) -> None:
    def checker(test: TestCase, output: bytes) -> float:
        if output.strip() != b"42":
            raise WrongAnswer(f"expected 42, got {output.strip()!r}")
        return 1.0

    with Sandbox(preload=()) as box:
        judge = CppJudge(box, cache_dir=cache)
        report = judge.judge("#include <cstdio>\nint main(){ int x; std::scanf(\"%d\", &x); std::printf(\"%d\", x); }\n",
                             [TestCase("a", b"42"), TestCase("b", b"41")], checker, workers=2, stop_early=False)
    assert [r.verdict for r in report.results] == [Verdict.AC, Verdict.WA]
    assert "expected 42, got b'41'" in report.results[1].message
    assert report.total == 1.0 and not report.accepted


@pytest.mark.parametrize("args,expected", [
    (["ttd/LABS-v0", "{source}"], "ttd/LABS-v0 is not a C++ problem: this judges ttd/AHC039-v0 or ttd/AHC058-v0"),
    (["ttd/AHC039-v0", "{source}", "--tests", "0"], "--tests must be >= 1, got 0"),
    (["ttd/AHC039-v0", "{source}", "--seeds", "1,x"], "--seeds takes comma-separated integers"),
    (["ttd/AHC039-v0", "missing.cpp"], "no such file: missing.cpp"),
])
def test_the_judge_command_errors_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    source = tmp_path / "x.cpp"
    source.write_text("int main() {}\n")
    done = subprocess.run([sys.executable, "-m", "ttd_envs.judge", *(a.format(source=source) for a in args)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
