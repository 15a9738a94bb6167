"""verifiers (>= 0.4, the `verifiers.v1` API): every ttd env as a taskset + env, loadable by name.

verifiers 0.4 loads environments as *taskset packages*: an importable module that exports one
`vf.Taskset` subclass (and optionally one `vf.Env`). The top-level module `ttd_discovery` (id
`ttd-discovery`, shipped with this distribution) exports the two classes below, so

    vf-eval ttd-discovery --env.taskset.env-id ttd/LABS-v0 -m <model> -n 8

resolves it by name (with a model endpoint), and `load_environment("ttd/ErdosOverlap-v0",
initial="record")` builds the same env from Python through verifiers' own loader.

- `TtdTaskset` turns start states into tasks (prompt = the env's observation; the start state
  travels on the task data as JSON).
- `TtdTask.discovery` is the reward: the problem's own sandboxed evaluation of the last reply,
  run in a thread pool so the event loop never blocks and many rollouts score at once.
- `TtdEnv` plays one episode per task: one attempt (the default), `turns > 1` attempts that each
  continue from the best valid state so far ("improve the current best"), or for
  `ttd/MathVote-v0` `votes` answers whose majority vote is recorded in `finalize` (the group
  reward; verifiers' cross-trace judgement surface).
"""

from __future__ import annotations

import asyncio
from typing import Any

import verifiers.v1 as vf
from pydantic import Field

from ttd_envs.integrations import common

TASKSET_ID = "ttd-discovery"


class TtdTaskData(vf.TaskData):
    """One task: which env, its options (JSON) and the start state (State JSON)."""

    env_id: str
    env_kwargs: str = "{}"
    state: str


class TtdTask(vf.Task[TtdTaskData]):
    @vf.reward(weight=1.0)
    async def discovery(self, trace: vf.Trace) -> float | dict[str, float]:
        """The env's reward for the last reply (0 for invalid or hostile answers; never raises).

        MathVote answers have no reward of their own (the env votes in `finalize`): this records
        the extracted answer and returns no keyed score.
        """
        data = self.data
        if common.is_group_env(data.env_id):
            options = common.parse_options(data.env_kwargs)
            trace.info["answer"] = common.vote_answer(trace.last_reply, options.get("answer_fallback", "none"))
            return {}
        evaluation = await common.evaluate_async(data.env_id, data.env_kwargs, data.state, trace.last_reply)
        child = evaluation.child_of(common.parse_state(data.state))
        trace.record_metric("valid", float(evaluation.valid))
        if evaluation.score is not None:
            trace.record_metric("score", float(evaluation.score))
        trace.info["error"] = evaluation.error
        trace.info["ttd_state"] = None if child is None else child.to_json()
        return common.finite_reward(evaluation)


class TtdTasksetConfig(vf.TasksetConfig):
    env_id: str = "ttd/LABS-v0"
    """Any registered ttd id (`ttd_envs.ENVS`)."""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """The env's options, as for `gymnasium.make(env_id, **env_kwargs)`."""
    num_tasks: int = Field(1, ge=1)
    """How many start states (resets with seeds seed..seed+num_tasks-1; questions for MathVote)."""
    seed: int = 0


class TtdTaskset(vf.Taskset[TtdTask, TtdTasksetConfig]):
    def load(self) -> list[TtdTask]:
        config = self.config
        rows = common.start_rows(config.env_id, config.num_tasks, config.seed, config.env_kwargs)
        return [TtdTask(TtdTaskData(**row, name=f"{config.env_id}#{i}"), config.task) for i, row in enumerate(rows)]


class TtdEnvConfig(vf.EnvConfig):
    agent: vf.AgentConfig = vf.AgentConfig(harness={"id": "null"}, runtime={"type": "subprocess"})
    """A plain chat (no tools) run locally; answers are scored in ttd's own sandbox."""
    turns: int = Field(1, ge=1)
    """Attempts per episode; each continues from the best valid state so far."""
    votes: int = Field(8, ge=1)
    """Answers per question for ttd/MathVote-v0 (the group of the majority vote)."""


def improved_task(task: TtdTask, trace: vf.Trace) -> TtdTask | None:
    """The task that continues from the trace's new state, when it beat the task's start state."""
    new_json = trace.info.get("ttd_state")
    if new_json is None:
        return None
    new, old = common.parse_state(new_json), common.parse_state(task.data.state)
    if old.reward is not None and (new.reward is None or new.reward <= old.reward):
        return None
    next_row = common.state_row(task.data.env_id, new, task.data.env_kwargs)
    return task.with_data(prompt=next_row["prompt"], state=next_row["state"])


class TtdEnv(vf.Env[TtdEnvConfig]):
    async def run(self, task: vf.Task, agents: vf.Agents) -> None:
        assert isinstance(task, TtdTask)
        if common.is_group_env(task.data.env_id):
            async with asyncio.TaskGroup() as group:
                for _ in range(self.config.votes):
                    group.create_task(agents.agent.run(task))
            return
        current = task
        for _ in range(self.config.turns):
            trace = await agents.agent.run(current)
            current = improved_task(current, trace) or current

    async def finalize(self, task: vf.Task, episode: vf.Episode) -> None:
        if not common.is_group_env(task.data.env_id):
            return
        record_majority_vote(episode.traces, common.parse_options(task.data.env_kwargs).get("timeout_s", 2.0))


def record_majority_vote(traces: list[vf.Trace], timeout_s: float = 2.0) -> None:
    """The group reward of TTRL: each trace gets 1 when its answer equals the group's majority."""
    rewards, _, ratio = common.vote_answers([t.info.get("answer") for t in traces], timeout_s)
    for trace, reward in zip(traces, rewards):
        trace.record_reward("majority_vote", reward)
        trace.record_metric("majority_ratio", ratio)


def load_environment(env_id: str = "ttd/ErdosOverlap-v0", *, num_tasks: int = 1, seed: int = 0, turns: int = 1,
                     votes: int = 8, **env_kwargs: Any) -> vf.Env:
    """A `vf.Env` for any ttd env, built through verifiers' own loader from the `ttd-discovery` id."""
    if env_id not in common.known_env_ids():
        raise KeyError(f"unknown ttd env id {env_id!r}; known ids: {', '.join(common.known_env_ids())}")
    config = vf.resolve_env_config({
        "taskset": {"id": TASKSET_ID, "env_id": env_id, "env_kwargs": env_kwargs, "num_tasks": num_tasks,
                    "seed": seed},
        "turns": turns,
        "votes": votes,
    })
    return vf.load_environment(config)
