"""Evaluation overlaps sampling: the executor's streaming API starts work at `submit`."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ttd_agent.executor import Executor
from ttd_envs.core.problem import Evaluation, Record, TrainerDefaults
from ttd_envs.core.state import State


class SleepyProblem:
    """A real Problem whose evaluation takes as long as the action says ("sleep 0.2")."""

    name, summary = "Sleepy", "evaluations that take a set time"
    record: Record | None = None
    defaults = TrainerDefaults(model_kind="embedded")

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(reward=0.0, is_initial=True)

    def prompt(self, state: State) -> str:
        return "sleep"

    def evaluate(self, action: str, state: State) -> Evaluation:
        if action == "raise":
            raise RuntimeError("a bug in the problem")
        time.sleep(float(action.split()[1]))
        return Evaluation(reward=1.0, valid=True, score=1.0, construction=action)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_submit_starts_now_and_gather_keeps_order_and_failures(kind):
    executor = Executor(SleepyProblem(), workers=2, timeout_s=5.0, kind=kind)
    try:
        executor.evaluate([("sleep 0", State())])  # warm the pool
        t0 = time.monotonic()
        futures = [executor.submit("sleep 0.3", State()), executor.submit("raise", State())]
        time.sleep(0.4)  # the "sampler" works meanwhile
        assert futures[0].done()  # it ran during the sleep, not at gather time
        results = executor.gather(futures)
        assert time.monotonic() - t0 < 0.7
        assert results[0].valid and not results[1].valid and "RuntimeError" in results[1].error
    finally:
        executor.close()


def test_gather_turns_a_late_evaluation_into_a_failure():
    executor = Executor(SleepyProblem(), workers=1, timeout_s=0.2)
    try:
        result, = executor.gather([executor.submit("sleep 1", State())])
        assert not result.valid and "deadline" in result.error
    finally:
        executor.close()
