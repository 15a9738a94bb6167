"""The warm, pre-imported fork server behind `sandbox.Sandbox`, and what runs in its children.

Process tree of one run (see sandbox.py for the why):

    zygote (scrubbed env, numpy/scipy and the problem's preset modules imported) keeps spares:
      └─ runner: setsid, unshare(pid, net, mount, ipc [, user]), waits for init
           └─ init (pid 1 of the new pid namespace, not dumpable): builds the closed view
              (`_confine.build_view`) and blocks for a job; then joins the run's cgroups (when
              the trusted side made some), forks the program, accounts the whole namespace when
              no cgroup does, kills what is left when the program ends, reaps, reports
                └─ program: no capabilities (a private uid as root), seccomp filter, rlimits;
                   runs the Python entry or execs a binary

A job arrives as descriptors only (pipes, a memfd with its JSON, memfds with input arrays, stdin,
the binary, the cgroups' `cgroup.procs`), so everything before "fork the program" happens before
the job exists: a run costs one fork. When init exits, the kernel kills whatever is left in the
namespace, so nothing escapes by double-forking. Only plain bytes leave the tree: pipes for
stdout, stderr, result and status; the trusted side validates the status, never trusts it.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import json
import os
import random
import resource
import signal
import socket
import sys
import traceback
import types
from dataclasses import dataclass

from ttd_envs.core import _confine
from ttd_envs.core._accounting import NamespaceMeter
from ttd_envs.core._confine import ViewPlan, prctl

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
UID_BASE = 1_000_000
WORKDIR = "/tmp/work"
CHANNELS = ("stdout", "stderr", "result", "status", "job")
PROGRAM_FD_STDOUT, PROGRAM_FD_STDERR, PROGRAM_FD_RESULT = 1, 2, 3
POLL_S = 0.05  # how often init checks the whole run's CPU time and memory without cgroups

_libc = ctypes.CDLL(None, use_errno=True)


def _write_status(fd: int, **fields: object) -> None:
    os.write(fd, (json.dumps(fields) + "\n").encode())


def _enter_namespaces(isolation: list[str]) -> int:
    """unshare every namespace the sandbox needs, or raise: without them there is no closed view."""
    flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | (0 if os.geteuid() == 0 else CLONE_NEWUSER)
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise OSError(ctypes.get_errno(), "the sandbox needs pid, network, mount and IPC namespaces (as root, or "
                      "as any user with unprivileged user namespaces: sysctl user.max_user_namespaces > 0): "
                      + os.strerror(ctypes.get_errno()))
    if flags & CLONE_NEWUSER:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                           ("/proc/self/gid_map", f"0 {gid} 1")):
            with open(path, "w") as handle:
                handle.write(text)
        isolation.append("user namespace (unprivileged mode)")
    isolation += ["pid namespace", "network namespace (no network)", "mount namespace", "ipc namespace"]
    return flags


def _load_inputs(job: dict, fds: list[int]) -> dict:
    import numpy as np

    values = dict(job.get("json_inputs") or {})
    for name, index in (job.get("array_inputs") or {}).items():
        with os.fdopen(os.dup(fds[index]), "rb") as handle:
            values[name] = np.load(handle, allow_pickle=False)
    return values


def _apply_limits(job: dict, private_uid: int | None) -> None:
    limits = job["limits"]
    if job.get("address_space_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (int(job["address_space_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["disk_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if limits.get("cpu_s"):
        soft = max(1, int(-(-float(limits["cpu_s"]) // 1)))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    # a private uid counts only this run's tasks; in a fresh user namespace the count is per
    # namespace too, where the runner and init are two of them
    nproc = int(limits["max_processes"]) + (0 if private_uid is not None else 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if limits.get("nice"):
        os.nice(int(limits["nice"]))


def _program_main(job: dict, fds: dict[str, int], inputs: dict, private_uid: int | None, plan: ViewPlan) -> None:
    """Runs as the untrusted program. Never returns."""
    prctl(PR_SET_DUMPABLE, 1)  # forked from init, which is not: init must read our /proc files to account us
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    fourth = [fds[key] for key in ("binary", "channel") if key in fds]  # a binary, or a Python run's channel
    wanted = [fds["stdin"], fds["stdout"], fds["stderr"], fds["result"]] + fourth
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in wanted]  # out of the way of 0..4
    for target, fd in enumerate(high):
        os.dup2(fd, target)  # dup2 clears close-on-exec on the target
    os.closerange(len(high), 65536)
    binary_fd = 4 if "binary" in fds else -1
    if binary_fd >= 0:
        fcntl.fcntl(binary_fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    if private_uid is not None:
        for path in (WORKDIR, plan.cache_dir):
            if path:
                os.chown(path, private_uid, private_uid)
    _confine.drop_privileges(private_uid)
    prctl(PR_SET_DUMPABLE, 1)  # again: a change of uid resets it
    if _confine.seccomp_supported():
        _confine.restrict_syscalls(deny_uncounted_memory=not job.get("cgroup_procs"), memfd=bool(job.get("memfd")),
                                   pinned=bool(job.get("cpus")))
    os.chdir(WORKDIR)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8",
           **{k: str(job["threads"]) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                               "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    if plan.cache_dir:
        env.update(XDG_CACHE_HOME=plan.cache_dir, TTD_CACHE_DIR=plan.cache_dir)
    env.update(job.get("env") or {})
    _apply_limits(job, private_uid)
    if binary_fd >= 0:
        os.close(PROGRAM_FD_RESULT)
        os.execve(binary_fd, [job["binary_name"], *job.get("argv", [])], env)
    os.environ.clear()
    os.environ.update(env)
    _run_python(job, WORKDIR, inputs)


def _reseed_inherited_generators() -> None:
    """Every run is a fork of one zygote, so unseeded generators (random, numpy's legacy global)
    would replay the same stream in every program: draw their state from the OS instead."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _run_python(job: dict, workdir: str, inputs: dict) -> None:
    from ttd_envs.core import wire

    _reseed_inherited_generators()

    sys.stdout = open(PROGRAM_FD_STDOUT, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(PROGRAM_FD_STDERR, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    path = os.path.join(workdir, "program.py")
    with open(path, "w") as handle:
        handle.write(job["source"])
    module = types.ModuleType("program")
    module.__file__ = path
    module.__dict__.update(inputs)
    sys.modules["program"] = module
    sys.path.insert(0, workdir)
    try:
        for alias, target in job.get("preset_modules", {}).items():
            module_name, _, attribute = target.partition(":")
            imported = importlib.import_module(module_name)
            module.__dict__[alias] = getattr(imported, attribute) if attribute else imported
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
    for key in ("stdin", "binary", "channel"):
        if job.get(key) is not None:
            named[key] = extra[job[key]]
    return job, named, extra


def _wait_accounting(program: int, limits: dict, meter: NamespaceMeter) -> tuple[int | None, str | None, int]:
    """Wait for the program while accounting the whole namespace (no cgroup does it for us):
    return (its wait status or None if we killed it, which limit it passed, peak memory)."""
    cpu_limit = float(limits["cpu_s"]) if limits.get("cpu_s") else None
    memory_limit = int(limits["memory_bytes"])
    peak = 0
    # the first reading waits one period (or the program's exit): read at once, it took CPU from
    # the just-forked program (the same CPU where the run is pinned), and most runs end before it
    signal.sigtimedwait([signal.SIGCHLD], POLL_S)
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None, None, peak
            if pid == 0:
                break
            if pid == program:
                return status, None, peak
        cpu, memory = meter.usage()
        peak = max(peak, memory)
        if meter.hidden:
            return None, "hidden", peak
        if cpu_limit is not None and cpu > cpu_limit:
            return None, "cpu", peak
        if memory > memory_limit:
            return None, "memory", peak
        signal.sigtimedwait([signal.SIGCHLD], POLL_S)


def _init_main(sock: socket.socket, isolation: list[str], private_uid: int | None, plan: ViewPlan,
               setup_error: str | None) -> None:
    """pid 1 of the namespace: close the view, wait for a job, run the program, account, reap,
    report. Never returns."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_DUMPABLE, 0)  # no one in the run may open our descriptors through /proc/1/fd
    for number in (signal.SIGINT, signal.SIGTERM):  # pid 1 gets from its namespace only what it handles
        signal.signal(number, signal.SIG_DFL)
    if setup_error is None:
        try:
            isolation += _confine.build_view(plan, WORKDIR)
        except Exception as exc:  # noqa: BLE001 - reported once a job arrives
            setup_error = f"sandbox setup failed: {exc}"
    job, fds, extra = _receive_job(sock)
    sock.close()
    status_fd = fds["status"]
    try:
        if setup_error:
            raise RuntimeError(setup_error)
        for index in job.get("cgroup_procs") or []:
            os.write(extra[index], b"0")  # this process; its children follow it
        inputs = _load_inputs(job, extra) if job.get("source") is not None else {}
        _confine.size_writable(int(job["limits"]["disk_bytes"]))
        if not job.get("cgroup_procs"):
            _confine.seal_proc()  # no clear_refs: the kernel's peaks init reads stay peaks
        if job.get("cpus"):  # no cgroup CPU quota: the program inherits the mask and cannot widen it
            os.sched_setaffinity(0, job["cpus"])
        fds.setdefault("stdin", os.open(os.devnull, os.O_RDONLY))
    except Exception as exc:  # noqa: BLE001 - report setup failures as data
        _write_status(status_fd, phase="setup_failed", error=str(exc))
        os._exit(1)
    isolation.append("no capabilities, no_new_privs")
    if _confine.seccomp_supported():
        queues = "SysV or POSIX shared memory and message queues"
        uncounted = f"descriptor passing, {queues}; memfd granted" if job.get("memfd") else f"memfd, {queues}"
        affinity = ", sched_setaffinity" if job.get("cpus") else ""
        isolation.append("seccomp filter (no mount, namespaces, ptrace, bpf, keyrings" + affinity
                         + (")" if job.get("cgroup_procs") else f", {uncounted})"))
    meter = NamespaceMeter(count_memfds=bool(job.get("memfd"))) if not job.get("cgroup_procs") else None
    if meter is not None:
        sockets = (f"{' and '.join(meter.socket_families)} socket buffers included" if meter.socket_families
                   else "socket buffers NOT counted: no sock_diag")
        isolation.append(f"whole-run CPU and memory accounted by init every {POLL_S * 1e3:.0f} ms (no cgroup; "
                         f"{sockets})")
        isolation.append("read-only /proc (clear_refs cannot lower the kernel's peak)")
    if private_uid is not None:
        isolation.append(f"private uid {private_uid}")
    _write_status(status_fd, phase="started", isolation=isolation, warnings=[])
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    program = os.fork()
    if program == 0:
        try:
            os.close(status_fd)
            _program_main(job, fds, inputs, private_uid, plan)
        except BaseException as exc:  # noqa: BLE001
            os.write(fds["stderr"], f"sandbox could not start the program: {exc}\n".encode())
        os._exit(127)
    for fd in [fds[name] for name in ("stdout", "stderr", "result")] + extra:
        os.close(fd)
    peak, passed, wait_status = 0, None, None
    if meter is not None:
        wait_status, passed, peak = _wait_accounting(program, job["limits"], meter)
        meter.close()
    else:
        while wait_status is None:
            pid, status = os.waitpid(-1, 0)
            wait_status = status if pid == program else None
    _kill_namespace()
    while True:  # reap everything, so RUSAGE_CHILDREN holds the whole tree
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == program and wait_status is None:
            wait_status = status
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    ended = wait_status is not None
    _write_status(
        status_fd, phase="exited", limit=passed, 
        exit_code=os.waitstatus_to_exitcode(wait_status) if ended and os.WIFEXITED(wait_status) else None,
        signal=os.WTERMSIG(wait_status) if ended and os.WIFSIGNALED(wait_status) else None,
        cpu_s=usage.ru_utime + usage.ru_stime, max_rss_bytes=max(peak, usage.ru_maxrss * 1024),
    )
    os._exit(0)


def _kill_namespace() -> None:
    """SIGKILL every process of the run but init (kill(-1) from a namespace's init)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _runner_main(sock: socket.socket, plan: ViewPlan) -> None:
    """Child of the zygote: enter fresh namespaces, fork init, tell the zygote its pid, wait."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()
    isolation: list[str] = ["own session"]
    setup_error = None
    flags = 0
    try:
        flags = _enter_namespaces(isolation)
    except OSError as exc:
        setup_error = f"sandbox setup failed: {exc}"
    private_uid = UID_BASE + os.getpid() if os.geteuid() == 0 and not flags & CLONE_NEWUSER else None
    init = os.fork()
    if init == 0:
        _init_main(sock, isolation, private_uid, plan, setup_error)
    sock.send(json.dumps({"init": init}).encode())
    sock.close()
    os.waitpid(init, 0)
    os._exit(0)


@dataclass
class _Spare:
    runner: int
    sock: socket.socket

    def init_pid(self) -> int:
        """The runner's report of its init's pid, read when the spare is handed out, not when it
        is made: the zygote answers the next job meanwhile instead of waiting on the runner's
        unshare. -1 if the runner died."""
        reply = self.sock.recv(256)
        return json.loads(reply)["init"] if reply else -1


def _fork_spare(control: socket.socket, plan: ViewPlan) -> _Spare:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        control.close()
        ours.close()
        try:
            _runner_main(theirs, plan)
        finally:
            os._exit(1)
    theirs.close()
    return _Spare(runner=pid, sock=ours)


def serve(control: socket.socket, pool_size: int, plan: ViewPlan) -> None:
    """Hand each job to a ready spare, reply with its pids, then top the pool up again.
    Exit when the trusted side hangs up."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runners are reaped by the kernel
    spares = [_fork_spare(control, plan) for _ in range(pool_size)]
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
                init = spare.init_pid()
                socket.send_fds(spare.sock, [message], fds)
                break
            except OSError:  # the spare died (e.g. killed from outside): make another
                spare.sock.close()
                spare = _fork_spare(control, plan)
                if attempt:
                    raise
        for fd in fds:
            os.close(fd)
        spare.sock.close()
        control.sendall(json.dumps({"runner": spare.runner, "init": init}).encode())
        spares.append(_fork_spare(control, plan))


def _conceal_process_records() -> None:
    """Blank our command line and environment block in place (what /proc/PID/cmdline and environ
    read, in init and every Python program, which are forks of us): they would show the
    interpreter's host path and our config. Python keeps its own copies; `os.environ` changes
    made later live elsewhere. libc's `getenv` read that block, though: every variable goes back
    into the C environment as a copy, or the native libraries the preload loads (OpenMP, OpenBLAS,
    MKL) would never see their thread caps and start one thread per host CPU."""
    with open("/proc/self/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    arg_start, arg_end, env_start, env_end = (int(v) for v in fields[45:49])  # fields 48-51 of stat(5)
    ctypes.memset(env_start, 0, env_end - env_start)
    ctypes.memset(arg_start, 0, arg_end - arg_start)
    name = b"ttd-sandbox"[:max(0, arg_end - arg_start - 1)]
    ctypes.memmove(arg_start, name, len(name))
    for key, value in os.environ.items():
        os.putenv(key, value)  # setenv: a new string, outside the blanked block


def main(control_fd: int, config: dict) -> None:
    """`config`: {"spares", "preload", "grants", "cache_dir", "private_packages"} (sandbox.py starts us)."""
    _conceal_process_records()
    importlib.import_module("ttd_envs.core.wire")
    for module in config["preload"]:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a program naming it then fails with the import error
            pass
    grants = config["grants"]
    plan = _confine.plan_view(tuple(grants["read_only_paths"]), tuple(grants["devices"]), grants["writable_cache"],
                              config["cache_dir"], tuple(config["private_packages"]), tuple(grants["hidden_paths"]))
    # one spare more than runs at once: the next is ready while the last one still builds its view
    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=control_fd)
    serve(control, int(config["spares"]) + 1, plan)
