"""The one interface every policy backend implements, and the data that crosses it.

A trainer never touches a model directly: it asks a `Policy` for groups of samples (text plus
the token log-probs they were drawn with), and hands back `TrainItem`s with one advantage per
sample for a single optimizer step. Backends: `embedded` (a tiny transformer built in code),
`hf` (transformers + peft LoRA), and vLLM sampling for the `hf` backend on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np


@dataclass
class Sample:
    """One completion of one prompt, as sampled."""

    prompt: str
    text: str
    """The decoded completion (what the env receives as the action)."""
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: np.ndarray
    """Log-probability of each completion token under the sampling policy, shape (len(completion_ids),)."""
    entropy: np.ndarray | None = None
    """Entropy of the sampling distribution at each completion token, when the backend reports it."""
    finished: bool = True
    """False when the completion was cut at max_new_tokens."""
    loss_mask: np.ndarray | None = None
    """Per completion token, 1 if the update trains on it and 0 if the trainer forced it (the
    "answer now" of a two-phase completion); None means every token is trained."""
    error: str | None = None
    """Why there is no completion (a server request that failed for good); None for a real sample.
    A failed sample is empty: trainers score it as a failure and never train on it."""


@dataclass
class TrainItem:
    """A sample and its advantage; every completion token of the sample gets that advantage."""

    sample: Sample
    advantage: float


@dataclass(frozen=True)
class LossConfig:
    """How one policy-gradient step turns advantages into a loss.

    Per completion token t: ratio_t = exp(logp_new_t - logp_sampled_t) and the surrogate is
    -ratio_t * A (PPO: -min(ratio_t * A, clip(ratio_t, 1-eps, 1+eps) * A) when `clip_eps` is set).
    KL to the reference (initial) policy, with coefficient `kl_coef`:
    - "reward": shape each token's advantage by -kl_coef * (logp_new - logp_ref), detached (TTT-Discover);
    - "k3": add kl_coef * mean_t[exp(ref - new) - (ref - new) - 1], clamped to [-10, 10] (TTRL).
    Aggregation: "seq-sum" sums tokens per sequence and averages over sequences (TTT-Discover's
    sum over completion tokens, made independent of the batch size); "token-mean" averages over
    every token of the batch (TTRL/verl).
    """

    clip_eps: float | None = None
    kl_coef: float = 0.0
    kl_mode: Literal["reward", "k3"] = "reward"
    aggregation: Literal["seq-sum", "token-mean"] = "seq-sum"
    max_grad_norm: float = 1.0
    kl_center: bool = False
    """kl_mode "reward": subtract the batch mean of log(sampled / reference) from each token's
    penalty (the reference's centring), so the penalty moves tokens against each other, not the
    batch's mean advantage."""


@runtime_checkable
class Policy(Protocol):
    """What a trainer needs from a model. `kind` is "embedded" or "llm"."""

    kind: str

    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int,
               on_sample: Callable[[int, int, Sample], None] | None = None) -> list[list[Sample]]:
        """`n` completions for each prompt: result[i][j] is the j-th sample of prompts[i].
        `on_sample(i, j, sample)`, when given, hears of each sample as soon as it is complete
        (from any thread), so a trainer can evaluate it while the others are still sampled.

        Each token is drawn from softmax(logits / temperature) (the embedded policy first masks
        the tokens its alphabet excludes), and `Sample.logprobs` are that distribution's. A call
        with temperature > 0 also sets the temperature `logprobs()` and `update()` use, so an
        update right after sampling is exactly on-policy (ratio 1). temperature = 0 is greedy
        (log-probs reported as 0) and leaves it unchanged.
        """
        ...

    def logprobs(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """Log-probs of each sample's completion tokens under the current weights (no gradient),
        at the latest sampling temperature."""
        ...

    def update(self, items: Sequence[TrainItem], loss: LossConfig) -> dict[str, float]:
        """One optimizer step on `items`; returns statistics (loss, kl, clip_fraction, grad_norm, tokens)."""
        ...

    def save(self, directory: Path) -> None:
        """Weights (the adapter for LoRA), optimizer state and sampling RNG, so a resume continues exactly."""
        ...

    def load(self, directory: Path) -> None:
        ...


def request_metrics(policy: Policy, samples: Sequence[Sample] | None) -> dict[str, int]:
    """One step's token usage for metrics.jsonl (`prompt_tokens`, `completion_tokens`): from the
    server's `usage` when the policy samples through one, with its request counts (`requests`,
    `requests_retried`, `requests_failed`, `request_retries`); else counted from the samples' ids
    (nothing when `samples` is None)."""
    report = getattr(policy, "request_stats", None)
    stats = report() if callable(report) else {}
    if stats or samples is None:
        return stats
    return {"prompt_tokens": sum(len(s.prompt_ids) for s in samples),
            "completion_tokens": sum(len(s.completion_ids) for s in samples)}


def usage_summary(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(label, text) lines of a run summary: tokens used and, through a server, the requests sent,
    retried and failed (sums of `request_metrics` over metrics.jsonl rows)."""
    def total(key: str) -> int:
        return sum(int(row.get(key) or 0) for row in rows)

    lines = []
    if total("prompt_tokens") or total("completion_tokens"):
        lines.append(("tokens", f"{total('prompt_tokens'):,} prompt + {total('completion_tokens'):,} completion"))
    if any("requests" in row for row in rows):
        lines.append(("requests", f"{total('requests')} sent, {total('requests_retried')} retried "
                                  f"({total('request_retries')} retries), {total('requests_failed')} failed"))
    return lines
