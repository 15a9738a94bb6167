"""CPUs for one sandboxed run where no cgroup CPU quota bounds it (the fallback mode).

Without a quota, a program told "1 CPU" could spread over every core of a 64-core node until its
CPU-time cap stops it. Init pins the run to the CPUs picked here before it forks the program (and
seccomp refuses `sched_setaffinity`, so the program cannot widen the mask). Runs going on at once
must not share a CPU, whether they are threads of one process or processes of one user (an
executor's worker processes): each CPU of the trusted process's mask has a lock file in a per-user
directory, and a run takes the first CPUs it can `flock` without waiting, starting at an offset
drawn from the pid so that processes start apart. A lock goes with the process holding it, so a
killed trainer frees its CPUs. With more runs than CPUs a run shares the CPUs this process uses
least, and says so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import tempfile
import threading
from collections import Counter

log = logging.getLogger(__name__)


class CpuPicker:
    """Thread-safe; one per process (see `take`). `directory`: where the lock files live."""

    def __init__(self, directory: str | None = None) -> None:
        self.cpus = sorted(os.sched_getaffinity(0))
        self._start = os.getpid() % len(self.cpus)
        self._directory = directory or os.path.join(tempfile.gettempdir(), f"ttd-cpus-{os.getuid()}")
        self._usable = _private_directory(self._directory)
        self._fds: dict[int, int] = {}
        self._uses: Counter[int] = Counter()  # CPU -> this process's runs on it
        self._locked: set[int] = set()  # CPUs whose lock this process holds
        self._lock = threading.Lock()

    def take(self, count: int) -> tuple[list[int], bool]:
        """`count` CPUs for one run, and whether other runs may use them too (not enough free CPUs)."""
        if count >= len(self.cpus):
            return list(self.cpus), True
        with self._lock:
            order = self.cpus[self._start:] + self.cpus[:self._start]
            picked: list[int] = []
            for cpu in order:
                if len(picked) == count:
                    break
                if self._uses[cpu] == 0 and self._try_lock(cpu):
                    picked.append(cpu)
            shared = len(picked) < count
            if shared:  # every CPU is taken: share the ones this process uses least
                rest = sorted((cpu for cpu in order if cpu not in picked), key=lambda cpu: self._uses[cpu])
                picked += rest[:count - len(picked)]
            self._uses.update(picked)
            return sorted(picked), shared

    def give_back(self, cpus: list[int]) -> None:
        if len(cpus) >= len(self.cpus):
            return
        with self._lock:
            self._uses.subtract(cpus)
            for cpu in cpus:
                if self._uses[cpu] <= 0 and cpu in self._locked:
                    fcntl.flock(self._fds[cpu], fcntl.LOCK_UN)
                    self._locked.discard(cpu)

    def close(self) -> None:
        """Drop the lock files' descriptors (in a forked child: the parent's locks stay the parent's)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _try_lock(self, cpu: int) -> bool:
        if not self._usable:
            return True  # no lock directory: spread within this process only
        if cpu not in self._fds:
            try:
                self._fds[cpu] = os.open(os.path.join(self._directory, str(cpu)),
                                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                log.warning("CPU pinning: cannot open a lock in %s (%s); runs are spread within this process only",
                            self._directory, exc)
                self._usable = False
                return True
        try:
            fcntl.flock(self._fds[cpu], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._locked.add(cpu)
        return True


def _private_directory(path: str) -> bool:
    """Make `path` ours alone (0700); False, logged, if it is someone else's or not a directory
    (another user of a shared /tmp could otherwise hold or fake our CPUs' locks)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        log.warning("CPU pinning: cannot use %s (%s); runs are spread within this process only", path, exc)
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        log.warning("CPU pinning: %s is not a private directory of uid %d; runs are spread within this process "
                    "only", path, os.getuid())
        return False
    return True


_picker: CpuPicker | None = None
_picker_lock = threading.Lock()


def take(count: int) -> tuple[list[int], bool]:
    """`CpuPicker.take` on this process's picker."""
    global _picker
    with _picker_lock:
        if _picker is None:
            _picker = CpuPicker()
    return _picker.take(count)


def give_back(cpus: list[int]) -> None:
    if _picker is not None:
        _picker.give_back(cpus)


def _forget_in_child() -> None:
    global _picker
    if _picker is not None:
        _picker.close()
    _picker = None


os.register_at_fork(after_in_child=_forget_in_child)
