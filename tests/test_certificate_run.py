"""A real `ttd-agent train` run whose best beats the record writes certificate.json into its run
directory, says so, and `python -m ttd_envs.verify` re-checks the file.

The win is planted in the record table only, for this process: LABS n = 8 starts from the
all-plus sequence (energy 140), and the planted record is energy 100, so any of the sequences
the embedded policy samples in its first steps beats it. The env and its checks are the real ones.
A second run plants a tie tolerance wider than the gain: the float beats the record, and the
summary calls it a tie.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ttd_agent import cli
from ttd_agent.cli import main
from ttd_envs import certificates, records

ROOT = Path(__file__).resolve().parents[1]
PLANTED_ENERGY = 100.0
RUN = ["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", "--env-arg", "initial=all-plus", "--steps", "2",
       "--groups-per-step", "2", "--group-size", "4", "--no-edit-prior"]


def plant(monkeypatch: pytest.MonkeyPatch, tie_tolerance: float) -> None:
    """LABS's table with the n = 8 record at energy 100, read by the problem and by certificates."""
    real = records.load_records("LABS")
    planted = replace(real, tie_tolerance=tie_tolerance, entries=tuple(
        replace(e, value=PLANTED_ENERGY) if e.instance == {"n": 8} else e for e in real.entries))
    monkeypatch.setattr(records, "load_records", lambda _: planted)
    monkeypatch.setattr(certificates, "load_records", lambda _: planted)
    monkeypatch.setattr(cli.console, "width", 1000)  # the summary's rows on one line each


def summary(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ttd_envs.verify` in a fresh process: the real record table, nothing planted."""
    return subprocess.run([sys.executable, "-m", "ttd_envs.verify", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_run_that_beats_the_record_writes_a_certificate_that_verify_rechecks(monkeypatch, capsys, tmp_path):
    plant(monkeypatch, tie_tolerance=0.0)
    run = tmp_path / "run"
    assert main([*RUN, "--run-dir", str(run)]) == 0
    printed = summary(capsys)
    path = run / "certificate.json"
    assert "record beaten" in printed and "record (score in [" in printed and str(path) in printed
    assert f"python -m ttd_envs.verify ttd/LABS-v0 {path}" in printed
    certificate = json.loads(path.read_text())
    assert certificate["verdict"] == "record" and certificate["score"]["exact"]
    assert certificate["record"]["value"] == PLANTED_ENERGY and certificate["env_kwargs"] == {"n": 8,
                                                                                             "initial": "all-plus"}
    energy = certificate["score"]["float"]
    sequence = certificate["construction"]["sequence"]
    assert len(sequence) == 8 and set(sequence) <= {"+", "-"} and energy < PLANTED_ENERGY

    done = verify("ttd/LABS-v0", str(path))  # the real table: the optimum of n = 8 is energy 8
    assert done.returncode == 0, done.stderr
    assert "certificate holds" in done.stdout and done.stdout.splitlines()[-1] == repr(energy)
    tampered = dict(certificate, score=dict(certificate["score"], lower="3", upper="3"))
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    refused = verify("ttd/LABS-v0", str(tmp_path / "tampered.json"))
    assert refused.returncode == 1 and "does not hold" in refused.stderr


def test_a_gain_within_the_tie_tolerance_is_reported_as_a_tie(monkeypatch, capsys, tmp_path):
    plant(monkeypatch, tie_tolerance=1000.0)  # wider than any gain over energy 100
    run = tmp_path / "run"
    assert main([*RUN, "--run-dir", str(run)]) == 0
    printed = summary(capsys)
    assert "a tie with the record" in printed and "record beaten" not in printed
    assert json.loads((run / "certificate.json").read_text())["verdict"] == "tie"
