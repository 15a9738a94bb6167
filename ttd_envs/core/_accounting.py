"""Init's whole-run accounting where no cgroup does it (the fallback mode; see `_zygote.py`).

Init of the run's pid namespace polls every process in it and the kernel's socket tables of its
network namespace. What a program can do to hide from that, and how each is read anyway:
- a process that is not dumpable (`prctl(PR_SET_DUMPABLE, 0)`, or exec of an unreadable binary)
  has a `smaps_rollup` init may not read: it is charged from `status` instead (world-readable;
  full resident anonymous + shared set, not the proportional share: hiding costs more);
- a thread group whose leader has exited (`pthread_exit`) has no memory map under its pid: it is
  read through any live thread, `/proc/PID/task/TID/...`;
- socket buffers are kernel memory no process map shows: every unix and netlink socket of the
  namespace is asked for its queued bytes through `sock_diag` (what the kernel charges them);
- memfds (only where a problem's grant allows them, e.g. for CUDA): each file held open by a
  process of the run counts once, its allocated size read through `/proc/PID/fd` (a mapped one
  counts in the map too: hiding costs more); the seccomp filter refuses descriptor passing, so
  none is kept in flight in a socket, outside every table.
What no process table shows at all (SysV and POSIX shared memory and message queues, memfds
without the grant) the seccomp filter refuses instead.
"""

from __future__ import annotations

import os
import resource
import socket
import struct

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY = 4, 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_HEADER = struct.Struct("IHHII")  # nlmsghdr
_ATTR = struct.Struct("HH")  # rtattr: length, type
# sk_meminfo: rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc, wmem_queued, optmem, backlog, drops
_SK_MEMINFO = struct.Struct("9I")
# family -> (dump request body, length of the per-socket header, type of the meminfo attribute)
_DIAG_REQUESTS = {
    "unix": (struct.pack("BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, 0x20, 0, 0), 16, 5),  # UDIAG_SHOW_MEMINFO
    "netlink": (struct.pack("BBHIIII", socket.AF_NETLINK, 255, 0, 0, 1, 0, 0), 28, 0),  # NDIAG_SHOW_MEMINFO
}


def _kib_fields(path: str, names: tuple[str, ...]) -> int | None:
    """Sum of the `names` lines (in kB) of a /proc file, or None if unreadable or without them."""
    try:
        with open(path) as handle:
            values = [int(line.split()[1]) for line in handle if line.startswith(names)]
    except (OSError, ValueError, IndexError):
        return None
    return sum(values) * 1024 if values else None


def process_memory(pid: str) -> int:
    """Proportional anonymous + shared memory of one thread group, read around what hides it."""
    rollup = ("Pss_Anon:", "Pss_Shmem:")
    found = _kib_fields(f"/proc/{pid}/smaps_rollup", rollup)
    if found is not None:
        return found
    try:
        threads = [f"/proc/{pid}/task/{tid}" for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return 0  # gone
    for base in threads:  # a zombie leader: any live thread shares the group's memory
        found = _kib_fields(f"{base}/smaps_rollup", rollup)
        if found is not None:
            return found
    for base in (f"/proc/{pid}", *threads):  # not dumpable: the full resident set, which anyone may read
        found = _kib_fields(f"{base}/status", ("RssAnon:", "RssShmem:"))
        if found is not None:
            return found
    return 0


def open_memfds(pid: str) -> dict[tuple[int, int], int]:
    """(device, inode) -> allocated bytes of every memfd the thread group holds open, read from
    each thread (a thread cloned without CLONE_FILES has a table of its own; a zombie leader has
    none). PermissionError: init may not read a table (an exec of a binary it cannot read made
    the process undumpable)."""
    found: dict[tuple[int, int], int] = {}
    try:
        tables = [f"/proc/{pid}/task/{tid}/fd" for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return found  # gone
    for table in tables:
        try:
            names = os.listdir(table)
        except PermissionError:
            if _settled(table.removesuffix("/fd")):
                raise
            continue
        except OSError:
            continue  # the thread exited meanwhile
        for name in names:
            try:
                if os.readlink(f"{table}/{name}").startswith("/memfd:"):
                    info = os.stat(f"{table}/{name}")
                    found[(info.st_dev, info.st_ino)] = info.st_blocks * 512
            except OSError:
                continue  # closed meanwhile
    return found


def _settled(task: str) -> bool:
    """A live thread that is the program proper: capabilities dropped, not exiting. (Just forked
    from init, a process is not yet dumpable; a zombie or exiting one holds no descriptors.)"""
    try:
        with open(f"{task}/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return fields["State"].split()[0] not in ("Z", "X") and int(fields["CapEff"], 16) == 0
    except (OSError, KeyError, ValueError, IndexError):
        return False


class NamespaceMeter:
    """CPU time and memory of every process of the run but init (reaped ones' CPU included), plus
    the socket buffers of its network namespace. Create it in init, before the program exists."""

    def __init__(self, count_memfds: bool = False) -> None:
        self.count_memfds = count_memfds
        self.hidden = False  # a process hid what it holds: the run cannot be bounded and must stop
        self._unreadable: set[str] = set()  # seen so in the last poll (once may be a race with exec)
        try:
            self._diag: socket.socket | None = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                                             _NETLINK_SOCK_DIAG)
        except OSError:
            self._diag = None
        self.socket_families = [name for name in _DIAG_REQUESTS if self._socket_bytes(name) is not None]

    def usage(self) -> tuple[float, int]:
        cpu_ticks, memory = 0, 0
        memfds: dict[tuple[int, int], int] = {}
        unreadable = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or entry == "1":
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
                cpu_ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            memory += process_memory(entry)
            if self.count_memfds:
                try:
                    memfds.update(open_memfds(entry))
                except PermissionError:
                    unreadable.add(entry)
        self.hidden = bool(unreadable & self._unreadable)
        self._unreadable = unreadable
        memory += sum(memfds.values()) + sum(self._socket_bytes(name) or 0 for name in self.socket_families)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cpu_ticks / _CLOCK_TICKS + reaped.ru_utime + reaped.ru_stime, memory

    def _socket_bytes(self, family: str) -> int | None:
        """Bytes queued in or charged to every socket of `family` in this network namespace, or
        None if the kernel cannot tell (no sock_diag for it)."""
        if self._diag is None:
            return None
        body, header_len, meminfo = _DIAG_REQUESTS[family]
        try:
            self._diag.send(_HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
                            + body)
            total = 0
            while True:
                data = self._diag.recv(1 << 16)
                offset = 0
                while offset + _HEADER.size <= len(data):
                    length, kind = _HEADER.unpack_from(data, offset)[:2]
                    if kind == _NLMSG_DONE:
                        return total
                    if kind == _NLMSG_ERROR or length < _HEADER.size:
                        return None
                    total += _meminfo_bytes(data, offset + _HEADER.size + header_len, offset + length, meminfo)
                    offset += (length + 3) & ~3
        except OSError:
            return None

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()


def _meminfo_bytes(data: bytes, start: int, end: int, meminfo: int) -> int:
    while start + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, start)
        if length < _ATTR.size:
            break
        if kind == meminfo and length >= _ATTR.size + _SK_MEMINFO.size:
            rmem, _, wmem, _, _, queued, _, backlog, _ = _SK_MEMINFO.unpack_from(data, start + _ATTR.size)
            return rmem + wmem + queued + backlog
        start += (length + 3) & ~3
    return 0
