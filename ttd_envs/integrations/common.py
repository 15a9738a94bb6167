"""What every framework adapter shares: task rows, start states, scoring, the majority vote.

A *task row* is the framework-neutral form of "one prompt to answer": plain strings only, so it
travels through a Hugging Face dataset, a parquet file, a JSON wire or a pydantic model unchanged:

    {"prompt": str, "env_id": "ttd/ErdosOverlap-v0", "env_kwargs": '{"initial": "record"}',
     "state": '<State.to_json()>'}

Scoring a completion against a row rebuilds the Problem once per (env id, kwargs) in this process
(it keeps its warm sandbox) and calls `problem.evaluate(answer, state)`: the same sandbox and the
same exact scoring as `env.step`. `ttd/MathVote-v0` has no per-answer reward: its rows carry the
question index and `majority_vote` scores a whole group.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ttd_envs.answers import AnswerJudge, extract_answer
from ttd_envs.core.env import DiscoveryEnv
from ttd_envs.core.problem import Evaluation, Problem
from ttd_envs.core.state import State
from ttd_envs.registration import ENVS, make_problem

VOTE_ENV_ID = "ttd/MathVote-v0"
ROW_COLUMNS = ("prompt", "env_id", "env_kwargs", "state")


def known_env_ids() -> tuple[str, ...]:
    return tuple(entry.env_id for entry in ENVS)


def is_group_env(env_id: str) -> bool:
    """True for envs whose reward needs the whole group of answers (the TTRL majority vote)."""
    return env_id == VOTE_ENV_ID


def kwargs_key(env_kwargs: Mapping[str, Any] | str | None) -> str:
    """The canonical JSON of an env's options: how rows carry them and how problems are cached."""
    if env_kwargs is None:
        return "{}"
    if isinstance(env_kwargs, str):
        env_kwargs = json.loads(env_kwargs or "{}")
    try:
        return json.dumps(dict(env_kwargs), sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"env options must be JSON values (they travel in dataset rows), got {env_kwargs!r}: "
                        f"{exc}") from exc


