"""The pure arithmetic of kernel timing: when to stop repeating, the statistics, the aggregate,
and the speed-of-light bound. No torch here: the trusted side and the sandbox both use it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SPEED_OF_LIGHT_SLACK = 1.5
"""A copy kernel reaches most of the peak bandwidth, so no run can move its bytes more than this
many times faster than the measured device-to-device copy; anything faster was not measured."""


@dataclass(frozen=True)
class TimingRule:
    """One problem's timing procedure (the two leaderboards differ; see docs/envs/).

    Warm-up: repeat the first benchmark until `warmup_s` of measured time or `warmup_max_reps`.
    Then per benchmark: repeat up to `max_reps`; after `min_reps`, stop as soon as the standard
    error is below `target_rel_err` of the mean, the mean times the count passes `max_total_s`, or
    the loop has run `max_loop_s` of wall clock (None: no such limit).
    """

    max_reps: int = 100
    min_reps: int = 3
    target_rel_err: float = 0.001
    max_total_s: float = 30.0
    max_loop_s: float | None = 120.0
    warmup_s: float = 0.01
    warmup_max_reps: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.min_reps <= self.max_reps:
            raise ValueError(f"need 1 <= min_reps <= max_reps, got {self.min_reps}, {self.max_reps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rep_stats(times_ns: list[int]) -> dict[str, float]:
    """runs, mean, std (n - 1), err = std/sqrt(n), best, worst; all in ns."""
    n = len(times_ns)
    if n == 0:
        raise ValueError("no repetition was timed")
    mean = sum(times_ns) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in times_ns) / (n - 1)) if n > 1 else 0.0
    return {"runs": n, "mean_ns": mean, "std_ns": std, "err_ns": std / math.sqrt(n),
            "best_ns": float(min(times_ns)), "worst_ns": float(max(times_ns))}


def should_stop(times_ns: list[int], rule: TimingRule, loop_elapsed_s: float) -> bool:
    """The stopping rule of `rule` after the repetitions in `times_ns`."""
    n = len(times_ns)
    if n >= rule.max_reps:
        return True
    if n < rule.min_reps:
        return False
    stats = rep_stats(times_ns)
    if stats["mean_ns"] > 0 and stats["err_ns"] / stats["mean_ns"] < rule.target_rel_err:
        return True
    if stats["mean_ns"] * n / 1e9 > rule.max_total_s:
        return True
    return rule.max_loop_s is not None and loop_elapsed_s > rule.max_loop_s


def geometric_mean(values: list[float]) -> float:
    """exp(mean(log v)) of positive values: the leaderboards' aggregate over benchmark shapes."""
    if not values or min(values) <= 0:
        raise ValueError(f"need positive values, got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def speed_of_light_ns(min_bytes: int, bandwidth_bytes_per_s: float) -> float:
    """The shortest time any correct run can take: the bytes it must move at `SPEED_OF_LIGHT_SLACK`
    times the measured copy bandwidth."""
    return min_bytes / (SPEED_OF_LIGHT_SLACK * bandwidth_bytes_per_s) * 1e9
