"""The warm, pre-imported fork server behind `sandbox.Sandbox`, and what runs in its children.

Process tree of one run (see sandbox.py for the why):

    zygote (scrubbed env, numpy/scipy imported) keeps a few spares ready, each:
      └─ runner: setsid, unshare(pid, net, mount, ipc), waits for init
           └─ init (pid 1 of the new pid namespace): fresh /proc, tmpfs /tmp; blocks for a job,
              then forks the program, reaps orphans and reports how the program ended
                └─ program: unique unprivileged uid, rlimits, runs the Python entry or execs a binary

A job arrives as descriptors only (pipes, a memfd with its JSON, memfds with input arrays, stdin,
the binary), so everything before "fork the program" happens before the job exists: a run costs
one fork. When init exits, the kernel kills whatever is left in the namespace, so nothing escapes
by double-forking. Only plain bytes leave the tree: pipes for stdout, stderr, result and status.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import json
import tempfile
import os
import resource
import shutil
import signal
import socket
import sys
import traceback
import types
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
UID_BASE = 1_000_000
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
WORKDIR = "/tmp/work"
CHANNELS = ("stdout", "stderr", "result", "status", "job")
PROGRAM_FD_STDOUT, PROGRAM_FD_STDERR, PROGRAM_FD_RESULT = 1, 2, 3

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                    data.encode() if data else None),
        f"mount {target}",
    )


def _write_status(fd: int, **fields: object) -> None:
    os.write(fd, (json.dumps(fields) + "\n").encode())


def _enter_namespaces(isolation: list[str], warnings: list[str]) -> int:
    """unshare what the kernel allows; return the flags that took effect."""
    base = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC
    attempts = [base] if os.geteuid() == 0 else [base | CLONE_NEWUSER]
    attempts += [CLONE_NEWPID | CLONE_NEWNS | (0 if os.geteuid() == 0 else CLONE_NEWUSER), CLONE_NEWNET]
    uid, gid = os.getuid(), os.getgid()
    for flags in attempts:
        if _libc.unshare(ctypes.c_int(flags)) == 0:
            if flags & CLONE_NEWUSER:
                for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                                   ("/proc/self/gid_map", f"0 {gid} 1")):
                    with open(path, "w") as handle:
                        handle.write(text)
            names = {CLONE_NEWPID: "pid namespace", CLONE_NEWNET: "network namespace (no network)",
                     CLONE_NEWNS: "mount namespace", CLONE_NEWIPC: "ipc namespace", CLONE_NEWUSER: "user namespace"}
            isolation += [name for bit, name in names.items() if flags & bit]
            if not flags & CLONE_NEWNET:
                warnings.append("network isolation could not be applied: the program may reach the network")
            if not flags & CLONE_NEWPID:
                warnings.append("pid namespace unavailable: processes that detach may outlive the run")
            return flags
    warnings.append("namespaces unavailable (unshare refused): no network isolation, no pid namespace")
    return 0


def _runtime_paths() -> list[str]:
    """Directories the program must be able to read: the interpreter and its import path."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path}
    return sorted({os.path.realpath(p) for p in candidates if p and os.path.isdir(p)})


