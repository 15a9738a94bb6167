"""What closes the sandbox around a program; runs inside its namespaces (see `_zygote.py`).

- `build_view`: a fresh root (pivot_root) holding only what programs need, read-only: the OS's
  /usr and its root symlinks, a few /etc files the dynamic loader reads, the interpreter with its
  import path wherever it lives (minus our own packages: programs must not read the problems'
  source or data), a handful of /dev nodes and what the problem grants. The only writable place
  is one tmpfs, capped in total, seen as /tmp, /var/tmp and /dev/shm. No host file outside the
  view is reachable by path, so neither are host unix sockets.
- `drop_privileges`: the program keeps no capability (in a user namespace it would otherwise be
  root there), cannot regain one by exec, and cannot read init's descriptors.
- `restrict_syscalls`: a seccomp filter refusing what could undo the above (mount, namespaces,
  ptrace, ...) and, where no cgroup counts it, memory the fallback accounting cannot see.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import stat
import struct
import sys
from dataclasses import dataclass

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
_ST_TO_MS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME,
             4096: MS_RELATIME}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 38, 22, 24, 28
# keep no root privileges across exec/setuid, locked
SECUREBITS_LOCKED_NOROOT = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80

SYSTEM_PATHS = ("/usr",)
# small files the dynamic loader and libc read: copied into the view (cheaper than a bind each)
SYSTEM_COPIES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
STAGING = "/tmp"  # where the new root is assembled, inside our private mount namespace

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def prctl(option: int, *args: object) -> int:
    """prctl with every argument passed at full width (ints as unsigned long)."""
    padded = [ctypes.c_ulong(a) if isinstance(a, int) else a for a in (*args, 0, 0, 0, 0)[:4]]
    return _libc.prctl(ctypes.c_int(option), *padded)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


@dataclass(frozen=True)
class ViewPlan:
    """Everything `build_view` binds, decided once in the zygote (absolute, real paths)."""

    read_only: tuple[str, ...]
    devices: tuple[str, ...]
    hidden: tuple[str, ...]  # files or directories inside a bound path that stay invisible
    cache_dir: str | None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _outermost(paths: set[str]) -> list[str]:
    ordered = sorted(paths, key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for path in ordered:
        if not any(_within(path, outer) for outer in kept):
            kept.append(path)
    return kept


def runtime_paths() -> list[str]:
    """The interpreter's prefixes and import path, wherever they live (a venv under /tmp too).
    Other sys.path entries (the checkout on PYTHONPATH, the working dir) are left out."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    wanted = set(prefixes)
    for entry in sys.path:
        if entry and (any(_within(entry, p) for p in prefixes) or entry.rstrip("/").endswith(
                ("site-packages", "dist-packages"))):
            wanted.add(entry)
    real = {os.path.realpath(p) for p in wanted if os.path.exists(p)}
    return [p for p in _outermost(real) if p != "/"]


def plan_view(read_only_grants: tuple[str, ...], device_grants: tuple[str, ...], writable_cache: bool,
              cache_dir: str, private_packages: tuple[str, ...], hidden_grants: tuple[str, ...] = ()) -> ViewPlan:
    """Resolve the view: raises ValueError when a grant names nothing (fail loudly, not open)."""
    granted = []
    for path in read_only_grants:
        if not os.path.exists(path):
            raise ValueError(f"granted read-only path {path!r} does not exist; fix Grants.read_only_paths")
        granted.append(os.path.realpath(path))
    devices = [d for d in DEVICES if os.path.exists(d)]
    for pattern in device_grants:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise ValueError(f"granted device {pattern!r} matches no device node; fix Grants.devices")
        devices += matches
    system = {p for p in SYSTEM_PATHS if os.path.exists(p)}
    system |= {f"/{name}" for name in ROOT_LINKS if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")}
    read_only = _outermost(system | set(runtime_paths()) | set(granted))
    hidden = tuple(sorted({os.path.realpath(p) for p in (*private_packages, *hidden_grants)
                           if os.path.exists(p) and any(_within(os.path.realpath(p), r) for r in read_only)}))
    return ViewPlan(tuple(read_only), tuple(dict.fromkeys(devices)), hidden, cache_dir if writable_cache else None)


def _locked_flags(path: str) -> int:
    """Mount flags a read-only remount must keep (a user namespace may not clear them)."""
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if flags & st)


