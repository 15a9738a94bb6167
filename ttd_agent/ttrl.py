"""The pure pieces of TTRL (test-time RL with majority-vote rewards); numpy only, no torch.

One question's group: N responses -> N extracted answers -> a majority vote (the pseudo-label)
-> keep M of the N for the update -> reward 1 for agreement with the pseudo-label, else 0.
The vote and the rewards come from `ttd_envs.answers.AnswerJudge`, the same judge the envs use,
so a trainer and `ttd/MathVote-v0` can never disagree. The GRPO advantage, PPO clipping and KL
live in the trainer's objective module, not here.

Metrics (docs/ttrl.md explains each): avg@k, maj@N (= label accuracy), reward accuracy,
majority ratio, ground-truth ratio, pass@N, mean token entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttd_envs.answers import AnswerJudge, Vote


@dataclass(frozen=True)
class GroupOutcome:
    """What TTRL computes for one question from its N answers."""

    vote: Vote
    kept: np.ndarray
    """Indices (into the N samples) of the M responses used for the update."""
    rewards: np.ndarray
    """Majority-vote rewards of the kept responses (shape (M,))."""


def keep_indices(n: int, keep: int, mode: Literal["first", "random"] = "first",
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Which M of the N samples are trained on ("vote-then-sample").

    "first" keeps samples 0..M-1, the reference code's rule (unbiased when samples are i.i.d. and
    kept in generation order); "random" draws M without replacement from `rng`.
    """
    if not 1 <= keep <= n:
        raise ValueError(f"keep must be in [1, n_votes={n}], got {keep}")
    if mode == "first":
        return np.arange(keep)
    if mode == "random":
        if rng is None:
            raise ValueError("keep mode 'random' needs an rng")
        return np.sort(rng.choice(n, size=keep, replace=False))
    raise ValueError(f"keep mode must be 'first' or 'random', got {mode!r}")


def group_outcome(answers: Sequence[str | None], judge: AnswerJudge, keep: int | None = None,
                  mode: Literal["first", "random"] = "first", rng: np.random.Generator | None = None) -> GroupOutcome:
    """Vote over all N answers, then reward the kept M: r_i = 1[answer_i equivalent to the label]."""
    vote = judge.vote(answers)
    kept = keep_indices(len(answers), len(answers) if keep is None else keep, mode, rng)
    rewards = np.asarray(vote.rewards, dtype=np.float64)[kept]
    return GroupOutcome(vote=vote, kept=kept, rewards=rewards)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def avg_at_k(correct: np.ndarray) -> float:
    """pass@1 estimated as avg@k: the mean of a (questions, k) 0/1 correctness matrix."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(f"expected a non-empty (questions, k) array, got shape {correct.shape}")
    return float(correct.mean())


def maj_at_n(answers: Sequence[Sequence[str | None]], truths: Sequence[str], judge: AnswerJudge) -> float:
    """maj@N: share of questions whose majority answer over its N samples equals the true answer.

    A question where no sample has an answer counts as wrong.
    """
    if len(answers) != len(truths) or not truths:
        raise ValueError(f"need one answer list per true answer, got {len(answers)} lists and {len(truths)} truths")
    hits = [judge.equivalent(judge.vote(group).label, truth) for group, truth in zip(answers, truths)]
    return float(np.mean(hits))


def reward_accuracy(pseudo_rewards: np.ndarray, true_rewards: np.ndarray) -> float:
    """Share of responses whose majority-vote reward equals their reward under the true label."""
    pseudo, true = np.asarray(pseudo_rewards), np.asarray(true_rewards)
    if pseudo.shape != true.shape or pseudo.size == 0:
        raise ValueError(f"reward arrays must be non-empty and of one shape, got {pseudo.shape} and {true.shape}")
    return float(np.mean(pseudo == true))


def mean_token_entropy(logits: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean over (unmasked) tokens of H = -sum_v p_v log p_v, with p = softmax(logits) over the last axis."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    entropy = -(np.exp(log_p) * log_p).sum(axis=-1)
    if mask is None:
        return float(entropy.mean())
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape != entropy.shape:
        raise ValueError(f"mask shape {mask.shape} must equal the token shape {entropy.shape}")
    return float((entropy * mask).sum() / max(mask.sum(), 1.0))


def group_metrics(outcome: GroupOutcome, true_label: str | None, judge: AnswerJudge,
                  answers: Sequence[str | None]) -> dict[str, float]:
    """Training metrics of one question (ttrl.md section 3); true-label ones only when a label exists.

    `post_*` are the same quantities over the M kept responses only.
    """
    vote = outcome.vote
    all_rewards = np.asarray(vote.rewards, dtype=np.float64)
    metrics = {
        "majority_reward": float(all_rewards.mean()),
        "post_majority_reward": float(outcome.rewards.mean()),
        "majority_ratio": vote.ratio,
        "answer_rate": float(np.mean([k is not None for k in vote.keys])),
    }
    if true_label is not None:
        true_rewards = np.asarray(judge.rewards_against(answers, true_label), dtype=np.float64)
        kept_true = true_rewards[outcome.kept]
        metrics.update({
            "label_accuracy": float(judge.equivalent(vote.label, true_label)),
            "reward_accuracy": reward_accuracy(all_rewards, true_rewards),
            "post_reward_accuracy": reward_accuracy(outcome.rewards, kept_true),
            "ground_truth_ratio": float(true_rewards.mean()),
            "post_ground_truth_ratio": float(kept_true.mean()),
            "pass_at_n": float(true_rewards.max()),
            "pass_at_m": float(kept_true.max()),
        })
    return metrics


def mean_metrics(per_question: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average each metric over the questions that have it (true-label metrics may be missing)."""
    names = sorted({name for m in per_question for name in m})
    return {name: float(np.mean([m[name] for m in per_question if name in m])) for name in names}


# --------------------------------------------------------------------------------------------
# Synthetic questions for CPU tests
# --------------------------------------------------------------------------------------------


def arithmetic_questions(count: int, seed: int = 0, max_operand: int = 9,
                         ops: str = "+-*") -> list[dict[str, str]]:
    """`count` questions "What is a op b?" with exact integer answers, as dataset records.

    The records have the fields of the shipped sets (prompt, answer, source, id), so they can be
    written to a .json/.jsonl file and loaded by ttd/MathVote-v0 like any user dataset.
    """
    if count < 1 or max_operand < 1 or not ops or set(ops) - set("+-*"):
        raise ValueError(f"need count >= 1, max_operand >= 1 and ops from '+-*', got {count}, {max_operand}, {ops!r}")
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        a, b = (int(x) for x in rng.integers(0, max_operand + 1, size=2))
        op = ops[int(rng.integers(len(ops)))]
        value = a + b if op == "+" else a - b if op == "-" else a * b
        records.append({"prompt": f"What is {a} {op} {b}?", "answer": str(value), "source": "arithmetic",
                        "id": f"arith-{seed}-{i}"})
    return records
