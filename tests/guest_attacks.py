"""The hostile attack classes against the sandbox on a real cgroup v2 host, one process per mode.

Runs inside the QEMU guest of `tests/guest.py` (root there, the guest's cgroup2 hierarchy mounted
at /sys/fs/cgroup) and prints one JSON object: the mode, what `cgroups.probe()` chose, and per
attack what the sandbox returned plus what was left behind. tests/test_sandbox_cgroup_v2.py
asserts on it.

    python tests/guest_attacks.py root        # the trusted process is root (runs under the root cgroup)
    python tests/guest_attacks.py delegated   # an ordinary uid in a delegated subtree, laid out and
                                              # owned the way systemd's Delegate=yes does it
    python tests/guest_attacks.py undelegated # that uid in its login session's scope (root's): no cgroups
    python tests/guest_attacks.py MODE --exec COMMAND...   # run COMMAND in that mode instead
                                                           # (benchmarks/sandbox_cgroup_modes.py)
"""

from __future__ import annotations

import json
import os
import sys
import time

from conftest import _drop_to, stray_processes

from ttd_envs.core import cgroups
from ttd_envs.core.sandbox import MiB, Limits, Sandbox

DELEGATED_UID = 4242
DELEGATED = f"/sys/fs/cgroup/user.slice/user-{DELEGATED_UID}.slice/user@{DELEGATED_UID}.service"
SESSION = f"/sys/fs/cgroup/user.slice/user-{DELEGATED_UID}.slice/session-1.scope"  # a login: not delegated
CONTROLLERS = "+memory +pids +cpu"
MARK = "ttdescape"  # the comm of processes that try to outlive their run
LIMITS = Limits(wall_s=90, memory_bytes=128 * MiB, address_space_bytes=1024 * MiB, max_processes=12)

HOLD = "def hold(mib):\n    b = bytearray(mib << 20)\n    b[::4096] = b'x' * len(b[::4096])\n    return b\n"
MARK_SELF = f"ctypes.CDLL(None).prctl(15, b'{MARK}', 0, 0, 0)"  # PR_SET_NAME

ATTACKS: dict[str, tuple[str, Limits]] = {
    # children each under the limit, 240 MiB together against 128 MiB
    "memory bomb": (
        "import os, time\n" + HOLD + "def run():\n    for _ in range(3):\n        if os.fork() == 0:\n"
        "            b = hold(80)\n            time.sleep(60)\n            os._exit(0)\n"
        "    time.sleep(20)\n    return 'held 240 MiB'\n", LIMITS),
    # kernel memory: skbs queued in unix socketpairs are no process's pages; 8 children x 60
    # pairs x ~400 KiB would hold ~190 MiB against 128 MiB
    "kernel memory in socket buffers": (
        "import os, socket, time\ndef fill():\n    pairs, queued = [], 0\n    for _ in range(60):\n"
        "        a, b = socket.socketpair()\n        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)\n"
        "        a.setblocking(False)\n        while True:\n            try:\n"
        "                queued += a.send(b'x' * 65536)\n            except (BlockingIOError, OSError):\n"
        "                break\n        pairs.append((a, b))\n    return pairs, queued\n"
        "def run():\n    kids = []\n    for _ in range(8):\n        r, w = os.pipe()\n        pid = os.fork()\n"
        "        if pid == 0:\n            pairs, queued = fill()\n            os.write(w, str(queued).encode() + b'\\n')\n"
        "            time.sleep(60)\n            os._exit(0)\n        os.close(w)\n        kids.append(r)\n"
        "    held = sum(int(os.read(r, 64) or b'0') for r in kids)\n    return held\n", LIMITS),
    "fork bomb": (
        "import os, time\ndef run():\n    n = 0\n    for _ in range(200):\n        try:\n"
        "            if os.fork() == 0:\n                time.sleep(60)\n                os._exit(0)\n"
        "            n += 1\n        except OSError:\n            break\n"
        "    raise RuntimeError(f'process limit held after {n} forks')\n", LIMITS),
    # 4 busy processes for 4 s of wall time on cpus=1: one CPU's worth of time at most
    "busy CPU on cpus=1": (
        "import os, time\ndef run():\n    kids = []\n    for _ in range(4):\n        pid = os.fork()\n"
        "        if pid == 0:\n            end = time.monotonic() + 4\n            while time.monotonic() < end:\n"
        "                pass\n            os._exit(0)\n        kids.append(pid)\n    for pid in kids:\n"
        "        os.waitpid(pid, 0)\n    return os.times().children_user\n", LIMITS),
    # double fork + setsid, then the run ends: nothing may outlive it
    "escape of the process tree": (
        "import ctypes, os, time\ndef run():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        f"            {MARK_SELF}\n"
        "            time.sleep(120)\n        os._exit(0)\n    time.sleep(2)\n    return 'detached'\n", LIMITS),
    # sleepers in a run that passes its wall clock: the kill takes the whole tree
    "killed at the wall clock": (
        "import ctypes, os, time\ndef run():\n    for _ in range(4):\n        if os.fork() == 0:\n"
        f"            {MARK_SELF}\n"
        "            time.sleep(120)\n    time.sleep(120)\n", Limits(**{**LIMITS.__dict__, "wall_s": 8.0})),
}


