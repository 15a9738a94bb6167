"""Local OpenAI-compatible servers for the `--sampler openai` tests, on 127.0.0.1 only.

- `TinyServer`: the API slice a `vllm serve --enable-lora` offers (completions with token-id
  prompts and `return_tokens_as_token_ids`, chat completions, run-time LoRA loading), serving the
  tiny random model with transformers, so its log-probs match the trainer's own forward.
- `VLLMLikeServer`: the same, answering the way `vllm serve` really does: plain-text admin
  endpoints, a `max_model_len` in `/v1/models` and a 400 past it, `usage`, a 400 for an adapter
  name it already holds, keep-alive connections it closes when idle.
- `HostedLikeServer`: a hosted API under load, with no model: the answer is a function of the
  request's seed, and a fault plan says which request gets a 429 (with `Retry-After`), a 503, a
  dropped connection (before or in the middle of the answer) or a slow answer, by the order in
  which the seeds first arrive (so how many of each is exact however the requests interleave).
- `ScriptedServer`: answers each path with the replies a test lists, in order (the last one
  again once they run out), for one fault at a time.
"""

from __future__ import annotations

import email.utils
import json
import random
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A dict (sent as JSON) or a str (sent as text/plain)."""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without answering."""
    delay_s: float = 0.0
    """Wait this long before answering."""
    cut: bool = False
    """Send the headers and half the body, then close the connection (a drop mid-answer)."""
    trickle_s: float = 0.0
    """Send the body one byte at a time, this long apart (every read is quick, the whole is not)."""


class LocalServer:
    """A threading HTTP server whose `handle(method, path, body)` returns a `Reply`; every request is logged."""

    keep_alive = False

    def __init__(self) -> None:
        self.log: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if self.keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = True  # as uvicorn (vLLM's server) does
            timeout = 0.5  # an idle keep-alive connection is closed, as uvicorn does after a few seconds

            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                server.log.append((self.path, body))
                reply = server.handle(method, self.path, body)
                if reply.drop:
                    self.close_connection = True
                    return
                time.sleep(reply.delay_s)
                text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = text.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/plain" if isinstance(reply.body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if reply.cut:
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if reply.trickle_s:
                    for k in range(len(data)):
                        self.wfile.write(data[k:k + 1])
                        self.wfile.flush()
                        time.sleep(reply.trickle_s)
                    return
                self.wfile.write(data)

            def do_POST(self):
                self._serve("POST")

            def do_GET(self):
                self._serve("GET")

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # socketserver's 5 drops connections a burst of requests opens at once

            def handle_error(self, request, client_address):  # a client that gave up on a slow answer
                pass

        self.http = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def handle(self, method: str, path: str, body: dict) -> Reply:
        raise NotImplementedError

    def requests(self, path: str) -> list[dict]:
        return [body for p, body in self.log if p == path]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class TinyServer(LocalServer):
    """An OpenAI-compatible server of one tiny model (and the LoRA adapters loaded into it at run time)."""

    served = "served-tiny"

    def __init__(self, model_dir: str):
        from ttd_agent.policy.hf import HFPolicy

        self.policy = HFPolicy(model_dir, lora_rank=4, device="cpu", renderer="chat")
        self.adapters: dict[str, str] = {}
        self.lock = threading.Lock()
        super().__init__()

    def _generate(self, model: str, prompt_ids: list[int], body: dict, max_tokens: int):
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        with self.lock:
            policy = self.policy
            if model != self.served:
                weights = load_file(f"{self.adapters[model]}/adapter_model.safetensors")
                set_peft_model_state_dict(policy.model, weights)
            policy.generator.manual_seed(int(body["seed"]))
            adapter = policy.model.disable_adapter() if model == self.served else _Nothing()
            with torch.no_grad(), adapter:
                return policy._decode([prompt_ids], float(body["temperature"]), max_tokens)[0]

    def admin(self, path: str, body: dict) -> Reply:
        if path.endswith("/load_lora_adapter"):
            self.adapters[body["lora_name"]] = body["lora_path"]
        else:
            del self.adapters[body["lora_name"]]
        return Reply(body={})

    def handle(self, method: str, path: str, body: dict) -> Reply:
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            return self.admin(path, body)
        if method == "GET":
            return Reply(501, {"error": {"message": "unsupported method"}})
        if body.get("model") not in (self.served, *self.adapters):
            return Reply(404, {"error": {"message": f"unknown model {body.get('model')!r}"}})
        tok = self.policy.tokenizer
        if path == "/v1/completions":
            assert body["return_tokens_as_token_ids"] and body["logprobs"] == 0
            prompt = list(body["prompt"])
            out = self._generate(body["model"], prompt, body, int(body["max_tokens"]))
            choice = {"text": tok.decode(out.ids), "finish_reason": "stop" if out.finished else "length",
                      "logprobs": {"tokens": [f"token_id:{t}" for t in out.ids],
                                   "token_logprobs": out.logprobs.tolist()}}
            return Reply(body={"choices": [choice], **self.usage(len(prompt), len(out.ids))})
        if path == "/v1/chat/completions":
            prompt = tok(self.policy.renderer.render_chat(body["messages"]), add_special_tokens=False)["input_ids"]
            out = self._generate(body["model"], prompt, body, int(body["max_tokens"]))
            choice = {"message": {"role": "assistant", "content": self.policy.renderer.answer(out.ids)},
                      "finish_reason": "stop" if out.finished else "length"}
            return Reply(body={"choices": [choice], **self.usage(len(prompt), len(out.ids))})
        return Reply(404, {"error": {"message": f"unknown path {path}"}})

    def usage(self, prompt: int, completion: int) -> dict:
        return {}


