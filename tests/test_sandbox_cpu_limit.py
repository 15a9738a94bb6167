"""Every run gets its problem's CPU count and no more: a cgroup CPU quota where cgroups exist
(v1 here; v2 in tests/test_sandbox_cgroup_v2.py), else a whole-run CPU-time cap of cpus x wall."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from ttd_envs.core import cgroups
from ttd_envs.core.cpu_pinning import CpuPicker
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


# -- the affinity mask where no quota holds (the fallback mode) -------------------------------------
READ_AFFINITY = ("import os, time\ndef run(hold_s):\n    started = time.time()\n"
                 "    mask = sorted(os.sched_getaffinity(0))\n    try:\n"
                 "        os.sched_setaffinity(0, range(os.cpu_count()))\n        widened = 'allowed'\n"
                 "    except OSError as exc:\n        widened = exc.strerror\n"
                 "    time.sleep(hold_s)\n    return [mask, widened, started, time.time()]\n")
HOST_CPUS = sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(len(HOST_CPUS) < 2, reason="pinning runs apart needs at least 2 CPUs")
def test_without_a_quota_runs_at_once_are_pinned_to_cpus_of_their_own():
    """Two runs of a 1-CPU problem in flight together: each program's own mask (read inside the
    sandbox) is one CPU, not the other's, and it cannot widen it."""
    with Sandbox(preload=(), threads=1, spares=2, cgroups=False) as box:
        box.run_python(READ_AFFINITY, "run", kwargs={"hold_s": 0}, preset_modules={})  # zygote up
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: box.run_python(READ_AFFINITY, "run", kwargs={"hold_s": 2.0},
                                                             preset_modules={}, limits=Limits(wall_s=20)), range(2)))
    assert all(r.ok for r in results), [r.error for r in results]
    (mask_a, widened_a, start_a, end_a), (mask_b, widened_b, start_b, end_b) = (r.value for r in results)
    print(f"masks {mask_a} and {mask_b} (host {HOST_CPUS}); widening: {widened_a!r}, {widened_b!r}; "
          f"runs {start_a:.2f}-{end_a:.2f} and {start_b:.2f}-{end_b:.2f}")
    assert start_a < end_b and start_b < end_a, "the two runs did not overlap: the test checks nothing"
    assert len(mask_a) == len(mask_b) == 1 and set(mask_a).isdisjoint(mask_b) and set(mask_a + mask_b) <= set(HOST_CPUS)
    assert widened_a == widened_b == "Operation not permitted"
    for result in results:
        assert result.isolation[2] == "CPU affinity: pinned to 1 CPU(s) of its own (sched_setaffinity refused)"
        assert any(line.startswith("seccomp filter") and "sched_setaffinity" in line for line in result.isolation)


@pytest.mark.skipif(not cgroups.available(), reason=f"no per-run cgroups here: {cgroups.probe().reason}")
def test_under_a_quota_runs_are_not_pinned():
    with Sandbox(preload=(), threads=1, cgroups=True) as box:
        result = box.run_python(READ_AFFINITY, "run", kwargs={"hold_s": 0}, preset_modules={})
    assert result.ok, result.error
    assert result.value[0] == HOST_CPUS and result.value[1] == "allowed", result.value
    assert not any(line.startswith("CPU affinity") for line in result.isolation), result.isolation


@pytest.mark.skipif(len(HOST_CPUS) < 2, reason="pinning runs apart needs at least 2 CPUs")
def test_processes_of_one_user_take_different_cpus(tmp_path):
    """The lock files keep two processes (an executor's workers) apart; a lock goes with its holder;
    with more runs than CPUs the last one shares and says so."""
    here = CpuPicker(str(tmp_path))
    mine, shared = here.take(1)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        theirs = CpuPicker(str(tmp_path)).take(1)
        os.write(writer, json.dumps(theirs).encode())
        os._exit(0)  # its lock goes with it
    os.close(writer)
    with os.fdopen(reader) as handle:
        theirs, their_shared = json.loads(handle.read())
    os.waitpid(child, 0)
    print(f"this process got {mine}, a second process {theirs}")
    assert not shared and not their_shared and set(mine).isdisjoint(theirs)
    taken = [here.take(1) for _ in range(len(HOST_CPUS))]  # the child is gone: every CPU is free again but ours
    assert [s for _, s in taken] == [False] * (len(HOST_CPUS) - 1) + [True], taken
    assert sorted(c for cpus, _ in taken[:-1] for c in cpus) == sorted(set(HOST_CPUS) - set(mine))
    for cpus, _ in [(mine, shared), *taken]:
        here.give_back(cpus)
    other = CpuPicker(str(tmp_path))
    assert [other.take(1)[1] for _ in HOST_CPUS] == [False] * len(HOST_CPUS)  # all given back
