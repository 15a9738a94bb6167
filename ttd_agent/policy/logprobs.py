"""Log-probs (and entropies) of chosen tokens without a (tokens × vocabulary) tensor per batch.

A causal LM's forward ends in `lm_head`, a (hidden → vocabulary) projection. Asking the model for
`logits` of every completion token and taking `log_softmax` holds two float32 tensors of shape
(B, T, V) alive for the backward pass: 1.2 MiB per token for a 152k vocabulary, each, whatever the
model's size. Here the trainer asks the decoder for hidden states instead, keeps only the rows of
the tokens it scores (no padding), and runs `lm_head` + log-softmax over `chunk_tokens` rows at a
time. With gradients on, each chunk is checkpointed: its logits are dropped after the forward and
recomputed during the backward, so at most one chunk's logits exist at any moment. What stays per
token is one hidden vector (H values) and the scalars asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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
    """log softmax(head(hidden) / temperature)[target] for each row, and the entropy of that
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