class VLLMLikeServer(TinyServer):
    """`TinyServer` answering as `vllm serve` does (see the module docstring)."""

    keep_alive = True

    def __init__(self, model_dir: str, max_model_len: int = 4096, *, overloaded_every: int = 0,
                 drop_load_answers: int = 0):
        self.max_model_len = max_model_len
        self.load_answers: list[tuple[int, str]] = []
        self.on_load: Callable[[dict], None] | None = None
        self.overloaded_every = overloaded_every
        """Answer every k-th completion request with 503 (0: never)."""
        self.drop_load_answers = drop_load_answers
        """Load this many adapters, then drop the connection instead of answering (the client cannot
        know the load happened, and sends it again)."""
        self.completions = 0
        super().__init__(model_dir)

    def admin(self, path: str, body: dict) -> Reply:
        name = body["lora_name"]
        if path.endswith("/load_lora_adapter"):
            if name in self.adapters:
                reply = Reply(400, {"object": "error", "message": f"The lora adapter '{name}' has already been "
                                                                  f"loaded.", "type": "InvalidUserInput", "code": 400})
            else:
                self.adapters[name] = body["lora_path"]
                reply = Reply(body=f"Success: LoRA adapter '{name}' added successfully.")
                if self.drop_load_answers:
                    self.drop_load_answers -= 1
                    reply = Reply(drop=True)
            self.load_answers.append((reply.status, name))
            if self.on_load is not None:
                self.on_load(body)
            return reply
        if name not in self.adapters:
            return Reply(404, {"object": "error", "message": f"The lora adapter '{name}' cannot be found."})
        del self.adapters[name]
        return Reply(body=f"Success: LoRA adapter '{name}' removed successfully.")

    def handle(self, method: str, path: str, body: dict) -> Reply:
        if method == "GET" and path == "/v1/models":
            cards = [{"id": self.served, "object": "model", "max_model_len": self.max_model_len}]
            cards += [{"id": name, "object": "model", "root": root, "parent": self.served}
                      for name, root in self.adapters.items()]
            return Reply(body={"object": "list", "data": cards})
        if path == "/v1/completions":
            with self.lock:
                self.completions += 1
                overloaded = self.overloaded_every and self.completions % self.overloaded_every == 0
            if overloaded:
                return Reply(503, {"object": "error", "message": "Service Unavailable"})
            asked = len(body["prompt"]) + int(body["max_tokens"])
            if asked > self.max_model_len:
                return Reply(400, {"object": "error", "message": (
                    f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                    f"{asked} tokens ({len(body['prompt'])} in the messages, {body['max_tokens']} in the "
                    f"completion). Please reduce the length of the messages or completion.")})
        return super().handle(method, path, body)

    def usage(self, prompt: int, completion: int) -> dict:
        return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}