def _marked() -> list[int]:
    """Processes anywhere in the guest that carry MARK (they must all be gone after a run)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() == MARK:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def run_attacks() -> dict:
    probe = cgroups.probe()
    report = {"uid": os.geteuid(), "probe": probe.reason, "cgroup": open("/proc/self/cgroup").read().strip(),
              "attacks": {}}
    if probe.hierarchy is None:
        try:
            Sandbox(cgroups=True)
        except RuntimeError as exc:
            report["refused"] = str(exc)
        return report
    with Sandbox(preload=("numpy",), cgroups=True) as box:
        warm = box.run_python("def run():\n    return 1\n", "run")
        report["warm_up"] = {"ok": warm.ok, "error": warm.error, "elapsed_s": warm.elapsed_s}
        for name, (source, limits) in ATTACKS.items():
            result = box.run_python(source, "run", limits=limits)
            deadline = time.monotonic() + 10
            while _marked() and time.monotonic() < deadline:
                time.sleep(0.1)
            report["attacks"][name] = {
                "ok": result.ok, "value": result.value if result.ok else None, "error": result.error,
                "memory_exceeded": result.memory_exceeded, "timed_out": result.timed_out, "cpu_s": result.cpu_s,
                "elapsed_s": result.elapsed_s, "max_rss_bytes": result.max_rss_bytes,
                "isolation": result.isolation[:2], "survivors": _marked(), "strays": stray_processes(box),
                "leftover_cgroups": cgroups.leftovers(),
            }
    return report


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def enter_session() -> None:
    """Move this process into SESSION, a cgroup root keeps (as systemd-logind's session scopes)."""
    current = "/sys/fs/cgroup"
    for part in SESSION.removeprefix("/sys/fs/cgroup/").split("/"):
        _write(f"{current}/cgroup.subtree_control", CONTROLLERS)
        current = f"{current}/{part}"
        os.makedirs(current, exist_ok=True)
    _write(f"{SESSION}/cgroup.procs", str(os.getpid()))


def delegate(uid: int) -> None:
    """Lay out DELEGATED as systemd does for user@UID.service with Delegate=yes (controllers enabled
    down to it; the directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads
    owned by the user), give this process a scope of its own inside it (as the user's manager
    does for each app), and move this process there."""
    current = "/sys/fs/cgroup"
    for part in [*DELEGATED.removeprefix("/sys/fs/cgroup/").split("/"), f"app-{os.getpid()}.scope"]:
        _write(f"{current}/cgroup.subtree_control", CONTROLLERS)
        current = f"{current}/{part}"
        os.makedirs(current, exist_ok=True)
        if current.startswith(DELEGATED):
            for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
                os.chown(os.path.join(current, name), uid, uid)
    _write(f"{current}/cgroup.procs", str(os.getpid()))


def main() -> None:
    mode, command = sys.argv[1], sys.argv[3:] if sys.argv[2:3] == ["--exec"] else None
    if mode == "root":
        if command:
            os.execv(command[0], command)
        print(json.dumps({"mode": mode, **run_attacks()}))
        return
    child = os.fork()
    if child == 0:  # the user's process: only it (and what it starts) lives in the delegated subtree
        code = 1
        try:
            enter_session() if mode == "undelegated" else delegate(DELEGATED_UID)
            _drop_to(DELEGATED_UID, DELEGATED_UID)
            if command:
                os.execv(command[0], command)
            print(json.dumps({"mode": mode, **run_attacks()}), flush=True)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
