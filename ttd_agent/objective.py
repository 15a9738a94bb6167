"""Advantages for one group of rollouts from the same start state; numpy only, no torch.

A group is the 1-D array of rewards r_1..r_k of k actions sampled from one start state. Every
function here maps that array to one advantage per action (or to the beta that shapes them):

- entropic:  the leave-one-out estimate of the gradient of J_beta = (1/beta) log E[exp(beta R)],
             which interpolates between the mean reward (beta -> 0) and the max (beta -> inf);
- entropic-adaptive: the same with beta chosen per group so KL(q_beta || uniform) = ln 2
             (TTT-Discover's default), which makes the advantages invariant to r -> a*r + b;
- mean:      r - mean(r), the "no entropic objective" ablation;
- grpo:      (r - mean(r)) / (std(r) + eps), used by TTRL.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Objective = Literal["entropic-adaptive", "entropic", "mean", "grpo"]
OBJECTIVES: tuple[Objective, ...] = ("entropic-adaptive", "entropic", "mean", "grpo")


def _as_rewards(rewards: np.ndarray) -> np.ndarray:
    """A float64 copy of a non-empty, finite, 1-D group; anything else is a caller bug."""
    array = np.asarray(rewards, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of rewards (one group), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"rewards must be finite (score failed rollouts as 0), got {array.tolist()}")
    return array


def _check_beta(beta: float) -> float:
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be finite and >= 0, got {beta}")
    return float(beta)


def entropic_advantages(rewards: np.ndarray, beta: float) -> np.ndarray:
    """Leave-one-out entropic advantages: A_i = e_i / (Z_i + 1e-12) - 1.

    e_i = exp(beta * (r_i - max_j r_j)) (the shift cancels in the ratio and prevents overflow),
    Z_i = sum_{j != i} e_j / (k - 1). Leaving r_i out of its own normaliser keeps the estimate
    of E[exp(beta R)] independent of the action being scored. Z_i is summed from prefix and
    suffix sums rather than as sum(e) - e_i: with a large beta one e_i is 1 and the others are
    tiny, and the subtraction would erase them. A group of one has no baseline: A = 0.
    """
    r = _as_rewards(rewards)
    beta = _check_beta(beta)
    k = r.size
    if k < 2:
        return np.zeros(k)
    e = np.exp(beta * (r - r.max()))
    before = np.concatenate(([0.0], np.cumsum(e)[:-1]))
    after = np.concatenate((np.cumsum(e[::-1])[::-1][1:], [0.0]))
    z = (before + after) / (k - 1)
    return e / (z + 1e-12) - 1.0


def tilted_kl(rewards: np.ndarray, beta: float) -> float:
    """KL(q_beta || uniform) = sum_i q_i (log q_i + log k) with q_beta(i) ∝ exp(beta * r_i).

    Computed from log q = z - logsumexp(z), z = beta * (r - max r), so no exp overflows and a
    q_i that underflows to 0 contributes exactly 0. Rounding can push it a hair below 0; it is
    clipped there, since a KL is never negative.
    """
    r = _as_rewards(rewards)
    beta = _check_beta(beta)
    z = beta * (r - r.max())
    log_q = z - math.log(np.exp(z).sum())
    return max(float(np.sum(np.exp(log_q) * log_q)) + math.log(r.size), 0.0)


def adaptive_beta(rewards: np.ndarray, delta: float = math.log(2), beta_max: float = 1e6,
                  iterations: int = 60) -> float:
    """The beta at which KL(q_beta || uniform) = delta, found by bracketing and bisection.

    KL is 0 at beta = 0 and non-decreasing in beta, so the root is bracketed by doubling from 1
    (or lies in [0, 1] when KL(1) already reaches delta) and then bisected `iterations` times;
    the midpoint of the final bracket is returned. As beta -> inf the KL tends to log(k / m),
    m = number of rewards tied at the max, so when m > k / 2 (constant rewards, two winners out
    of three, ...) delta = ln 2 is never reached and `beta_max` is returned, as it is when the
    root lies beyond `beta_max` (a spread too small to tilt). At m = k / 2 (any k = 2 group) the
    limit is ln 2 itself, reached to double precision near beta = 40 / spread; the leave-one-out
    advantage of a lone winner is then about 1e12, which is what the formula gives for k = 2.
    A group of fewer than 2 gets 0: there is nothing to tilt.
    """
    r = _as_rewards(rewards)
    if not (delta > 0 and beta_max >= 1 and iterations >= 1):
        raise ValueError(f"need delta > 0, beta_max >= 1, iterations >= 1; got {delta}, {beta_max}, {iterations}")
    if r.size < 2:
        return 0.0
    low, high = 0.0, 1.0
    while tilted_kl(r, high) < delta:
        if high >= beta_max:
            return float(beta_max)
        low, high = high, min(2.0 * high, beta_max)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if tilted_kl(r, middle) < delta:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def mean_advantages(rewards: np.ndarray) -> np.ndarray:
    """A_i = r_i - mean(r): the mean-reward baseline (the entropic ablation, GRPO without std)."""
    r = _as_rewards(rewards)
    return r - r.mean()


def grpo_advantages(rewards: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """A_i = (r_i - mean(r)) / (std(r) + eps) with the unbiased (ddof = 1) std; 0 for k < 2."""
    r = _as_rewards(rewards)
    if r.size < 2:
        return np.zeros(r.size)
    return (r - r.mean()) / (r.std(ddof=1) + eps)


def group_advantages(rewards: np.ndarray, objective: Objective,
                     beta: float = 2.0) -> tuple[np.ndarray, float | None]:
    """Advantages of one group under `objective`, and the beta used (None for mean and grpo).

    `beta` is only read by the fixed-beta "entropic" objective (2.0 is the reference's value).
    """
    if objective == "entropic-adaptive":
        chosen = adaptive_beta(rewards)
        return entropic_advantages(rewards, chosen), chosen
    if objective == "entropic":
        return entropic_advantages(rewards, beta), float(beta)
    if objective == "mean":
        return mean_advantages(rewards), None
    if objective == "grpo":
        return grpo_advantages(rewards), None
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def is_informative(rewards: np.ndarray) -> bool:
    """False when every reward in the group is equal: its advantages carry no signal, so the
    trainer drops the group from the update instead of spending a forward/backward pass on it."""
    r = _as_rewards(rewards)
    return bool(r.max() > r.min())
