"""Per-run cgroups: memory, process count and CPU time limited and measured for a whole run.

A run's processes (init, the program, every child it forks, waited for or not) join one cgroup
per controller, created beneath the cgroup the trusted process itself runs in and removed after
the run. The kernel then charges the run for everything it makes resident: anonymous memory,
shared memory, memfds and files in its tmpfs alike, and kills within the run (never outside it)
when the run passes its memory limit.

Only cgroup v1 with the memory, pids and cpuacct controllers writable by us is used (root, or a
delegated hierarchy). Elsewhere `available()` is False and the sandbox's init accounts the run
itself (see `_zygote.py`); `SandboxResult.isolation` says which applied.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids", "cpuacct")
PREFIX = "ttd-sandbox-"
MECHANISM = "cgroup v1 (memory, pids, cpuacct): whole-run limits and accounting"
_names = itertools.count()


def _own_cgroups() -> dict[str, str]:
    """controller -> our own cgroup path in that controller's v1 hierarchy."""
    owned: dict[str, str] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                owned[controller] = path
    return owned


def parents() -> dict[str, str] | None:
    """Where our runs' cgroups go (controller -> directory), or None if we may not create them."""
    return _parents(os.geteuid())


@lru_cache(maxsize=None)
def _parents(euid: int) -> dict[str, str] | None:
    try:
        owned = _own_cgroups()
    except OSError:
        return None
    found: dict[str, str] = {}
    for controller in CONTROLLERS:
        if controller not in owned:
            return None
        directory = os.path.join(ROOT, controller, owned[controller].lstrip("/"))
        if not os.access(directory, os.W_OK) or not os.path.exists(os.path.join(directory, "cgroup.procs")):
            return None
        found[controller] = directory
    return found


def available() -> bool:
    return parents() is not None


def leftovers() -> list[str]:
    """Run cgroups of this process that still exist once removals settled (there should be none)."""
    _remover.settle()
    found = []
    for directory in (parents() or {}).values():
        found += [os.path.join(directory, name) for name in os.listdir(directory)
                  if name.startswith(f"{PREFIX}{os.getpid()}-")]
    return found


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


@dataclass
class RunCgroup:
    """One run's cgroups. Init joins them through `procs_fds` (it cannot see /sys)."""

    paths: dict[str, str]
    procs_fds: list[int]

    @classmethod
    def create(cls, memory_bytes: int, max_processes: int) -> RunCgroup:
        name = f"{PREFIX}{os.getpid()}-{next(_names)}"
        paths: dict[str, str] = {}
        fds: list[int] = []
        try:
            for controller, parent in (parents() or {}).items():
                path = os.path.join(parent, name)
                os.mkdir(path, 0o700)
                paths[controller] = path
            memory = paths["memory"]
            _write(f"{memory}/memory.limit_in_bytes", str(memory_bytes))
            if os.path.exists(f"{memory}/memory.memsw.limit_in_bytes"):  # swap counts too
                _write(f"{memory}/memory.memsw.limit_in_bytes", str(memory_bytes))
            _write(f"{memory}/memory.swappiness", "0")
            _write(f"{paths['pids']}/pids.max", str(max_processes + 1))  # + init
            fds = [os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for path in paths.values()]
        except OSError:
            for fd in fds:
                os.close(fd)
            cls(paths, []).remove()
            raise
        return cls(paths, fds)

    def close_fds(self) -> None:
        for fd in self.procs_fds:
            os.close(fd)
        self.procs_fds = []

    def cpu_s(self) -> float:
        return int(_read(f"{self.paths['cpuacct']}/cpuacct.usage")) / 1e9

    def peak_memory_bytes(self) -> int:
        return int(_read(f"{self.paths['memory']}/memory.max_usage_in_bytes"))

    def oom_kills(self) -> int:
        fields = dict(line.split() for line in _read(f"{self.paths['memory']}/memory.oom_control").splitlines())
        return int(fields.get("oom_kill", 0))

    def remove(self) -> None:
        """Remove the cgroups now, or, while the run's last processes are still exiting, from a
        background thread (so a run does not wait for the kernel's teardown)."""
        self.close_fds()
        for path in self.paths.values():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:  # EBUSY: processes still exiting
                _remover.submit(path)
        self.paths = {}


def _kill_members(path: str) -> None:
    """SIGKILL what is left in one of our run cgroups: only ever that run's processes."""
    try:
        pids = [int(line) for line in _read(f"{path}/cgroup.procs").split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


class _Remover:
    """One daemon thread that removes run cgroups once their processes are gone."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, float]] = []
        self._lock = threading.Condition()
        self._running = False  # set and cleared under the lock, so no submission is ever orphaned

    def submit(self, path: str) -> None:
        with self._lock:
            self._pending.append((path, time.monotonic()))
            if not self._running:
                self._running = True
                threading.Thread(target=self._loop, name="ttd-cgroup-remover", daemon=True).start()
            self._lock.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    self._lock.notify_all()
                    return
                pending, self._pending = self._pending, []
            left = []
            for path, since in pending:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    waited = time.monotonic() - since
                    if waited > 0.1:
                        _kill_members(path)
                    if waited > 10:
                        log.warning("could not remove the run cgroup %s: it still holds processes", path)
                    else:
                        left.append((path, since))
            with self._lock:
                self._pending = left + self._pending
            time.sleep(0.005)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every submitted cgroup is removed (or given up on)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._running, timeout=timeout_s)


_remover = _Remover()
atexit.register(_remover.settle)
