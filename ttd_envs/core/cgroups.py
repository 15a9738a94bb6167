"""Per-run cgroups: memory, process count and CPU limited and measured for a whole run.

A run's processes (init, the program, every child it forks, waited for or not) join one cgroup
(cgroup v2) or one per controller (cgroup v1), created beneath the cgroup the trusted process
itself runs in and removed after the run. The kernel then charges the run for everything it
makes resident: anonymous memory, shared memory, memfds, files in its tmpfs and, on cgroup v2,
kernel memory such as socket buffers; it kills within the run (never outside it) when the run
passes its memory limit, caps its CPU bandwidth at the run's CPU count, and stops its forks at
the process limit.

Which hierarchy is used, in this order (`probe()` says which and why; `SandboxResult.isolation`
repeats it for every run):
- cgroup v1 with the memory, pids and cpuacct controllers writable by us (root, or a delegated
  v1 hierarchy); the cpu controller, where writable too, adds a CPU quota;
- cgroup v2 where our own cgroup is writable and offers memory, pids and cpu: as root, or without
  root in a delegated subtree (a systemd user session's `Delegate=yes` unit or scope, which is
  what rootless container engines use). cgroup v2 lets a cgroup hand controllers to its children
  only while it holds no process itself, so the processes of our cgroup first move into a leaf
  child (`ttd-trusted`), as delegation's rules ask of the delegatee.
Elsewhere `available()` is False and the sandbox's init accounts the run itself (`_zygote.py`).
"""

from __future__ import annotations

import atexit
import errno
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

log = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "pids", "cpuacct")
V1_OPTIONAL = ("cpu",)
V2_CONTROLLERS = ("memory", "pids", "cpu")
V2 = "unified"  # the key of the one v2 directory in `Hierarchy.parents`
LEAF = "ttd-trusted"  # where the processes of our own v2 cgroup move, so it may delegate controllers
PREFIX = "ttd-sandbox-"
CPU_PERIOD_US = 100_000
_names = itertools.count()


@dataclass(frozen=True)
class Hierarchy:
    """Where this process's runs get their cgroups, and the line `isolation` shows for them."""

    version: int
    parents: dict[str, str]  # v1: controller -> directory; v2: {V2: directory}
    mechanism: str
    cpu_quota: bool = True  # False: a v1 host without a writable cpu controller (the sandbox caps CPU time)


@dataclass(frozen=True)
class Probe:
    """The outcome of looking for usable cgroups: a hierarchy, or None and why not."""

    hierarchy: Hierarchy | None
    reason: str


def _own_cgroups() -> dict[str, str]:
    """controller -> our own cgroup path ("" is the v2 hierarchy's entry, `0::/path`)."""
    owned: dict[str, str] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                owned[controller] = path
    return owned