def _hidden_ancestor(path: str) -> str | None:
    """The top-most ancestor of `path` that others cannot traverse (e.g. /root, mode 0700)."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _expose_runtime(isolation: list[str]) -> None:
    """Cover private homes that hold the interpreter with an empty tmpfs, then bind back, read-only,
    only the interpreter and its import path; the rest of those homes stays invisible."""
    needed: dict[str, list[str]] = {}
    for path in _runtime_paths():
        top = _hidden_ancestor(path)
        if top is not None:
            needed.setdefault(top, []).append(path)
    for top, paths in needed.items():
        handles = {p: os.open(p, os.O_PATH) for p in paths if not any(p.startswith(q + "/") for q in paths)}
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path, handle in handles.items():
            os.makedirs(path, 0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            _mount("none", path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
            os.close(handle)
        isolation.append(f"{top} hidden except the Python runtime (read-only)")


def _prepare_filesystem(flags: int, isolation: list[str], private_uid: int | None) -> str | None:
    """Private /proc and tmpfs over the world-writable dirs; return the work dir (None: no mount ns)."""
    if not flags & CLONE_NEWNS:
        return None
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    if private_uid is not None:
        _expose_runtime(isolation)
    if flags & CLONE_NEWPID:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        isolation.append("private /proc")
    for path in TMPFS_DIRS:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
    isolation.append("private tmpfs /tmp, /var/tmp, /dev/shm")
    os.mkdir(WORKDIR, 0o700)
    return WORKDIR


def _size_filesystem(job: dict) -> None:
    """The job decides how much its tmpfs may hold."""
    for path in TMPFS_DIRS:
        if os.path.ismount(path):
            _mount("tmpfs", path, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={int(job['limits']['disk_bytes'])}")


def _load_inputs(job: dict, fds: list[int]) -> dict:
    import numpy as np

    values = dict(job.get("json_inputs") or {})
    for name, index in (job.get("array_inputs") or {}).items():
        with os.fdopen(os.dup(fds[index]), "rb") as handle:
            values[name] = np.load(handle, allow_pickle=False)
    return values


def _apply_limits(job: dict, uid: int | None) -> None:
    limits = job["limits"]
    memory = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["disk_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if limits.get("cpu_s"):
        soft = max(1, int(-(-float(limits["cpu_s"]) // 1)))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    nproc = int(limits["max_processes"])
    if uid is None:  # could not switch to a private uid: count from what this user already runs
        nproc += _count_own_tasks()
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if limits.get("nice"):
        os.nice(int(limits["nice"]))


def _count_own_tasks() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += len(os.listdir(f"/proc/{entry}/task")) if os.stat(f"/proc/{entry}").st_uid == uid else 0
            except OSError:
                pass
    return count


def _program_main(job: dict, fds: dict[str, int], workdir: str, inputs: dict, private_uid: int | None) -> None:
    """Runs as the untrusted program. Never returns."""
    wanted = [fds["stdin"], fds["stdout"], fds["stderr"], fds["result"]] + ([fds["binary"]] if "binary" in fds else [])
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in wanted]  # out of the way of 0..4
    for target, fd in enumerate(high):
        os.dup2(fd, target)  # dup2 clears close-on-exec on the target
    os.closerange(len(high), 65536)
    binary_fd = 4 if "binary" in fds else -1
    if binary_fd >= 0:
        fcntl.fcntl(binary_fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    if private_uid is not None:
        os.chown(workdir, private_uid, private_uid)
        os.setgroups([])
        os.setgid(private_uid)
        os.setuid(private_uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(workdir)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
           **{k: str(job["threads"]) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                               "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    _apply_limits(job, private_uid)
    if binary_fd >= 0:
        os.close(PROGRAM_FD_RESULT)
        os.execve(binary_fd, [job["binary_name"], *job.get("argv", [])], env)
    os.environ.clear()
    os.environ.update(env)
    _run_python(job, workdir, inputs)


def _run_python(job: dict, workdir: str, inputs: dict) -> None:
    from ttd_envs.core import wire

    sys.stdout = open(PROGRAM_FD_STDOUT, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(PROGRAM_FD_STDERR, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    path = os.path.join(workdir, "program.py")
    with open(path, "w") as handle:
        handle.write(job["source"])
    module = types.ModuleType("program")
    module.__file__ = path
    module.__dict__.update(inputs)
    for alias, target in job.get("preset_modules", {}).items():
        module_name, _, attribute = target.partition(":")
        imported = importlib.import_module(module_name)
        module.__dict__[alias] = getattr(imported, attribute) if attribute else imported
    sys.modules["program"] = module
    sys.path.insert(0, workdir)
    try:
        exec(compile(job["source"], path, "exec"), module.__dict__)  # noqa: S102 - the sandbox's purpose
        entry = module.__dict__.get(job["entry"])
        if not callable(entry):
            raise NameError(f"the program must define a function `{job['entry']}`")
        message = wire.encode(entry(**job.get("kwargs", {})))
    except SystemExit as exc:
        message = wire.encode_error(f"the program called sys.exit({exc.code!r}) instead of returning a result")
    except MemoryError:
        limit_gib = int(job["limits"]["memory_bytes"]) / 2**30
        message = wire.encode_error(f"MemoryError: the program exceeded its memory limit of {limit_gib:.2g} GiB")
    except wire.WireError as exc:
        message = wire.encode_error(f"invalid return value: {exc}")
    except BaseException as exc:  # noqa: BLE001 - report anything the program raised
        message = wire.encode_error(_program_traceback(exc, path))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        _write_all(PROGRAM_FD_RESULT, message)
    except OSError:
        os._exit(3)
    os._exit(0)


def _program_traceback(exc: BaseException, path: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    lines = traceback.format_list(frames[-8:]) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).replace(path, "program.py").strip()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _receive_job(sock: socket.socket) -> tuple[dict, dict[str, int], list[int]]:
    message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 253)
    if not message or len(fds) < len(CHANNELS):
        os._exit(0)  # the zygote shut down before handing us a job
    named = dict(zip(CHANNELS, fds))
    with os.fdopen(os.dup(named["job"]), "rb") as handle:
        job = json.load(handle)
    extra = fds[len(CHANNELS):]
    for key in ("stdin", "binary"):
        if job.get(key) is not None:
            named[key] = extra[job[key]]
    return job, named, extra


def _init_main(sock: socket.socket, flags: int, isolation: list[str], warnings: list[str],
               private_uid: int | None) -> None:
    """pid 1 of the namespace: set up, wait for a job, run the program, reap, report. Never returns."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    setup_error = None
    try:
        workdir = _prepare_filesystem(flags, isolation, private_uid)
    except Exception as exc:  # noqa: BLE001 - reported once a job arrives
        setup_error, workdir = f"sandbox setup failed: {exc}", None
    job, fds, extra = _receive_job(sock)
    sock.close()
    status_fd = fds["status"]
    try:
        if setup_error:
            raise RuntimeError(setup_error)
        inputs = _load_inputs(job, extra) if job.get("source") is not None else {}
        if workdir is None:  # no mount namespace: a host temp dir the trusted side removes
            workdir = tempfile.mkdtemp(prefix="ttd-sandbox-work-")
            isolation.append("private temp dir (host /tmp)")
        else:
            _size_filesystem(job)
        fds.setdefault("stdin", os.open(os.devnull, os.O_RDONLY))
    except Exception as exc:  # noqa: BLE001 - report setup failures as data
        _write_status(status_fd, phase="setup_failed", error=str(exc))
        os._exit(1)
    if private_uid is not None:
        isolation.append(f"private uid {private_uid}")
    _write_status(status_fd, phase="started", isolation=isolation, warnings=warnings,
                  host_workdir=workdir if workdir != WORKDIR else None)
    program = os.fork()
    if program == 0:
        try:
            os.close(status_fd)
            _program_main(job, fds, workdir, inputs, private_uid)
        except BaseException as exc:  # noqa: BLE001
            os.write(fds["stderr"], f"sandbox could not start the program: {exc}\n".encode())
        os._exit(127)
    for name in ("stdout", "stderr", "result"):
        os.close(fds[name])
    while True:
        pid, wait_status, usage = os.wait4(-1, 0)
        if pid == program:
            break
    if workdir != WORKDIR:
        shutil.rmtree(workdir, ignore_errors=True)
    _write_status(
        status_fd, phase="exited",
        exit_code=os.waitstatus_to_exitcode(wait_status) if os.WIFEXITED(wait_status) else None,
        signal=os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
        cpu_s=usage.ru_utime + usage.ru_stime, max_rss_bytes=usage.ru_maxrss * 1024,
    )
    os._exit(0)


