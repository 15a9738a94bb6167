"""Hostile Python programs, in both privilege modes (root with per-run cgroups; an unprivileged
user with user namespaces and init's accounting). Each attack ends as a failed run with a clear
message, or its effect is shown not to have happened, and leaves nothing on the host.

The classes (issue 11): 1. limits hold for the whole run (children, memfd, shared memory, tmpfs,
CPU of children never waited for, process count); 2. the host is closed (files, sockets, package
source, world-writable dirs, total disk); 3. the unprivileged mode is as strong (status channel,
/proc, ptrace, privileges)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from conftest import SANDBOX_MODES, run_recorded, sandbox_in_mode, stray_processes, sysv_segments

import ttd_envs
from ttd_envs.core import cgroups
from ttd_envs.core._confine import runtime_paths
from ttd_envs.core.sandbox import MiB, Limits, SandboxResult

CHECKOUT = Path(ttd_envs.__file__).resolve().parents[1]
LIMITS = Limits(wall_s=15, memory_bytes=384 * MiB, address_space_bytes=2048 * MiB, disk_bytes=48 * MiB,
                max_processes=12)
HOST_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/run")
RAN: set[tuple[str, str]] = set()
MARK = "ttdmark"


@pytest.fixture(scope="module", params=SANDBOX_MODES)
def box(request):
    sandbox = sandbox_in_mode(request.param, preload=("numpy",))
    yield sandbox
    sandbox.close()


def _host_snapshot() -> dict[str, set[str]]:
    """What attacks could have left in the host's shared places: they name files MARK* (other
    users of the machine create files there meanwhile)."""
    return {place: {n for n in os.listdir(place) if n.startswith(MARK)} for place in HOST_PLACES if os.path.isdir(place)}


def run_attack(box, source: str, limits: Limits = LIMITS) -> SandboxResult:
    """Run `source` in `box`, record the mode and mechanism, and check the host kept nothing."""
    before, shm_before = _host_snapshot(), sysv_segments()
    result = run_recorded(box, source, limits, RAN)
    assert _host_snapshot() == before, "the run left files on the host"
    assert sysv_segments() == shm_before, "the run left SysV shared memory on the host"
    assert box.call(stray_processes) == [], "a process of the run outlived it"
    assert cgroups.leftovers() == []
    return result



def failed_with(result: SandboxResult, *messages: str) -> None:
    assert not result.ok, f"the attack succeeded: {result.value!r}"
    assert any(m in (result.error or "") for m in messages), result.error


ALLOCATE = "def hold(mib):\n    b = bytearray(mib << 20)\n    b[::4096] = b'x' * len(b[::4096])\n    return b\n"

# -- 1. limits hold for the whole run ------------------------------------------------------
LIMIT_ATTACKS = {
    "forked children each under the limit": (
        "import os, time\n" + ALLOCATE + "def run():\n    kids = []\n    for _ in range(3):\n"
        "        pid = os.fork()\n        if pid == 0:\n            b = hold(200)\n            time.sleep(20)\n"
        "            os._exit(0)\n        kids.append(pid)\n    time.sleep(8)\n    return 'held 600 MiB'\n",
        ("memory limit exceeded",)),
    "memfds": (
        "import os\ndef run():\n    fds = []\n    for _ in range(12):  # 40 MiB each: under the file size limit\n"
        "        fd = os.memfd_create('x')\n        for _ in range(40):\n            os.write(fd, b'x' * (1 << 20))\n"
        "        fds.append(fd)\n    return 'held 480 MiB in memfds'\n",
        ("memory limit exceeded", "Operation not permitted")),
    "SysV shared memory": (
        "import ctypes, os\ndef run():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    libc.shmat.restype = ctypes.c_void_p\n    ids = []\n    for _ in range(3):\n"
        "        i = libc.shmget(0, 200 << 20, 0o1600)\n        if i < 0:\n"
        "            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
        "        ctypes.memset(libc.shmat(i, None, 0), 1, 200 << 20)\n        ids.append(i)\n"
        "    return 'held 600 MiB of SysV shm'\n",
        ("memory limit exceeded", "Operation not permitted")),
    "files in every tmpfs": (
        "def run():\n    for place in ('/tmp', '/var/tmp', '/dev/shm'):\n"
        "        with open(place + '/ttdmark-fill', 'wb') as f:\n            f.write(b'x' * (30 << 20))\n"
        "    return 'wrote 90 MiB'\n",
        ("No space left on device", "File too large")),
    "a nested user namespace mounts a tmpfs": (
        "import ctypes, os\ndef run():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    if libc.unshare(0x10000000 | 0x00020000) != 0:\n"
        "        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
        "    return 'new user namespace'\n",
        ("Operation not permitted",)),
    "children never waited for burn CPU": (
        "import os, time\ndef run():\n    for _ in range(3):\n        if os.fork() == 0:\n"
        "            while True:\n                pass\n    time.sleep(12)\n    return 'done'\n",
        ("time limit exceeded",)),
    "fork bomb of sleepers": (
        "import os, time\ndef run():\n    n = 0\n    for _ in range(200):\n        try:\n"
        "            if os.fork() == 0:\n                time.sleep(30)\n                os._exit(0)\n"
        "            n += 1\n        except OSError:\n            break\n"
        "    raise RuntimeError(f'process limit held after {n} forks')\n",
        ("process limit held after",)),
}


@pytest.mark.parametrize("name", list(LIMIT_ATTACKS))
def test_limits_hold_for_the_whole_run(box, name):
    source, messages = LIMIT_ATTACKS[name]
    limits = Limits(**{**LIMITS.__dict__, "cpu_s": 1.0}) if "CPU" in name else LIMITS
    result = run_attack(box, source, limits)
    failed_with(result, *messages)
    if "fork bomb" in name:
        forks = int(result.error.rsplit("after ", 1)[1].split()[0])
        assert forks < LIMITS.max_processes, result.error


# -- 2. the host is closed -----------------------------------------------------------------
def _secrets() -> dict[str, str]:
    return {"/etc/passwd": "root:", "/etc/hostname": "", str(CHECKOUT / "README.md"): "",
            str(CHECKOUT / "ttd_envs/core/sandbox.py"): "", str(CHECKOUT / "ttd_envs/data"): "",
            ttd_envs.__file__: "", "/root/.bashrc": "", "/proc/1/environ": ""}


def test_host_files_and_package_source_are_unreadable(box):
    paths = list(_secrets())
    source = ("import os\ndef run():\n    got = {}\n    for p in %r:\n        try:\n"
              "            got[p] = os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(64).decode('latin1')\n"
              "        except OSError as exc:\n            got[p] = None\n    return got\n" % paths)
    result = run_attack(box, source)
    assert result.ok, result.error
    readable = {p: v for p, v in result.value.items() if v is not None and p != "/proc/1/environ"}
    assert readable == {}, f"readable from the sandbox: {readable}"
    environ = result.value["/proc/1/environ"]  # init of the run's own namespace, scrubbed
    assert environ is None or "HOME=/root" not in environ


def test_our_package_cannot_be_imported_from_disk(box):
    source = ("def run():\n    import ttd_envs.problems.denoising.problem as m\n    return m.__file__\n")
    failed_with(run_attack(box, source), "No module named", "ModuleNotFoundError")


def test_the_view_is_minimal_and_read_only(box):
    source = ("import os\ndef run():\n    denied = []\n"
              "    for p in ('/usr/x', '/etc/x', '/x', '/dev/x', '/proc/x', '/work/x', '/run/lock/ttdmark',\n"
              "              '/proc/sys/vm/drop_caches', '/proc/sysrq-trigger', '/proc/sys/kernel/hostname'):\n"
              "        try:\n            open(p, 'w').write('x')\n        except OSError:\n"
              "            denied.append(p)\n    return sorted(os.listdir('/')), denied, sorted(os.listdir('/etc'))\n")
    result = run_attack(box, source)
    assert result.ok, result.error
    top, denied, etc = result.value
    interpreter_tops = {Path(p).parts[1] for p in runtime_paths()}  # a venv may live anywhere (CI: /check)
    assert set(top) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp",
                        "var", "root"} | interpreter_tops, top
    assert "passwd" not in etc and "shadow" not in etc
    assert len(denied) == 10
    assert not Path("/work/x").exists() and not Path("/x").exists()


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_host_unix_socket_is_unreachable(box, kind):
    path = f"/tmp/ttd-hostile-{os.getpid()}.sock" if kind == "path" else f"\0ttd-hostile-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    if kind == "path":
        os.chmod(path, 0o777)
    listener.listen()
    listener.settimeout(0.1)
    try:
        source = ("import socket\ndef run():\n    s = socket.socket(socket.AF_UNIX)\n"
                  f"    s.connect({path!r})\n    return 'connected'\n")
        result = run_attack(box, source)
        failed_with(result, "No such file or directory" if kind == "path" else "Connection refused")
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
        if kind == "path":
            os.unlink(path)


def test_writable_places_are_private_and_gone(box):
    source = ("def run():\n    for p in ('/tmp/ttdmark', '/var/tmp/ttdmark', '/dev/shm/ttdmark', '/run/lock/ttdmark'):\n"
              "        try:\n            open(p, 'w').write('x')\n        except OSError:\n            pass\n"
              "    return 'written'\n")
    assert run_attack(box, source).ok  # run_attack checks the host's /tmp, /var/tmp, /dev/shm, /run/lock


# -- 3. the unprivileged mode is as strong -------------------------------------------------
def test_status_channel_cannot_be_forged(box, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    forged = '{"phase": "exited", "exit_code": 0, "host_workdir": "%s", "cpu_s": -1}\n' % victim
    source = ("import os\ndef run():\n    wrote = []\n    for pid in ('1',):\n"
              "        for fd in range(64):\n            try:\n"
              f"                with open(f'/proc/{{pid}}/fd/{{fd}}', 'w') as h:\n"
              f"                    h.write({forged!r})\n                wrote.append((pid, fd))\n"
              "            except OSError:\n                pass\n    return wrote\n")
    result = run_attack(box, source)
    assert (victim / "keep").exists(), "the trusted side removed a directory the program named"
    assert result.ok and [w for w in result.value if w[0] == "1"] == [], result.value
    assert result.cpu_s is not None and result.cpu_s >= 0


def test_proc_and_mounts_cannot_be_undone(box):
    source = ("import ctypes, os\ndef run():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
              "    tries = {'umount /proc': libc.umount2(b'/proc', 2), 'mount proc': libc.mount(b'proc', b'/tmp', b'proc', 0, None),\n"
              "             'mount tmpfs': libc.mount(b'x', b'/tmp', b'tmpfs', 0, b'size=10g'),\n"
              "             'ptrace init': libc.ptrace(16, 1, None, None), 'setns': libc.setns(0, 0),\n"
              "             'chroot': libc.chroot(b'/tmp'), 'kernel log': libc.klogctl(10, None, 0)}\n"
              "    return tries, sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n")
    result = run_attack(box, source)
    assert result.ok, result.error
    tries, pids = result.value
    assert all(code == -1 for code in tries.values()), tries
    assert len(pids) <= 3, f"host processes are visible: {pids}"


def test_no_privileges_are_left(box):
    source = ("import os\ndef run():\n    got = []\n    for attempt in (lambda: os.setuid(4242), lambda: os.chown('/tmp', 0, 0),\n"
              "                    lambda: os.mknod('/tmp/null', 0o20666, os.makedev(1, 3))):\n"
              "        try:\n            attempt()\n            got.append('allowed')\n        except OSError:\n"
              "            got.append('denied')\n"
              "    caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))]\n"
              "    return got, caps\n")
    result = run_attack(box, source)
    assert result.ok, result.error
    got, caps = result.value
    assert got[0] == got[2] == "denied" and all(line.split()[1] == "0" * 16 for line in caps), result.value


def test_every_mode_and_mechanism_ran(request):
    """Fails if a mode was silently skipped (e.g. no unprivileged user namespaces)."""
    expected = {("root", "cgroup" if cgroups.available() else "init accounting"), ("unprivileged", "init accounting")}
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"hostile Python suite ran: {sorted(RAN)}")
    assert RAN == expected, f"ran {sorted(RAN)}, expected {sorted(expected)}"
