"""Hostile programs through ttd/ErdosOverlap-v0: each is a normal zero-reward step with a specific
message, and leaves nothing behind (no process, no file outside its private tmpfs, no secret read)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest

from ttd_envs.core.sandbox import Limits
from timing import at_least

SECRET = "ttd-secret-4242-do-not-leak"


@pytest.fixture(scope="module")
def env():
    os.environ["TTD_TEST_SECRET"] = SECRET  # set before the zygote starts: it must not inherit it
    env = gym.make("ttd/ErdosOverlap-v0", initial="record", budget_s=2, timeout_s=4)
    env.unwrapped.problem.budget = env.unwrapped.problem.budget.__class__(
        budget_s=2, timeout_s=4, memory_bytes=1 << 30, cpus=1)
    yield env
    env.unwrapped.problem.close()
    del os.environ["TTD_TEST_SECRET"]


def step(env, body: str) -> tuple[float, dict]:
    env.reset(seed=0)
    started = time.perf_counter()
    _, reward, _, _, info = env.step(f"```python\n{body}\n```")
    info["wall"] = time.perf_counter() - started
    return reward, info


def assert_contained(reward: float, info: dict, leftovers, *needles: str) -> None:
    assert reward == 0.0 and info["valid"] is False and info["state"] is None
    for needle in needles:
        assert needle in info["error"], info["error"]
    assert info["wall"] < 15, "the step must end soon after the time-out"
    assert leftovers() == [], "a sandboxed process outlived its step"


RUN = "def run(seed=42, budget_s=2, **kwargs):\n"

HOSTILE = {
    "infinite loop": (RUN + "    while True:\n        pass", ["time limit exceeded"]),
    "memory bomb": ("x = []\n" + RUN + "    while True:\n        x.append(bytearray(10**8))",
                    ["MemoryError", "memory limit"]),
    "fork bomb": ("import os\n" + RUN + "    while True:\n        try:\n            os.fork()\n"
                  "        except OSError:\n            pass", ["time limit exceeded"]),
    "thread bomb": ("import threading, time\n" + RUN + "    while True:\n"
                    "        threading.Thread(target=time.sleep, args=(60,)).start()", ["can't start new thread"]),
    "detached sleeper": ("import os, time\n" + RUN + "    if os.fork() == 0:\n        os.setsid()\n"
                         "        if os.fork() == 0:\n            time.sleep(600)\n        os._exit(0)\n"
                         "    return [0.5, 0.5], 0.5, 2.5", ["n_points = 2.5 does not match"]),
    "outside address": ("import socket\n" + RUN + "    socket.create_connection(('1.1.1.1', 80), timeout=1)",
                        ["Network is unreachable"]),
    "fill its disk": (RUN + "    with open('big', 'wb') as f:\n        while True:\n"
                      "            f.write(b'0' * (1 << 20))", ["No space left on device"]),
    "NaN": (RUN + "    h = np.full(10, np.nan)\n    return h, 0.5, 10", ["NaN or inf"]),
    "inf": (RUN + "    h = np.full(10, 0.5)\n    h[3] = np.inf\n    return h, 0.5, 10", ["NaN or inf"]),
    "wrong shape": (RUN + "    h = np.full((4, 5), 0.5)\n    return h, 0.5, 20", ["must be 1-D, got shape (4, 5)"]),
    "outside [0, 1]": (RUN + "    h = np.linspace(-0.5, 1.5, 20)\n    return h, 0.5, 20", ["must lie in [0, 1]"]),
    # 200,001 float64 samples pass Erdős's result cap (8 bytes per allowed sample): killed on the way
    "too long": (RUN + "    h = np.full(200_001, 0.5)\n    return h, 0.5, h.size",
                 ["output limit exceeded: the result passed"]),
    "not an array": (RUN + "    return 'abc', 0.5, 3", ["h_values must hold real numbers"]),
    "not a tuple": (RUN + "    return 0.5", ["must return a tuple (h_values, c5_bound, n_points)"]),
    "pickle trap": ("class Evil:\n    def __reduce__(self):\n        import os\n"
                    "        return (os.system, ('touch /tmp/pwned',))\n" + RUN + "    return Evil(), 0.5, 1",
                    ["cannot return a program.Evil"]),
    "prints 100 MB": (RUN + "    print('x' * (100 * 2**20))", ["output limit exceeded"]),
    "sys.exit": ("import sys\n" + RUN + "    sys.exit(0)", ["called sys.exit(0)"]),
    "os._exit": ("import os\n" + RUN + "    os._exit(0)", ["without returning a result"]),
    "syntax error": ("def run(:\n    pass", ["SyntaxError"]),
    "no entry": ("x = 1", ["must define a function `run`"]),
    "raises": (RUN + "    raise ValueError('boom')", ["ValueError: boom"]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(env, name, leftover_processes):
    body, needles = HOSTILE[name]
    reward, info = step(env, body)
    assert_contained(reward, info, leftover_processes, *needles)


def test_no_code_block(env):
    env.reset(seed=0)
    _, reward, _, _, info = env.step("I would use simulated annealing, but here is no code.")
    assert reward == 0.0 and not info["valid"] and "no ```python code block" in info["error"]


def test_loopback_connection_never_arrives(env, leftover_processes):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    reward, info = step(env, f"import socket\n{RUN}    socket.create_connection(('127.0.0.1', {port}), timeout=1)")
    thread.join()
    listener.close()
    assert_contained(reward, info, leftover_processes, "Network is unreachable")
    assert accepted == []


def test_files_outside_the_private_dir_do_not_change(env, tmp_path, leftover_processes):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    keep.chmod(0o666)
    tmp_path.chmod(0o777)
    escape = Path("/tmp") / f"ttd-escape-{os.getpid()}"
    body = ("import os\n" + RUN +
            f"    for attempt in (lambda: os.remove({str(keep)!r}), lambda: open({str(keep)!r}, 'w').write('x'),\n"
            f"                    lambda: open({str(escape)!r}, 'w').write('x'),\n"
            f"                    lambda: open('/work/ttd-escape', 'w').write('x'),\n"
            f"                    lambda: open(os.path.expanduser('~root/.bashrc'), 'a').write('x')):\n"
            "        try:\n            attempt()\n        except OSError as exc:\n            print(type(exc).__name__)\n"
            "    return 'done', 0.5, 1")
    reward, info = step(env, body)
    assert_contained(reward, info, leftover_processes)
    assert keep.read_text() == "precious"
    assert not escape.exists()
    assert not Path("/work/ttd-escape").exists()


def test_parent_environment_is_invisible(env, leftover_processes):
    body = ("import os, glob\n" + RUN +
            "    seen = repr(dict(os.environ))\n"
            "    for path in glob.glob('/proc/*/environ'):\n"
            "        try:\n            seen += open(path, 'rb').read().replace(b'\\0', b'').decode(errors='replace')\n"
            "        except OSError:\n            pass\n"
            "    print(seen)\n"
            "    return 'done', 0.5, 1")
    reward, info = step(env, body)
    assert_contained(reward, info, leftover_processes)
    assert SECRET in os.environ["TTD_TEST_SECRET"]
    assert "PATH=" in info["stdout"] or "'PATH'" in info["stdout"], "the program should see its own environment"
    assert SECRET not in info["stdout"]


def test_isolation_is_reported(sandbox):
    result = sandbox.run_python("def run():\n    return 1\n", "run")
    assert result.ok and result.value == 1
    if os.geteuid() == 0:
        assert {"pid namespace", "network namespace (no network)", "private /proc"} <= set(result.isolation)
        assert result.warnings == []
    else:
        assert result.isolation  # what applied is listed; what did not is in warnings
    assert result.summary()["isolation"] == result.isolation


def test_cpu_limit_and_binary_mode(sandbox, tmp_path):
    """The sandbox runs executables too (the C++ judge's path): CPU-second limit, stdin, exit codes."""
    result = sandbox.run_binary("/bin/cat", stdin=b"echo me", limits=Limits(wall_s=5))
    assert result.ok and result.stdout_bytes == b"echo me"
    result = sandbox.run_binary("/bin/sh", argv=("-c", "while :; do :; done"),
                                limits=Limits(wall_s=10, cpu_s=1))
    # RLIMIT_CPU is checked on tick-granular accounting, so rusage may read under 1 s: 0.84 s was
    # seen at load 16 on 2 cores; SIGXCPU is what shows that the CPU limit stopped it
    assert not result.ok and "SIGXCPU" in result.error, result.error
    at_least(result.cpu_s, 0.7, "CPU time of a busy loop stopped at a 1 s CPU limit")
    result = sandbox.run_binary("/bin/sh", argv=("-c", "exit 3"), limits=Limits(wall_s=5))
    assert not result.ok and result.exit_code == 3
