"""Run untrusted programs (Python functions or compiled binaries) under limits, closed off.

Every problem whose action is a program goes through `Sandbox.run_python` or `Sandbox.run_binary`.
What the program gets (docs/security.md has the threat model and the test behind each line):
- its own pid, network, mount and IPC namespaces (as root; otherwise in a user namespace too);
  when init of the pid namespace exits, the kernel kills every process left, so double-fork +
  setsid cannot escape. Without these namespaces the sandbox refuses to run anything;
- a closed view of the filesystem: only the OS's /usr, the interpreter and its import path,
  read-only, and what the problem `Grants`; not the project's source or data, no host file,
  socket or device beyond that. One private tmpfs, capped in total, is /tmp (its working dir),
  /var/tmp and /dev/shm, gone afterwards;
- no capabilities: a unique unprivileged uid per run as root, uid 0 without capabilities of its
  own user namespace otherwise; a seccomp filter against mount, namespaces, ptrace and the like;
- limits for the whole run, every process it starts included: memory (anonymous, shared, memfd,
  tmpfs), process count and CPU time, by per-run cgroups where we may create them, else by init
  accounting its namespace (and memfd/SysV shm refused); per-process rlimits on address space,
  file size and open files; a wall clock enforced by the trusted side; a scrubbed environment;
  stdout/stderr capped (a program that prints more is killed).
`SandboxResult.isolation` names what applied. What comes back: bytes only. The Python entry's
return value travels in the `wire` format (JSON plus `.npy`, loaded with allow_pickle=False); the
status init reports is validated field by field. The caller recomputes any score from the data.

Start-up is fast because runs fork from a warm zygote that already imported numpy/scipy and the
problem's preset modules (programs cannot import our package from disk: it is not in their view).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ttd_envs.core import cgroups, cpu_pinning, wire

log = logging.getLogger(__name__)

GiB = 1 << 30
MiB = 1 << 20
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# the zygote's command line: its config (paths, grants) and our checkout arrive through a memfd
_ZYGOTE_BOOTSTRAP = ("import json, os, sys\nwith os.fdopen(int(sys.argv[2])) as handle:\n"
                     "    config = json.load(handle)\nsys.path.insert(0, config['package_root'])\n"
                     "from ttd_envs.core._zygote import main\nmain(int(sys.argv[1]), config)\n")
_GRACE_S = 5.0
CHANNEL_FD = 4
"""Where a Python program finds the `channel` socket of `run_python` (after stdin, stdout, stderr
and the result pipe)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. `memory_bytes`, `cpu_s` and `max_processes` hold for the whole
    run (every process, shared memory and /tmp files included); `address_space_bytes` is each
    process's RLIMIT_AS (None: `memory_bytes`), so one huge allocation fails cleanly instead of
    being killed; `wall_s` is enforced from outside; `disk_bytes` caps the run's tmpfs in total."""

    wall_s: float = 60.0
    cpu_s: float | None = None
    memory_bytes: int = 4 * GiB
    address_space_bytes: int | None = None
    max_processes: int = 64
    disk_bytes: int = 256 * MiB
    output_bytes: int = 8 * MiB
    result_bytes: int = 1 * GiB
    nice: int = 5