def _bind(fd: int, target: str, read_only: bool) -> None:
    """Bind what `fd` (O_PATH, opened before /tmp was covered) names at `target`; read-only ones
    are remounted read-only, nosuid, nodev (device nodes stay as they are)."""
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_RDONLY | _locked_flags(target))


def _copy(source: str, target: str) -> None:
    """Copy a small file, symlink or flat directory of them into the view (skip what is absent)."""
    if os.path.islink(source):
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
        for name in os.listdir(source):
            if os.path.islink(f"{source}/{name}") or os.path.isfile(f"{source}/{name}"):
                _copy(f"{source}/{name}", f"{target}/{name}")
    elif os.path.isfile(source):
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        with open(source, "rb") as reader, open(target, "wb") as writer:
            writer.write(reader.read(1 << 20))
        os.chmod(target, 0o644)


def build_view(plan: ViewPlan, workdir: str) -> list[str]:
    """Replace the mount namespace's root with the closed view; return what was applied.

    Needs a private mount namespace and a pid namespace (for the fresh /proc)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in (*plan.read_only, *plan.devices)}
    new = STAGING
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    # the one writable tmpfs, seen at three places; sized per job by `size_writable`
    os.mkdir(f"{new}/tmp")
    mount("tmpfs", f"{new}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=65536,mode=1777")
    os.close(os.open(f"{new}/tmp/.empty", os.O_WRONLY | os.O_CREAT, 0o444))  # what hidden files show
    for place in WRITABLE[1:]:
        own = f"{new}/tmp/.{place.strip('/').replace('/', '-')}"
        os.mkdir(own, 0o1777)
        os.chmod(own, 0o1777)
        os.makedirs(f"{new}{place}", 0o755, exist_ok=True)
        mount(own, f"{new}{place}", None, MS_BIND)
    for name in ROOT_LINKS:
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), f"{new}/{name}")
    for path in sorted(plan.read_only, key=len):
        _bind(sources[path], new + path, read_only=True)
    for path in plan.devices:
        _bind(sources[path], new + path, read_only=False)
    for path in SYSTEM_COPIES:
        _copy(path, new + path)
    for path in plan.hidden:  # an empty directory, or an empty file, over it
        if os.path.isdir(new + path):
            mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555")
        else:
            mount(f"{new}/tmp/.empty", new + path, None, MS_BIND)
            mount(None, new + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{link}")
    os.makedirs(f"{new}/proc", 0o555)
    mount("proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(new + workdir, 0o700)
    if plan.cache_dir:
        os.makedirs(new + plan.cache_dir, 0o700)
    for fd in sources.values():
        os.close(fd)
    os.chdir(new)
    os.mkdir(".old")
    _check(_libc.syscall(ctypes.c_long(_PIVOT_ROOT[platform.machine()]), b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount the host root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return ["closed filesystem view (read-only runtime; no host files, sockets or package source)",
            "private /proc", "private tmpfs /tmp, /var/tmp, /dev/shm (one size cap in total)"]


def seal_proc() -> None:
    """Make the run's /proc read-only (where init accounts the run): no `clear_refs`, which resets
    the peak resident set the kernel keeps per process (and so the ru_maxrss init reports), and no
    other /proc write. A per-mount flag: the program, without capabilities, cannot undo it."""
    mount(None, "/proc", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def size_writable(size_bytes: int) -> None:
    """Cap the run's one writable tmpfs (it backs /tmp, /var/tmp and /dev/shm together)."""
    mount(None, "/tmp", None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={size_bytes},nr_inodes=65536")


def drop_privileges(uid: int | None) -> None:
    """Leave no capability: switch to `uid` (root mode) or stay uid 0 of our user namespace, either
    way with an empty bounding set and securebits that make exec and setuid grant nothing."""
    for cap in range(64):
        if prctl(PR_CAPBSET_DROP, cap) != 0:
            break  # past the last capability this kernel knows
    _check(prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_NOROOT), "set securebits")
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # effective, permitted, inheritable: all empty (two 32-bit words each)
    _check(_libc.syscall(ctypes.c_long(_CAPSET[platform.machine()]), header, data), "drop capabilities")
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "set no_new_privs")


