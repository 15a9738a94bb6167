"""The two pictures of a run: how the reward distribution moves per step, and best-so-far vs samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reward_distribution(rollouts: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """One column of points per step (valid rollouts), with the step's mean and max.

    Like the paper's Figure 1: under test-time training the whole distribution should move up,
    not only its maximum. Failed rollouts (reward 0 by definition) are counted in the legend only.
    """
    plt = _pyplot()
    steps = np.array([r["step"] for r in rollouts], dtype=int)
    rewards = np.array([r["reward"] for r in rollouts], dtype=float)
    valid = np.array([bool(r["valid"]) for r in rollouts])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.3, 0.3, size=steps.size)
    ax.scatter(steps[valid] + jitter[valid], rewards[valid], s=4, alpha=0.35, color="tab:blue",
               label=f"valid rollouts ({valid.sum()}; {int((~valid).sum())} failed, not shown)")
    present = np.unique(steps)
    means = [rewards[(steps == s) & valid].mean() if np.any((steps == s) & valid) else np.nan for s in present]
    maxes = [rewards[(steps == s) & valid].max() if np.any((steps == s) & valid) else np.nan for s in present]
    ax.plot(present, means, color="tab:orange", label="mean of valid")
    ax.plot(present, maxes, color="tab:red", label="max")
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_best_so_far(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: Path, title: str,
                     ylabel: str = "best reward so far", target: float | None = None,
                     target_label: str = "target") -> None:
    """Best-so-far against the number of samples, one line per named curve (runs or methods)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (samples, best) in curves.items():
        ax.step(samples, best, where="post", label=label)
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=target_label)
    ax.set_xlabel("samples")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
