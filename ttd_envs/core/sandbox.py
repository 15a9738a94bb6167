"""Run untrusted programs (Python functions or compiled binaries) under limits.

Every problem whose action is a program goes through `Sandbox.run_python` or `Sandbox.run_binary`.
What the program gets:
- its own pid, network, mount and IPC namespaces where the kernel allows (root, or unprivileged
  user namespaces); when init of the pid namespace exits, the kernel kills every process left,
  so double-fork + setsid cannot escape; `SandboxResult.warnings` says what could not be applied;
- a unique unprivileged uid per run (when the trusted side is root), so RLIMIT_NPROC caps that
  run's processes and threads, and no file of ours, nor /proc/<pid>/environ, is readable;
- a size-capped private tmpfs as /tmp (its working dir), /var/tmp and /dev/shm, gone afterwards;
- rlimits on address space, file size, open files and (optionally) CPU seconds; a wall clock
  enforced by the trusted side; a scrubbed environment; stdout/stderr capped (a program that
  prints more is killed).
What comes back: bytes only. The Python entry's return value travels in the `wire` format (JSON
plus `.npy`, loaded with allow_pickle=False). The caller recomputes any score from that data.

Start-up is fast because runs fork from a warm zygote that already imported numpy/scipy.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttd_envs.core import wire

log = logging.getLogger(__name__)

GiB = 1 << 30
MiB = 1 << 20
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_GRACE_S = 5.0


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. `wall_s` is enforced from outside; the rest are rlimits."""

    wall_s: float = 60.0
    cpu_s: float | None = None
    memory_bytes: int = 4 * GiB
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
    """

    read_only_paths: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    writable_cache: bool = False
    env: dict[str, str] = field(default_factory=dict)
    address_space_limit: bool = True


CACHE_DIR = "/tmp/cache"


@dataclass
class SandboxResult:
    """Everything a run produced, as plain data. `ok` means a value came back (Python) or the
    binary exited 0 (binary runs); `error` then is None."""

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
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": _PACKAGE_ROOT,
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")})
    return env


class Sandbox:
    """A warm zygote plus the trusted-side bookkeeping. Thread-safe: runs may overlap.

    `preload` modules are imported once in the zygote, so a run pays a fork, not an import.
    `spares` runs are kept ready (namespaces entered, filesystem mounted): as many as run at once.
    """

    def __init__(self, preload: tuple[str, ...] = ("numpy", "scipy", "scipy.signal", "scipy.optimize"),
                 threads: int = 1, spares: int = 1, grants: Grants = Grants()) -> None:
        if spares < 1:
            raise ValueError(f"spares must be >= 1, got {spares}")
        self.grants = grants
        self.preload = preload
        self.threads = threads
        self.spares = spares
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._zygote = subprocess.Popen(
            [sys.executable, "-m", "ttd_envs.core._zygote", str(child.fileno()), str(self.spares), *self.preload],
            env=scrubbed_environment(self.threads), pass_fds=[child.fileno()], cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True,
        )
        child.close()
        self._control = parent

    def close(self) -> None:
        with self._lock:
            if self._control is not None:
                self._control.close()
            if self._zygote is not None:
                try:
                    self._zygote.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._zygote.kill()
                    self._zygote.wait()
            self._zygote, self._control = None, None

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
    ) -> SandboxResult:
        """Define `source` as module `program`, call `entry(**kwargs)`, return its value as data.

        `inputs` become module globals: numpy arrays travel as `.npy` files (no source literals),
        anything else must be JSON. `preset_modules` maps global names to modules or to attributes
        of modules ({"np": "numpy", "score": "pkg.mod:function"}).
        """
        array_inputs = {k: v for k, v in (inputs or {}).items() if isinstance(v, np.ndarray)}
        json_inputs = {k: v for k, v in (inputs or {}).items() if not isinstance(v, np.ndarray)}
        job = {"source": source, "entry": entry, "kwargs": kwargs or {}, "json_inputs": json_inputs,
               "preset_modules": preset_modules if preset_modules is not None else {"np": "numpy"}}
        return self._run(job, array_inputs, limits)

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
             stdin: bytes | str | os.PathLike[str] | None = None) -> SandboxResult:
        """Everything travels as descriptors: pipes back, and memfds (job, inputs, stdin) forward."""
        started = time.perf_counter()
        extra: list[int] = []
        pipes: list[tuple[int, int]] = []
        try:
            job["limits"] = asdict(limits)
            job["threads"] = self.threads
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
            if job.get("binary") is not None:
                path = job["binary"]
                job["binary"] = len(extra)
                extra.append(os.open(path, os.O_RDONLY))
            job_fd = _memfd(lambda handle: handle.write(json.dumps(job).encode()))
            extra.insert(0, job_fd)
            pipes = [os.pipe() for _ in range(4)]
            runner, init = self._spawn([w for _, w in pipes] + extra)
            readers = [r for r, _ in pipes]
            for _, w in pipes:
                os.close(w)
            pipes = []
            result = self._collect(readers, (init, runner), limits, started, python=job["source"] is not None)
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            for fd in extra:
                os.close(fd)
        result.elapsed_s = time.perf_counter() - started
        return result

    def _collect(self, readers: list[int], pids: tuple[int, int], limits: Limits, started: float, python: bool) -> SandboxResult:
        out_fd, err_fd, res_fd, status_fd = readers
        buffers = {out_fd: bytearray(), err_fd: bytearray(), res_fd: bytearray(), status_fd: bytearray()}
        caps = {out_fd: limits.output_bytes, err_fd: limits.output_bytes, res_fd: limits.result_bytes,
                status_fd: 1 << 20}
        selector = selectors.DefaultSelector()
        for fd in readers:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        deadline = started + limits.wall_s
        timed_out = exceeded = False
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
                if kill_reason and not killed:
                    for pid in pids:  # init first: the kernel then kills everything in its namespace
                        _kill_quietly(pid)
                    killed = True
                    deadline = now + _GRACE_S
                elif killed and now >= deadline:
                    break  # the tree is dead; do not wait on pipes forever
                for key, _ in selector.select(timeout=max(0.0, min(deadline - now, 0.5))):
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
        return self._interpret(buffers[out_fd], buffers[err_fd], bytes(buffers[res_fd]), buffers[status_fd],
                               timed_out, exceeded, kill_reason, python, limits)

    @staticmethod
    def _interpret(out: bytearray, err: bytearray, res: bytes, status_raw: bytearray, timed_out: bool,
                   exceeded: bool, kill_reason: str | None, python: bool, limits: Limits) -> SandboxResult:
        records = [json.loads(line) for line in status_raw.decode(errors="replace").splitlines()
                   if line.startswith("{")]
        status = {k: v for r in records for k, v in r.items()}
        if status.get("host_workdir"):  # only without a mount namespace; init removes it unless killed
            shutil.rmtree(status["host_workdir"], ignore_errors=True)
        result = SandboxResult(
            ok=False, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
            stdout_bytes=bytes(out), timed_out=timed_out, output_exceeded=exceeded,
            exit_code=status.get("exit_code"), signal=status.get("signal"), cpu_s=status.get("cpu_s"),
            max_rss_bytes=status.get("max_rss_bytes"), isolation=status.get("isolation", []),
            warnings=status.get("warnings", []),
        )
        if kill_reason:
            result.error = kill_reason
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


def _memfd(write: Any) -> int:
    """An anonymous in-memory file holding what `write(handle)` wrote, rewound for the reader."""
    fd = os.memfd_create("ttd-sandbox")
    with os.fdopen(os.dup(fd), "wb") as handle:
        write(handle)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _program_finished(status: bytearray) -> bool:
    text = status.decode(errors="replace")
    return any(f'"phase": "{phase}"' in text for phase in ("exited", "killed", "setup_failed"))


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
