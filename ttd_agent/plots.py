"""The pictures of a run: the reward distribution per step and best-so-far vs samples (discovery),
accuracy and vote statistics per step (TTRL)."""

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


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _note_nothing_drawn(ax: Any, text: str) -> None:
    """Say in the picture why it is empty, instead of leaving a bare axis."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "grey"})


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
    if not valid.any():
        ax.set_xlim(present.min() - 0.5, present.max() + 0.5)
        ax.set_ylim(0, 1)
        _note_nothing_drawn(ax, f"no valid answer yet: all {steps.size} rollouts failed\n"
                                "(their errors: the run's summary, or rollouts.jsonl)")
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    _save(plt, fig, path)


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
    if not any(np.isfinite(np.asarray(best, dtype=float)).any() for _, best in curves.values()):
        ax.set_xlim(0, max([1, *(x for samples, _ in curves.values() for x in samples)]))
        _note_nothing_drawn(ax, "no valid answer yet: no best reward to draw")
    ax.set_xlabel("samples")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_ttrl(train_rows: Sequence[dict[str, Any]], eval_rows: Sequence[dict[str, Any]], directory: Path,
              title: str) -> None:
    """plots/ttrl_accuracy.png (avg@k, maj@n, train label accuracy and ground-truth ratio per step)
    and plots/ttrl_training.png (majority ratio, label/reward accuracy, answer rate, entropy)."""
    plt = _pyplot()

    def series(rows: Sequence[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if eval_rows:
        k, n = eval_rows[-1]["k"], eval_rows[-1]["n"]
        ax.plot(*series(eval_rows, "avg_at_k"), marker="o", label=f"eval avg@{k} (true answers)")
        ax.plot(*series(eval_rows, "maj_at_n"), marker="s", label=f"eval maj@{n} (true answers)")
    ax.plot(*series(train_rows, "ground_truth_ratio"), alpha=0.6, label="train: share of votes correct")
    ax.plot(*series(train_rows, "label_accuracy"), alpha=0.6, label="train: label accuracy (batch maj@N)")
    ax.set_xlabel("rollout step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"TTRL on {title}: accuracy")
    ax.legend(fontsize=8)
    _save(plt, fig, directory / "ttrl_accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("majority_ratio", "label_accuracy", "reward_accuracy", "answer_rate"):
        ax.plot(*series(train_rows, name), label=name.replace("_", " "))
    ax.set_xlabel("rollout step")
    ax.set_ylabel("share")
    ax.set_ylim(-0.02, 1.02)
    steps, entropy = series(train_rows, "entropy")
    if entropy:
        right = ax.twinx()
        right.plot(steps, entropy, color="black", linestyle="--", label="entropy (right)")
        right.set_ylabel("mean token entropy (nats)")
        right.legend(loc="lower right", fontsize=8)
    ax.set_title(f"TTRL on {title}: majority ratio vs label accuracy")
    ax.legend(loc="upper left", fontsize=8)
    _save(plt, fig, directory / "ttrl_training.png")