def _cgroup2_mount() -> str | None:
    """Where the cgroup2 filesystem is mounted (ROOT on a v2 host, ROOT/unified on a hybrid one)."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            before, _, after = line.partition(" - ")
            if after.split(" ", 1)[0] == "cgroup2":
                found.append(before.split()[4])
    return ROOT if ROOT in found else (found[0] if found else None)


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _writable(directory: str, *files: str) -> bool:
    return os.access(directory, os.W_OK) and all(os.access(os.path.join(directory, name), os.W_OK) for name in files)


def _probe_v1(owned: dict[str, str]) -> Hierarchy | str:
    found: dict[str, str] = {}
    seen: set[str] = set()  # co-mounted controllers (cpu,cpuacct) share one directory
    for controller in V1_CONTROLLERS + V1_OPTIONAL:
        if controller not in owned:
            if controller in V1_OPTIONAL:
                continue
            return f"no {controller} controller"
        directory = os.path.join(ROOT, controller, owned[controller].lstrip("/"))
        if not os.path.exists(os.path.join(directory, "cgroup.procs")) or not _writable(directory, "cgroup.procs"):
            if controller in V1_OPTIONAL:
                continue
            return f"our {controller} cgroup {directory} is not writable by uid {os.geteuid()}"
        if os.path.realpath(directory) not in seen:
            seen.add(os.path.realpath(directory))
            found[controller] = directory
    cpu = found.get("cpu", found["cpuacct"])
    quota = os.path.exists(f"{cpu}/cpu.cfs_quota_us")
    return Hierarchy(1, found, f"per-run cgroup v1 (memory, pids, cpuacct{', cpu quota' if quota else ''}; our v1 "
                               "cgroups are writable): whole-run limits and accounting by the kernel", cpu_quota=quota)


def _probe_v2(owned: dict[str, str]) -> Hierarchy | str:
    mount = _cgroup2_mount()
    if mount is None or "" not in owned:
        return "no cgroup2 hierarchy mounted"
    own = owned[""]
    directory = os.path.join(mount, own.lstrip("/")).rstrip("/")
    try:
        offered = set(_read(f"{directory}/cgroup.controllers").split())
    except OSError as exc:
        return f"cannot read {directory}/cgroup.controllers ({exc.strerror})"
    missing = [c for c in V2_CONTROLLERS if c not in offered]
    if missing:
        return (f"{directory} is not offered {', '.join(missing)} (they are bound to cgroup v1, or its parent does "
                "not enable them in cgroup.subtree_control)")
    if not _writable(directory, "cgroup.procs", "cgroup.subtree_control"):
        return (f"our cgroup {directory} is not writable by uid {os.geteuid()}: no delegated subtree (start "
                "the trainer in one, e.g. `systemd-run --user --scope -p Delegate=yes ...`)")
    try:
        _delegate_controllers(directory, is_root=own == "/")
    except OSError as exc:
        return f"cannot enable {', '.join(V2_CONTROLLERS)} for children of {directory}: {exc}"
    how = "as root" if os.geteuid() == 0 else f"delegated subtree of uid {os.geteuid()}"
    return Hierarchy(2, {V2: directory}, f"per-run cgroup v2 ({how}: memory.max with kernel memory, pids.max, "
                                         f"cpu.max, cgroup.kill) under {directory}")


def _delegate_controllers(directory: str, is_root: bool) -> None:
    """Enable our controllers for `directory`'s children; a non-root cgroup must first be emptied
    of processes (they move to its leaf child LEAF, where new ones of ours then start too)."""
    enabled = set(_read(f"{directory}/cgroup.subtree_control").split())
    if enabled >= set(V2_CONTROLLERS):
        return
    if not is_root:
        leaf = os.path.join(directory, LEAF)
        os.makedirs(leaf, exist_ok=True)
        for pid in _read(f"{directory}/cgroup.procs").split():
            try:
                _write(f"{leaf}/cgroup.procs", pid)
            except ProcessLookupError:
                pass  # exited meanwhile
        log.info("sandbox: moved the processes of %s into %s so it may hold per-run cgroups", directory, leaf)
    _write(f"{directory}/cgroup.subtree_control", " ".join(f"+{c}" for c in V2_CONTROLLERS))


def probe() -> Probe:
    """Which cgroups this process's runs get (cached per effective uid), or why none."""
    return _probe(os.geteuid())


@lru_cache(maxsize=None)
def _probe(euid: int) -> Probe:
    try:
        owned = _own_cgroups()
    except OSError as exc:
        return Probe(None, f"cannot read /proc/self/cgroup ({exc.strerror})")
    reasons = []
    for label, attempt in (("cgroup v1", _probe_v1), ("cgroup v2", _probe_v2)):
        found = attempt(owned)
        if isinstance(found, Hierarchy):
            return Probe(found, found.mechanism)
        reasons.append(f"{label}: {found}")
    return Probe(None, f"no per-run cgroups ({'; '.join(reasons)})")


def available() -> bool:
    return probe().hierarchy is not None


def parents() -> dict[str, str] | None:
    """Where our runs' cgroups go, or None if we may not create them."""
    found = probe().hierarchy
    return found.parents if found else None


def leftovers() -> list[str]:
    """Run cgroups of this process that still exist once removals settled (there should be none)."""
    _remover.settle()
    found = []
    for directory in (parents() or {}).values():
        found += [os.path.join(directory, name) for name in os.listdir(directory)
                  if name.startswith(f"{PREFIX}{os.getpid()}-")]
    return found


