"""`--model tiny` writes the problem's answer format (its `example_answer()`), so the CPU plumbing
check reaches the sandbox and the user's `check()`, not just "no ```python code block"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ttd_envs import Record, State, TrainerDefaults
from ttd_envs.core.program_problem import InvalidConstruction, ProgramBudget, PythonProgramProblem

pytest.importorskip("transformers")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
GOLOMB = ROOT / "docs" / "examples" / "golomb.py"


class Pair(PythonProgramProblem):
    """Return two integers; no example_answer of its own, so the base class's default is used."""

    name, summary = "Pair", "two integers"
    record = Record(0.0, "none", higher_is_better=True)
    defaults = TrainerDefaults(model_kind="llm")
    entry = "pair"

    def __init__(self) -> None:
        super().__init__(ProgramBudget(budget_s=5, timeout_s=10))

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(is_initial=True)

    def check(self, value: object) -> tuple[object, float]:
        raise InvalidConstruction(f"check() saw {value!r}")

    def reward_for(self, score: float) -> float:
        return score

    def prompt(self, state: State) -> str:
        return "Write a ```python block defining pair()."


def test_the_default_example_answer_runs_in_the_sandbox_and_reaches_check():
    problem = Pair()
    try:
        evaluation = problem.evaluate(problem.example_answer(), problem.initial_state(np.random.default_rng(0)))
    finally:
        problem.close()
    assert not evaluation.valid and evaluation.error == "check() saw None", evaluation.error


def test_the_tiny_model_is_taught_the_answer_deterministically():
    from ttd_agent.policy.tiny import answer_to_teach, make_tiny_policy

    answer = answer_to_teach(Pair())
    assert answer == (["Write a ```python block defining pair()."], Pair().example_answer())
    first, second = (make_tiny_policy(answer=answer, lora_rank=4, device="cpu", seed=3) for _ in range(2))
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert bool((a == b).all()), "the same seed and answer rebuild the same weights (a resume needs it)"
    texts = [s.text for s in first.sample(answer[0], 8, temperature=1.0, max_new_tokens=4096)[0]]
    assert texts.count(answer[1]) >= 4, texts
    with first.model.disable_adapter():  # the KL reference is the taught model, not the random one
        greedy = first.sample(answer[0], 1, temperature=0.0, max_new_tokens=4096)[0][0].text
    assert greedy == answer[1]


@pytest.mark.slow
def test_a_tiny_run_on_a_program_problem_has_valid_programs(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ttd_agent.cli", "train", "--env", f"{GOLOMB}:GolombRuler",
                           "--model", "tiny", "--steps", "1", "--groups-per-step", "1", "--group-size", "4",
                           "--run-dir", str(run)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    valid = [row for row in rollouts if row["valid"]]
    assert valid and all(row["reward"] == pytest.approx(121 / 1023) for row in valid), rollouts
    assert "no valid answer" not in done.stdout and "best reward" in done.stdout
    best = json.loads((run / "best.json").read_text())["state"]
    assert "2 ** k" in best["code"] and best["score"] == 1023
