"""scripts/gpu_check.sh on a CPU: its dry run walks every step (machine facts, the wheels a bare
GPU image lacks, each check's CPU form, the summary) and prints the command for the GPU machine;
without --dry-run it reaches the first GPU line, then stops with the reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
DRY_RUN_OK = ("PASS", "SKIP", "MISSING")


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def listed_checks() -> list[str]:
    """The names in the script's CHECKS list, in order."""
    block = SCRIPT.read_text().split("# ---- CHECKS")[1].split("# ---- end of CHECKS")[0]
    return re.findall(r'^check "([^"]+)"', block, flags=re.MULTILINE)


@pytest.mark.slow
def test_dry_run_reaches_every_step_and_prints_the_gpu_command(tmp_path):
    wheels, logs = tmp_path / "wheels", tmp_path / "logs"
    result = run_script("--dry-run", "--offline", env={"TTD_GPU_WHEELS": str(wheels), "GPU_CHECK_LOGS": str(logs)},
                        timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    positions = [out.index(f"gpu_check step {n}/4") for n in range(1, 5)]
    assert positions == sorted(positions)
    assert "machine: torch:" in out and "machine: libcuda.so.1:" in out
    carried = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert carried == ["farama_notifications", "gymnasium"]
    assert sum(p.stat().st_size for p in wheels.glob("*.whl")) < 5 * 2**20
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            assert archive.testzip() is None and any(n.endswith(".dist-info/RECORD") for n in archive.namelist())
    assert "the carried wheels install with no index and import: gymnasium" in out

    summary = (logs / "summary.txt").read_text()
    checks = listed_checks()
    assert len(checks) >= 6
    status = {}
    for name in checks:
        line = next((row for row in summary.splitlines() if row.startswith(name + " ")), None)
        assert line is not None, f"{name!r} has no row in the summary:\n{summary}"
        status[name] = line[len(name):].split()[0]
    assert all(s in DRY_RUN_OK for s in status.values()), status
    ran = [name for name in checks if re.search(r"gpu_(sandbox|hf|llm|attention)_check\.py", name)]
    assert len(ran) == 4 and all(status[name] == "PASS" for name in ran), status  # their --dry-run forms
    assert status["kernels CPU-side and trust tests, on the GPU"] == "PASS"  # collected

    command = json.loads(next(line for line in out.splitlines() if line.startswith("run "))[4:])
    assert "bash scripts/gpu_check.sh" in command["command"] and command["carry"] == [str(wheels)]


def test_without_a_gpu_it_reports_the_machine_then_stops_with_the_reason(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run its checks")
    result = run_script(env={"GPU_CHECK_LOGS": str(tmp_path)})
    assert result.returncode == 2
    assert "machine: torch:" in result.stdout and "machine: cgroups:" in result.stdout
    assert "torch sees no CUDA GPU here" in result.stdout and "--dry-run" in result.stdout
    bad = run_script("--frobnicate")
    assert bad.returncode == 2 and "usage: scripts/gpu_check.sh" in bad.stderr
    assert run_script("--offline").returncode == 2
