"""The sandbox's per-run cgroups on a real cgroup v2 host: a QEMU guest (tests/guest.py), booted
once per test session, runs tests/guest_attacks.py in each v2 mode, and each attack class must end
as a failed run with a clear message (or be shown not to have happened) and leave nothing.

Modes: `root` (the trusted process is root; runs go under the root cgroup) and `delegated` (an
ordinary uid whose cgroup is a delegated subtree, owned as systemd's Delegate=yes owns it). Which
ran is printed at the end; without qemu or the guest's kernel every test here is skipped with
that reason (scripts/test.sh builds the guest), never silently."""

from __future__ import annotations

import json

import pytest
from guest import Guest, GuestUnavailable
from guest_attacks import ATTACKS, DELEGATED, DELEGATED_UID, LIMITS

pytestmark = pytest.mark.slow
MODES = {"root": "per-run cgroup v2 (as root:", "delegated": f"per-run cgroup v2 (delegated subtree of uid {DELEGATED_UID}:"}


@pytest.fixture(scope="session")
def cgroup_v2_guest():
    try:
        guest = Guest.boot()
    except GuestUnavailable as exc:
        pytest.skip(f"cgroup v2 modes NOT tested (no guest): {exc}")
    yield guest
    guest.close()


class Reports:
    """Each mode's report, made on first use: one guest process per mode runs every attack
    (Python is ~10x slower under TCG, so the attacks are not rerun per test)."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.done: dict[str, dict] = {}

    def __call__(self, mode: str) -> dict:
        if mode not in self.done:
            output = self.guest.python("tests/guest_attacks.py", mode, timeout_s=600)
            self.done[mode] = json.loads(output.strip().splitlines()[-1])
        return self.done[mode]


@pytest.fixture(scope="session")
def reports(cgroup_v2_guest) -> Reports:
    return Reports(cgroup_v2_guest)


@pytest.mark.parametrize("mode", list(MODES))
def test_the_mode_ran_with_cgroup_v2(reports, mode):
    report = reports(mode)
    assert report["probe"].startswith(MODES[report["mode"]]), report["probe"]
    if report["mode"] == "delegated":
        assert report["uid"] == DELEGATED_UID and DELEGATED in report["probe"]
        # the scope the user's manager gave it, emptied into its leaf so it may hold the runs' cgroups
        assert report["cgroup"].startswith(f"0::{DELEGATED.removeprefix('/sys/fs/cgroup')}/app-"), report["cgroup"]
        assert report["cgroup"].endswith(".scope/ttd-trusted"), report["cgroup"]
    assert report["warm_up"]["ok"], report["warm_up"]
    assert set(report["attacks"]) == set(ATTACKS)
    for name, attack in report["attacks"].items():
        assert attack["isolation"][0] == report["probe"], name
        assert attack["isolation"][1].startswith("CPU limit: 1 CPU(s) of bandwidth by the cgroup's CPU quota"), name


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_fails_and_leaves_nothing(reports, mode, name):
    report = reports(mode)
    attack = report["attacks"][name]
    print(f"{report['mode']} / {name}: {json.dumps({k: v for k, v in attack.items() if k != 'isolation'})}")
    assert attack["survivors"] == [] and attack["strays"] == [], "a process outlived its run"
    assert attack["leftover_cgroups"] == []
    if name in ("memory bomb", "kernel memory in socket buffers"):
        assert attack["memory_exceeded"] and "memory limit exceeded" in attack["error"], attack["error"]
        assert attack["max_rss_bytes"] <= LIMITS.memory_bytes, "memory.peak passed memory.max"
    elif name == "fork bomb":
        forks = int(attack["error"].rsplit("after ", 1)[1].split()[0])
        assert forks < LIMITS.max_processes, attack["error"]
    elif name == "busy CPU on cpus=1":
        assert attack["ok"], attack["error"]
        ratio = attack["cpu_s"] / attack["elapsed_s"]  # 4 busy processes on 2 vCPUs: ~2 without the quota
        print(f"CPU time / wall time = {attack['cpu_s']:.2f} / {attack['elapsed_s']:.2f} = {ratio:.2f} (limit 1 CPU)")
        assert ratio <= 1.15
    elif name == "escape of the process tree":
        assert attack["ok"] and attack["value"] == "detached", attack["error"]
    elif name == "killed at the wall clock":
        assert attack["timed_out"] and "time limit exceeded" in attack["error"], attack["error"]
    else:
        raise AssertionError(f"no check for the attack {name!r}")


def test_without_delegation_the_fallback_says_why(reports):
    """An ordinary uid whose cgroup root keeps (a login session's scope) gets no cgroups, and is told why."""
    report = reports("undelegated")
    print(report)
    assert report["uid"] == DELEGATED_UID and report["attacks"] == {}
    assert "not writable by uid 4242: no delegated subtree" in report["probe"], report["probe"]
    assert report["refused"].startswith("per-run cgroups are not available: no per-run cgroups ("), report
    assert "Delegate=yes" in report["refused"]


def test_which_cgroup_v2_modes_ran(reports, request):
    """Says which modes ran (and with which mechanism), and fails if one did not."""
    ran = {}
    for mode in MODES:
        try:
            ran[mode] = reports(mode)["probe"]
        except Exception as exc:  # noqa: BLE001 - reported below, with the others
            ran[mode] = f"did not run: {exc}"[:300]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"cgroup v2 sandbox modes in the guest: {json.dumps(ran, indent=1)}")
    assert all(ran[mode].startswith(prefix) for mode, prefix in MODES.items()), ran
