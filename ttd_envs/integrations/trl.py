"""TRL: `GRPOTrainer` reward functions and datasets from any ttd env, and TRL's env-object contract.

    from trl import GRPOConfig, GRPOTrainer
    from ttd_envs.integrations.trl import build_dataset, reward_function

    dataset = build_dataset("ttd/LABS-v0", count=64, env_kwargs={"n": 24})
    trainer = GRPOTrainer(model=..., reward_funcs=reward_function(), train_dataset=dataset, args=GRPOConfig(...))

The dataset has TRL's `prompt` column plus `env_id`, `env_kwargs` and `state` (the start state as
JSON); TRL passes every column to the reward function by name, so each completion is scored
against its own start state, in parallel, by the problem's own sandboxed evaluation. Nothing
here imports TRL or torch: the contracts are plain callables and classes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from ttd_envs.integrations import common


class TtdReward:
    """A TRL reward function: (prompts, completions, **columns) -> one float or None per completion.

    Rows without ttd columns (another task in a mixed dataset) get None, which TRL leaves out of
    the sum for that completion. `ttd/MathVote-v0` rows are scored as groups: the completions that
    share a start state are the votes of one majority vote.
    """

    def __init__(self, name: str = "ttd") -> None:
        self.__name__ = name  # TRL logs each reward under its function's name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], env_id: Sequence[str | None] | None = None,
                 env_kwargs: Sequence[str | None] | None = None, state: Sequence[str | None] | None = None,
                 **columns: Any) -> list[float | None]:
        n = len(completions)
        if env_id is None or state is None:
            raise ValueError("the dataset has no 'env_id'/'state' columns: build it with "
                             "ttd_envs.integrations.trl.build_dataset (or add them per row, see common.row)")
        options = env_kwargs if env_kwargs is not None else ["{}"] * n
        rewards: list[float | None] = [None] * n
        single = [i for i in range(n) if env_id[i] and state[i] and not common.is_group_env(env_id[i])]
        evaluations = common.evaluate_many([env_id[i] for i in single], [options[i] for i in single],
                                           [state[i] for i in single], [completions[i] for i in single])
        for i, evaluation in zip(single, evaluations):
            rewards[i] = common.finite_reward(evaluation)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in range(n):
            if env_id[i] and state[i] and common.is_group_env(env_id[i]):
                groups[(options[i] or "{}", state[i])].append(i)
        for (group_options, _), members in groups.items():
            vote_options = common.parse_options(group_options)
            votes, _, _ = common.majority_vote([completions[i] for i in members],
                                               vote_options.get("answer_fallback", "none"),
                                               vote_options.get("timeout_s", 2.0))
            for i, reward in zip(members, votes):
                rewards[i] = reward
        return rewards


def reward_function(name: str = "ttd") -> TtdReward:
    """The reward function for `GRPOTrainer(reward_funcs=...)`; works for every ttd env at once."""
    return TtdReward(name)


def build_dataset(env_id: str, count: int = 1, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None,
                  conversational: bool = False, system_prompt: str | None = None) -> Any:
    """A `datasets.Dataset` of `count` start states (see `common.start_rows`) for GRPOTrainer.

    `conversational=True` makes `prompt` a chat (a list of messages), for chat-templated models.
    """
    from datasets import Dataset

    rows = common.start_rows(env_id, count, seed, env_kwargs)
    if conversational:
        for r in rows:
            messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
            r["prompt"] = [*messages, {"role": "user", "content": r["prompt"]}]  # type: ignore[assignment]
    return Dataset.from_list(rows)


class TtdToolEnv:
    """TRL's `environment_factory` contract: one instance per rollout, reset from the row.

    The model gets one tool, `submit`, which scores a candidate and answers with the result; it may
    call it again to improve on its best. `get_reward` (called once per finished rollout) is the
    best reward of the rollout's submissions, 0 when none was valid. Multi-turn tool calling
    needs a model and chat template that support tools.
    """

    def __init__(self) -> None:
        self._row: dict[str, str] | None = None
        self._best = 0.0

    def reset(self, env_id: str | None = None, env_kwargs: str = "{}", state: str | None = None,
              **columns: Any) -> str | None:
        if not env_id or not state:
            raise ValueError("TtdToolEnv needs the 'env_id' and 'state' columns of build_dataset's rows")
        if common.is_group_env(env_id):
            raise ValueError(f"{env_id} is scored by a majority vote over a group; use reward_function() for it")
        self._row = {"env_id": env_id, "env_kwargs": env_kwargs, "state": state}
        self._best = 0.0
        return None  # the prompt column already holds the problem

    def submit(self, answer: str) -> str:
        """Score a candidate answer with the problem's exact evaluation.

        Args:
            answer: The whole answer, e.g. a fenced code block for program problems.

        Returns:
            The reward and score, or what made the answer invalid.
        """
        if self._row is None:
            return "error: the environment was not reset"
        evaluation = common.evaluate(self._row["env_id"], self._row["env_kwargs"], self._row["state"], answer)
        reward = common.finite_reward(evaluation)
        self._best = max(self._best, reward)
        if not evaluation.valid:
            return f"invalid: {evaluation.error}"
        return f"valid: reward {reward:.10g}, score {evaluation.score!r}; best so far {self._best:.10g}"

    def get_reward(self) -> float:
        return self._best