@dataclass(frozen=True)
class Grants:
    """What one problem's programs may see beyond the closed view. Explicit and per Sandbox (a
    Sandbox serves one problem), so a grant never widens what other problems' programs see.

    - `read_only_paths`: files or directories bound read-only at their own path (e.g. driver
      libraries, a compiler tool that Triton calls). Each must exist when the Sandbox starts.
    - `devices`: device nodes bound read-write at their own path; shell-style patterns are
      expanded when the Sandbox starts (e.g. "/dev/nvidia*"). A pattern matching nothing is an
      error, so a missing GPU fails loudly instead of silently running without it.
    - `writable_cache`: a private, writable `CACHE_DIR` (on the run's size-capped tmpfs, gone
      after the run); `XDG_CACHE_HOME` and `TTD_CACHE_DIR` point at it.
    - `env`: extra environment variables for the program (e.g. {"TRITON_CACHE_DIR": CACHE_DIR}).
    - `address_space_limit`: False drops RLIMIT_AS (a CUDA context reserves far more address
      space than it uses); memory stays bounded for the whole run by the cgroup or by init.
    - `memfd`: programs may call memfd_create even where init accounts the run (CUDA needs it to
      initialise); init then counts the memfds the run holds, and descriptors may not be passed
      over sockets (so none hides in flight). With cgroups memfds are always allowed (charged).
    - `hidden_paths`: the opposite of a grant: files or directories inside the view (e.g. a data
      file a third-party package ships in site-packages) that this problem's programs must not
      read; each shows as empty. Each must exist when the Sandbox starts.
    """

    read_only_paths: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    writable_cache: bool = False
    env: dict[str, str] = field(default_factory=dict)
    address_space_limit: bool = True
    hidden_paths: tuple[str, ...] = ()
    library_paths: tuple[str, ...] = ()
    memfd: bool = False

    def loader_env(self) -> dict[str, str]:
        """LD_LIBRARY_PATH for `library_paths` ({} when none)."""
        return {"LD_LIBRARY_PATH": ":".join(self.library_paths)} if self.library_paths else {}


CACHE_DIR = "/tmp/cache"


@dataclass
class SandboxResult:
    """Everything a run produced, as plain data. `ok` means a value came back (Python) or the
    binary exited 0 (binary runs); `error` then is None. `cpu_s` and `max_rss_bytes` are for the
    whole run (the cgroup's CPU time and peak charge, or init's reaped-tree totals and polled
    peak); `memory_exceeded`/`cpu_exceeded` say the run was stopped for passing that limit."""

    ok: bool
    value: Any = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_bytes: bytes = b""
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_exceeded: bool = False
    memory_exceeded: bool = False
    cpu_exceeded: bool = False
    elapsed_s: float = 0.0
    cpu_s: float | None = None
    max_rss_bytes: int | None = None
    isolation: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Everything but the payloads (value, stdout, stderr), e.g. for logs and `info`."""
        return {k: v for k, v in asdict(self).items() if k not in ("value", "stdout", "stderr", "stdout_bytes")}


def scrubbed_environment(threads: int) -> dict[str, str]:
    """The only environment a sandboxed process ever sees: no inherited secrets."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONHASHSEED": "0"}
    env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")})
    return env


