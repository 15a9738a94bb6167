"""Issue 26 item 14: scripts/_venv.sh set-up is quiet, and a second run installs nothing (a stamp of
pyproject.toml's hash in the venv). pip is replaced by a recorder so the test needs no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$*" == *sys.prefix* ]]; then echo "{venv}"; exit 0; fi
if [[ "$1 $2" == "-m pip" ]]; then echo "$*" >>"{venv}/pip.log"; echo "pip noise"; exit ${{PIP_RC:-0}}; fi
exec "{real}" "$@"
"""


def setup(venv: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f"source {ROOT / 'scripts' / '_venv.sh'}; install_project agent"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
                               "PYTHONPATH": str(ROOT), **env})


def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(venv=venv, real=sys.executable))
    python.chmod(0o755)
    return venv


def test_a_second_setup_installs_nothing_and_prints_nothing(tmp_path):
    venv = fake_venv(tmp_path)
    first = setup(venv)
    assert first.returncode == 0, first.stderr
    assert "pip noise" not in first.stdout + first.stderr, "pip's output goes to a log"
    assert "-e .[agent]" in (venv / "pip.log").read_text()
    (venv / "pip.log").unlink()
    second = setup(venv)
    assert second.returncode == 0 and second.stdout == second.stderr == "", (second.stdout, second.stderr)
    assert not (venv / "pip.log").exists(), "nothing changed, so no pip call"


def test_a_failed_install_shows_pips_output(tmp_path):
    venv = fake_venv(tmp_path)
    done = setup(venv, PIP_RC="1")
    assert done.returncode == 1 and "pip noise" in done.stderr and "set-up failed" in done.stderr, done.stderr
    assert not (venv / ".ttd-installed").exists()