class ScriptedServer(LocalServer):
    """Each path's replies in the order given (the last one repeats); every request's arrival time is kept."""

    def __init__(self, script: dict[str, list[Reply]], *, keep_alive: bool = False):
        self.keep_alive = keep_alive
        self.script = {path: list(replies) for path, replies in script.items()}
        self.arrivals: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        super().__init__()

    def handle(self, method: str, path: str, body: dict) -> Reply:
        with self.lock:
            self.arrivals.append((path, time.monotonic()))
            replies = self.script.get(path)
            if not replies:
                return Reply(404, {"error": {"message": f"unknown path {path}"}})
            return replies.pop(0) if len(replies) > 1 else replies[0]


def chat_answer(text: str = "hello", *, prompt_tokens: int = 10, completion_tokens: int = 5) -> Reply:
    """A chat completion's answer with its `usage`."""
    return Reply(body={"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}})


def answer_for(seed: int) -> str:
    """The hosted-like server's answer to a request with this seed (a few random letters)."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 12)))


FAULTS = {"429": 7, "503": 11, "drop": 5, "slow": 13, "cut": 17, "down": 9}
"""Fault -> period: the k-th distinct seed to arrive gets a fault on its first attempt when
k % period == offset (offsets in `HostedLikeServer.fault`); "down" fails every attempt."""


class HostedLikeServer(LocalServer):
    """A hosted chat API under load (see the module docstring). `faults=False`: it never fails."""

    def __init__(self, *, faults: bool = True, slow_s: float = 1.0, reasoning: bool = False,
                 always: Reply | None = None):
        self.faults, self.slow_s, self.reasoning, self.always = faults, slow_s, reasoning, always
        self.order: dict[int, int] = {}
        self.attempts: dict[int, int] = {}
        self.given: dict[int, str] = {}
        """Seed -> what went wrong on its first attempt (or "down")."""
        self.lock = threading.Lock()
        super().__init__()

    def fault(self, index: int) -> str | None:
        if index % FAULTS["down"] == 8:
            return "down"
        for name, offset in (("429", 0), ("503", 1), ("drop", 2), ("slow", 3), ("cut", 4)):
            if index % FAULTS[name] == offset:
                return name
        return None

    def handle(self, method: str, path: str, body: dict) -> Reply:
        if method == "GET":
            return Reply(body={"object": "list", "data": [{"id": "hosted-model", "object": "model"}]})
        if self.always is not None:
            return self.always
        if self.reasoning and "max_tokens" in body:
            return Reply(400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this "
                                                    "model. Use 'max_completion_tokens' instead.",
                                         "type": "invalid_request_error", "param": "max_tokens",
                                         "code": "unsupported_parameter"}})
        seed = int(body["seed"])
        with self.lock:
            index = self.order.setdefault(seed, len(self.order))
            attempt = self.attempts[seed] = self.attempts.get(seed, -1) + 1
            fault = self.fault(index) if self.faults and (attempt == 0 or self.fault(index) == "down") else None
            if fault is not None:
                self.given.setdefault(seed, fault)
        if fault == "429":
            when = "0" if index % 2 else email.utils.formatdate(time.time(), usegmt=True)  # seconds or an HTTP date
            return Reply(429, {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": when})
        if fault in ("503", "down"):
            return Reply(503, {"error": {"message": "The server is overloaded"}})
        if fault == "drop":
            return Reply(drop=True)
        text = answer_for(seed)
        reply = chat_answer(text, completion_tokens=len(text))
        reply.delay_s = self.slow_s if fault == "slow" else 0.0
        reply.cut = fault == "cut"
        return reply


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
