"""`--sampler openai` against a small OpenAI-compatible server started in the test on 127.0.0.1.

The server speaks the slice of the API a `vllm serve --enable-lora` offers (completions with
token-id prompts and `return_tokens_as_token_ids`, chat completions, runtime LoRA loading) and
serves the tiny random model with transformers, so its log-probs can be checked against the
trainer's own forward: same weights, same adapter, same numbers.
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from openai_servers import TinyServer, VLLMLikeServer
from toy_problems import distinct_characters

from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.tiny import build_tiny_causal_lm

SERVED = TinyServer.served


Distinct = distinct_characters(group_size=3, steps=2, max_new_tokens=6)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


@pytest.fixture
def server(model_dir):
    server = TinyServer(model_dir)
    yield server
    server.close()


def test_no_update_baseline_needs_no_local_weights(server, tmp_path, monkeypatch):
    """Best-of-N through the chat endpoint with a model name that is no local path."""
    from ttd_agent.cli import main

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    sink = ["--sink", "tensorboard"] if importlib.util.find_spec("tensorboard") else []
    assert main(["train", "--env", f"{__name__}:Distinct", "--model", SERVED, "--sampler", "openai",
                 "--base-url", server.url, "--no-update", "--run-dir", str(run), *sink]) == 0
    assert (run / "tensorboard").is_dir() == bool(sink)
    chats = [body for path, body in server.log if path == "/v1/chat/completions"]
    assert len(chats) == 12 and len({body["seed"] for body in chats}) == 12  # 2 steps x 2 groups x 3
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 12 and all(r["valid"] for r in rollouts)
    assert main(["train", "--env", f"{__name__}:Distinct", "--model", SERVED, "--sampler", "openai",
                 "--base-url", "http://127.0.0.1:9/v1", "--no-update", "--run-dir", str(tmp_path / "down")]) != 0


@pytest.mark.parametrize("kind", [TinyServer, VLLMLikeServer], ids=["json-admin", "vllm-like"])
def test_two_gpu_layout_trains_locally_and_samples_with_the_served_adapter(kind, model_dir):
    """Loads, swaps and unloads adapters; against the vLLM-like server too (plain-text admin answers)."""
    server = kind(model_dir)
    try:
        _two_gpu_layout(server, model_dir)
    finally:
        server.close()


def _two_gpu_layout(server, model_dir):
    policy = HFPolicy(model_dir, lora_rank=4, lr=5e-2, device="cpu", sampler="openai", base_url=server.url,
                      served_model=SERVED, renderer="chat")
    drawn = []
    for step in range(3):
        samples = [s for g in policy.sample(["same", "same"], 3, temperature=1.0, max_new_tokens=6) for s in g]
        drawn += samples
        assert len({tuple(s.completion_ids) for s in samples}) > 1  # per-row seeds
        for s, own in zip(samples, policy.logprobs(samples), strict=True):  # the server used our adapter
            np.testing.assert_allclose(own, s.logprobs, atol=1e-4)
        stats = policy.update([TrainItem(s, 1.0 if i % 2 else -1.0) for i, s in enumerate(samples)], LossConfig())
        assert abs(stats["ratio_max"] - 1) < 1e-3
    loads = [body["lora_path"] for path, body in server.log if path == "/v1/load_lora_adapter"]
    unloads = [body["lora_name"] for path, body in server.log if path == "/v1/unload_lora_adapter"]
    nonce = policy.engine.nonce
    assert re.fullmatch("[0-9a-f]{8}", nonce)
    assert [p[-7:] for p in loads] == ["v000001", "v000002"] and unloads == [f"ttd-{nonce}-v000001"]
    models = [body["model"] for path, body in server.log if path == "/v1/completions"]
    assert models[:6] == [SERVED] * 6 and set(models[6:12]) == {f"ttd-{nonce}-v000001"}
    assert set(models[12:]) == {f"ttd-{nonce}-v000002"} and list(server.adapters) == [f"ttd-{nonce}-v000002"]
    stats = policy.request_stats()
    assert stats["requests"] == 18 and stats["requests_failed"] == stats["requests_retried"] == 0
    assert stats["prompt_tokens"] == sum(len(s.prompt_ids) for s in drawn) > 0  # the server's usage, or counted
    assert stats["completion_tokens"] == sum(len(s.completion_ids) for s in drawn) > 0


def test_ttrl_samples_through_the_server_with_its_llm_settings(server, model_dir, tmp_path):
    """`--method ttrl --sampler openai`: the LLM flags reach the policy, and every vote is a request."""
    from ttd_agent.cli import main
    from ttd_agent.ttrl import arithmetic_questions

    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps(arithmetic_questions(4, seed=0)))
    run = tmp_path / "ttrl"
    assert main(["train", "--env", "ttd/MathVote-v0", "--method", "ttrl", "--model", model_dir, "--device", "cpu",
                 "--sampler", "openai", "--base-url", server.url, "--served-model", SERVED, "--renderer", "chat",
                 "--env-arg", f"dataset={questions}", "--votes", "4", "--keep", "2", "--questions-per-step", "2",
                 "--episodes", "1", "--steps", "2", "--eval-every", "0", "--max-new-tokens", "6",
                 "--lora-rank", "4", "--run-dir", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())["extra"]["policy"]["settings"]
    assert saved == {"renderer": "chat", "base_url": server.url, "served_model": SERVED}
    requests = [body for path, body in server.log if path == "/v1/completions"]
    assert len(requests) == 2 * 2 * 4 and len({body["seed"] for body in requests}) == 16
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]


def test_ttrl_refuses_llm_flags_for_the_embedded_policy(tmp_path):
    from ttd_agent.cli import main

    assert main(["train", "--env", "ttd/MathVote-v0", "--method", "ttrl", "--model", "embedded",
                 "--renderer", "chat", "--run-dir", str(tmp_path / "run")]) == 2


def test_completions_are_clamped_to_the_served_context(model_dir, caplog):
    """The vLLM-like server's /v1/models says max_model_len; a prompt that leaves less room than
    max_new_tokens gets a shorter budget (one warning) instead of vLLM's 400."""
    import logging

    server = VLLMLikeServer(model_dir, max_model_len=10_000)
    try:
        policy = HFPolicy(model_dir, lora_rank=4, device="cpu", sampler="openai", base_url=server.url,
                          served_model=SERVED, renderer="chat")
        policy.sample(["same"], 1, temperature=1.0, max_new_tokens=6)
        prompt_len = len(server.requests("/v1/completions")[0]["prompt"])
        server.log.clear()
        server.max_model_len = prompt_len + 3
        clamped = HFPolicy(model_dir, lora_rank=4, device="cpu", sampler="openai", base_url=server.url,
                           served_model=SERVED, renderer="chat")
        with caplog.at_level(logging.WARNING, "ttd_agent.policy.openai_client"):
            samples = [s for g in clamped.sample(["same"] * 2, 2, temperature=1.0, max_new_tokens=6) for s in g]
    finally:
        server.close()
    sent = server.requests("/v1/completions")
    assert len(sent) == 4 and {body["max_tokens"] for body in sent} == {3}  # no 400: every request fitted
    assert all(s.error is None and len(s.completion_ids) <= 3 for s in samples)
    assert sum(f"context of {prompt_len + 3} tokens" in r.getMessage() for r in caplog.records) == 1