class Sandbox:
    """A warm zygote plus the trusted-side bookkeeping. Thread-safe: runs may overlap.

    `preload` modules are imported once in the zygote, so a run pays a fork, not an import; the
    modules named by `preset_modules` are added (restarting the zygote once) because programs
    cannot read them from disk. `spares` runs are kept ready (namespaces entered, view built):
    as many as run at once. `grants` widen this problem's view (see `Grants`). `cgroups`: None
    uses per-run cgroups when we may create them, False always uses init's accounting, True
    requires cgroups (RuntimeError if unavailable).
    """

    def __init__(self, preload: tuple[str, ...] = ("numpy", "scipy", "scipy.signal", "scipy.optimize"),
                 threads: int = 1, spares: int = 1, grants: Grants = Grants(), cgroups: bool | None = None) -> None:
        if spares < 1:
            raise ValueError(f"spares must be >= 1, got {spares}")
        _check_grants(grants)
        if cgroups and not _cgroups_available():
            raise RuntimeError(f"per-run cgroups are not available: {_cgroups_reason()}; pass cgroups=None to fall "
                               "back to init's accounting")
        self.use_cgroups = _cgroups_available() if cgroups is None else cgroups
        self._no_cgroup_reason = _cgroups_reason() if cgroups is None else "no per-run cgroups: Sandbox(cgroups=False)"
        self.grants = grants
        self.preload = tuple(preload)
        self.threads = threads
        self.spares = spares
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._zygote: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    @property
    def mechanism(self) -> str:
        """How whole-run limits are enforced: 'cgroup' or 'init accounting'."""
        return "cgroup" if self.use_cgroups else "init accounting"

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {"spares": self.spares, "preload": list(self.preload), "cache_dir": CACHE_DIR,
                  "grants": {"read_only_paths": [*self.grants.read_only_paths, *self.grants.library_paths],
                             "devices": list(self.grants.devices),
                             "writable_cache": self.grants.writable_cache,
                             "hidden_paths": list(self.grants.hidden_paths)},
                  "private_packages": _private_packages()}
        config["package_root"] = _PACKAGE_ROOT
        config_fd = _memfd(lambda handle: handle.write(json.dumps(config).encode()))
        self._zygote = subprocess.Popen(  # neutral argv and environment: init and programs can read them
            [sys.executable, "-c", _ZYGOTE_BOOTSTRAP, str(child.fileno()), str(config_fd)],
            env={**scrubbed_environment(self.threads), **self.grants.loader_env()},
            pass_fds=[child.fileno(), config_fd], cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True,
        )
        child.close()
        os.close(config_fd)
        self._control = parent

    def close(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._zygote is not None:
            try:
                self._zygote.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
        self._zygote, self._control = None, None

    def _preload(self, modules: set[str]) -> None:
        """Make the zygote import `modules` (restarting it once no run is in flight)."""
        with self._lock:
            missing = sorted(modules - set(self.preload))
            if not missing:
                return
            self._idle.wait_for(lambda: self._in_flight == 0)
            log.info("sandbox: the zygote now preloads %s for preset modules", ", ".join(missing))
            self.preload = (*self.preload, *missing)
            self._stop_locked()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _spawn(self, fds: list[int]) -> tuple[int, int]:
        """Hand a job's descriptors to the zygote; return (runner pid, init pid). Restart a dead zygote once."""
        with self._lock:
            for attempt in range(2):
                if self._zygote is None or self._zygote.poll() is not None:
                    self._start()
                assert self._control is not None
                try:
                    socket.send_fds(self._control, [b"job"], fds)
                    reply = self._control.recv(4096)
                    if reply:
                        pids = json.loads(reply)
                        self._in_flight += 1
                        return int(pids["runner"]), int(pids["init"])
                except OSError:
                    if attempt:
                        raise
                self._zygote = None
            raise RuntimeError("the sandbox zygote did not answer")

    # -- public API ------------------------------------------------------------------------
    def run_python(
        self,
        source: str,
        entry: str,
        *,
        kwargs: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        preset_modules: dict[str, str] | None = None,
        limits: Limits = Limits(),
        channel: socket.socket | None = None,
    ) -> SandboxResult:
        """Define `source` as module `program`, call `entry(**kwargs)`, return its value as data.

        `inputs` become module globals: numpy arrays travel as `.npy` files (no source literals),
        anything else must be JSON. `preset_modules` maps global names to modules or to attributes
        of modules ({"np": "numpy", "score": "pkg.mod:function"}). `channel`: one end of a socket
        pair the caller keeps talking through while the program runs; the program finds it as
        descriptor `CHANNEL_FD` (the caller reads it as hostile bytes, like the result).
        """
        array_inputs = {k: v for k, v in (inputs or {}).items() if isinstance(v, np.ndarray)}
        json_inputs = {k: v for k, v in (inputs or {}).items() if not isinstance(v, np.ndarray)}
        presets = preset_modules if preset_modules is not None else {"np": "numpy"}
        self._preload({target.partition(":")[0] for target in presets.values()})
        job = {"source": source, "entry": entry, "kwargs": kwargs or {}, "json_inputs": json_inputs,
               "preset_modules": presets}
        return self._run(job, array_inputs, limits, channel=channel)

    def run_binary(self, binary: str | os.PathLike[str], *, stdin: bytes | str | os.PathLike[str] | None = None,
                   argv: tuple[str, ...] = (), limits: Limits = Limits()) -> SandboxResult:
        """Execute a compiled program (it must be world-executable) with `stdin` as bytes or a path.

        `stdout_bytes` holds its whole output (up to `limits.output_bytes`; over that it is killed).
        """
        job: dict[str, Any] = {"source": None, "binary": str(Path(binary).resolve()),
                               "binary_name": Path(binary).name, "argv": list(argv)}
        if not os.access(job["binary"], os.X_OK):
            raise FileNotFoundError(f"{binary} is not an executable file")
        return self._run(job, {}, limits, stdin=stdin)

    # -- the trusted side of one run ---------------------------------------------------------
    def _run(self, job: dict[str, Any], arrays: dict[str, np.ndarray], limits: Limits,
             stdin: bytes | str | os.PathLike[str] | None = None, channel: socket.socket | None = None) -> SandboxResult:
        """Everything travels as descriptors: pipes back, and memfds (job, inputs, stdin) forward."""
        started = time.perf_counter()
        extra: list[int] = []
        pipes: list[tuple[int, int]] = []
        group: cgroups.RunCgroup | None = None
        why = ""
        spawned = False
        pinned: list[int] = []
        try:
            if self.use_cgroups:
                group, why = _run_cgroup(limits, self.threads)
            else:
                why = self._no_cgroup_reason
            limits = _cpu_time_capped(limits, self.threads, group)
            shared = False
            if group is None or not group.cpu_quota:
                pinned, shared = cpu_pinning.take(self.threads)
            job["cpus"] = pinned
            job["limits"] = asdict(limits)
            job["threads"] = self.threads
            job["env"] = {**self.grants.env, **self.grants.loader_env()}  # children and exec'd binaries
            job["memfd"] = self.grants.memfd
            job["address_space_bytes"] = ((limits.address_space_bytes or limits.memory_bytes)
                                          if self.grants.address_space_limit else None)
            job["array_inputs"] = {}
            for name, array in arrays.items():
                job["array_inputs"][name] = len(extra)
                extra.append(_memfd(lambda handle, a=array: np.save(handle, a, allow_pickle=False)))
            if isinstance(stdin, bytes):
                job["stdin"] = len(extra)
                extra.append(_memfd(lambda handle: handle.write(stdin)))
            elif stdin is not None:
                job["stdin"] = len(extra)
                extra.append(os.open(stdin, os.O_RDONLY))
            if channel is not None:
                job["channel"] = len(extra)
                extra.append(os.dup(channel.fileno()))
            if job.get("binary") is not None:
                path = job["binary"]
                job["binary"] = len(extra)
                extra.append(os.open(path, os.O_RDONLY))
            if group is not None:
                job["cgroup_procs"] = list(range(len(extra), len(extra) + len(group.procs_fds)))
                extra += group.procs_fds
                group.procs_fds = []
            job_fd = _memfd(lambda handle: handle.write(json.dumps(job).encode()))
            extra.insert(0, job_fd)
            pipes = [os.pipe() for _ in range(4)]
            runner, init = self._spawn([w for _, w in pipes] + extra)
            spawned = True
            readers = [r for r, _ in pipes]
            for _, w in pipes:
                os.close(w)
            pipes = []
            result = self._collect(readers, (init, runner), limits, started, job["source"] is not None, group)
            result.isolation[:0] = [group.mechanism if group else why, _cpu_line(limits, self.threads, group)]
            if pinned:
                result.isolation.insert(2, _affinity_line(pinned, shared))
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            for fd in extra:
                os.close(fd)
            if group is not None:
                group.remove()
            cpu_pinning.give_back(pinned)
            if spawned:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()
        result.elapsed_s = time.perf_counter() - started
        return result

    def _collect(self, readers: list[int], pids: tuple[int, int], limits: Limits, started: float, python: bool,
                 group: cgroups.RunCgroup | None) -> SandboxResult:
        out_fd, err_fd, res_fd, status_fd = readers
        buffers = {out_fd: bytearray(), err_fd: bytearray(), res_fd: bytearray(), status_fd: bytearray()}
        caps = {out_fd: limits.output_bytes, err_fd: limits.output_bytes, res_fd: limits.result_bytes,
                status_fd: 1 << 20}
        selector = selectors.DefaultSelector()
        for fd in readers:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        deadline = started + limits.wall_s
        next_check = started + _CGROUP_POLL_S  # a cgroup's CPU time and OOM kills, while the run lasts
        timed_out = exceeded = cpu_exceeded = False
        kill_reason: str | None = None
        killed = False
        data_fds = {out_fd, err_fd, res_fd}
        try:
            while selector.get_map():
                if not data_fds & selector.get_map().keys() and _program_finished(buffers[status_fd]):
                    break  # init reported the exit; the kernel tears the namespace down without us
                now = time.perf_counter()
                if not killed and now >= deadline:
                    timed_out, kill_reason = True, f"time limit exceeded: killed after {limits.wall_s:g} s wall clock"
                if not kill_reason and group is not None and now >= next_check:
                    kill_reason, cpu_exceeded = _past_cgroup_limit(group, limits)
                    next_check = now + _CGROUP_POLL_S
                if kill_reason and not killed:
                    for pid in pids:  # init first: the kernel then kills everything in its namespace
                        _kill_quietly(pid)
                    if group is not None:
                        group.kill()
                    killed = True
                    deadline = now + _GRACE_S
                elif killed and now >= deadline:
                    break  # the tree is dead; do not wait on pipes forever
                poll = _CGROUP_POLL_S if group is not None else 0.5
                for key, _ in selector.select(timeout=max(0.0, min(deadline - now, poll))):
                    fd = key.fd
                    try:
                        chunk = os.read(fd, 1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    buffers[fd] += chunk
                    if len(buffers[fd]) > caps[fd] and not kill_reason:
                        exceeded = fd != res_fd
                        name = {out_fd: "stdout", err_fd: "stderr", res_fd: "the result"}.get(fd, "status")
                        kill_reason = f"output limit exceeded: {name} passed {caps[fd]} bytes; the program was killed"
                    if len(buffers[fd]) > caps[fd]:
                        del buffers[fd][caps[fd]:]
        finally:
            selector.close()
            for fd in readers:
                os.close(fd)
        status = parse_status(bytes(buffers[status_fd]))
        if group is not None:  # init has reported or was killed: the cgroup's numbers are final
            status["cpu_s"] = max(group.cpu_s(), status.get("cpu_s") or 0.0)
            status["max_rss_bytes"] = group.peak_memory_bytes()
            if group.oom_kills():
                status["limit"] = "memory"
        if cpu_exceeded:
            status["limit"] = "cpu"
        return self._interpret(buffers[out_fd], buffers[err_fd], bytes(buffers[res_fd]), status,
                               timed_out, exceeded, kill_reason, python, limits)

    @staticmethod
    def _interpret(out: bytearray, err: bytearray, res: bytes, status: dict[str, Any], timed_out: bool,
                   exceeded: bool, kill_reason: str | None, python: bool, limits: Limits) -> SandboxResult:
        result = SandboxResult(
            ok=False, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
            stdout_bytes=bytes(out), timed_out=timed_out, output_exceeded=exceeded,
            exit_code=status.get("exit_code"), signal=status.get("signal"), cpu_s=status.get("cpu_s"),
            max_rss_bytes=status.get("max_rss_bytes"), isolation=status.get("isolation", []),
            warnings=status.get("warnings", []), memory_exceeded=status.get("limit") == "memory",
            cpu_exceeded=status.get("limit") == "cpu",
        )
        if kill_reason:
            result.error = kill_reason
            return result
        if result.memory_exceeded:
            result.error = (f"memory limit exceeded: the run's processes, shared memory and /tmp files together "
                            f"passed {limits.memory_bytes / MiB:.0f} MiB; the run was killed")
            return result
        if result.cpu_exceeded:
            result.error = (f"time limit exceeded: the run's processes used more than {limits.cpu_s:g} s of CPU "
                            "time together; the run was killed")
            return result
        if status.get("limit") == "hidden":
            result.error = ("the run was killed: a process of it hid its descriptors from the sandbox's accounting "
                            "(it exec'd a binary it may not read); without a cgroup its memory cannot be bounded")
            return result
        if status.get("phase") == "setup_failed":
            result.error = status.get("error", "sandbox setup failed")
            return result
        if result.signal is not None:
            name = signal.Signals(result.signal).name if result.signal in signal.Signals._value2member_map_ else result.signal
            cpu_hint = " (CPU time limit)" if name in ("SIGXCPU",) else ""
            result.error = f"the program was killed by {name}{cpu_hint}"
            return result
        if not python:
            result.ok = result.exit_code == 0
            if not result.ok:
                result.error = f"the program exited with code {result.exit_code}"
            return result
        if not res:
            code = result.exit_code
            result.error = (f"the program exited (code {code}) without returning a result; do not call "
                            "sys.exit/os._exit, and return the answer from the entry function")
            if code == 127 and result.stderr:
                result.error += f": {result.stderr.strip()[-500:]}"
            return result
        try:
            value, error = wire.decode(res)
        except wire.WireError as exc:
            result.error = f"invalid result: {exc}"
            return result
        if error is not None:
            result.error = error
            return result
        result.ok, result.value = True, value
        return result


_CGROUP_POLL_S = 0.05
_STATUS_PHASES = ("started", "exited", "setup_failed")
_STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "phase": (str,), "error": (str,), "limit": (str,), "exit_code": (int,), "signal": (int,),
    "cpu_s": (int, float), "max_rss_bytes": (int,), "isolation": (list,), "warnings": (list,),
}


def parse_status(raw: bytes) -> dict[str, Any]:
    """What init reported, validated: known keys of the right type, sane ranges, short strings.
    Nothing in it is ever used as a path or a command (a program must not be able to steer us)."""
    status: dict[str, Any] = {}
    for line in raw.decode(errors="replace").splitlines()[:16]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        for key, value in record.items():
            kinds = _STATUS_TYPES.get(key)
            if kinds is None or value is None or isinstance(value, bool) or not isinstance(value, kinds):
                continue
            if isinstance(value, list):
                value = [str(item)[:300] for item in value[:32] if isinstance(item, str)]
            elif isinstance(value, str):
                value = value[:2000]
            status[key] = value
    if status.get("phase") not in _STATUS_PHASES or status.get("limit") not in (None, "cpu", "memory", "hidden"):
        status.pop("phase", None)
        status.pop("limit", None)
    if not 0 <= status.get("signal", 0) < 128 or not -255 <= status.get("exit_code", 0) <= 255:
        status.pop("signal", None)
        status.pop("exit_code", None)
    if status.get("cpu_s", 0) < 0 or status.get("max_rss_bytes", 0) < 0:
        status.pop("cpu_s", None)
        status.pop("max_rss_bytes", None)
    return status


def _past_cgroup_limit(group: cgroups.RunCgroup, limits: Limits) -> tuple[str | None, bool]:
    """(why to stop the run now, whether for CPU): its CPU time, or the kernel OOM-killed one of
    its processes (stopping all of them: what is left of a run is not a result)."""
    group.sample()
    if limits.cpu_s and group.cpu_s() > limits.cpu_s:
        return (f"time limit exceeded: the run's processes used more than {limits.cpu_s:g} s of CPU time "
                "together; the run was killed"), True
    if group.oom_kills():
        return (f"memory limit exceeded: the run's processes, shared memory and /tmp files together passed "
                f"{limits.memory_bytes / MiB:.0f} MiB; the run was killed"), False
    return None, False


def _run_cgroup(limits: Limits, cpus: int) -> tuple[cgroups.RunCgroup | None, str]:
    """This run's cgroups, or None and why (init then accounts the run, and `isolation` says so)."""
    try:
        return cgroups.RunCgroup.create(limits.memory_bytes, limits.max_processes, cpus), ""
    except OSError as exc:
        log.warning("sandbox: could not create this run's cgroups (%s); init accounts the run instead", exc)
        return None, f"no per-run cgroups: creating this run's failed ({exc})"


def _cpu_time_capped(limits: Limits, cpus: int, group: cgroups.RunCgroup | None) -> Limits:
    """Without a cgroup's CPU quota, cap the run's CPU time at what `cpus` CPUs give in its wall
    time: a program that takes more cores is stopped by the CPU limit, however many it finds."""
    if group is not None and group.cpu_quota:
        return limits
    cap = cpus * limits.wall_s
    return limits if limits.cpu_s is not None and limits.cpu_s <= cap else replace(limits, cpu_s=cap)


def _cpu_line(limits: Limits, cpus: int, group: cgroups.RunCgroup | None) -> str:
    if group is not None and group.cpu_quota:
        return f"CPU limit: {cpus} CPU(s) of bandwidth by the cgroup's CPU quota"
    return f"CPU limit: {cpus} CPU(s), whole-run CPU time capped at {limits.cpu_s:g} s (no cgroup CPU quota)"


def _affinity_line(cpus: list[int], shared: bool) -> str:
    """Stable across runs (which CPUs differs): the count, and whether another run shares them."""
    whose = "that other runs may use too (not enough free CPUs)" if shared else "of its own"
    return f"CPU affinity: pinned to {len(cpus)} CPU(s) {whose} (sched_setaffinity refused)"


def _cgroups_available() -> bool:
    return cgroups.available()


def _cgroups_reason() -> str:
    """Which cgroups runs get and why, or why none (`cgroups.probe`)."""
    return cgroups.probe().reason


def _private_packages() -> list[str]:
    """Our packages' directories: programs must not read their source or data from disk."""
    found = []
    for name in ("ttd_envs", "ttd_agent"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found += list(spec.submodule_search_locations)
    return found


def _check_grants(grants: Grants) -> None:
    """Fail at construction, in the trusted process, for grants that name nothing."""
    for path in grants.read_only_paths:
        if not os.path.isabs(path) or not os.path.exists(path):
            raise ValueError(f"granted read-only path {path!r} does not exist (absolute paths only); "
                             "fix Grants.read_only_paths")
    for path in grants.library_paths:
        if not os.path.isabs(path) or not os.path.isdir(path) or ":" in path:
            raise ValueError(f"library path {path!r} is not an existing folder (absolute, no ':'); "
                             "fix Grants.library_paths")
    for path in grants.hidden_paths:
        if not os.path.isabs(path) or not os.path.exists(path):
            raise ValueError(f"hidden path {path!r} does not exist (absolute paths only); fix Grants.hidden_paths")
    for pattern in grants.devices:
        if not pattern.startswith("/dev/") or not glob.glob(pattern):
            raise ValueError(f"granted device {pattern!r} matches no device node under /dev; fix Grants.devices")


def _memfd(write: Any) -> int:
    """An anonymous in-memory file holding what `write(handle)` wrote, rewound for the reader."""
    fd = os.memfd_create("ttd-sandbox")
    with os.fdopen(os.dup(fd), "wb") as handle:
        write(handle)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _program_finished(status: bytearray) -> bool:
    return parse_status(bytes(status)).get("phase") in ("exited", "setup_failed")


def _kill_quietly(pid: int) -> None:
    if pid <= 0:  # -1 (a spare that died before naming its init) would mean every process we may signal
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
