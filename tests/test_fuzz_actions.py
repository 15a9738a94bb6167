"""Property test over action texts: whatever the model writes (any unicode, any length up to the
action limit, hostile fences), `env.step` returns a well-formed result within a bounded time and
never raises. Real envs, real sandbox, real g++ (for the few answers that reach it)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import ttd_envs  # noqa: F401 - registers the ids
from ttd_envs.core.text import MAX_ACTION_CHARS

FRAGMENTS = ("```", "```python\n", "```cpp\n", "```text\n", "\n```\n", "\n", " ", "\t", "\r", "def run(**kw):\n",
             "    return 1\n", "int main(){}", "\\boxed{", "}", "{", "+-", "-+", "−", "9" * 50, "é", "\x00", "\ud7ff",
             "𝔘", "\u202e", "\ud800")

action_texts = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=60).map("".join),
    st.builds(lambda parts, repeat: ("".join(parts) * repeat)[:MAX_ACTION_CHARS],
              st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6),
              st.integers(1, MAX_ACTION_CHARS)),
)

STEP_BOUND_S = {"ttd/LABS-v0": 2.0, "ttd/MathAnswer-v0": 10.0, "ttd/ErdosOverlap-v0": 30.0,
                "ttd/AHC039-v0": 60.0}
"""Generous bounds that still catch a quadratic parser (a minute on 80 KB) or a hung judge."""

ENV_KWARGS = {"ttd/LABS-v0": {"n": 16}, "ttd/MathAnswer-v0": {"dataset": "aime24", "question": 0},
              "ttd/ErdosOverlap-v0": {"initial": "empty", "budget_s": 2, "timeout_s": 10, "cpus": 1},
              "ttd/AHC039-v0": {"num_tests": 1, "workers": 1}}


@pytest.fixture(scope="module", params=sorted(ENV_KWARGS))
def env(request: pytest.FixtureRequest) -> Iterator[tuple[str, gym.Env]]:
    made = gym.make(request.param, **ENV_KWARGS[request.param])
    made.reset(seed=0)
    yield request.param, made
    made.close()
    closer = getattr(made.unwrapped.problem, "close", None)
    if closer is not None:
        closer()


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(text=action_texts)
@example(text="```python\ndef run(**kw):\n    return 1\n```")
@example(text="```python\ndef run(**kw):\n    return '\ud800' * 9\n```\n```cpp\nint main(){return 1;}\n```")
@example(text="```python\n" * (MAX_ACTION_CHARS // 10))
@example(text=("```\n" * (MAX_ACTION_CHARS // 4))[:MAX_ACTION_CHARS])
@example(text="```cpp\nint main(){ return 1; }\n```")
def test_step_returns_for_any_action_text(env: tuple[str, gym.Env], text: str) -> None:
    env_id, made = env
    made.reset(seed=0)
    started = time.perf_counter()
    _, reward, terminated, truncated, info = made.unwrapped.step(text)
    elapsed = time.perf_counter() - started
    assert elapsed < STEP_BOUND_S[env_id], f"{env_id}: step took {elapsed:.1f} s on {len(text)} characters"
    assert math.isfinite(reward)
    assert isinstance(info["valid"], bool)
    if not info["valid"]:
        assert reward == 0.0 and isinstance(info["error"], str) and info["error"]
