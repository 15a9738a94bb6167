"""Sandbox overhead per run in every cgroup mode, before and after issue 23 (per-run cgroups on v2,
a CPU limit for every run).

Run: git archive <commit> | tar -x -C /var/tmp/ttd-before   (an older checkout, outside /tmp: the
     guest's /tmp is its own)
     python -m benchmarks.sandbox_cgroup_modes --before /var/tmp/ttd-before

On the host (cgroup v1 here): v1 cgroups and init accounting (cgroups=False). In the cgroup v2 guest
of tests/guest.py (QEMU, software emulation, ~10x slower): as root and as a delegated uid, where
`before` had no cgroups at all and `after` has v2 cgroups. Each variant runs in its own process, in
alternating rounds, so the variants of one place share its load; compare ratios within a place.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks._report import markdown_table, write_section
from benchmarks.erdos_and_sandbox import _TIMED_RUNS

HERE = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, os.path.join(HERE, "tests"))
from guest import Guest  # noqa: E402 - lives with the tests that use it


def _host_times(root: str, kwargs: dict, runs: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", _TIMED_RUNS, root, json.dumps(kwargs), str(runs)], cwd="/",
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": root})
    return json.loads(out.stdout)


def _guest_times(guest: Guest, mode: str, root: str, runs: int) -> list[float]:
    out = guest.python("tests/guest_attacks.py", mode, "--exec", sys.executable, "-c", _TIMED_RUNS, root, "{}",
                       str(runs), timeout_s=600)
    return json.loads(out.strip().splitlines()[-1])


def _rows(times: dict[tuple[str, str], list[float]]) -> list[list[object]]:
    rows = []
    for (place, label), values in times.items():
        p50, p95 = np.percentile(values, [50, 95])
        before = float(np.percentile(times[(place, label.replace("after", "before"))], 50))
        rows.append([place, label, len(values), f"{p50 * 1e3:.1f}", f"{p95 * 1e3:.1f}", f"{p50 / before:.2f}×"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="an older checkout (outside /tmp)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per variant and round on the host")
    parser.add_argument("--guest-runs", type=int, default=20, help="the same in the guest")
    parser.add_argument("--no-guest", action="store_true", help="the host's modes only (no QEMU boot)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    host = {("host, cgroup v1 (root)", "before"): (args.before, {}), ("host, cgroup v1 (root)", "after"): (HERE, {}),
            ("host, init accounting", "before"): (args.before, {"cgroups": False}),
            ("host, init accounting", "after"): (HERE, {"cgroups": False})}
    guest_modes = {("guest v2, root", "before"): ("root", args.before), ("guest v2, root", "after"): ("root", HERE),
                   ("guest v2, delegated uid", "before"): ("delegated", args.before),
                   ("guest v2, delegated uid", "after"): ("delegated", HERE)}
    if args.no_guest:
        guest_modes = {}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in [*host, *guest_modes]}
    guest = None if args.no_guest else Guest.boot()
    try:
        for _ in range(args.rounds):
            for key, (root, kwargs) in host.items():
                times[key] += _host_times(root, kwargs, args.runs)
            for key, (mode, root) in guest_modes.items():
                times[key] += _guest_times(guest, mode, root, args.guest_runs)
    finally:
        if guest is not None:
            guest.close()
    where = ("On the host only (`--no-guest`)." if args.no_guest else
             "The host rows share the CPUs with the running guest (its QEMU keeps one core busy): `--no-guest` "
             "measures a quiet host. In the guest `before` had no cgroups (init accounting) and `after` has v2 "
             "cgroups. The guest is QEMU in software emulation, 15-20x slower than the host: compare ratios there, "
             "not milliseconds.")
    text = ("Sandbox overhead per run before and after issue 23 (per-run cgroups on v2, a CPU limit for every "
            f"run): a trivial numpy `run_python`, {args.rounds} alternating rounds of {args.runs} runs, each "
            f"variant in its own process; before = `{args.before}`. {where} Host load average when started: "
            f"{load:.1f}.\n\n"
            + markdown_table(["where, mode", "variant", "runs", "p50 (ms)", "p95 (ms)", "p50 vs before"], _rows(times)))
    print(text)
    write_section("sandbox_cgroup_modes_host" if args.no_guest else "sandbox_cgroup_modes", text)


if __name__ == "__main__":
    main()
