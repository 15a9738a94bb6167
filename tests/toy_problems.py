"""Problems for the trainer's LLM-path tests: any text scores (reward = distinct characters / 10,
capped at 1), so a random tiny model's groups differ in reward and updates carry signal.

A test module names its own variant (`env="<module>:<Name>"`) with the trainer defaults it needs:
`Distinct = distinct_characters(group_size=3, steps=2)`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ttd_envs.core.problem import Evaluation, Record, TrainerDefaults
from ttd_envs.core.state import State


class DistinctCharacters:
    name, summary = "DistinctCharacters", "write text with many distinct characters"
    record = Record(10.0, "the cap", higher_is_better=True)
    defaults = TrainerDefaults(model_kind="llm", group_size=4, groups_per_step=2, steps=2, max_new_tokens=12,
                               eval_timeout_s=5.0)
    eval_s = 0.0
    """Seconds each evaluation sleeps first: a stand-in for a sandboxed run's latency."""

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(code="", reward=0.0, score=0.0)

    def prompt(self, state: State) -> str:
        return f"Write something with more distinct characters than {state.code!r}."

    def evaluate(self, action: str, state: State) -> Evaluation:
        time.sleep(self.eval_s)
        distinct = len(set(action))
        return Evaluation(reward=min(distinct, 10) / 10, valid=True, score=float(distinct), code=action)


def distinct_characters(eval_s: float = 0.0, **defaults: Any) -> type[DistinctCharacters]:
    """A variant of `DistinctCharacters` with other trainer defaults (and evaluation latency)."""
    return type("DistinctCharacters", (DistinctCharacters,),
                {"defaults": dataclasses.replace(DistinctCharacters.defaults, **defaults), "eval_s": eval_s})
