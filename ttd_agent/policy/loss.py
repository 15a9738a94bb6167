"""The policy-gradient loss every backend shares: importance-weighted surrogate, PPO clip, KL, aggregation.

All tensors are padded to (B, T) = (sequences, completion tokens); `mask` is 1 on real completion
tokens and 0 on padding. `logp_new` carries the gradient; `logp_sampled` (the log-probs the tokens
were drawn with) and `logp_ref` (the reference policy) are constants. Per token t of sequence b:

    ratio       = exp(logp_new - logp_sampled)
    A_bt        = A_b                                        (one advantage per sequence)
    A_bt       -= kl_coef * (logp_new - logp_ref).detach()   (kl_mode "reward", TTT-Discover;
                  minus its batch mean with kl_center, as the reference centres it)
    surrogate   = -ratio * A_bt                              (no clip_eps)
                = max(-ratio * A_bt, -clip(ratio, 1-eps, 1+eps) * A_bt)   (PPO, clip_eps = eps)

    loss = aggregate(surrogate) [+ kl_coef * token_mean(clamp(exp(ref - new) - (ref - new) - 1, -10, 10))]

The bracketed term is kl_mode "k3" (TTRL/verl's low-variance estimator); it is a mean over every
token of the batch whatever the aggregation. Aggregation "seq-sum" sums each sequence's tokens and
averages over sequences; "token-mean" averages over every token of the batch. On-policy (ratio = 1)
the gradient of -ratio * A is exactly -A * grad logp_new, i.e. REINFORCE.
"""

from __future__ import annotations

import torch

from ttd_agent.policy.base import LossConfig


def policy_gradient_loss(logp_new: torch.Tensor, logp_sampled: torch.Tensor, advantages: torch.Tensor,
                         mask: torch.Tensor, config: LossConfig,
                         logp_ref: torch.Tensor | None = None, *, total_sequences: float | None = None,
                         total_tokens: float | None = None,
                         kl_offset: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar loss to minimise and its statistics (loss, kl, clip_fraction, ratio_mean, ratio_max).

    `advantages` is (B,) (one per sequence) or (B, T) (already per token). `kl` is the mean per-token
    k1 (logp_new - logp_ref) for kl_mode "reward" and the mean (clamped) k3 for "k3"; 0 without a
    reference. `clip_fraction` is the share of tokens whose clipped term was taken (zero gradient).

    Gradient accumulation: pass the whole batch's `total_sequences` and `total_tokens` when this
    call sees one micro-batch of it. Means are then taken over the whole batch, so the micro-batch
    losses (and every statistic but `ratio_max`, which takes the max) add up to the full-batch ones.

    `kl_offset` (kl_mode "reward" with `config.kl_center`): the batch mean of the per-token KL,
    subtracted from each token's penalty before shaping, so the penalty is centred.
    """
    if logp_new.shape != logp_sampled.shape or logp_new.shape != mask.shape:
        raise ValueError(f"logp_new, logp_sampled and mask must share a (B, T) shape, got "
                         f"{tuple(logp_new.shape)}, {tuple(logp_sampled.shape)}, {tuple(mask.shape)}")
    if config.kl_coef > 0 and logp_ref is None:
        raise ValueError(f"kl_coef={config.kl_coef} needs logp_ref (the reference policy's log-probs)")
    if config.aggregation not in ("seq-sum", "token-mean"):
        raise ValueError(f"aggregation must be 'seq-sum' or 'token-mean', got {config.aggregation!r}")
    if config.kl_mode not in ("reward", "k3"):
        raise ValueError(f"kl_mode must be 'reward' or 'k3', got {config.kl_mode!r}")

    real = mask > 0
    mask = mask.to(logp_new.dtype)
    n_sequences = float(total_sequences if total_sequences is not None else max(1, mask.shape[0]))
    n_tokens = total_tokens if total_tokens is not None else mask.sum().clamp(min=1.0)
    token_mean = lambda x: (x * mask).sum() / n_tokens
    adv = advantages.to(logp_new.dtype)
    adv = adv[:, None].expand_as(logp_new) if adv.dim() == 1 else adv

    kl_per_token = None
    if logp_ref is not None:
        delta = torch.where(real, logp_ref.detach() - logp_new, 0.0)  # log(ref / new); padding may hold inf
        if config.kl_mode == "reward":
            kl_per_token = -delta  # k1
            if config.kl_coef > 0:
                offset = kl_offset if config.kl_center else 0.0
                adv = adv - config.kl_coef * (kl_per_token.detach() - offset)
        else:
            kl_per_token = torch.clamp(torch.exp(delta) - delta - 1.0, -10.0, 10.0)  # k3

    ratio = torch.exp(torch.where(real, logp_new - logp_sampled.detach(), 0.0))
    surrogate = -ratio * adv
    clipped = torch.zeros_like(surrogate, dtype=torch.bool)
    if config.clip_eps is not None:
        eps = config.clip_eps
        surrogate_clipped = -torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * adv
        clipped = surrogate_clipped > surrogate
        surrogate = torch.maximum(surrogate, surrogate_clipped)

    if config.aggregation == "seq-sum":
        loss = (surrogate * mask).sum() / n_sequences
    else:
        loss = token_mean(surrogate)
    if config.kl_mode == "k3" and config.kl_coef > 0:
        loss = loss + config.kl_coef * token_mean(kl_per_token)

    with torch.no_grad():
        stats = {
            "loss": float(loss.detach()),
            "kl": float(token_mean(kl_per_token.detach())) if kl_per_token is not None else 0.0,
            "clip_fraction": float(token_mean(clipped.to(mask.dtype))),
            "ratio_mean": float(token_mean(ratio.detach())),
            "ratio_max": float(ratio.detach()[real].max()) if real.any() else 1.0,
        }
    return loss, stats
