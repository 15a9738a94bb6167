"""1,000 runs in a row, hostile programs mixed in, leave nothing behind: no process, zombie, file
descriptor, cgroup, mount or temp dir, and the trusted side's memory stays flat."""

from __future__ import annotations

import glob
import os
import tempfile

import pytest
from conftest import stray_processes

from ttd_envs.core import cgroups
from ttd_envs.core.sandbox import MiB, Limits, Sandbox

PLAIN = "def run(i):\n    return np.arange(4) * i\n"
HOSTILE = [  # cheap variants of each class; each must fail or be harmless
    "import os, time\ndef run(i):\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(60)\n    return 0\n",
    "import os\ndef run(i):\n    fd = os.memfd_create('x')\n    os.write(fd, b'x' * (8 << 20))\n    return 0\n",
    "def run(i):\n    open('/tmp/ttdmark-leak', 'wb').write(b'x' * (1 << 20))\n    open('/dev/shm/x', 'w').write('x')\n"
    "    return 0\n",
    "import os\ndef run(i):\n    for _ in range(20):\n        try:\n            os.fork() or __import__('time').sleep(60)\n"
    "        except OSError:\n            break\n    raise SystemExit(1)\n",
    "def run(i):\n    x = []\n    while True:\n        x.append(bytearray(1 << 24))\n",
    "import socket\ndef run(i):\n    s = socket.socket(socket.AF_UNIX)\n    s.bind('/tmp/ttdmark.sock')\n"
    "    s.listen()\n    return 0\n",
]


def zombies_of(pids: set[int]) -> list[int]:
    found = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in open(status).read().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("State", "").startswith("Z") and int(fields.get("PPid", "0")) in pids:
            found.append(int(status.split("/")[2]))
    return found


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_thousand_runs_with_hostile_ones_leak_nothing():
    box = Sandbox(preload=("numpy",))
    limits = Limits(wall_s=3, memory_bytes=256 * MiB, max_processes=8, disk_bytes=16 * MiB)
    try:
        box.run_python(PLAIN, "run", kwargs={"i": 0})  # start the zygote
        fds_before = set(os.listdir("/proc/self/fd"))
        dirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "ttd-sandbox-*")))
        with open("/proc/self/mountinfo") as handle:
            mounts_before = handle.read()
        failures, memory = 0, []
        for i in range(1000):
            if i % 25 == 7:
                box.run_python(HOSTILE[(i // 25) % len(HOSTILE)], "run", kwargs={"i": i}, limits=limits)
            else:
                result = box.run_python(PLAIN, "run", kwargs={"i": i}, limits=limits)
                failures += not (result.ok and int(result.value[3]) == 3 * i)
            if i in (200, 999):
                memory.append(rss_bytes())
        assert failures == 0
        assert set(os.listdir("/proc/self/fd")) == fds_before
        assert set(glob.glob(os.path.join(tempfile.gettempdir(), "ttd-sandbox-*"))) == dirs_before
        assert not glob.glob("/tmp/ttdmark*") and not os.path.exists("/dev/shm/x")
        with open("/proc/self/mountinfo") as handle:
            assert handle.read() == mounts_before
        assert cgroups.leftovers() == []
        assert zombies_of({os.getpid(), box._zygote.pid}) == []
        assert stray_processes(box) == [], "a run left a process (only the zygote's spares may remain)"
        assert memory[1] - memory[0] < 16 * MiB, f"trusted-side memory grew {memory}"
    finally:
        box.close()


def test_cgroup_remover_takes_every_submission(tmp_path):
    """A path submitted just as the remover's thread finishes is still removed (the thread's
    exit and a new submission race; a lost one left a run cgroup behind in CI)."""
    remover = cgroups._Remover()
    for i in range(300):
        path = tmp_path / f"run-{i}"
        path.mkdir()
        remover.submit(str(path))
        remover.settle(timeout_s=5)
        assert not path.exists(), f"submission {i} was never removed"