# -- seccomp ---------------------------------------------------------------------------------
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_CAPSET = {"x86_64": 126, "aarch64": 91}
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
EPERM, ENOSYS = 1, 38
# x86_64 numbers: what could reopen the host or another process, or bypass the filter itself
_DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
    "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438,
    "mount_setattr": 442,
}
# memory no fallback accounting sees: memfds, SysV shared memory and message queues, POSIX
# message queues (tmpfs files are capped; socket buffers are read through sock_diag)
_UNCOUNTED_MEMORY_X86_64 = {"shmget": 29, "msgget": 68, "mq_open": 240, "memfd_create": 319, "memfd_secret": 447}
# where memfds are granted without a cgroup, init counts those in the run's descriptor tables and
# maps; a memfd in flight in a socket (SCM_RIGHTS) is in neither, so descriptors may not travel
_DESCRIPTOR_PASSING_X86_64 = {"sendmsg": 46, "sendmmsg": 307}
# where init pinned the run to its CPUs (no cgroup CPU quota), the program may not widen the mask
_AFFINITY_X86_64 = {"sched_setaffinity": 203}
_CLONE, _CLONE3 = 56, 435
_PRCTL, _PR_SET_DUMPABLE = 157, 4
_CLONE_NEW_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(deny_uncounted_memory: bool, memfd: bool = False, pinned: bool = False) -> bytes:
    """The BPF filter, x86_64 only: any other architecture's syscalls are killed outright.
    `memfd` (with `deny_uncounted_memory`): memfd_create allowed, descriptor passing refused.
    `pinned`: sched_setaffinity refused."""
    denied = dict(_DENIED_X86_64) | (_AFFINITY_X86_64 if pinned else {})
    if deny_uncounted_memory:
        denied.update(_UNCOUNTED_MEMORY_X86_64)
        if memfd:
            del denied["memfd_create"]
            denied.update(_DESCRIPTOR_PASSING_X86_64)
    code = [_instruction(_LD_W_ABS, 4), _instruction(_JEQ, _AUDIT_ARCH_X86_64, jt=1),
            _instruction(_RET, _RET_KILL_PROCESS), _instruction(_LD_W_ABS, 0),
            _instruction(_JGE, _X32_BIT, jf=1), _instruction(_RET, _RET_ERRNO | EPERM)]
    for number in sorted(denied.values()):
        code += [_instruction(_JEQ, number, jf=1), _instruction(_RET, _RET_ERRNO | EPERM)]
    if deny_uncounted_memory:  # a process that is not dumpable may hide its descriptors and maps from init
        code += [_instruction(_JEQ, _PRCTL, jf=4), _instruction(_LD_W_ABS, 16),  # prctl's option
                 _instruction(_JEQ, _PR_SET_DUMPABLE, jf=1), _instruction(_RET, _RET_ERRNO | EPERM),
                 _instruction(_RET, _RET_ALLOW)]
    code += [_instruction(_JEQ, _CLONE3, jf=1), _instruction(_RET, _RET_ERRNO | ENOSYS)]  # glibc falls back
    code += [_instruction(_JEQ, _CLONE, jf=3), _instruction(_LD_W_ABS, 16),  # clone's flags
             _instruction(_JSET, _CLONE_NEW_NAMESPACES, jf=1), _instruction(_RET, _RET_ERRNO | EPERM),
             _instruction(_RET, _RET_ALLOW)]
    return b"".join(code)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_supported() -> bool:
    return platform.machine() == "x86_64"


def restrict_syscalls(deny_uncounted_memory: bool, memfd: bool = False, pinned: bool = False) -> None:
    """Install the filter (no_new_privs must be set); it holds across exec and fork."""
    program = seccomp_program(deny_uncounted_memory, memfd, pinned)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    _check(prctl(PR_SET_SECCOMP, 2, ctypes.byref(fprog)), "install the seccomp filter")

