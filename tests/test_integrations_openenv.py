"""OpenEnv: the real client talks to our server (a separate process on localhost) and gets the
same rewards, scores and done flags as gym.make on the same actions."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import gymnasium as gym
import pytest

pytest.importorskip("openenv.core", reason="needs the openenv extra: pip install -e '.[openenv]'")

import ttd_envs  # noqa: E402,F401
from ttd_envs.integrations.openenv import TtdAction, TtdEnvClient, TtdEnvironment  # noqa: E402

ANSWERS = ["+++--+-+-+", "+-", "++++++++++", "--+-+++--+", "no sequence here"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "ttd_envs.integrations.openenv", "ttd/LABS-v0",
                                "--port", str(port), "--max-turns", "2", "--env-arg", "n=10"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the server did not start: {process.stdout.read().decode()[-2000:]}")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_client_gets_the_same_rewards_as_gym_make(server):
    reference = gym.make("ttd/LABS-v0", n=10, max_turns=2)
    with TtdEnvClient(base_url=server).sync() as client:
        for seed, (first, second) in enumerate(zip(ANSWERS, ANSWERS[1:])):
            prompt, _ = reference.reset(seed=seed)
            result = client.reset(seed=seed)
            assert result.observation.prompt == prompt and not result.done
            for answer in (first, second):
                prompt, reward, terminated, truncated, info = reference.step(answer)
                result = client.step(TtdAction(answer=answer))
                assert result.reward == pytest.approx(reward, abs=0, rel=1e-15)
                assert result.done == (terminated or truncated)
                assert result.observation.valid == info["valid"] and result.observation.score == info["score"]
                assert result.observation.prompt == prompt
            assert result.done  # max_turns=2
        # resume from a state the server handed out
        state = json.loads(result.observation.state)
        resumed = client.reset(state=result.observation.state)
        assert json.loads(resumed.observation.state)["id"] == state["id"]
        assert client.state().step_count == 0


def test_vote_env_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="majority vote"):
        TtdEnvironment("ttd/MathVote-v0")
