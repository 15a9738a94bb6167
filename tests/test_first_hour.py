"""The first hour of a new user, end to end on a CPU: write a problem in a directory of your own,
check it, train on it with `--model tiny`, kill the run, resume it, and read its best state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = '''
import numpy as np

from ttd_envs import Record, State, TrainerDefaults, register_problem
from ttd_envs.core.program_problem import InvalidConstruction, ProgramBudget, PythonProgramProblem


class SumOfSquares(PythonProgramProblem):
    """Write n non-negative integers summing to 10 with the smallest sum of squares."""

    name, summary = "SumOfSquares", "n non-negative integers summing to 10, smallest sum of squares"
    record = Record(20, "the optimum for n = 5", higher_is_better=False)
    defaults = TrainerDefaults(model_kind="llm", groups_per_step=2, group_size=2, eval_timeout_s=20)
    entry = "numbers"

    def __init__(self, n: int = 5) -> None:
        super().__init__(ProgramBudget(budget_s=5, timeout_s=10))
        self.n = n

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(is_initial=True)

    def check(self, value):
        a = np.asarray(value)
        if a.shape != (self.n,) or a.dtype.kind not in "iu" or a.min() < 0 or a.sum() != 10:
            raise InvalidConstruction(f"return {self.n} non-negative integers summing to 10")
        return a.tolist(), float(np.sum(a * a))

    def reward_for(self, score: float) -> float:
        return 1.0 / score

    def prompt(self, state: State) -> str:
        return f"Write a ```python block defining numbers() returning {self.n} non-negative integers summing to 10."


register_problem("mine/SumOfSquares-v0", SumOfSquares)
'''


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttd_agent.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "80"})


@pytest.mark.slow
def test_a_new_problem_from_check_env_to_resume_and_best(tmp_path: Path) -> None:
    (tmp_path / "my_problem.py").write_text(PROBLEM)
    check = textwrap.dedent('''
        import gymnasium as gym
        from gymnasium.utils.env_checker import check_env
        import my_problem
        env = gym.make("mine/SumOfSquares-v0")
        check_env(env.unwrapped, skip_render_check=True)
        env.reset(seed=0)
        _, reward, _, _, info = env.step("```python\\ndef numbers():\\n    return [2, 2, 2, 2, 2]\\n```")
        assert info["valid"] and info["score"] == 20 and reward == 1 / 20, info
        env.unwrapped.problem.close()
    ''')
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "runs" / "SumOfSquares-seed0"
    command = [sys.executable, "-m", "ttd_agent.cli", "train", "--env", "my_problem:SumOfSquares", "--model", "tiny",
               "--steps", "40"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "latest.json").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert (run / "latest.json").exists(), "no checkpoint within the deadline"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed_at = json.loads((run / "latest.json").read_text())["step"]

    resumed = cli("train", "--run-dir", str(run), "--resume", "--steps", str(killed_at + 1), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "no valid answer in" in resumed.stdout and "Traceback" not in resumed.stderr
    assert all(len(line) <= 80 for line in resumed.stdout.splitlines())
    assert "\x1b[" not in resumed.stdout, "no colour codes when the output is not a terminal"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, killed_at + 2))

    best = cli("best", str(run), cwd=tmp_path)
    assert best.returncode == 0 and "no valid answer yet" in best.stdout, best.stdout + best.stderr
