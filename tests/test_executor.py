"""The evaluation executor: parallel, ordered, and a broken evaluation is a failed rollout, not a crash."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ttd_agent.executor import Executor
from ttd_envs.core.problem import Evaluation, Record, TrainerDefaults
from ttd_envs.core.state import State
from ttd_envs.registration import make_problem
from timing import within


class TroubleProblem:
    """A real Problem whose evaluation misbehaves on request: the action names what to do."""

    name, summary = "Trouble", "evaluations that raise, hang or kill their worker"
    record: Record | None = None
    defaults = TrainerDefaults(model_kind="embedded")

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(reward=0.0, is_initial=True)

    def prompt(self, state: State) -> str:
        return "say ok"

    def evaluate(self, action: str, state: State) -> Evaluation:
        if action == "raise":
            raise RuntimeError("a bug in the problem")
        if action == "hang":
            time.sleep(3)
        if action == "die":
            os._exit(3)
        if action.startswith("sleep"):
            time.sleep(float(action.split()[1]))
        return Evaluation(reward=float(len(action)), valid=True, score=float(len(action)), construction=action)


def test_results_come_back_in_job_order_and_run_in_parallel() -> None:
    executor = Executor(TroubleProblem(), workers=4, timeout_s=10)
    jobs = [("sleep 1.0", State()) for _ in range(4)] + [("ok", State())]
    started = time.perf_counter()
    results = executor.evaluate(jobs)
    elapsed = time.perf_counter() - started
    executor.close()
    assert [r.reward for r in results] == [9.0] * 4 + [2.0]
    within(elapsed, 3.0, "4 jobs of 1 s (4 s one after another) on 4 workers")  # 2 s of margin for load


def test_a_raising_evaluation_is_a_failed_rollout() -> None:
    executor = Executor(TroubleProblem(), workers=2, timeout_s=10)
    results = executor.evaluate([("raise", State()), ("fine", State())])
    executor.close()
    assert not results[0].valid and results[0].reward == 0.0
    assert "RuntimeError: a bug in the problem" in results[0].error
    assert results[1].valid and results[1].reward == 4.0


def test_a_hanging_evaluation_fails_at_its_deadline() -> None:
    executor = Executor(TroubleProblem(), workers=2, timeout_s=0.5)
    started = time.perf_counter()
    results = executor.evaluate([("hang", State()), ("ok", State())])
    within(time.perf_counter() - started, 2.5, "a 3 s hang with a 0.5 s deadline")  # under the hang: cut at the deadline
    executor.close()
    assert not results[0].valid and "deadline" in results[0].error
    assert results[1].valid


def test_a_worker_process_that_dies_is_a_failed_rollout_and_the_pool_recovers() -> None:
    executor = Executor(TroubleProblem(), workers=2, timeout_s=10, kind="process")
    results = executor.evaluate([("die", State()), ("ok", State())])
    assert not results[0].valid and "died" in results[0].error
    again = executor.evaluate([("fine", State())])
    executor.close()
    assert again[0].valid and again[0].reward == 4.0


def test_sandboxed_programs_run_through_the_executor(leftover_processes) -> None:
    """A real code-writing env: a hostile program and a good one in one batch, both contained."""
    problem = make_problem("ttd/CirclePacking26-v0", budget_s=1, timeout_s=2)
    state = problem.initial_state(np.random.default_rng(0))
    hostile = "```python\ndef run_packing(**kwargs):\n    while True:\n        pass\n```"
    executor = Executor(problem, workers=2, timeout_s=60)
    try:
        results = executor.evaluate([(hostile, state), ("no code at all", state)])
    finally:
        executor.close()
        problem.close()
    assert [r.valid for r in results] == [False, False]
    assert all(r.reward == 0.0 and r.error for r in results)
    assert "time" in results[0].error.lower(), results[0].error
    assert leftover_processes() == []


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="eval-workers"):
        Executor(TroubleProblem(), workers=0)
