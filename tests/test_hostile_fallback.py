"""The fallback mode (no cgroup: init of the run's pid namespace accounts it) against the attacks of
issue 23, as root with `cgroups=False` and as an unprivileged user. Memory a program hides from
init's per-process reading (socket buffers, undumpable children, zombie leaders) is still counted;
memory no process table shows (message queues; memfds without the grant) is refused; what the
kernel bounds by itself (pipe buffers) is shown bounded; signals and process records tell nothing.
The attack sources live in `fallback_attacks.py`, so a cgroup v2 guest can run them too."""

from __future__ import annotations

import tempfile
from pathlib import Path

import fallback_attacks as attacks
import pytest
from conftest import FALLBACK_MODES, run_recorded, sandbox_in_mode, stray_processes, sysv_segments

import ttd_envs
from ttd_envs.core import cgroups
from ttd_envs.core.judge import CompileOptions, CppJudge, RunLimits, TestCase, Verdict
from ttd_envs.core.sandbox import MiB, Grants, Limits, SandboxResult

CHECKOUT = str(Path(ttd_envs.__file__).resolve().parents[1])
LIMITS = Limits(wall_s=20, memory_bytes=attacks.ATTACK_LIMIT_MIB * MiB, address_space_bytes=2048 * MiB,
                disk_bytes=48 * MiB, max_processes=12)
JUDGE_LIMITS = RunLimits(cpu_s=2.0, wall_s=10, memory_bytes=attacks.ATTACK_LIMIT_MIB * MiB,
                         address_space_bytes=2 * attacks.ATTACK_LIMIT_MIB * MiB, max_processes=8)
RAN: set[tuple[str, str]] = set()


@pytest.fixture(scope="module", params=FALLBACK_MODES)
def box(request):
    sandbox = sandbox_in_mode(request.param, preload=())
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module", params=FALLBACK_MODES)
def memfd_box(request):
    """A problem with the GPU problems' memfd grant."""
    sandbox = sandbox_in_mode(request.param, preload=(), grants=Grants(memfd=True))
    yield sandbox
    sandbox.close()


def attack(box, source: str, limits: Limits = LIMITS) -> SandboxResult:
    """Run `source` in `box` and check the host kept nothing of it."""
    shm_before = sysv_segments()
    result = run_recorded(box, source, limits, RAN)
    assert result.isolation and "accounted by init" in " ".join(result.isolation), result.isolation
    assert sysv_segments() == shm_before, "the run left SysV shared memory on the host"
    assert box.call(stray_processes) == [], "a process of the run outlived it"
    assert cgroups.leftovers() == []
    print(f"{box.mode}: ok={result.ok} error={result.error!r} peak={(result.max_rss_bytes or 0) >> 20} MiB")
    return result


def killed_for_memory(result: SandboxResult) -> None:
    assert not result.ok, f"the attack succeeded: {result.value!r}"
    assert result.memory_exceeded and "memory limit exceeded" in result.error, result.error


@pytest.mark.parametrize("name", ["SOCKET_BUFFERS", "HIDDEN_CHILDREN", "ZOMBIE_LEADERS", "HIDDEN_ZOMBIE_LEADERS"])
def test_memory_hidden_from_per_process_maps_is_counted(box, name):
    result = attack(box, getattr(attacks, name))
    killed_for_memory(result)
    if name == "SOCKET_BUFFERS":
        assert any("unix and netlink socket buffers included" in line for line in result.isolation), result.isolation


@pytest.mark.parametrize("name", ["MESSAGE_QUEUES", "POSIX_QUEUES", "SMALL_MEMFD"])
def test_memory_no_process_shows_is_refused(box, name):
    result = attack(box, getattr(attacks, name))
    assert not result.ok and "Operation not permitted" in result.error, (result.value, result.error)


