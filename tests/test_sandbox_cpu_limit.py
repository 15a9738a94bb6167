"""Every run gets its problem's CPU count and no more: a cgroup CPU quota where cgroups exist
(v1 here; v2 in tests/test_sandbox_cgroup_v2.py), else a whole-run CPU-time cap of cpus x wall."""

from __future__ import annotations

import pytest

from ttd_envs.core import cgroups
from ttd_envs.core.sandbox import Limits, Sandbox, _cpu_time_capped

BUSY_CHILDREN = ("import os, time\ndef run(seconds):\n    kids = []\n    for _ in range(4):\n        pid = os.fork()\n"
                 "        if pid == 0:\n            end = time.monotonic() + seconds\n"
                 "            while time.monotonic() < end:\n                pass\n            os._exit(0)\n"
                 "        kids.append(pid)\n    for pid in kids:\n        os.waitpid(pid, 0)\n    return 'done'\n")


def test_the_cap_is_cpus_times_wall_unless_the_limit_is_lower():
    assert _cpu_time_capped(Limits(wall_s=10), 2, None).cpu_s == 20
    assert _cpu_time_capped(Limits(wall_s=10, cpu_s=3), 2, None).cpu_s == 3
    assert _cpu_time_capped(Limits(wall_s=10, cpu_s=50), 2, None).cpu_s == 20


@pytest.mark.skipif(not cgroups.available(), reason=f"no per-run cgroups here: {cgroups.probe().reason}")
def test_busy_children_share_one_cpu_under_the_quota():
    with Sandbox(preload=(), threads=1, cgroups=True) as box:
        result = box.run_python(BUSY_CHILDREN, "run", kwargs={"seconds": 3}, preset_modules={},
                                limits=Limits(wall_s=30))
    assert result.ok, result.error
    assert result.isolation[1] == "CPU limit: 1 CPU(s) of bandwidth by the cgroup's CPU quota"
    ratio = result.cpu_s / result.elapsed_s  # 4 busy processes: as many cores as the machine has without it
    print(f"CPU {result.cpu_s:.2f} s over {result.elapsed_s:.2f} s wall = {ratio:.2f} CPUs (limit 1)")
    assert ratio <= 1.15


def test_without_a_quota_the_run_carries_the_cpu_time_cap():
    """The cap reaches the run (init's accounting enforces the whole run's CPU time against it,
    each process's RLIMIT_CPU too): a program that takes more cores than given is stopped early."""
    source = "import resource\ndef run():\n    return list(resource.getrlimit(resource.RLIMIT_CPU))\n"
    with Sandbox(preload=(), threads=1, cgroups=False) as box:
        result = box.run_python(source, "run", preset_modules={}, limits=Limits(wall_s=6))
    assert result.ok, result.error
    assert result.isolation[1] == "CPU limit: 1 CPU(s), whole-run CPU time capped at 6 s (no cgroup CPU quota)"
    assert result.value == [6, 7]
