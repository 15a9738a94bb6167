"""What a new user trips on in the first hour with `ttd-agent train` (issue 26): run directories of
one env with other options, arguments checked before a collision, a group of one, what a resume
says, and the advice after Ctrl-C at any moment (each one a real command, a real signal)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttd_agent.cli import default_run_dir, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--groups-per-step", "2", "--group-size", "2", "--no-edit-prior"]
SLOW_LABS = '''
import time
from pathlib import Path

from ttd_envs.problems.labs import LABS


class SlowLABS(LABS):
    """LABS whose set-up waits while the file `hold` names exists, and whose evaluations are slow:
    room for a Ctrl-C before the run directory exists, and one between steps."""

    def __init__(self, n=8, hold=""):
        super().__init__(n=n)
        Path("started").touch()
        while hold and Path(hold).exists():
            time.sleep(0.05)

    def evaluate(self, action, state):
        time.sleep(0.1)
        return super().evaluate(action, state)
'''


def output(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_default_run_dir_names_each_env_arg(monkeypatch, capsys, tmp_path):
    assert default_run_dir("ttd/LABS-v0", 0) == "runs/LABS-v0-seed0"
    assert default_run_dir("ttd/LABS-v0", 3, {"n": 40, "initial": "record"}) == "runs/LABS-v0-initialrecord-n40-seed3"
    assert default_run_dir("m:P", 0, {"path": "a/b c", "xs": [1, 2]}) == "runs/P-patha_b_c-xs_1_2_-seed0"
    monkeypatch.chdir(tmp_path)
    for n in ("8", "9"):  # a second run of one env with another option does not collide with the first
        assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", f"n={n}", "--steps", "1", *SMALL]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["LABS-v0-n8-seed0", "LABS-v0-n9-seed0"]
    assert all(len(line) <= 80 for line in output(capsys))


def test_a_bad_argument_is_reported_before_a_collision(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", "--steps", "1", *SMALL,
                 "--run-dir", str(run)]) == 0
    output(capsys)
    for bad, expected in ((["--env-arg", "n=abc"], "n must be an integer"), (["--temperature", "0"], "--temperature")):
        assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", *SMALL, *bad, "--run-dir", str(run)]) == 2
        lines = output(capsys)
        assert len(lines) == 1 and expected in lines[0] and "already holds" not in lines[0], lines
    assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", *SMALL, "--run-dir", str(run)]) == 2
    assert "already holds a run" in output(capsys)[0]


def test_a_group_of_one_is_refused_unless_nothing_is_learned(capsys, tmp_path):
    assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", "--group-size", "1",
                 "--run-dir", str(tmp_path / "a")]) == 2
    lines = output(capsys)
    assert len(lines) == 1 and "--group-size must be >= 2, got 1" in lines[0] and "--no-update" in lines[0], lines
    assert not (tmp_path / "a").exists()
    assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", "--group-size", "1", "--no-update",
                 "--steps", "1", "--groups-per-step", "2", "--run-dir", str(tmp_path / "b")]) == 0


def test_a_resume_says_from_which_step_and_when_there_is_nothing_to_do(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--env", "ttd/LABS-v0", "--env-arg", "n=8", "--steps", "2", *SMALL,
                 "--run-dir", str(run)]) == 0
    output(capsys)
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "1"]) == 0
    text = " ".join(output(capsys))
    assert f"nothing to do: {run} is at step 2 of 1" in text and "--steps N with N > 2" in text
    assert steps_logged(run) == [1, 2]
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "3"]) == 0
    assert f"resuming {run} from step 2 of 3" in " ".join(output(capsys))
    assert steps_logged(run) == [1, 2, 3]


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ttd_agent.cli", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": f"{cwd}:{ROOT}", "COLUMNS": "80"})


def _interrupt_when(process: subprocess.Popen[str], ready: Path) -> str:
    """Ctrl-C (SIGINT) once `ready` exists; the command's exit status must be 130; its output."""
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None and ready.exists(), process.communicate()[0][-3000:]
        process.send_signal(signal.SIGINT)
        out = process.communicate(timeout=60)[0]
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return out


def _advised(out: str) -> list[str]:
    """The command the interrupt advice says to run next, as argv for `python -m ttd_agent.cli`."""
    command = shlex.split(" ".join(out.split()).split("continue with: ", 1)[1])
    assert command[0] == "ttd-agent"
    return command[1:]


@pytest.mark.slow
def test_ctrl_c_during_set_up_advises_to_rerun_and_that_works(tmp_path):
    (tmp_path / "slow_labs.py").write_text(SLOW_LABS)
    (tmp_path / "hold").touch()
    argv = ["train", "--env", "slow_labs:SlowLABS", "--env-arg", "hold=hold", "--steps", "1", *SMALL]
    out = _interrupt_when(_start(argv, tmp_path), tmp_path / "started")
    assert "interrupted during set-up, before anything was saved: rerun the same command (without --resume)" in out
    (tmp_path / "hold").unlink()
    again = _start(argv, tmp_path)
    assert again.wait(timeout=120) == 0, again.communicate()[0][-3000:]


@pytest.mark.slow
def test_ctrl_c_between_steps_prints_the_best_and_a_resume_that_works(tmp_path):
    (tmp_path / "slow_labs.py").write_text(SLOW_LABS)
    run = tmp_path / "runs" / "SlowLABS-seed0"
    out = _interrupt_when(_start(["train", "--env", "slow_labs:SlowLABS", "--steps", "8", *SMALL], tmp_path),
                          run / "latest.json")
    assert "interrupted: best so far: reward " in out and "ttd-agent best runs/SlowLABS-seed0" in out, out
    assert all(len(line) <= 80 for line in out.splitlines() if "interrupted" not in line)
    advised = _advised(out)
    assert advised == ["train", "--run-dir", "runs/SlowLABS-seed0", "--resume"]
    resumed = _start(advised, tmp_path)
    text = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0 and "resuming runs/SlowLABS-seed0 from step" in text, text[-3000:]
    assert steps_logged(run) == list(range(1, 9))
