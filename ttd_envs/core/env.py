"""DiscoveryEnv: the one Gymnasium wrapper every ttd problem shares."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ttd_envs.core.problem import Evaluation, Problem
from ttd_envs.core.state import State
from ttd_envs.core.text import MAX_ACTION_CHARS, MAX_PROMPT_CHARS, AnswerText, clean_output, sanitize


class DiscoveryEnv(gym.Env[str, str]):
    """Observation = prompt for the current state; action = the model's whole answer.

    One attempt per episode by default; `max_turns > 1` keeps going from each new valid state.
    `reset(options={"state": s})` starts from any earlier State (a dict from `State.to_dict`
    also works), which is how a trainer reuses its buffer. `info["elapsed_s"]` is the time the
    action's program ran (0 when nothing ran), so equal actions give equal infos.

    `info` has the same keys after every reset and step: the common ones, plus the problem's
    `info_keys` (None where a step did not produce them, e.g. an answer that failed to parse).
    `info["stdout"]` is cleaned of control characters and undecodable bytes. An action that is
    not a str is a zero-reward step ("the answer must be text (str), got bytes").
    """

    metadata = {"render_modes": []}

    def __init__(self, problem: Problem, max_turns: int = 1) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.problem = problem
        self.max_turns = max_turns
        self.observation_space = AnswerText(MAX_PROMPT_CHARS)
        self.action_space = AnswerText(MAX_ACTION_CHARS)
        self.info_keys: tuple[str, ...] = tuple(getattr(problem, "info_keys", ()))
        self.state: State | None = None
        self._turn = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        start = (options or {}).get("state")
        if start is None:
            self.state = self.problem.initial_state(self.np_random)
        elif isinstance(start, State):
            self.state = start
        elif isinstance(start, dict):
            self.state = State.from_dict(start)
        else:
            raise TypeError(f"options['state'] must be a State or a dict from State.to_dict(), got {type(start).__name__}")
        self._turn = 0
        info = self._info(state=self.state, score=self.state.score, valid=True, error=None,
                          stdout=self.state.stdout, elapsed_s=0.0, details={})
        return self._observation(), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if isinstance(action, str):
            evaluation = self.problem.evaluate(action, self.state)
        else:
            evaluation = Evaluation.failure(f"the answer must be text (str), got {type(action).__name__}")
        new_state = evaluation.child_of(self.state)
        if new_state is not None:
            self.state = new_state
        self._turn += 1
        reward = float(evaluation.reward) if np.isfinite(evaluation.reward) else 0.0
        info = self._info(state=new_state, score=evaluation.score, valid=evaluation.valid, error=evaluation.error,
                          stdout=evaluation.stdout, elapsed_s=evaluation.elapsed_s, details=evaluation.details)
        terminated = self._turn >= self.max_turns
        return self._observation(), reward, terminated, False, info

    def _info(self, *, state: State | None, score: float | None, valid: bool, error: str | None, stdout: str | None,
              elapsed_s: float, details: dict[str, Any]) -> dict[str, Any]:
        """The common keys, then every one of the problem's `info_keys` (None when absent)."""
        return {"state": state, "score": score, "valid": valid, "error": error,
                "stdout": clean_output(stdout or ""), "elapsed_s": elapsed_s,
                **{key: None for key in self.info_keys}, **details}

    def _observation(self) -> str:
        assert self.state is not None
        return sanitize(self.problem.prompt(self.state))[:MAX_PROMPT_CHARS]
