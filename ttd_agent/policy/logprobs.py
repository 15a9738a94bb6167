"""Log-probs (and entropies) of chosen tokens without a (tokens × vocabulary) tensor per batch.

A causal LM's forward ends in `lm_head`, a (hidden → vocabulary) projection. Asking the model for
`logits` of every completion token and taking `log_softmax` holds two float32 tensors of shape
(B, T, V) alive for the backward pass: 1.2 MiB per token for a 152k vocabulary, each, whatever the
model's size. Here the trainer asks the decoder for hidden states instead, keeps only the rows of
the tokens it scores (no padding), and runs `lm_head` + log-softmax over `chunk_tokens` rows at a
time. With gradients on, each chunk is checkpointed: its logits are dropped after the forward and
recomputed during the backward, so at most one chunk's logits exist at any moment. What stays per
token is one hidden vector (H values) and the scalars asked for.

The head is more than `lm_head` for some families: their `*ForCausalLM.forward` transforms the
head's output before returning logits: Gemma 2/3 soft-cap them (cap · tanh(z / cap)), Cohere
multiplies by `logit_scale`, Granite divides by `logits_scaling`. `OutputHead` applies what
`post_head` reads from the model, and `check_output_head` compares it with the model's own
forward on a few tokens, so a family that does something else is refused at load time instead of
training on log-probs of another distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class PostHead:
    """What a family's forward does to `lm_head`'s output: logits = cap · tanh(scale · z / cap)
    when `softcap` is set, else scale · z."""

    scale: float = 1.0
    softcap: float | None = None


def post_head(lm: torch.nn.Module) -> PostHead:
    """The post-head transform of a transformers causal LM, read from its config (and module)."""
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    kind = str(getattr(config, "model_type", ""))
    softcap = getattr(config, "final_logit_softcapping", None) or getattr(lm, "final_logit_softcapping", None)
    scale = 1.0
    if kind.startswith("granite"):  # logits / logits_scaling
        scale = 1.0 / float(config.logits_scaling)
    elif kind.startswith("hyperclovax"):  # the same name, multiplied
        scale = float(config.logits_scaling)
    elif getattr(lm, "logit_scale", None) is not None or getattr(config, "logit_scale", None) is not None:
        scale = float(getattr(lm, "logit_scale", None) or config.logit_scale)  # the Cohere family
    elif getattr(getattr(lm, "model", None), "lm_head_multiplier", None) is not None:
        scale = float(lm.model.lm_head_multiplier)  # Falcon-H1
    return PostHead(scale=scale, softcap=float(softcap) if softcap else None)


class OutputHead(torch.nn.Module):
    """`lm_head` followed by the family's post-head transform, in float32."""

    def __init__(self, head: torch.nn.Module, post: PostHead):
        super().__init__()
        self.head, self.post = head, post

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float()
        if self.post.scale != 1.0:
            logits = logits * self.post.scale
        if self.post.softcap is not None:
            logits = torch.tanh(logits / self.post.softcap) * self.post.softcap
        return logits


def output_head(lm: torch.nn.Module, post: PostHead | None = None) -> OutputHead:
    """The model's output embedding with its post-head transform (`post_head(lm)` unless given)."""
    return OutputHead(lm.get_output_embeddings(), post or post_head(lm))


@torch.no_grad()
def check_output_head(lm: torch.nn.Module, head: OutputHead, input_ids: torch.Tensor) -> float:
    """Raise ValueError when `head(decoder(ids))` differs from `lm(ids).logits` (the model's own
    forward) by more than rounding; returns the largest difference relative to the largest logit."""
    was_training = lm.training
    lm.eval()
    try:
        expected = lm(input_ids=input_ids, use_cache=False).logits.float()
        ours = head(lm.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state)
    finally:
        lm.train(was_training)
    error = float((expected - ours).abs().max() / expected.abs().max().clamp(min=1e-6))
    tolerance = 1e-4 if expected.dtype == torch.float32 and next(lm.parameters()).dtype == torch.float32 else 3e-2
    if not error <= tolerance:
        kind = getattr(lm.config, "model_type", type(lm).__name__)
        raise ValueError(f"{kind}: logits through the output head ({head.post}) differ from the model's own "
                         f"forward by {error:.2e} of the largest logit (tolerance {tolerance:g}); its "
                         f"*ForCausalLM.forward transforms the head's output in a way ttd_agent/policy/"
                         f"logprobs.py's post_head does not know yet")
    return error


def _chunk_scores(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
                  with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float() / temperature
    log_z = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - log_z
    if not with_entropy:
        return logp, torch.zeros_like(logp)
    entropy = log_z - (F.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


def token_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                   chunk_tokens: int = 1024, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(head(hidden) / temperature)[target] for each row (`head`: an `OutputHead`, so the
    logits are the model's own), and the entropy of that
    distribution when `with_entropy`; `hidden` is (N, H), `targets` (N,). Differentiable through
    `head` and `hidden` with at most `chunk_tokens` rows of logits alive at once."""
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows but targets {targets.shape[0]}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        rows, tokens = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if grad:
            logp, entropy = checkpoint(_chunk_scores, head, rows, tokens, temperature, with_entropy,
                                       use_reentrant=False)
        else:
            logp, entropy = _chunk_scores(head, rows, tokens, temperature, with_entropy)
        logps.append(logp)
        entropies.append(entropy)
    empty = hidden.new_zeros((0,), dtype=torch.float32)
    logp = torch.cat(logps) if logps else empty
    return logp, ((torch.cat(entropies) if entropies else empty) if with_entropy else None)