def _runner_main(sock: socket.socket) -> None:
    """Child of the zygote: enter fresh namespaces, fork init, tell the zygote its pid, wait."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()
    isolation: list[str] = ["own session"]
    warnings: list[str] = []
    flags = _enter_namespaces(isolation, warnings)
    private_uid = UID_BASE + os.getpid() if os.geteuid() == 0 and not flags & CLONE_NEWUSER else None
    if private_uid is None:
        warnings.append("not running as root: the program keeps your uid (files you own are writable unless "
                        "a mount namespace hides them)")
    init = os.fork()
    if init == 0:
        _init_main(sock, flags, isolation, warnings, private_uid)
    sock.send(json.dumps({"init": init}).encode())
    sock.close()
    os.waitpid(init, 0)
    os._exit(0)


@dataclass
class _Spare:
    runner: int
    init: int
    sock: socket.socket


def _fork_spare(control: socket.socket) -> _Spare:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        control.close()
        ours.close()
        try:
            _runner_main(theirs)
        finally:
            os._exit(1)
    theirs.close()
    reply = ours.recv(256)
    return _Spare(runner=pid, init=json.loads(reply)["init"] if reply else -1, sock=ours)


def serve(control: socket.socket, pool_size: int) -> None:
    """Hand each job to a ready spare, reply with its pids, then top the pool up again.
    Exit when the trusted side hangs up."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runners are reaped by the kernel
    spares = [_fork_spare(control) for _ in range(pool_size)]
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 253)
        except (ConnectionError, OSError):
            return
        if not message:
            return
        spare = spares.pop(0)
        for attempt in range(2):
            try:
                socket.send_fds(spare.sock, [message], fds)
                break
            except OSError:  # the spare died (e.g. killed from outside): make another
                spare.sock.close()
                spare = _fork_spare(control)
                if attempt:
                    raise
        for fd in fds:
            os.close(fd)
        spare.sock.close()
        control.sendall(json.dumps({"runner": spare.runner, "init": spare.init}).encode())
        spares.append(_fork_spare(control))


def main() -> None:
    importlib.import_module("ttd_envs.core.wire")
    for module in sys.argv[3:]:
        importlib.import_module(module)
    serve(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=int(sys.argv[1])), pool_size=int(sys.argv[2]))


if __name__ == "__main__":
    main()