def test_pipe_buffers_are_bounded_by_the_kernel(box):
    """No table lists pipes: the per-user pipe budget (fs.pipe-user-pages-soft) is their bound."""
    soft_pages = int(Path("/proc/sys/fs/pipe-user-pages-soft").read_text())
    assert soft_pages > 0, "fs.pipe-user-pages-soft is 0 on this host: pipe buffers are unbounded without cgroups"
    result = attack(box, attacks.PIPE_BUFFERS)
    assert result.ok, result.error
    # past the budget each new pipe gets 2 pages; the last resize may cross it by one pipe's 1 MiB
    bound = soft_pages * 4096 + (1 << 20) + 8 * 100 * 2 * 4096
    print(f"{box.mode}: pipe buffers held {result.value / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB")
    assert result.value <= bound


def test_memfd_grant_allows_memfd_and_counts_it(memfd_box):
    assert attack(memfd_box, attacks.SMALL_MEMFD).value == "memfd ok"
    killed_for_memory(attack(memfd_box, attacks.MEMFD_HOARD))


def test_memfd_grant_refuses_descriptors_in_flight(memfd_box):
    result = attack(memfd_box, attacks.MEMFD_IN_FLIGHT)
    assert not result.ok and "Operation not permitted" in result.error, (result.value, result.error)
    assert any("descriptor passing" in line and "memfd granted" in line for line in result.isolation)


def test_signals_to_init_do_not_cut_the_report(box):
    result = attack(box, attacks.SIGNAL_INIT)
    assert result.ok, result.error
    if box.mode == "unprivileged":  # same uid as init: the signals are delivered (root mode: EPERM)
        assert "SIGINT" in result.value and "SIGTERM" in result.value, result.value
    assert result.cpu_s is not None and result.max_rss_bytes is not None and result.exit_code == 0


def test_process_records_show_no_checkout_or_config(box):
    result = attack(box, attacks.PROCESS_RECORDS)
    assert result.ok, result.error
    for path, text in result.value.items():
        if text is not None:
            print(f"{box.mode}: {path} = {text.rstrip(chr(0))!r}")
            assert CHECKOUT not in text and "grants" not in text and "PYTHONPATH" not in text, (path, text)
    assert result.value["/proc/1/cmdline"] in (None, "") or result.value["/proc/1/cmdline"].startswith("ttd-sandbox")


def test_the_process_limit_is_the_programs_own(box):
    """RLIMIT_NPROC must leave the program exactly `max_processes`: neither runner nor init counts."""
    result = attack(box, attacks.COUNT_PROCESSES)
    assert result.ok and result.value == LIMITS.max_processes, (result.value, result.error)


# -- the C++ judge ------------------------------------------------------------------------
def _judge(sandbox, source: str) -> tuple[str | None, list[tuple[str, str]], str]:
    with tempfile.TemporaryDirectory(prefix="ttd-fallback-cpp-") as cache:
        judge = CppJudge(sandbox, options=CompileOptions(flags=("-std=gnu++20", "-O1"), link_flags=()),
                         limits=JUDGE_LIMITS, cache_dir=cache)
        report = judge.judge(source, [TestCase("t", b"")], lambda test, out: float(len(out)))
    return report.compile_error, [(r.verdict.value, r.message) for r in report.results], sandbox.mechanism


def test_judge_peak_survives_hiding_and_clear_refs(box):
    """Children behind zombie leaders hold 2 x 0.8 of the MLE limit, then reset their kernel peaks."""
    error, results, mechanism = box.call(_judge, attacks.cpp_hidden_peak(attacks.ATTACK_LIMIT_MIB * 8 // 10))
    RAN.add((box.mode, mechanism))
    print(f"{box.mode}: {results}")
    assert error is None and results[0][0] == Verdict.MLE.value, results
    assert box.call(stray_processes) == []


def test_clear_refs_cannot_be_written(box):
    error, results, _ = box.call(_judge, attacks.CPP_CLEAR_REFS)
    assert error is None and results[0][0] == Verdict.AC.value, results


def test_every_fallback_mode_ran(request):
    expected = {(mode, "init accounting") for mode in FALLBACK_MODES}
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fallback attack suite ran: {sorted(RAN)}")
    assert RAN == expected, f"ran {sorted(RAN)}, expected {sorted(expected)}"
