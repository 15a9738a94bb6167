"""OpenEnv: the real client talks to our server (a separate process on localhost) and gets the
same rewards, scores and done flags as gym.make on the same actions."""

from __future__ import annotations

import json
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("openenv.core", reason="needs the openenv extra: pip install -e '.[openenv]'")

import ttd_envs  # noqa: E402,F401
from ttd_envs.core.env import DiscoveryEnv  # noqa: E402
from ttd_envs.integrations.openenv import QuietClientGoodbye, TtdAction, TtdEnvClient, TtdEnvironment, main  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
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


def _serve(args: list[str], cwd) -> tuple[subprocess.Popen, str]:
    """Start the server as a user would; its first line says where it listens (port 0: a free one)."""
    process = subprocess.Popen([sys.executable, "-m", "ttd_envs.integrations.openenv", *args, "--port", "0"], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 90)
    if not ready:
        process.kill()
        pytest.fail(f"the server printed nothing in 90 s: {process.stderr.read()[-2000:]}")
    first = process.stdout.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+) ", first)
    assert match, f"no address in its first line: {first!r} {process.stderr.read()[-2000:] if not first else ''}"
    return process, match.group(1)


@pytest.mark.slow
def test_a_problem_file_is_served_with_its_address_and_ctrl_c_stops_it_cleanly(tmp_path):
    shutil.copy(EXAMPLES / "maxcut.py", tmp_path / "maxcut.py")
    process, url = _serve(["maxcut.py:MaxCut", "--env-arg", "vertices=10"], cwd=tmp_path)
    try:
        sys.path.insert(0, str(tmp_path))
        from maxcut import MaxCut

        reference = DiscoveryEnv(MaxCut(vertices=10))
        with TtdEnvClient(base_url=url).sync() as client:
            for answer in ("0101010101", "0000011111", "01"):
                assert client.reset(seed=3).observation.prompt == reference.reset(seed=3)[0]
                _, reward, _, _, info = reference.step(answer)
                result = client.step(TtdAction(answer=answer))
                assert (result.reward, result.observation.valid) == (pytest.approx(reward), info["valid"])
        assert info["valid"] is False and result.observation.error == info["error"]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        sys.path.remove(str(tmp_path))
        process.kill()
    assert process.returncode == 0 and out.strip() == "stopped", (out, err)
    assert "Traceback" not in err


def test_bad_arguments_and_a_busy_port_are_one_line_errors(capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = {("ttd/LABS-v0", "--env-arg", "n=abc"): "n must be an integer",
             ("ttd/MathVote-v0",): "majority vote",
             ("nothere.py:Problem",): "no such file",
             (f"{EXAMPLES / 'maxcut.py'}:Nope",): "has no attribute 'Nope'",
             ("ttd/LABS-v0", "--max-turns", "0"): "--max-turns must be >= 1",
             ("ttd/LABS-v0", "--port", "70000"): "--port must be in 0..65535",
             ("ttd/LABS-v0", "--port", str(busy.getsockname()[1])): "cannot listen on 127.0.0.1:"}
    with busy:
        for argv, expected in cases.items():
            with pytest.raises(SystemExit) as stopped:
                main(list(argv))
            captured = capsys.readouterr()
            assert stopped.value.code in (1, 2) and captured.out == "", argv
            assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
            assert expected in captured.err, (argv, captured.err)


def test_help_names_the_command_and_explains_each_option(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and out.startswith("usage: python -m ttd_envs.integrations.openenv ")
    assert max(map(len, out.splitlines())) <= 80
    flat = " ".join(out.split())
    for text in ("FILE.py:ProblemClass", "--host HOST address to listen on", "--port PORT TCP port",
                 "--max-turns MAX_TURNS attempts per episode", "--max-sessions MAX_SESSIONS concurrent"):
        assert text in flat, text


def test_a_client_that_closed_first_ends_its_websocket_quietly_and_http_errors_still_surface():
    """OpenEnv closes a WebSocket the client already closed; starlette raises WebSocketDisconnect
    there, which uvicorn logged as a traceback (the Ctrl-C test above saw it under load)."""
    import asyncio

    from starlette.websockets import WebSocketDisconnect

    async def closes_late(scope, receive, send):
        raise WebSocketDisconnect(code=1006)

    guarded = QuietClientGoodbye(closes_late)
    asyncio.run(guarded({"type": "websocket"}, None, None))  # no exception: an ordinary goodbye
    with pytest.raises(WebSocketDisconnect):
        asyncio.run(guarded({"type": "http"}, None, None))
