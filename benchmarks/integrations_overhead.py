"""What each framework adapter costs: evaluations per second through it vs direct `env.step`.

Run from the repository root with the framework extras installed:
`python -m benchmarks.integrations_overhead`. Two envs: ttd/LABS-v0 (N = 32; scoring is a few
microseconds, so this shows the adapter's own overhead) and ttd/ErdosOverlap-v0 from the record
(every answer runs in the sandbox, ~10-20 ms). Each adapter scores the same K valid answers the
way its framework calls it: direct = `env.step` one at a time (reset to the start state, then
step; both build a prompt) or `problem.evaluate` alone (what every adapter calls); verifiers =
`Task.score` on K traces gathered on one event loop; TRL = one reward-function call on a batch
of K; verl = `compute_score` one call at a time (verl spreads calls over its reward workers);
OpenEnv = a client stepping a localhost server process over its WebSocket. Rounds alternate so
every path sees the same load. Writes section `integrations_overhead` of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import gymnasium as gym
import verifiers.v1 as vf

import ttd_envs  # noqa: F401
from benchmarks._report import markdown_table, write_section
from ttd_envs.integrations import common
from ttd_envs.integrations.openenv import TtdAction, TtdEnvClient
from ttd_envs.integrations.trl import reward_function
from ttd_envs.integrations.verifiers import TtdTask, TtdTaskData
from ttd_envs.integrations.verl import compute_score

ERDOS_RECORD = '''```python
def run(seed=42, budget_s=300, **kwargs):
    h = initial_h_values
    return h, c5_bound(h), len(h)
```'''
CASES = {  # env id -> (options, server --env-arg values, K answers)
    "ttd/LABS-v0": ({"n": 32}, ["n=32"], ["+-" * 16, "++--" * 8, "+++-" * 8, "+--+" * 8] * 8),
    "ttd/ErdosOverlap-v0": ({"initial": "record"}, ["initial=record"], [ERDOS_RECORD] * 16),
}
ROUNDS = 3


def _trace(task: TtdTask, reply: str) -> vf.Trace:
    nodes = [vf.MessageNode(message=vf.UserMessage(content=task.data.prompt_text)),
             vf.MessageNode(parent=0, message=vf.AssistantMessage(content=reply), sampled=True)]
    return vf.Trace(task=vf.TraceTask(type="TtdTask", data=task.data), agent=vf.AgentInfo(config=vf.AgentConfig()),
                    nodes=nodes)


def _serve(env_id: str, env_args: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [arg for value in env_args for arg in ("--env-arg", value)]
    process = subprocess.Popen([sys.executable, "-m", "ttd_envs.integrations.openenv", env_id, "--port", str(port),
                                *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"the OpenEnv server for {env_id} did not start")


def paths(env_id: str, options: dict, answers: list[str], url: str) -> dict[str, Callable[[], list[float]]]:
    (row,) = common.start_rows(env_id, 1, 0, options)
    env = gym.make(env_id, **options)
    start = common.parse_state(row["state"])
    task = TtdTask(TtdTaskData(**row))
    trl_reward = reward_function()
    client = TtdEnvClient(base_url=url).sync()
    client.connect()

    def direct() -> list[float]:
        rewards = []
        for answer in answers:
            env.reset(options={"state": start})
            rewards.append(env.step(answer)[1])
        return rewards

    problem = common.problem_for(env_id, options)

    def evaluate() -> list[float]:
        return [problem.evaluate(answer, start).reward for answer in answers]

    def verifiers_path() -> list[float]:
        traces = [_trace(task, answer) for answer in answers]

        async def score() -> None:
            await asyncio.gather(*(task.score(trace) for trace in traces))

        asyncio.run(score())
        return [trace.reward for trace in traces]

    def trl_path() -> list[float]:
        k = len(answers)
        return trl_reward([row["prompt"]] * k, answers, env_id=[env_id] * k, env_kwargs=[row["env_kwargs"]] * k,
                          state=[row["state"]] * k)

    def verl_path() -> list[float]:
        info = {"env_kwargs": row["env_kwargs"], "state": row["state"]}
        return [compute_score(env_id, answer, "", info)["score"] for answer in answers]

    def openenv_path() -> list[float]:
        rewards = []
        for answer in answers:
            client.reset(state=row["state"])
            rewards.append(client.step(TtdAction(answer=answer)).reward)
        return rewards

    return {"direct env.step": direct, "direct problem.evaluate": evaluate, "verifiers Task.score": verifiers_path, "TRL reward_funcs": trl_path,
            "verl compute_score": verl_path, "OpenEnv client.step": openenv_path}


def main() -> None:
    load_before = os.getloadavg()[0]
    rows = []
    for env_id, (options, env_args, answers) in CASES.items():
        server, url = _serve(env_id, env_args)
        try:
            measured = paths(env_id, options, answers, url)
            reference = measured["direct env.step"]()
            best: dict[str, float] = {}
            for name, run in measured.items():  # warm-up, and every path must agree with env.step
                assert run() == reference, f"{name} disagrees with env.step on {env_id}"
            for _ in range(ROUNDS):
                for name, run in measured.items():
                    start = time.perf_counter()
                    run()
                    best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
        finally:
            server.terminate()
            server.wait(timeout=30)
        direct_rate = len(answers) / best["direct env.step"]
        for name, seconds in best.items():
            rate = len(answers) / seconds
            rows.append([env_id, name, len(answers), f"{rate:,.0f}", f"{rate / direct_rate:.2f}"])
    load_after = os.getloadavg()[0]
    table = markdown_table(["env", "path", "answers", "evaluations/s", "vs env.step"], rows)
    notes = (f"Best of {ROUNDS} alternating rounds; load average {load_before:.1f} before, {load_after:.1f} after "
             "(shared machine: compare the ratios, not the absolute rates). Every path returned exactly the "
             "rewards of env.step before timing.")
    print(table)
    print(notes)
    write_section("integrations_overhead", f"{table}\n\n{notes}")


if __name__ == "__main__":
    main()