def parse_options(env_kwargs: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """An env's options as a dict, from a row's JSON or a mapping."""
    return json.loads(kwargs_key(env_kwargs))


@functools.lru_cache(maxsize=64)
def _problem(env_id: str, key: str) -> Problem:
    return make_problem(env_id, **json.loads(key))


def problem_for(env_id: str, env_kwargs: Mapping[str, Any] | str | None = None) -> Problem:
    """The Problem behind a row, built once per (id, options) in this process."""
    if is_group_env(env_id):
        raise ValueError(f"{env_id} scores groups of answers, not one answer: use majority_vote(...)")
    return _problem(env_id, kwargs_key(env_kwargs))


@functools.lru_cache(maxsize=8)
def _judge(timeout_s: float) -> AnswerJudge:
    return AnswerJudge(timeout_s=timeout_s)


def row(env_id: str, prompt: str, state: State, env_kwargs: Mapping[str, Any] | str | None = None) -> dict[str, str]:
    return {"prompt": prompt, "env_id": env_id, "env_kwargs": kwargs_key(env_kwargs), "state": state.to_json()}


def start_rows(env_id: str, count: int = 1, seed: int = 0,
               env_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """`count` task rows from the env's start states (reset with seeds seed..seed+count-1).

    `env_kwargs` are the env's options, as for `gymnasium.make(env_id, **env_kwargs)`. Problems
    with one fixed start (e.g. Erdős from the record) give equal rows, which is what a framework
    that samples a group per row wants. For `ttd/MathVote-v0` row i is question (seed + i) mod the
    number of questions; `{"dataset": ...}` picks the set as in `gym.make_vec`.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    env_kwargs = dict(env_kwargs or {})
    if is_group_env(env_id):
        return _question_rows(count, seed, env_kwargs)
    env = DiscoveryEnv(problem_for(env_id, env_kwargs))
    rows = []
    for i in range(count):
        prompt, info = env.reset(seed=seed + i)
        rows.append(row(env_id, prompt, info["state"], env_kwargs))
    return rows


def _question_rows(n: int, seed: int, env_kwargs: Mapping[str, Any]) -> list[dict[str, str]]:
    from ttd_envs.problems.mathvote import make_vote_env

    options = {k: v for k, v in env_kwargs.items() if k not in ("n_votes", "num_envs")}  # rows are per question
    env = make_vote_env(n_votes=1, **options)
    try:
        count = len(env.questions)
        rows = []
        for i in range(n):
            index = (seed + i) % count
            prompts, _ = env.reset(options={"question": index})
            state = State(construction={"question_index": index}, is_initial=True,
                          metadata={"question_id": env.questions[index].id})
            rows.append(row(VOTE_ENV_ID, prompts[0], state, env_kwargs))
        return rows
    finally:
        env.close()


def state_row(env_id: str, state: State | Mapping[str, Any] | str,
              env_kwargs: Mapping[str, Any] | str | None = None) -> dict[str, str]:
    """The row that asks to improve an earlier state (a `State`, its dict or its JSON)."""
    parsed = parse_state(state)
    return row(env_id, DiscoveryEnv(problem_for(env_id, env_kwargs)).reset(options={"state": parsed})[0],
               parsed, env_kwargs)


def parse_state(state: State | Mapping[str, Any] | str) -> State:
    if isinstance(state, State):
        return state
    if isinstance(state, str):
        return State.from_json(state)
    if isinstance(state, Mapping):
        return State.from_dict(dict(state))
    raise TypeError(f"a start state is a State, its dict or its JSON, got {type(state).__name__}")


def completion_text(completion: str | Sequence[Mapping[str, Any]] | None) -> str:
    """The answer text of a completion: a string, or the last assistant message of a chat."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    for message in reversed(list(completion)):
        if message.get("role", "assistant") == "assistant":
            content = message.get("content") or ""
            if isinstance(content, list):  # content parts
                return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
            return str(content)
    return ""


def finite_reward(evaluation: Evaluation) -> float:
    reward = float(evaluation.reward)
    return reward if math.isfinite(reward) else 0.0


def evaluate(env_id: str, env_kwargs: Mapping[str, Any] | str | None, state: State | Mapping[str, Any] | str,
             completion: str | Sequence[Mapping[str, Any]]) -> Evaluation:
    """Score one completion against its row: the problem's own sandboxed evaluation."""
    return problem_for(env_id, env_kwargs).evaluate(completion_text(completion), parse_state(state))


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="ttd-eval")


async def evaluate_async(env_id: str, env_kwargs: Mapping[str, Any] | str | None,
                         state: State | Mapping[str, Any] | str,
                         completion: str | Sequence[Mapping[str, Any]]) -> Evaluation:
    """`evaluate` in a thread pool: a sandboxed run never blocks the event loop, and many run at once."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), evaluate, env_id, env_kwargs, state, completion)


def evaluate_many(env_ids: Sequence[str], env_kwargs: Sequence[Any], states: Sequence[Any],
                  completions: Sequence[Any]) -> list[Evaluation]:
    """Score a batch in parallel (one pool thread per completion; the sandbox runs each in its own process)."""
    return list(_pool().map(evaluate, env_ids, env_kwargs, states, completions))


def vote_answer(completion: str | Sequence[Mapping[str, Any]], answer_fallback: str = "none") -> str | None:
    """The final answer a completion votes for (the last \\boxed{...}), or None."""
    return extract_answer(completion_text(completion), answer_fallback)  # type: ignore[arg-type]


def majority_vote(completions: Sequence[str | Sequence[Mapping[str, Any]]], answer_fallback: str = "none",
                  timeout_s: float = 2.0) -> tuple[list[float], str | None, float]:
    """TTRL's group reward for N answers to one question: 1 for answers equal to the majority.

    Returns (rewards, majority label, majority ratio); the same judge as `ttd/MathVote-v0`.
    """
    answers = [vote_answer(c, answer_fallback) for c in completions]
    return vote_answers(answers, timeout_s)


def vote_answers(answers: Sequence[str | None], timeout_s: float = 2.0) -> tuple[list[float], str | None, float]:
    vote = _judge(float(timeout_s)).vote(list(answers))
    return list(vote.rewards), vote.label, vote.ratio