@dataclass
class RunCgroup:
    """One run's cgroups. Init joins them through `procs_fds` (it cannot see /sys)."""

    version: int
    paths: dict[str, str]
    procs_fds: list[int]
    mechanism: str
    cpu_quota: bool
    _sampled_peak: int = field(default=0)

    @classmethod
    def create(cls, memory_bytes: int, max_processes: int, cpus: float) -> RunCgroup:
        found = probe().hierarchy
        if found is None:
            raise OSError(errno.ENOTSUP, probe().reason)
        name = f"{PREFIX}{os.getpid()}-{next(_names)}"
        group = cls(found.version, {}, [], found.mechanism, found.cpu_quota)
        try:
            for controller, parent in found.parents.items():
                path = os.path.join(parent, name)
                os.mkdir(path, 0o700)
                group.paths[controller] = path
            (group._limit_v2 if found.version == 2 else group._limit_v1)(memory_bytes, max_processes + 1, cpus)  # + init
            group.procs_fds = [os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for path in group.paths.values()]
        except OSError:
            group.remove()
            raise
        return group

    def _limit_v1(self, memory_bytes: int, processes: int, cpus: float) -> None:
        memory = self.paths["memory"]
        _write(f"{memory}/memory.limit_in_bytes", str(memory_bytes))
        if os.path.exists(f"{memory}/memory.memsw.limit_in_bytes"):  # swap counts too
            _write(f"{memory}/memory.memsw.limit_in_bytes", str(memory_bytes))
        _write(f"{memory}/memory.swappiness", "0")
        _write(f"{self.paths['pids']}/pids.max", str(processes))
        cpu = self.paths.get("cpu", self.paths["cpuacct"])
        if os.path.exists(f"{cpu}/cpu.cfs_quota_us"):
            _write(f"{cpu}/cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(f"{cpu}/cpu.cfs_quota_us", str(_quota_us(cpus)))

    def _limit_v2(self, memory_bytes: int, processes: int, cpus: float) -> None:
        path = self.paths[V2]
        _write(f"{path}/memory.max", str(memory_bytes))
        if os.path.exists(f"{path}/memory.swap.max"):
            _write(f"{path}/memory.swap.max", "0")
        _write(f"{path}/memory.oom.group", "1")  # an OOM kill ends the whole run, not one process of it
        _write(f"{path}/pids.max", str(processes))
        _write(f"{path}/cpu.max", f"{_quota_us(cpus)} {CPU_PERIOD_US}")

    def close_fds(self) -> None:
        for fd in self.procs_fds:
            os.close(fd)
        self.procs_fds = []

    def cpu_s(self) -> float:
        if self.version == 2:
            fields = dict(line.split() for line in _read(f"{self.paths[V2]}/cpu.stat").splitlines())
            return int(fields["usage_usec"]) / 1e6
        return int(_read(f"{self.paths['cpuacct']}/cpuacct.usage")) / 1e9

    def sample(self) -> None:
        """Where the kernel keeps no peak (v2 before Linux 5.19: no memory.peak), remember the
        largest charge seen; called while the run lasts."""
        if self.version == 2 and not os.path.exists(f"{self.paths[V2]}/memory.peak"):
            self._sampled_peak = max(self._sampled_peak, int(_read(f"{self.paths[V2]}/memory.current")))

    def peak_memory_bytes(self) -> int:
        if self.version == 2:
            try:
                return int(_read(f"{self.paths[V2]}/memory.peak"))
            except FileNotFoundError:
                self.sample()
                return self._sampled_peak
        return int(_read(f"{self.paths['memory']}/memory.max_usage_in_bytes"))

    def oom_kills(self) -> int:
        if self.version == 2:
            fields = dict(line.split() for line in _read(f"{self.paths[V2]}/memory.events").splitlines())
        else:
            fields = dict(line.split() for line in _read(f"{self.paths['memory']}/memory.oom_control").splitlines())
        return int(fields.get("oom_kill", 0))

    def kill(self) -> None:
        """SIGKILL every process of the run (cgroup.kill where the kernel has it: race-free)."""
        for path in self.paths.values():
            _kill_members(path)

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


def _quota_us(cpus: float) -> int:
    return max(1000, round(cpus * CPU_PERIOD_US))


def _kill_members(path: str) -> None:
    """SIGKILL what is left in one of our run cgroups: only ever that run's processes."""
    try:
        _write(f"{path}/cgroup.kill", "1")
        return
    except FileNotFoundError:
        pass  # cgroup v1, or v2 before Linux 5.14: signal the members one by one
    except OSError:
        return
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
    """One daemon thread that removes run cgroups once their processes are gone. It lingers
    `LINGER_S` for the next submission: starting a thread per run cost ~1 ms of the run's time."""

    LINGER_S = 2.0

    def __init__(self) -> None:
        self._pending: list[tuple[str, float]] = []  # submitted, or being tried by the thread
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
                    self._lock.notify_all()  # for `settle`
                    self._lock.wait_for(lambda: self._pending, timeout=self.LINGER_S)
                if not self._pending:
                    self._running = False
                    return
                pending = list(self._pending)
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
            with self._lock:  # what was tried goes; what failed, and what came meanwhile, stays
                self._pending = left + self._pending[len(pending):]
            if left:
                time.sleep(0.005)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every submitted cgroup is removed (or given up on)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._pending, timeout=timeout_s)


_remover = _Remover()
atexit.register(_remover.settle)
