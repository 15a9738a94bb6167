"""Shared fixtures: one warm sandbox per test session, and a check that runs leave nothing behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ttd_envs.core._zygote import UID_BASE
from ttd_envs.core.sandbox import Limits, Sandbox, SandboxResult


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    box = Sandbox()
    yield box
    box.close()


@dataclass(frozen=True)
class Proc:
    parent: int
    uid: int
    zombie: bool


def process_table() -> dict[int, Proc]:
    """Every process this machine shows in /proc (those that exit while it is read are skipped)."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        table[int(entry)] = Proc(int(fields["PPid"]), int(fields["Uid"].split()[0]),
                                 fields["State"].strip().startswith("Z"))
    return table


def descendants(root: int, table: dict[int, Proc] | None = None) -> dict[int, int]:
    """pid -> depth below `root` (1: its children), zombies included."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.parent, []).append(pid)
    depths, todo = {}, [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        for child in children.get(pid, []):
            depths[child] = depth + 1
            todo.append((child, depth + 1))
    return depths


def _sandboxed_descendants() -> list[int]:
    """Our live descendants running as a sandbox's private uid (other sessions' sandboxes are ignored)."""
    table = process_table()
    return [pid for pid in descendants(os.getpid(), table)
            if pid in table and table[pid].uid >= UID_BASE and not table[pid].zombie]


@pytest.fixture
def leftover_processes() -> Callable[[], list[int]]:
    """Returns a function that waits (up to 10 s, for teardown under load) and lists what is left."""

    def wait() -> list[int]:
        deadline = time.monotonic() + 10
        while (left := _sandboxed_descendants()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    return wait


# -- the sandbox's two privilege modes (hostile suites run in both) ----------------------------
UNPRIVILEGED_USER = "ttd-sandbox-test"


class UnprivilegedSandbox:
    """A Sandbox living in a forked worker that dropped root for an ordinary user, so the
    sandbox runs in its unprivileged (user namespace) mode. `call(fn, *args)` runs
    `fn(sandbox, *args)` there (fn: a module-level function) and returns its result."""

    def __init__(self, **sandbox_kwargs: object) -> None:
        import pickle
        import socket

        self._pickle = pickle
        uid, gid = _unprivileged_ids()
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            ours.close()
            code = 0
            try:
                _drop_to(uid, gid)
                _serve_calls(theirs, Sandbox(**sandbox_kwargs))
            except BaseException:  # noqa: BLE001 - the test side sees the worker hang up
                code = 1
            os._exit(code)
        theirs.close()
        self.pid, self._sock, self._file = pid, ours, ours.makefile("rwb")

    def call(self, fn: Callable, *args: object) -> object:
        self._pickle.dump((fn, args), self._file)
        self._file.flush()
        ok, value = self._pickle.load(self._file)
        if not ok:
            raise RuntimeError(f"in the unprivileged worker: {value}")
        return value

    def close(self) -> None:
        self._file.close()
        self._sock.close()
        os.waitpid(self.pid, 0)


def _unprivileged_ids() -> tuple[int, int]:
    import pwd
    import subprocess

    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        UNPRIVILEGED_USER], check=True)
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return entry.pw_uid, entry.pw_gid


def _drop_to(uid: int, gid: int) -> None:
    """In a private mount namespace, make the interpreter reachable (it may live in /root, 0700)
    by covering its private ancestors with a tmpfs holding only it, then become `uid`."""
    from ttd_envs.core import _confine

    _confine._check(_confine._libc.unshare(0x00020000), "unshare the mount namespace")
    _confine.mount(None, "/", None, _confine.MS_REC | _confine.MS_PRIVATE)
    hidden: dict[str, list[str]] = {}
    for path in _confine.runtime_paths():
        parts, current = path.strip("/").split("/"), ""
        for part in parts:
            current += "/" + part
            if not os.stat(current).st_mode & 0o001:
                hidden.setdefault(current, []).append(path)
                break
    for top, paths in hidden.items():
        handles = {p: os.open(p, os.O_PATH) for p in paths}
        _confine.mount("tmpfs", top, "tmpfs", 0, "size=1m,mode=0755")
        for path, handle in handles.items():
            os.makedirs(path, 0o755, exist_ok=True)
            _confine.mount(f"/proc/self/fd/{handle}", path, None, _confine.MS_BIND | _confine.MS_REC)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.environ["HOME"] = "/tmp"


def _serve_calls(sock: object, box: Sandbox) -> None:
    import pickle

    stream = sock.makefile("rwb")
    while True:
        try:
            fn, args = pickle.load(stream)
        except EOFError:
            box.close()
            return
        try:
            reply = (True, fn(box, *args))
        except Exception as exc:  # noqa: BLE001 - travels back to the test
            reply = (False, f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, stream)
        stream.flush()


class PrivilegedSandbox:
    """The same `call` interface for a Sandbox in this (root) process."""

    def __init__(self, **sandbox_kwargs: object) -> None:
        self.box = Sandbox(**sandbox_kwargs)

    def call(self, fn: Callable, *args: object) -> object:
        return fn(self.box, *args)

    def close(self) -> None:
        self.box.close()


SANDBOX_MODES = ("root", "unprivileged")
FALLBACK_MODES = ("root-fallback", "unprivileged")
"""Where init accounts the run (no cgroup): root with `cgroups=False` (a root on a host without
usable cgroups) and the unprivileged mode. The fallback attacks (tests/fallback_attacks.py) run here."""


def sandbox_in_mode(mode: str, **sandbox_kwargs: object) -> PrivilegedSandbox | UnprivilegedSandbox:
    """A sandbox in `mode` (kept as its `.mode`); skipping is not an option: the hostile suites
    must run in both."""
    if os.geteuid() != 0:
        raise RuntimeError("the hostile suites create an unprivileged user and need root (as in CI)")
    if mode == "root-fallback":
        box = PrivilegedSandbox(**sandbox_kwargs, cgroups=False)
    else:
        box = (PrivilegedSandbox if mode == "root" else UnprivilegedSandbox)(**sandbox_kwargs)
    box.mode = mode
    return box


def _run_python(sandbox: Sandbox, source: str, limits: Limits) -> SandboxResult:
    return sandbox.run_python(source, "run", limits=limits)


def _mechanism(sandbox: Sandbox) -> str:
    return sandbox.mechanism


def run_recorded(box: PrivilegedSandbox | UnprivilegedSandbox, source: str, limits: Limits,
                 ran: set[tuple[str, str]]) -> SandboxResult:
    """Run `source`'s `run()` in `box` (a `sandbox_in_mode`) and add (mode, mechanism) to `ran`:
    the hostile suites report which modes ran."""
    result = box.call(_run_python, source, limits)
    ran.add((box.mode, box.call(_mechanism)))
    return result


def stray_processes(sandbox: Sandbox) -> list[int]:
    """Processes below the zygote other than its ready spares (runner + init each); waits up to
    10 s for the last run's runner and init to finish exiting."""
    deadline = time.monotonic() + 10
    while True:
        tree = descendants(sandbox._zygote.pid)
        stray = [pid for pid, depth in tree.items() if depth > 2]
        if (not stray and len(tree) <= 2 * (sandbox.spares + 1)) or time.monotonic() > deadline:
            return stray + ([] if len(tree) <= 2 * (sandbox.spares + 1) else sorted(tree))
        time.sleep(0.05)


def sysv_segments() -> list[str]:
    with open("/proc/sysvipc/shm") as handle:
        return handle.read().splitlines()
