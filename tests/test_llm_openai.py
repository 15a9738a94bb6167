"""`--sampler openai` against a small OpenAI-compatible server started in the test on 127.0.0.1.

The server speaks the slice of the API a `vllm serve --enable-lora` offers (completions with
token-id prompts and `return_tokens_as_token_ids`, chat completions, runtime LoRA loading) and
serves the tiny random model with transformers, so its log-probs can be checked against the
trainer's own forward: same weights, same adapter, same numbers.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from toy_problems import distinct_characters

from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.tiny import build_tiny_causal_lm

SERVED = "served-tiny"


class TinyServer:
    """An OpenAI-compatible server of one model (and the LoRA adapters loaded into it at run time)."""

    def __init__(self, model_dir: str):
        self.policy = HFPolicy(model_dir, lora_rank=4, device="cpu", renderer="chat")
        self.adapters: dict[str, str] = {}
        self.log: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.log.append((self.path, body))
                try:
                    reply = server.handle(self.path, body)
                    status = 200
                except KeyError as error:
                    reply, status = {"error": {"message": f"unknown {error}"}}, 404
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def _generate(self, model: str, prompt_ids: list[int], body: dict):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        with self.lock:
            policy = self.policy
            if model != SERVED:
                weights = load_file(f"{self.adapters[model]}/adapter_model.safetensors")
                set_peft_model_state_dict(policy.model, weights)
            policy.generator.manual_seed(int(body["seed"]))
            with torch.no_grad(), (policy.model.disable_adapter() if model == SERVED else _nothing()):
                out = policy._decode([prompt_ids], float(body["temperature"]), int(body["max_tokens"]))[0]
        return out

    def handle(self, path: str, body: dict) -> dict:
        if path == "/v1/load_lora_adapter":
            self.adapters[body["lora_name"]] = body["lora_path"]
            return {}
        if path == "/v1/unload_lora_adapter":
            del self.adapters[body["lora_name"]]
            return {}
        tok = self.policy.tokenizer
        if path == "/v1/completions":
            assert body["return_tokens_as_token_ids"] and body["logprobs"] == 0
            out = self._generate(body["model"], list(body["prompt"]), body)
            return {"choices": [{"text": tok.decode(out.ids), "finish_reason": "stop" if out.finished else "length",
                                 "logprobs": {"tokens": [f"token_id:{t}" for t in out.ids],
                                              "token_logprobs": out.logprobs.tolist()}}]}
        if path == "/v1/chat/completions":
            prompt = self.policy.renderer.render_chat(body["messages"])
            out = self._generate(body["model"], tok(prompt, add_special_tokens=False)["input_ids"], body)
            return {"choices": [{"message": {"role": "assistant", "content": self.policy.renderer.answer(out.ids)},
                                 "finish_reason": "stop" if out.finished else "length"}]}
        raise KeyError(path)

    def close(self):
        self.http.shutdown()
        self.http.server_close()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


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


def test_two_gpu_layout_trains_locally_and_samples_with_the_served_adapter(server, model_dir):
    policy = HFPolicy(model_dir, lora_rank=4, lr=5e-2, device="cpu", sampler="openai", base_url=server.url,
                      served_model=SERVED, renderer="chat")
    for step in range(3):
        samples = [s for g in policy.sample(["same", "same"], 3, temperature=1.0, max_new_tokens=6) for s in g]
        assert len({tuple(s.completion_ids) for s in samples}) > 1  # per-row seeds
        for s, own in zip(samples, policy.logprobs(samples), strict=True):  # the server used our adapter
            np.testing.assert_allclose(own, s.logprobs, atol=1e-4)
        stats = policy.update([TrainItem(s, 1.0 if i % 2 else -1.0) for i, s in enumerate(samples)], LossConfig())
        assert abs(stats["ratio_max"] - 1) < 1e-3
    loads = [body["lora_path"] for path, body in server.log if path == "/v1/load_lora_adapter"]
    unloads = [body["lora_name"] for path, body in server.log if path == "/v1/unload_lora_adapter"]
    assert [p[-7:] for p in loads] == ["v000001", "v000002"] and unloads == ["ttd-v000001"]
    models = [body["model"] for path, body in server.log if path == "/v1/completions"]
    assert models[:6] == [SERVED] * 6 and set(models[6:12]) == {"ttd-v000001"}


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