def test_a_resume_after_kill_9_loads_no_adapter_name_the_server_still_holds(model_dir, tmp_path):
    """The two-GPU layout against the vLLM-like server, killed with SIGKILL as it loads its first
    adapter (so it never unloads it), then resumed: every load succeeds, no name is reused."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    server = VLLMLikeServer(model_dir)
    tests = Path(__file__).parent
    command = [sys.executable, "-m", "ttd_agent.cli", "train", "--env", "toy_problems:DistinctCharacters",
               "--model", model_dir, "--device", "cpu", "--lora-rank", "4", "--sampler", "openai",
               "--base-url", server.url, "--served-model", SERVED, "--renderer", "chat", "--steps", "3",
               "--groups-per-step", "1", "--group-size", "2", "--max-new-tokens", "6",
               "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    try:
        first = subprocess.Popen(command, cwd=tests, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        server.on_load = lambda body: os.kill(first.pid, signal.SIGKILL)
        out = first.communicate(timeout=240)[0].decode()
        assert first.returncode == -signal.SIGKILL, out
        server.on_load = None
        killed = [name for _, name in server.load_answers]
        assert len(killed) == 1 and killed[0] in server.adapters  # loaded, and never unloaded
        resumed = subprocess.run([*command, "--resume"], cwd=tests, env=env, capture_output=True, text=True,
                                 timeout=240)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finally:
        server.close()
    names = [name for _, name in server.load_answers]
    assert [status for status, _ in server.load_answers] == [200] * len(names) and len(names) >= 2
    assert len(set(names)) == len(names)
    nonces = {name.split("-")[1] for name in names}
    assert len(nonces) == 2  # one per process: the resumed run's names cannot be the killed run's
    assert {name.rsplit("-", 1)[1] for name in names[1:]} & {killed[0].rsplit("-", 1)[1]}  # same version again
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_the_two_gpu_layout_rides_out_an_overloaded_server_and_a_lost_load_answer(model_dir):
    """One completion in 4 answered 503, and the first adapter load's answer lost after the server
    loaded it: the resent load gets vLLM's 400 "already been loaded", which means loaded; every
    sample arrives, drawn with the served adapter."""
    server = VLLMLikeServer(model_dir, overloaded_every=4, drop_load_answers=1)
    try:
        policy = HFPolicy(model_dir, lora_rank=4, lr=5e-2, device="cpu", sampler="openai", base_url=server.url,
                          served_model=SERVED, renderer="chat", retry_backoff_s=0.01, retry_backoff_max_s=0.05)
        for step in range(2):
            samples = [s for g in policy.sample(["same", "same"], 3, temperature=1.0, max_new_tokens=6) for s in g]
            assert all(s.error is None for s in samples)
            for s, own in zip(samples, policy.logprobs(samples), strict=True):
                np.testing.assert_allclose(own, s.logprobs, atol=1e-4)
            policy.update([TrainItem(s, 1.0 if i % 2 else -1.0) for i, s in enumerate(samples)], LossConfig())
        stats = policy.request_stats()
    finally:
        server.close()
    name = f"ttd-{policy.engine.nonce}-v000001"
    assert server.load_answers == [(200, name), (400, name)] and name in server.adapters
    assert stats["requests"] == 12 and stats["requests_failed"] == 0
    assert server.completions == 15 and stats["request_retries"] == 3 + 1  # the 503s (#4, #8, #12), the lost load
    assert stats["requests_retried"] in (2, 3)  # 2 when one request's retry drew the next 503 too
