"""Every setting of the LLM policy and its sampling engine, as one dataclass and its CLI flags.

The discovery config stores these under `llm` (a dict of the fields that differ from the
defaults), so `config.json` names the exact policy a run used and `--resume` rebuilds it. Fields
in `RESUMABLE` may change on resume (they change speed or memory, not what is sampled or
trained); the others are refused on resume by the CLI's rules.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

RESUMABLE = ("micro_batch_size", "micro_batch_tokens", "logit_chunk_tokens", "gradient_checkpointing",
             "sample_batch_size", "gpu_memory_utilization", "enforce_eager", "sleep", "preflight",
             "gpu_memory_gib", "request_concurrency", "request_timeout_s", "keep_adapters")
"""Settings that change speed or memory only: safe to change when resuming a run."""
RESUMABLE += ("request_retries", "retry_time_s", "retry_backoff_s", "retry_backoff_max_s", "max_tokens_field")
"""(How a request to an OpenAI-compatible server is retried changes nothing that is sampled.)"""
ATTENTION = ("auto", "sdpa", "flex_attention", "flash_attention_2", "eager")
"""Values of the `attention` setting (memory.choose_attention decides "auto")."""


@dataclass
class LLMSettings:
    """Settings of the `hf` policy (transformers + LoRA) and of its sampler (hf, vllm or openai)."""

    dtype: str | None = None
    """Weights and compute dtype (default bfloat16 on CUDA, float32 on CPU)."""
    micro_batch_size: int = 8
    """At most this many sequences per forward/backward of an update."""
    micro_batch_tokens: int = 16384
    """And at most this many (padded) tokens per micro-batch; a longer sequence goes alone."""
    logit_chunk_tokens: int = 1024
    """Rows of logits alive at once when scoring tokens (memory: rows × vocabulary × 4 bytes × ~3)."""
    gradient_checkpointing: bool = True
    """Recompute each layer's activations in the backward pass (~1/3 more compute, far less
    memory: without it a 7B model's 18k-token sequence needs ~95 GiB of activations)."""
    sample_batch_size: int = 64
    """Sequences decoded together by the hf sampler."""
    logprobs: Literal["sampler", "recompute"] = "sampler"
    """Importance ratio against the sampler's own log-probs (the reference's loss), or recompute
    them with the trainer's forward first (ratio exactly 1 at the first update)."""
    # -- chat rendering and reasoning models
    renderer: Literal["auto", "plain", "chat", "qwen3", "gpt-oss"] = "auto"
    thinking: bool = True
    """Qwen3: let the model think (`enable_thinking`)."""
    reasoning_effort: Literal["low", "medium", "high"] = "medium"
    """gpt-oss: the reasoning effort its system message asks for."""
    date: str = "2026-01-01"
    """The date chat templates stamp into the prompt (fixed so a resume renders the same tokens)."""
    system_prompt: str | None = None
    thinking_budget: int | None = None
    """Two-phase completion: tokens of thinking before the model is told to answer now (None: off)."""
    answer_budget: int = 2048
    """Tokens for the forced answer after the thinking budget ran out."""
    # -- vLLM engine (--sampler vllm)
    gpu_memory_utilization: float = 0.5
    max_model_len: int | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    sleep: bool = True
    """Put the vLLM engine to sleep during each update (weights to CPU, KV cache freed)."""
    keep_adapters: int = 1
    """Adapter versions kept on disk for the sampler (older ones are deleted)."""
    # -- OpenAI-compatible server (--sampler openai)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (never stored in the run's config)."""
    served_model: str | None = None
    """The model name the server knows (default: --model)."""
    request_concurrency: int = 16
    request_timeout_s: float = 600.0
    """Deadline of one attempt, from sending to the answer's last byte (a hung server is given up on)."""
    request_retries: int = 8
    """Attempts after the first on 429, 5xx, dropped connections and timeouts (docs/llm.md)."""
    retry_time_s: float = 1800.0
    """No new attempt of a request starts this long after its first."""
    retry_backoff_s: float = 1.0
    """Backoff before retry k (from 0): uniform in [0, min(retry_backoff_max_s, this * 2^k)], unless the
    server's Retry-After says how long."""
    retry_backoff_max_s: float = 60.0
    max_tokens_field: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    """The request field of the completion budget; auto: max_tokens until a 400 says it is unsupported
    (OpenAI's o-series and gpt-5 take only max_completion_tokens)."""
    attention: Literal["auto", "sdpa", "flex_attention", "flash_attention_2", "eager"] = "auto"
    """Attention implementation of the hf model; "auto": SDPA where the family has it, else
    FlexAttention on a GPU, else eager (memory.choose_attention)."""
    # -- pre-flight
    preflight: bool = True
    """Refuse, before loading anything, a configuration whose memory estimate exceeds the GPU."""
    gpu_memory_gib: float | None = None
    """GPU memory the pre-flight plans for (default: what the visible GPU reports)."""

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "micro_batch_tokens", "logit_chunk_tokens", "sample_batch_size",
                     "answer_budget", "tensor_parallel_size", "keep_adapters", "request_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.thinking_budget is not None and self.thinking_budget < 1:
            raise ValueError(f"--thinking-budget must be >= 1 (or unset), got {self.thinking_budget}")
        if self.request_retries < 0 or min(self.request_timeout_s, self.retry_time_s) <= 0 \
                or not 0 <= self.retry_backoff_s <= self.retry_backoff_max_s:
            raise ValueError(f"need --request-retries >= 0, --request-timeout-s and --retry-time-s > 0, and "
                             f"0 <= --retry-backoff-s <= --retry-backoff-max-s; got {self.request_retries}, "
                             f"{self.request_timeout_s}, {self.retry_time_s}, {self.retry_backoff_s}, "
                             f"{self.retry_backoff_max_s}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LLMSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ValueError(f"unknown LLM setting(s) {unknown}; known: {sorted(known)}")
        return cls(**(values or {}))

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what a run's config stores)."""
        default = asdict(LLMSettings())
        return {k: v for k, v in asdict(self).items() if v != default[k]}


FIELDS = frozenset(f.name for f in fields(LLMSettings))
"""The setting names; each is also a `ttd-agent train` flag and a `--config` key."""


def resume_llm(saved: dict[str, Any], requested: dict[str, Any]) -> dict[str, Any]:
    """The `llm` dict a resumed run continues with: `requested` values of `RESUMABLE` settings
    applied, any other setting that differs from the saved run refused (ValueError)."""
    before, after = LLMSettings.from_dict(saved), LLMSettings.from_dict({**saved, **requested})
    refused = [f"{name} (saved {getattr(before, name)!r}, asked {getattr(after, name)!r})"
               for name in sorted(requested) if name not in RESUMABLE and getattr(before, name) != getattr(after, name)]
    if refused:
        raise ValueError(f"--resume cannot change these LLM settings: {'; '.join(refused)}. Settings that may "
                         f"change on resume: {', '.join(RESUMABLE)}")
    return after.changed()


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_HELP = {
    "dtype": "weights/compute dtype (default bfloat16 on CUDA)",
    "micro_batch_size": "sequences per forward/backward of an update (8)",
    "micro_batch_tokens": "padded tokens per micro-batch (16384)",
    "logit_chunk_tokens": "rows of logits alive at once when scoring tokens (1024)",
    "gradient_checkpointing": "recompute activations in the backward pass (default true)",
    "sample_batch_size": "sequences decoded together by the hf sampler (64)",
    "logprobs": "importance ratio against the sampler's log-probs, or recompute them first",
    "renderer": "prompt format: auto, plain, chat, qwen3 (thinking) or gpt-oss (harmony)",
    "thinking": "qwen3: enable thinking (true/false)",
    "reasoning_effort": "gpt-oss reasoning effort",
    "date": "date stamped by chat templates (fixed, so resume is exact)",
    "system_prompt": "system message before each prompt",
    "thinking_budget": "two-phase completion: thinking tokens before 'answer now' is forced",
    "answer_budget": "tokens for the answer forced after the thinking budget (2048)",
    "gpu_memory_utilization": "vLLM: share of GPU memory for its weights and KV cache (0.5)",
    "max_model_len": "vLLM: longest prompt + completion",
    "enforce_eager": "vLLM: no CUDA graphs (less memory, slower) (true/false)",
    "tensor_parallel_size": "vLLM: GPUs per engine",
    "sleep": "vLLM: sleep the engine during updates (true/false)",
    "keep_adapters": "adapter versions kept on disk for the sampler (1)",
    "base_url": "--sampler openai: the server, e.g. http://127.0.0.1:8000/v1",
    "api_key_env": "environment variable with the server's API key",
    "served_model": "--sampler openai: model name on the server (default --model)",
    "request_concurrency": "--sampler openai: requests in flight (16)",
    "request_timeout_s": "--sampler openai: deadline of one attempt, first byte sent to last read (600)",
    "request_retries": "--sampler openai: retries of a request on 429, 5xx, drops, timeouts (8)",
    "retry_time_s": "--sampler openai: no retry starts this long after a request's first attempt (1800)",
    "retry_backoff_s": "--sampler openai: first retry's backoff unless Retry-After says (doubles, full jitter) (1)",
    "retry_backoff_max_s": "--sampler openai: longest backoff between attempts (60)",
    "max_tokens_field": "--sampler openai: the budget's field (auto: max_tokens until a 400 refuses it)",
    "attention": "hf model attention: auto (SDPA, else flex on a GPU, else eager), sdpa, flex_attention, ...",
    "preflight": "refuse configurations that cannot fit in GPU memory (true/false)",
    "gpu_memory_gib": "GPU memory the pre-flight plans for (default: the visible GPU's)",
}


_CHOICES = {"logprobs": ("sampler", "recompute"), "renderer": ("auto", "plain", "chat", "qwen3", "gpt-oss"),
            "reasoning_effort": ("low", "medium", "high"),
            "max_tokens_field": ("auto", "max_tokens", "max_completion_tokens"),
            "attention": ATTENTION}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (`--micro-batch-tokens 8192`), defaulting to None (= not given), so a
    config file or a resumed run's value stands unless the flag is passed."""
    group = parser.add_argument_group("LLM policy and sampling engine")
    for f in fields(LLMSettings):
        default = getattr(LLMSettings, f.name)
        kind: Any = _bool if isinstance(default, bool) else type(default) if default is not None else str
        if f.name in ("thinking_budget", "max_model_len"):
            kind = int
        elif f.name == "gpu_memory_gib":
            kind = float
        metavar = "BOOL" if kind is _bool else f.name.split("_")[-1].upper()
        group.add_argument(f"--{_flag(f.name)}", dest=f.name, type=kind, default=None, choices=_CHOICES.get(f.name),
                           metavar=metavar if f.name not in _CHOICES else None, help=_HELP[f.name])


def from_args(args: argparse.Namespace, only: set[str] | None = None) -> dict[str, Any]:
    """The settings given as flags (those not None; only the names in `only` when set), validated."""
    values = {name: getattr(args, name) for name in FIELDS
              if getattr(args, name, None) is not None and (only is None or name in only)}
    LLMSettings.from_dict(values)
    return values
