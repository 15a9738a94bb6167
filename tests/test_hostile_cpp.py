"""Hostile C++ programs through the judge, in both privilege modes: the compile step sees the same
closed view (no host file in an error message), and TLE/MLE count the whole process tree,
children never waited for included."""

from __future__ import annotations

import dataclasses

import os
import tempfile

import pytest
from conftest import SANDBOX_MODES, sandbox_in_mode, stray_processes, sysv_segments

import ttd_envs
from ttd_envs.core import cgroups
from ttd_envs.core.judge import CompileOptions, CppJudge, RunLimits, TestCase, Verdict
from ttd_envs.core.sandbox import MiB

RAN: set[tuple[str, str]] = set()
LIMITS = RunLimits(cpu_s=0.5, wall_s=8, memory_bytes=256 * MiB, address_space_bytes=512 * MiB, max_processes=8)
FLAGS = ("-std=gnu++20", "-O1")  # the contest's -O2 -march=native costs seconds per compile here


@pytest.fixture(scope="module", params=SANDBOX_MODES)
def box(request):
    sandbox = sandbox_in_mode(request.param, preload=())
    yield sandbox
    sandbox.close()


def _judge(sandbox, source: str, limits: RunLimits = LIMITS) -> tuple[str | None, list[tuple[str, str, float]], str]:
    with tempfile.TemporaryDirectory(prefix="ttd-hostile-cpp-") as cache:
        judge = CppJudge(sandbox, options=CompileOptions(flags=FLAGS, link_flags=()), limits=limits, cache_dir=cache)
        report = judge.judge(source, [TestCase("t", b"")], lambda test, out: float(len(out)))
    return (report.compile_error, [(r.verdict.value, r.message, r.cpu_s) for r in report.results],
            sandbox.mechanism)


def judge(box, source: str, limits: RunLimits = LIMITS) -> tuple[str | None, list[tuple[str, str, float]]]:
    shm_before = sysv_segments()
    compile_error, results, mechanism = box.call(_judge, source, limits)
    RAN.add((box.mode, mechanism))
    assert cgroups.leftovers() == [] and sysv_segments() == shm_before
    assert box.call(stray_processes) == [], "a process of the run outlived it"
    return compile_error, results


def test_compile_errors_do_not_print_host_files(box):
    checkout_file = os.path.join(os.path.dirname(ttd_envs.__file__), "core", "sandbox.py")
    for secret, needle in (("/etc/passwd", "root:"), (checkout_file, "def run_python")):
        error, _ = judge(box, f'#include "{secret}"\nint main() {{ return 0; }}\n')
        assert error is not None and "No such file or directory" in error, error
        assert needle not in error


def test_children_never_waited_for_count_toward_tle(box):
    source = ("#include <unistd.h>\nint main() {\n  for (int i = 0; i < 3; i++)\n"
              "    if (fork() == 0) { volatile unsigned long x = 0; for (;;) x++; }\n"
              "  sleep(6);\n  return 0;\n}\n")
    error, results = judge(box, source)
    assert error is None and results[0][0] == Verdict.TLE.value, results
    assert results[0][2] > LIMITS.cpu_s


def test_children_memory_counts_toward_mle(box):
    source = ("#include <unistd.h>\n#include <sys/wait.h>\n#include <cstring>\n#include <cstdlib>\n"
              "int main() {\n  for (int i = 0; i < 3; i++)\n    if (fork() == 0) {\n"
              "      char *p = (char *)malloc(150 << 20); memset(p, 1, 150 << 20); sleep(3); return p[7]; }\n"
              "  while (wait(nullptr) > 0) {}\n  return 0;\n}\n")
    # touching 450 MiB is CPU time too (0.54 s seen at load 7 on 2 cores): only memory may stop it
    error, results = judge(box, source, dataclasses.replace(LIMITS, cpu_s=5.0))
    print(f"{box.mode}: {results}")
    assert error is None and results[0][0] == Verdict.MLE.value, results


def test_memfd_memory_is_counted_or_refused(box):
    source = ("#include <sys/mman.h>\n#include <unistd.h>\n#include <cstdio>\n#include <cstring>\n"
              "int main() {\n  static char block[1 << 20]; memset(block, 1, sizeof block);\n"
              "  for (int i = 0; i < 12; i++) {\n    int fd = memfd_create(\"x\", 0);\n"
              "    if (fd < 0) { perror(\"memfd_create\"); return 1; }\n"
              "    for (int j = 0; j < 40; j++) if (write(fd, block, sizeof block) < 0) { perror(\"write\"); return 1; }\n"
              "  }\n  printf(\"held 480 MiB\");\n  return 0;\n}\n")
    # the kernel's page allocation is CPU time too (0.57 s seen on a loaded machine): only memory may stop it
    error, results = judge(box, source, dataclasses.replace(LIMITS, cpu_s=5.0))
    assert error is None and results[0][0] in (Verdict.MLE.value, Verdict.RE.value), results


def test_host_sockets_and_files_are_out_of_reach(box):
    path = f"/tmp/ttd-hostile-cpp-{os.getpid()}.sock"
    import socket

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen()
    try:
        source = ("#include <sys/socket.h>\n#include <sys/un.h>\n#include <cstdio>\n#include <cstring>\n"
                  "int main() {\n  int s = socket(AF_UNIX, SOCK_STREAM, 0);\n  sockaddr_un a{}; a.sun_family = AF_UNIX;\n"
                  f"  strcpy(a.sun_path, \"{path}\");\n"
                  "  if (connect(s, (sockaddr *)&a, sizeof a) == 0) { printf(\"connected\"); return 0; }\n"
                  "  FILE *f = fopen(\"/etc/passwd\", \"r\");\n  if (f) { printf(\"read passwd\"); return 0; }\n"
                  "  return 3;\n}\n")
        error, results = judge(box, source)
        assert error is None and results[0][0] == Verdict.RE.value and "exit code 3" in results[0][1], results
    finally:
        listener.close()
        os.unlink(path)


def test_every_mode_and_mechanism_ran(request):
    expected = {("root", "cgroup" if cgroups.available() else "init accounting"), ("unprivileged", "init accounting")}
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"hostile C++ suite ran: {sorted(RAN)}")
    assert RAN == expected, f"ran {sorted(RAN)}, expected {sorted(expected)}"
