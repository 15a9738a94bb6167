"""The thread caps reach the native libraries a sandboxed program uses. The zygote blanks its
environment block so /proc shows nothing of the host; libc's getenv read that block, so the
libraries the zygote preloads (torch's OpenMP, OpenBLAS, MKL) saw no OMP_NUM_THREADS and started
one thread per host CPU: 2 torch threads here under a 1-CPU budget, 64 on a 64-core machine, all
fighting for the run's quota (a kernel call took up to 10x longer). The torch test failed so; the
first one guards the rest: each run's caps reach libc, and /proc still shows nothing."""

from __future__ import annotations

import pytest
from conftest import SANDBOX_MODES, sandbox_in_mode

from ttd_envs.core.sandbox import Limits, Sandbox

CAPS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

C_ENVIRONMENT = """
import ctypes, os
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p


def report():
    c_level = {key: (libc.getenv(key.encode()) or b"").decode() for key in CAPS}
    with open("/proc/self/environ", "rb") as handle:
        shown = handle.read()
    return {"c": c_level, "python": {key: os.environ.get(key) for key in CAPS}, "proc_environ": shown.decode(errors="replace")}
"""

TORCH_THREADS = """
import torch


def report():
    return torch.get_num_threads()
"""


def _report(sandbox: Sandbox, source: str, cpu_s: float) -> object:
    return sandbox.run_python(source, "report", limits=Limits(cpu_s=cpu_s, wall_s=4 * cpu_s)).value


@pytest.mark.parametrize("mode", SANDBOX_MODES)
@pytest.mark.parametrize("threads", [1, 2])
def test_libc_sees_the_thread_caps_and_proc_still_shows_nothing(mode: str, threads: int) -> None:
    box = sandbox_in_mode(mode, threads=threads)
    try:
        seen = box.call(_report, f"CAPS = {CAPS!r}\n" + C_ENVIRONMENT, 10.0)
    finally:
        box.close()
    print(seen["c"], seen["python"], len(seen["proc_environ"]), "bytes of /proc/self/environ")
    assert seen["c"] == {key: str(threads) for key in CAPS}, seen
    assert seen["python"] == {key: str(threads) for key in CAPS}
    assert "NUM_THREADS" not in seen["proc_environ"] and "PATH" not in seen["proc_environ"], seen


@pytest.mark.parametrize("mode", SANDBOX_MODES)
def test_torch_preloaded_by_the_zygote_keeps_to_one_thread(mode: str) -> None:
    pytest.importorskip("torch")
    box = sandbox_in_mode(mode, preload=("numpy", "torch"), threads=1)
    try:
        threads = box.call(_report, TORCH_THREADS, 30.0)
    finally:
        box.close()
    print("torch threads in the sandbox:", threads)
    assert threads == 1
