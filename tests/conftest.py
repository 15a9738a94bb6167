"""Shared fixtures: one warm sandbox per test session, and a check that runs leave nothing behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from ttd_envs.core._zygote import UID_BASE
from ttd_envs.core.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    box = Sandbox()
    yield box
    box.close()


def _sandboxed_descendants() -> list[int]:
    """Our descendants running as a sandbox's private uid (other sessions' sandboxes are ignored)."""
    parents: dict[int, int] = {}
    sandboxed: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields["PPid"])
        if int(fields["Uid"].split()[0]) >= UID_BASE and not fields["State"].strip().startswith("Z"):
            sandboxed.append(pid)
    me = os.getpid()

    def descends_from_me(pid: int) -> bool:
        for _ in range(64):
            pid = parents.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid in sandboxed if descends_from_me(pid)]


@pytest.fixture
def leftover_processes() -> Callable[[], list[int]]:
    """Returns a function that waits (up to 10 s, for teardown under load) and lists what is left."""

    def wait() -> list[int]:
        deadline = time.monotonic() + 10
        while (left := _sandboxed_descendants()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    return wait
