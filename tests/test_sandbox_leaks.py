"""1,000 sequential runs leave no zombies, no leaked file descriptors and no temp dirs."""

from __future__ import annotations

import glob
import os
import tempfile

import pytest

from ttd_envs.core.sandbox import Sandbox


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


@pytest.mark.slow
def test_thousand_runs_leak_nothing():
    box = Sandbox(preload=("numpy",))
    try:
        box.run_python("def run():\n    return 0\n", "run")  # start the zygote
        fds_before = set(os.listdir("/proc/self/fd"))
        dirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "ttd-sandbox-*")))
        failures = 0
        for i in range(1000):
            result = box.run_python("def run(i):\n    return np.arange(4) * i\n", "run", kwargs={"i": i})
            failures += not (result.ok and int(result.value[3]) == 3 * i)
        assert failures == 0
        assert set(os.listdir("/proc/self/fd")) == fds_before
        assert set(glob.glob(os.path.join(tempfile.gettempdir(), "ttd-sandbox-*"))) == dirs_before
        assert zombies_of({os.getpid(), box._zygote.pid}) == []
    finally:
        box.close()
