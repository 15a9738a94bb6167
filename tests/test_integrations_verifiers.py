"""verifiers: the env loads by name and real completions score through the task's own scoring hook.

`Task.score(trace)` is what verifiers' rollout calls once the model has answered; here the
trace carries real answers (the Erdős record construction, hostile programs, math answers)
instead of a model's, since no model server runs in CI. A full `vf-eval` rollout needs an
OpenAI-compatible endpoint and `uv` to launch the chat harness: not run here.
"""

from __future__ import annotations

import asyncio
import json

import pytest

vf = pytest.importorskip("verifiers.v1", reason="needs the verifiers extra: pip install -e '.[verifiers]'")

from ttd_envs.integrations import common  # noqa: E402
from ttd_envs.integrations.verifiers import TtdEnv, TtdTask, improved_task, load_environment  # noqa: E402

RECORD = '''```python
def run(seed=42, budget_s=300, **kwargs):
    h = initial_h_values
    return h, c5_bound(h), len(h)
```'''
HOSTILE = {
    "escape": "```python\nimport os, socket\ndef run(**kw):\n    socket.create_connection(('1.1.1.1', 80), 1)\n```",
    "nan": "```python\nimport numpy as np\ndef run(**kw):\n    h = np.full(10, np.nan)\n    return h, 0.0, 10\n```",
    "spin": "```python\ndef run(**kw):\n    while True:\n        pass\n```",
    "no code": "I would rather not.",
}
ERDOS_RECORD_C5 = 0.38087031058621895  # initial="record": the best verified construction (Together AI, n = 600)


def make_trace(task: TtdTask, reply: str) -> vf.Trace:
    """A finished single-turn trace as the rollout leaves it: the prompt, then the sampled reply."""
    nodes = [vf.MessageNode(message=vf.UserMessage(content=task.data.prompt_text)),
             vf.MessageNode(parent=0, message=vf.AssistantMessage(content=reply), sampled=True)]
    return vf.Trace(task=vf.TraceTask(type=type(task).__name__, data=task.data),
                    agent=vf.AgentInfo(config=vf.AgentConfig()), nodes=nodes)


def test_loads_by_name_through_verifiers_loader():
    assert vf.environment_class("ttd-discovery") is TtdEnv  # how vf-eval resolves `vf-eval ttd-discovery`
    assert vf.taskset_config_type("ttd-discovery").model_fields.keys() >= {"env_id", "env_kwargs", "num_tasks"}
    env = load_environment("ttd/LABS-v0", num_tasks=3, n=16)
    assert isinstance(env, TtdEnv)
    tasks = list(env.taskset)
    assert len(tasks) == 3 and all(isinstance(t, TtdTask) for t in tasks)
    assert "N = 16" in tasks[0].data.prompt_text
    with pytest.raises(KeyError, match="unknown ttd env id"):
        load_environment("ttd/Nope-v0")


@pytest.mark.slow
def test_record_scores_the_record_and_hostile_programs_score_zero_without_blocking():
    (task,) = list(load_environment("ttd/ErdosOverlap-v0", initial="record").taskset)
    (strict,) = list(load_environment("ttd/ErdosOverlap-v0", initial="record", budget_s=2, timeout_s=3).taskset)
    traces = {"record": make_trace(task, RECORD), **{name: make_trace(strict, reply) for name, reply in HOSTILE.items()}}
    tasks = {name: task if name == "record" else strict for name in traces}

    async def score_all() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        clock = asyncio.create_task(ticker())
        await asyncio.gather(*(tasks[name].score(trace) for name, trace in traces.items()))
        clock.cancel()
        return ticks

    ticks = asyncio.run(score_all())
    assert ticks >= 20, "the event loop stalled while programs ran (the 3 s spin alone allows ~60 ticks)"
    record = traces["record"]
    assert record.metrics["score"] == pytest.approx(ERDOS_RECORD_C5, abs=1e-12)
    assert record.reward == pytest.approx(1 / ERDOS_RECORD_C5)
    assert json.loads(record.info["ttd_state"])["score"] == pytest.approx(ERDOS_RECORD_C5, abs=1e-12)
    for name in HOSTILE:
        trace = traces[name]
        assert trace.reward == 0.0 and trace.metrics["valid"] == 0.0, name
        assert trace.info["error"], name


def test_majority_vote_is_the_group_reward():
    env = load_environment("ttd/MathVote-v0", dataset="aime24", num_tasks=2, votes=4)
    task = list(env.taskset)[1]
    assert "\\boxed" in task.data.prompt_text
    replies = ["so \\boxed{25}", "\\boxed{25.0}", "\\boxed{7}", "no idea"]
    traces = [make_trace(task, reply) for reply in replies]

    async def episode() -> vf.Episode:
        await asyncio.gather(*(task.score(trace) for trace in traces))
        done = vf.Episode(env=vf.EnvInfo(id="ttd-discovery"),
                          task=vf.TraceTask(type="TtdTask", data=task.data), traces=traces)
        await env.finalize(task, done)
        return done

    asyncio.run(episode())
    assert [t.reward for t in traces] == [1.0, 1.0, 0.0, 0.0]
    assert traces[0].metrics["majority_ratio"] == 0.5
    assert "discovery" not in traces[0].rewards  # no per-answer reward exists for a vote


def test_improve_the_current_best_continues_from_a_better_state_only():
    env = load_environment("ttd/LABS-v0", n=8, initial="all-plus", turns=3)
    (task,) = list(env.taskset)
    start = common.parse_state(task.data.state)
    better, same = "+++--+-+", "++++++++"
    better_trace, same_trace = make_trace(task, better), make_trace(task, same)
    asyncio.run(task.score(better_trace))
    asyncio.run(task.score(same_trace))
    assert better_trace.reward > start.reward == pytest.approx(same_trace.reward)
    follow_up = improved_task(task, better_trace)
    assert follow_up is not None
    new_state = common.parse_state(follow_up.data.state)
    assert new_state.reward == pytest.approx(better_trace.reward) and new_state.parent_id == start.id
    assert follow_up.data.prompt_text != task.data.prompt_text
    assert improved_task(task, same_trace) is None

