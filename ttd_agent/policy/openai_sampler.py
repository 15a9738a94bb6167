"""Sampling from any OpenAI-compatible server (`--sampler openai --base-url URL`).

Two uses:
- `OpenAISampler`, the token-level engine of `HFPolicy(sampler="openai")`: the two-GPU layout. A
  `vllm serve MODEL --enable-lora` (with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) samples on one
  GPU, the trainer updates LoRA on another. Prompts go as token ids to `/v1/completions` (so the
  trainer's renderer decides the exact tokens), with one seed per row, the sampled tokens'
  log-probs back as ids (`return_tokens_as_token_ids`, a vLLM extension); after each update the
  new adapter is loaded at run time (`/v1/load_lora_adapter`) and older ones unloaded. The
  adapter directory must be readable by the server (same machine or a shared filesystem).
- `OpenAIPolicy`, a policy with no local weights for `--no-update`: `/v1/chat/completions` on any
  hosted or local model, for best-of-N and PUCT-only baselines with frontier models. The server
  renders the chat; the answer is the message `content` (the final channel; a reasoning model's
  thinking arrives separately and is not the answer). Nothing is trained, so samples carry no
  token ids.

Requests run `request_concurrency` at a time; each sample is reported the moment its request
returns, so the trainer evaluates it while the others are still out. The API key is read from
the environment variable named by `api_key_env`, never stored.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttd_agent.policy.base import LossConfig, Sample, TrainItem
from ttd_agent.policy.renderers import Completion, sample_seeds
from ttd_agent.policy.settings import LLMSettings

log = logging.getLogger(__name__)


class ServerError(ConnectionError):
    """The server answered with an error or could not be reached."""


class _Client:
    """JSON over HTTP to one OpenAI-compatible base URL (stdlib only)."""

    def __init__(self, settings: LLMSettings):
        if not settings.base_url:
            raise ValueError("--sampler openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        self.base_url = settings.base_url.rstrip("/")
        self.timeout_s = settings.request_timeout_s
        self.api_key = os.environ.get(settings.api_key_env, "")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}{path}", data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise ServerError(f"{self.base_url}{path} answered HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise ServerError(f"cannot reach {self.base_url}{path}: {error}; is the server running "
                              f"(e.g. `vllm serve MODEL --enable-lora`)?") from error
        return json.loads(text) if text else {}


def _token_id(token: str) -> int:
    if not token.startswith("token_id:"):
        raise ServerError(f"the server returned token {token!r} instead of 'token_id:N': it must support "
                          f"return_tokens_as_token_ids (vLLM does); use --no-update for other servers")
    return int(token.split(":", 1)[1])


class OpenAISampler:
    """The token-level engine of `HFPolicy(sampler="openai")`; see the module docstring."""

    def __init__(self, model: str, *, settings: LLMSettings):
        self.client = _Client(settings)
        self.model = model
        self.settings = settings
        self._loaded: dict[str, str] = {}
        """Adapter directory -> the name it was loaded under."""

    def sleep(self) -> None:
        """The server's GPU is not the trainer's: nothing to free."""

    def wake(self) -> None:
        """Nothing to do: see `sleep`."""

    def _served_name(self, adapter_dir: Path | None) -> str:
        if adapter_dir is None:
            return self.model
        key = str(Path(adapter_dir).resolve())
        if key not in self._loaded:
            name = f"ttd-{Path(key).name}"
            self.client.post("/load_lora_adapter", {"lora_name": name, "lora_path": key})
            self._loaded[key] = name
        return self._loaded[key]

    def forget_adapter(self, adapter_dir: Path) -> None:
        name = self._loaded.pop(str(Path(adapter_dir).resolve()), None)
        if name is not None:
            try:
                self.client.post("/unload_lora_adapter", {"lora_name": name})
            except ServerError as error:  # the server may have dropped it already
                log.warning("could not unload adapter %s: %s", name, error)

    def _one(self, model: str, row: list[int], temperature: float, max_new_tokens: int, seed: int,
             stop_ids: Sequence[int]) -> Completion:
        body = {"model": model, "prompt": list(row), "max_tokens": max_new_tokens, "temperature": temperature,
                "top_p": 1.0, "seed": seed, "logprobs": 0, "return_tokens_as_token_ids": True,
                "stop_token_ids": list(stop_ids), "skip_special_tokens": False, "include_stop_str_in_output": True}
        choice = self.client.post("/completions", body)["choices"][0]
        logprobs = choice.get("logprobs") or {}
        ids = [_token_id(t) for t in logprobs.get("tokens") or []]
        values = [0.0 if v is None else float(v) for v in logprobs.get("token_logprobs") or [0.0] * len(ids)]
        return Completion(ids=ids, logprobs=np.asarray(values, dtype=np.float32),
                          finished=choice.get("finish_reason") != "length")

    def generate(self, rows: list[list[int]], temperature: float, max_new_tokens: int, seeds: list[int],
                 on_row: Callable[[int, Completion], None], *, adapter_dir: Path | None = None,
                 stop_ids: Sequence[int] = ()) -> None:
        """One completion per row of prompt ids, `request_concurrency` requests in flight."""
        model = self._served_name(adapter_dir)
        with cf.ThreadPoolExecutor(self.settings.request_concurrency, thread_name_prefix="ttd-openai") as pool:
            futures = {pool.submit(self._one, model, row, temperature, max_new_tokens, seed, stop_ids): k
                       for k, (row, seed) in enumerate(zip(rows, seeds, strict=True))}
            for future in cf.as_completed(futures):
                on_row(futures[future], future.result())


class OpenAIPolicy:
    """A sampling-only `Policy` over a chat endpoint (no local weights); see the module docstring."""

    kind = "llm"

    def __init__(self, model: str, *, settings: LLMSettings | None = None, seed: int = 0):
        self.settings = settings or LLMSettings()
        self.client = _Client(self.settings)
        self.model = self.settings.served_model or model
        self.seed = seed
        self.calls = 0
        self.temperature = 1.0

    def _one(self, prompt: str, temperature: float, max_new_tokens: int, seed: int) -> Sample:
        messages = ([{"role": "system", "content": self.settings.system_prompt}] if self.settings.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                                "temperature": temperature, "seed": seed}
        choice = self.client.post("/chat/completions", body)["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        return Sample(prompt=prompt, text=text, prompt_ids=[], completion_ids=[],
                      logprobs=np.zeros(0, dtype=np.float32), finished=choice.get("finish_reason") != "length")

    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int,
               on_sample: Callable[[int, int, Sample], None] | None = None) -> list[list[Sample]]:
        """`n` answers per prompt, one request each with its own seed, reported as they return."""
        if temperature > 0:
            self.temperature = float(temperature)
        owners = [(i, j) for i in range(len(prompts)) for j in range(n)]
        seeds = sample_seeds(self.seed, self.calls, len(owners))
        self.calls += 1
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]
        with cf.ThreadPoolExecutor(self.settings.request_concurrency, thread_name_prefix="ttd-openai") as pool:
            futures = {pool.submit(self._one, prompts[i], temperature, max_new_tokens, seed): (i, j)
                       for (i, j), seed in zip(owners, seeds, strict=True)}
            for future in cf.as_completed(futures):
                i, j = futures[future]
                out[i][j] = future.result()
                if on_sample is not None:
                    on_sample(i, j, out[i][j])
        return [[s for s in group if s is not None] for group in out]

    def logprobs(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        raise NotImplementedError("a hosted model's log-probs are not available: OpenAIPolicy only samples")

    def update(self, items: Sequence[TrainItem], loss: LossConfig) -> dict[str, float]:
        raise ValueError("the openai policy has no local weights to train: run with --no-update, or pass "
                         "--model with the local weights of the served model to train LoRA against the server")

    def save(self, directory: Path) -> None:
        """The sampling-call counter (it derives the seeds), so a resume draws new samples."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "openai_policy.json").write_text(json.dumps(
            {"model": self.model, "calls": self.calls, "temperature": self.temperature}))

    def load(self, directory: Path) -> None:
        state = json.loads((Path(directory) / "openai_policy.json").read_text())
        self.calls, self.temperature = int(state["calls"]), float(state["temperature"])
