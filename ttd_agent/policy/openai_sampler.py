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

Requests run `request_concurrency` at a time through one `OpenAIClient` (openai_client.py:
retries, deadlines, the token field, the context clamp); each sample is reported the moment its
request returns, so the trainer evaluates it while the others are still out. A request that fails
for good becomes a failed sample (`Sample.error`); a step whose requests all fail stops the run.
The API key is read from the environment variable named by `api_key_env`, never stored.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttd_agent.policy.base import LossConfig, Sample, TrainItem
from ttd_agent.policy.openai_client import OpenAIClient, RequestFailed, ServerError, fan_out
from ttd_agent.policy.renderers import Completion, sample_seeds
from ttd_agent.policy.settings import LLMSettings

log = logging.getLogger(__name__)

__all__ = ["OpenAIPolicy", "OpenAISampler", "ServerError"]


def _token_id(token: str) -> int:
    if not token.startswith("token_id:"):
        raise RequestFailed(f"the server returned token {token!r} instead of 'token_id:N': it must support "
                            f"return_tokens_as_token_ids (vLLM does); use --no-update for other servers")
    return int(token.split(":", 1)[1])


class OpenAISampler:
    """The token-level engine of `HFPolicy(sampler="openai")`; see the module docstring.

    Adapters are served as `ttd-<nonce>-v<version>`, the nonce drawn anew by each process: a run
    resumed after a kill reloads its versions under names the server cannot still hold."""

    def __init__(self, model: str, *, settings: LLMSettings):
        self.client = OpenAIClient(settings)
        self.client.probe()
        self.model = model
        self.settings = settings
        self.nonce = secrets.token_hex(4)
        self._loaded: dict[str, str] = {}
        """Adapter directory -> the name it was loaded under."""

    def sleep(self) -> None:
        """The server's GPU is not the trainer's: nothing to free."""

    def wake(self) -> None:
        """Nothing to do: see `sleep`."""

    def request_stats(self) -> dict[str, int]:
        """Requests sent, retried and failed, and tokens used, since the last call."""
        return self.client.drain_stats()

    def _served_name(self, adapter_dir: Path | None) -> str:
        if adapter_dir is None:
            return self.model
        key = str(Path(adapter_dir).resolve())
        if key not in self._loaded:
            name = f"ttd-{self.nonce}-{Path(key).name}"
            try:
                self.client.post_admin("/load_lora_adapter", {"lora_name": name, "lora_path": key})
            except RequestFailed as error:
                if error.status == 400 and "already" in error.detail:  # a retried load whose first try arrived
                    log.debug("adapter %s was loaded by an earlier attempt", name)
                else:
                    raise ServerError(f"could not load adapter {name} into the server: {error}. It needs `vllm "
                                      f"serve --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and must be "
                                      f"able to read {key}") from None
            self._loaded[key] = name
        return self._loaded[key]

    def forget_adapter(self, adapter_dir: Path) -> None:
        name = self._loaded.pop(str(Path(adapter_dir).resolve()), None)
        if name is not None:
            try:
                self.client.post_admin("/unload_lora_adapter", {"lora_name": name})
            except ServerError as error:  # the server may have dropped it already
                log.warning("could not unload adapter %s: %s", name, error)

    def _one(self, model: str, row: list[int], temperature: float, max_new_tokens: int, seed: int,
             stop_ids: Sequence[int]) -> Completion:
        body = {"model": model, "prompt": list(row), "temperature": temperature, "top_p": 1.0, "seed": seed,
                "logprobs": 0, "return_tokens_as_token_ids": True, "stop_token_ids": list(stop_ids),
                "skip_special_tokens": False, "include_stop_str_in_output": True}

        def parse(answer: dict[str, Any]) -> Completion:
            choice = answer["choices"][0]
            logprobs = choice.get("logprobs") or {}
            ids = [_token_id(t) for t in logprobs.get("tokens") or []]
            values = [0.0 if v is None else float(v) for v in logprobs.get("token_logprobs") or [0.0] * len(ids)]
            if "usage" not in answer:
                self.client.count_usage(len(row), len(ids))
            return Completion(ids=ids, logprobs=np.asarray(values, dtype=np.float32),
                              finished=choice.get("finish_reason") != "length")

        return self.client.complete("/completions", body, max_new_tokens, parse, prompt_tokens=len(row),
                                    base_model=self.model)

    def generate(self, rows: list[list[int]], temperature: float, max_new_tokens: int, seeds: list[int],
                 on_row: Callable[[int, Completion], None], *, adapter_dir: Path | None = None,
                 stop_ids: Sequence[int] = ()) -> None:
        """One completion per row of prompt ids, `request_concurrency` requests in flight; a row
        whose request failed for good is reported as `Completion.failed`."""
        model = self._served_name(adapter_dir)
        calls = [lambda row=row, seed=seed: self._one(model, row, temperature, max_new_tokens, seed, stop_ids)
                 for row, seed in zip(rows, seeds, strict=True)]
        fan_out(calls, self.settings.request_concurrency,
                lambda k, c: on_row(k, Completion.failed(str(c)) if isinstance(c, RequestFailed) else c))


class OpenAIPolicy:
    """A sampling-only `Policy` over a chat endpoint (no local weights); see the module docstring."""

    kind = "llm"

    def __init__(self, model: str, *, settings: LLMSettings | None = None, seed: int = 0):
        self.settings = settings or LLMSettings()
        self.client = OpenAIClient(self.settings)
        self.client.probe()
        self.model = self.settings.served_model or model
        self.seed = seed
        self.calls = 0
        self.temperature = 1.0

    def request_stats(self) -> dict[str, int]:
        """Requests sent, retried and failed, and tokens used, since the last call."""
        return self.client.drain_stats()

    def _one(self, prompt: str, temperature: float, max_new_tokens: int, seed: int) -> Sample:
        messages = ([{"role": "system", "content": self.settings.system_prompt}] if self.settings.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature, "seed": seed}

        def parse(answer: dict[str, Any]) -> Sample:
            choice = answer["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
            return Sample(prompt=prompt, text=text, prompt_ids=[], completion_ids=[],
                          logprobs=np.zeros(0, dtype=np.float32), finished=choice.get("finish_reason") != "length")

        return self.client.complete("/chat/completions", body, max_new_tokens, parse)

    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int,
               on_sample: Callable[[int, int, Sample], None] | None = None) -> list[list[Sample]]:
        """`n` answers per prompt, one request each with its own seed, reported as they return (a
        request that failed for good as a failed sample)."""
        if temperature > 0:
            self.temperature = float(temperature)
        owners = [(i, j) for i in range(len(prompts)) for j in range(n)]
        seeds = sample_seeds(self.seed, self.calls, len(owners))
        self.calls += 1
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]

        def done(k: int, result: Sample | RequestFailed) -> None:
            i, j = owners[k]
            sample = result if isinstance(result, Sample) else Sample(
                prompt=prompts[i], text="", prompt_ids=[], completion_ids=[], logprobs=np.zeros(0, dtype=np.float32),
                finished=False, error=str(result))
            out[i][j] = sample
            if on_sample is not None:
                on_sample(i, j, sample)

        fan_out([lambda i=i, seed=seed: self._one(prompts[i], temperature, max_new_tokens, seed)
                 for (i, _), seed in zip(owners, seeds, strict=True)], self.settings.request_concurrency, done)
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
