"""The OpenAI-compatible client against real local sockets that misbehave as real servers do.

Every server here is a real HTTP server on 127.0.0.1 (tests/openai_servers.py): it answers 429
with `Retry-After`, 503, closes the connection before or in the middle of an answer, stalls past
the deadline, trickles its answer, answers plain text, or rejects `max_tokens`. Nothing in the
client's HTTP layer is replaced. No model is needed: these tests do not import torch.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import socket
import time

from functools import partial

import pytest
from openai_servers import HostedLikeServer, Reply, ScriptedServer, answer_for, chat_answer
from toy_problems import distinct_characters

from ttd_agent.policy.openai_client import (
    OpenAIClient,
    RequestFailed,
    ServerError,
    backoff_delay,
    fan_out,
    retry_after_seconds,
)
from ttd_agent.policy.openai_sampler import OpenAIPolicy
from ttd_agent.policy.settings import LLMSettings
from timing import within

CHAT = "/v1/chat/completions"
QUICK = {"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.05}
"""Backoff short enough for a test; the bounds themselves are tested with the real values."""

Hosted = distinct_characters(group_size=6, steps=4, max_new_tokens=16)


def client_for(server, **settings) -> OpenAIClient:
    return OpenAIClient(LLMSettings(base_url=server.url, **{**QUICK, **settings}))


def chat(client: OpenAIClient, max_tokens: int = 16, **extra):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1, **extra}
    return client.complete("/chat/completions", body, max_tokens, lambda a: a["choices"][0]["message"]["content"])


@pytest.fixture
def scripted():
    servers = []

    def start(script, **kwargs) -> ScriptedServer:
        servers.append(ScriptedServer(script, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# -- the pure parts ------------------------------------------------------------------------------
def test_retry_after_reads_seconds_and_http_dates():
    now = time.time()
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0  # already past
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_backoff_is_full_jitter_under_a_doubling_cap():
    rng = random.Random(0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0)]:
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(400)]
        assert 0 <= min(delays) < 0.1 * cap and 0.9 * cap < max(delays) <= cap


# -- one fault at a time ---------------------------------------------------------------------------
def test_429_waits_as_long_as_retry_after_says(scripted):
    server = scripted({CHAT: [Reply(429, {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "1"}),
                              chat_answer("after the wait")]})
    client = client_for(server)
    assert chat(client) == "after the wait"
    (_, first), (_, second) = server.arrivals
    assert 0.95 <= second - first < 3  # Retry-After, not the 0.01 s backoff
    assert client.drain_stats() == {"requests": 1, "requests_retried": 1, "requests_failed": 0,
                                    "request_retries": 1, "prompt_tokens": 10, "completion_tokens": 5}
    assert client.drain_stats()["requests"] == 0  # drained


@pytest.mark.parametrize("fault", [Reply(503, {"error": {"message": "overloaded"}}), Reply(502, "Bad Gateway"),
                                   Reply(drop=True), Reply(cut=True)],
                         ids=["503", "502-html-proxy", "dropped-before-the-answer", "dropped-mid-answer"])
def test_transient_failures_are_retried_until_an_answer(scripted, fault):
    server = scripted({CHAT: [fault, fault, chat_answer("third time")]})
    client = client_for(server)
    assert chat(client) == "third time"
    assert len(server.arrivals) == 3
    stats = client.drain_stats()
    assert (stats["requests"], stats["requests_retried"], stats["request_retries"], stats["requests_failed"]) == \
        (1, 1, 2, 0)


def test_a_drop_mid_answer_is_not_read_as_a_short_answer(scripted):
    """A connection closed half-way through a Content-Length body: retried, never parsed as truncated JSON."""
    server = scripted({CHAT: [Reply(cut=True)]})
    with pytest.raises(RequestFailed, match="dropped in the middle of the answer.*gave up after 2 attempts"):
        chat(client_for(server, request_retries=1))


def test_a_stalled_server_is_given_up_on_at_the_deadline(scripted):
    server = scripted({CHAT: [Reply(delay_s=5.0, body=chat_answer().body), chat_answer("the quick one")]})
    client = client_for(server, request_timeout_s=0.5)
    started = time.monotonic()
    assert chat(client) == "the quick one"
    (_, first), (_, second) = server.arrivals
    assert second - first >= 0.45, f"retried {second - first:.2f} s after the first try, before its 0.5 s deadline"
    within(second - first, 3, "from the stalled try to the retry (deadline 0.5 s)")
    within(time.monotonic() - started, 3.5, "the answer, against a 5 s stall")


def test_the_deadline_bounds_the_whole_answer_not_each_read(scripted):
    """A server that trickles a byte every 50 ms never lets one read wait 0.5 s, yet the answer
    would take seconds: the attempt ends at the 0.5 s deadline (a per-read timeout never would)."""
    server = scripted({CHAT: [Reply(trickle_s=0.05, body=chat_answer().body)]})
    client = client_for(server, request_timeout_s=0.5, request_retries=0)
    started = time.monotonic()
    with pytest.raises(RequestFailed, match="no complete answer within the 0.5 s deadline"):
        chat(client)
    within(time.monotonic() - started, 2.5, "one attempt with a 0.5 s deadline (the answer takes 7.5 s)")
    assert client.drain_stats()["requests_failed"] == 1


def test_retries_stop_at_the_count_and_at_the_time_bound(scripted):
    server = scripted({CHAT: [Reply(503, {"error": {"message": "overloaded"}})]})
    with pytest.raises(RequestFailed, match=r"HTTP 503.*gave up after 3 attempts; --request-retries 2"):
        chat(client_for(server, request_retries=2))
    assert len(server.arrivals) == 3

    slow = scripted({CHAT: [Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "30"})]})
    started = time.monotonic()
    with pytest.raises(RequestFailed, match="past --retry-time-s 5"):
        chat(client_for(slow, retry_time_s=5))
    within(time.monotonic() - started, 2, "giving up on a 30 s Retry-After past --retry-time-s 5")
    assert len(slow.arrivals) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_permanent_answers_are_not_retried(scripted, status):
    server = scripted({CHAT: [Reply(status, {"error": {"message": "no such thing"}})]})
    client = client_for(server)
    with pytest.raises(RequestFailed, match=f"answered HTTP {status}: .*no such thing") as caught:
        chat(client)
    assert caught.value.status == status and len(server.arrivals) == 1
    assert client.drain_stats()["requests_failed"] == 1


def test_an_answer_that_is_not_json_fails_the_request_with_what_came(scripted):
    server = scripted({CHAT: [Reply(body="<html>upstream timed out</html>")]})
    with pytest.raises(RequestFailed, match="not JSON.*upstream timed out"):
        chat(client_for(server))


def test_admin_endpoints_may_answer_plain_text(scripted):
    server = scripted({"/v1/load_lora_adapter": [Reply(body="Success: LoRA adapter 'a' added successfully.")]})
    assert client_for(server).post_admin("/load_lora_adapter", {"lora_name": "a", "lora_path": "/x"}) == \
        "Success: LoRA adapter 'a' added successfully."


def test_an_idle_keep_alive_connection_closed_by_the_server_costs_no_retry(scripted):
    server = scripted({CHAT: [chat_answer()]}, keep_alive=True)
    client = client_for(server)
    chat(client)
    time.sleep(0.8)  # the server closes connections idle for 0.5 s, as uvicorn does
    chat(client)
    stats = client.drain_stats()
    assert stats["requests"] == 2 and stats["request_retries"] == 0 and len(server.arrivals) == 2


def test_a_keep_alive_connection_dropped_after_the_request_was_sent_is_a_counted_retry(scripted):
    """Where the server drops a live connection after reading the request (it may have acted on
    it), the resend is an attempt of its own: counted, not hidden as an idle close."""
    server = scripted({CHAT: [chat_answer(), Reply(drop=True), chat_answer()]}, keep_alive=True)
    client = client_for(server)
    chat(client)
    chat(client)  # straight away: the connection is alive when the second request goes out
    stats = client.drain_stats()
    assert len(server.arrivals) == 3
    assert stats["requests"] == 2 and stats["request_retries"] == 1 and stats["requests_retried"] == 1


def test_a_refused_connection_stops_at_once_with_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    client = OpenAIClient(LLMSettings(base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(ServerError, match="connection was refused; is the server running"):
        client.probe()


# -- what a request asks for -----------------------------------------------------------------------
def test_a_reasoning_model_gets_max_completion_tokens_after_one_400(caplog):
    server = HostedLikeServer(faults=False, reasoning=True)
    try:
        client = client_for(server)
        with caplog.at_level(logging.WARNING, "ttd_agent.policy.openai_client"):
            for seed in range(3):
                assert chat(client, max_tokens=7, seed=seed) == answer_for(seed)
        sent = server.requests(CHAT)
        assert "max_tokens" in sent[0] and all(b.get("max_completion_tokens") == 7 and "max_tokens" not in b
                                              for b in sent[1:])
        assert len(sent) == 4  # one 400, then every request in the field the model accepts
        assert [r.getMessage() for r in caplog.records if "max_completion_tokens" in r.getMessage()] == \
            [f"{client.base_url} does not accept max_tokens: sending max_completion_tokens from now on"]
        fixed = client_for(server, max_tokens_field="max_completion_tokens")
        server.log.clear()
        chat(fixed)
        assert len(server.requests(CHAT)) == 1  # the flag: no 400 first
    finally:
        server.close()


def test_the_budget_is_clamped_to_the_context_the_server_serves(scripted, caplog):
    models = {"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 1024}]}
    server = scripted({"/v1/models": [Reply(body=models)], "/v1/completions": [Reply(body={"choices": [{}]})]})
    client = client_for(server)
    client.probe()
    body = {"model": "m", "prompt": [1] * 900}
    with caplog.at_level(logging.WARNING, "ttd_agent.policy.openai_client"):
        for _ in range(2):
            client.complete("/completions", body, 500, lambda a: a, prompt_tokens=900)
        client.complete("/completions", body, 100, lambda a: a, prompt_tokens=900)
    assert [b["max_tokens"] for b in server.requests("/v1/completions")] == [124, 124, 100]
    assert sum("context of 1024 tokens" in r.getMessage() for r in caplog.records) == 1  # warned once
    with pytest.raises(RequestFailed, match="leaves no room"):
        client.complete("/completions", {"model": "m", "prompt": [1] * 1024}, 10, lambda a: a, prompt_tokens=1024)


def test_a_context_400_is_sent_again_with_the_budget_it_states(scripted):
    """A server whose /models says nothing about its context: the 400 states it."""
    too_long = Reply(400, {"object": "error", "message": (
        "This model's maximum context length is 2048 tokens. However, you requested 2500 tokens (1500 in the "
        "messages, 1000 in the completion). Please reduce the length of the messages or completion.")})
    server = scripted({CHAT: [too_long, chat_answer("fits")]})
    client = client_for(server)
    assert chat(client, max_tokens=1000) == "fits"
    assert [b["max_tokens"] for b in server.requests(CHAT)] == [1000, 548]


# -- a step: many requests, some failing -------------------------------------------------------------
def fail(reason: str) -> int:
    raise RequestFailed(reason)


def test_a_failed_request_costs_its_own_sample_and_a_step_of_failures_stops_the_run():
    results = {}
    fan_out([lambda: 1, partial(fail, "HTTP 503"), lambda: 3], 2, results.__setitem__)
    assert results[0] == 1 and results[2] == 3 and isinstance(results[1], RequestFailed)
    with pytest.raises(ServerError, match="every one of the 2 requests of this step failed; the first: HTTP 401"):
        fan_out([partial(fail, "HTTP 401")] * 2, 2, lambda k, r: None)


def test_a_hosted_policy_under_load_returns_every_sample_it_can():
    server = HostedLikeServer(slow_s=2.0)
    try:
        policy = OpenAIPolicy("hosted-model", settings=LLMSettings(
            base_url=server.url, request_timeout_s=1.0, request_retries=2, **QUICK))
        groups = policy.sample(["p"] * 4, 9, temperature=1.0, max_new_tokens=16)
        samples = [s for g in groups for s in g]
        assert [len(g) for g in groups] == [9] * 4
        down = {seed for seed, fault in server.given.items() if fault == "down"}
        assert len(down) == 4  # 36 seeds: the 9th, 18th, 27th, 36th never get an answer
        failed = [s for s in samples if s.error is not None]
        assert len(failed) == 4 and all("HTTP 503" in s.error and s.text == "" for s in failed)
        assert sorted(s.text for s in samples if s.error is None) == \
            sorted(answer_for(seed) for seed in server.order if seed not in down)
        stats = policy.request_stats()
        assert stats["requests"] == 36 and stats["requests_failed"] == 4
        assert stats["requests_retried"] == len(server.given)  # every fault, the permanent ones included
        assert stats["request_retries"] == len(server.given) - 4 + 4 * 2
    finally:
        server.close()


# -- whole runs through the CLI ----------------------------------------------------------------------
def train(server, run, *extra: str) -> int:
    from ttd_agent.cli import main

    return main(["train", "--env", f"{__name__}:Hosted", "--model", "hosted-model", "--sampler", "openai",
                 "--base-url", server.url, "--no-update", "--run-dir", str(run), "--request-timeout-s", "1",
                 "--request-retries", "3", "--retry-backoff-s", "0.01", "--retry-backoff-max-s", "0.05", *extra])


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_under_load_completes_and_counts_its_retries_and_failures(tmp_path, capsys):
    """4 steps x 2 groups x 6 answers against a server that rate-limits, overloads, drops and
    stalls: the run completes; each failure that outlives its retries is one invalid rollout;
    metrics.jsonl and the summary say how many requests were retried and failed. Beside it,
    the same run on the fault-free server: one request per answer, no retry, and the same
    reward for every answer both runs got."""
    faulty, clean = HostedLikeServer(slow_s=2.0), HostedLikeServer(faults=False)
    try:
        assert train(faulty, tmp_path / "faulty") == 0
        summary = capsys.readouterr().out
        assert train(clean, tmp_path / "clean") == 0
    finally:
        faulty.close()
        clean.close()
    given = list(faulty.given.values())
    assert {"429", "503", "drop", "slow", "cut", "down"} <= set(given) and len(faulty.order) == 48
    metrics, rollouts = rows(tmp_path / "faulty" / "metrics.jsonl"), rows(tmp_path / "faulty" / "rollouts.jsonl")
    assert len(metrics) == 4 and len(rollouts) == 48
    total = {key: sum(m[key] for m in metrics) for key in ("requests", "requests_retried", "requests_failed")}
    assert total == {"requests": 48, "requests_retried": len(given), "requests_failed": given.count("down")}
    failed = [r for r in rollouts if r["error"] and r["error"].startswith("no answer:")]
    assert len(failed) == given.count("down") and not any(r["valid"] for r in failed)
    answered = sum(len(answer_for(seed)) for seed, fault in faulty.order.items() if faulty.given.get(seed) != "down")
    assert sum(m["completion_tokens"] for m in metrics) == answered
    assert sum(m["prompt_tokens"] for m in metrics) == 10 * (48 - given.count("down"))
    assert f"48 sent, {len(given)} retried" in summary and f"{given.count('down')} failed" in summary

    clean_metrics, clean_rollouts = rows(tmp_path / "clean" / "metrics.jsonl"), rows(tmp_path / "clean" / "rollouts.jsonl")
    assert len(clean.requests(CHAT)) == 48 == sum(m["requests"] for m in clean_metrics)
    assert sum(m["requests_retried"] + m["request_retries"] + m["requests_failed"] for m in clean_metrics) == 0
    assert [r["reward"] for r in rollouts if r not in failed] == \
        [c["reward"] for r, c in zip(rollouts, clean_rollouts, strict=True) if r not in failed]


@pytest.mark.parametrize(("always", "says"), [
    (Reply(503, {"error": {"message": "The server is overloaded"}}), "HTTP 503: The server is overloaded"),
    (Reply(401, {"error": {"message": "Incorrect API key provided"}}), "answered HTTP 401: .*Incorrect API key"),
], ids=["overloaded", "bad-key"])
def test_a_step_whose_requests_all_fail_stops_the_run_with_one_line(tmp_path, capsys, always, says):
    server = HostedLikeServer(always=always)
    try:
        assert train(server, tmp_path / "run", "--request-retries", "1") == 2
    finally:
        server.close()
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(f"error: every one of the 12 requests of this step failed; the first: .*{says}", out)


def test_the_benchmark_runs_both_clients(capsys):
    from benchmarks.openai_client import main

    main(["--requests", "32", "--rounds", "1"])
    table = capsys.readouterr().out
    assert "| urllib (before) | " in table and "| OpenAIClient | " in table
