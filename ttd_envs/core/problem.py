"""The Problem protocol: everything a discovery problem must say, independent of Gymnasium."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ttd_envs.core.state import State


@dataclass(frozen=True)
class Record:
    """A best-known result to beat, in the problem's own metric."""

    score: float
    holder: str
    higher_is_better: bool

    def describe(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        return f"{self.score:.10g} ({self.holder}; {direction} is better)"


@dataclass(frozen=True)
class EmbeddedSpec:
    """How the tiny embedded policy writes an answer to a problem it can attempt.

    The policy emits only characters of `alphabet`; with `length` set it emits exactly that many
    (so every sample is well formed), otherwise it stops at its end token or `max_new_tokens`.
    Its prompt is the problem's `compact_prompt(state)`: the state in as few characters as possible.
    """

    alphabet: str
    length: int | None = None
    answer_edits_prompt: bool = False
    """True when an answer is naturally an edit of the compact prompt (same length, same alphabet):
    the embedded policy then reads prompt character t where it writes answer character t."""

    def __post_init__(self) -> None:
        if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet must be non-empty with distinct characters, got {self.alphabet!r}")
        if self.length is not None and self.length < 1:
            raise ValueError(f"length must be >= 1 or None, got {self.length}")


@dataclass(frozen=True)
class TrainerDefaults:
    """What `ttd-agent train` uses for this problem unless told otherwise.

    `model_kind` is "llm" for problems whose action is a program (they need a real code model)
    and "embedded" for problems the tiny built-in policy can attempt (e.g. LABS).
    """

    model_kind: Literal["llm", "embedded"] = "llm"
    group_size: int = 8
    groups_per_step: int = 8
    steps: int = 50
    max_new_tokens: int = 16384
    temperature: float = 1.0
    eval_timeout_s: float = 120.0
    cpus_per_eval: int = 1
    gpus_per_eval: int = 0
    """GPUs one evaluation holds alone (kernel timing): executors run at most one such evaluation per
    GPU at a time, and nothing else on that GPU beside it."""
    embedded: EmbeddedSpec | None = None
    """Set for problems the embedded policy can attempt; they also define `compact_prompt(state)`."""


@dataclass
class Evaluation:
    """What evaluating one action produced. `reward` is always finite and 0 when invalid."""

    reward: float
    valid: bool
    score: float | None = None
    error: str | None = None
    stdout: str = ""
    code: str | None = None
    construction: Any = None
    elapsed_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def child_of(self, parent: State, metadata: dict[str, Any] | None = None) -> State | None:
        """The new State this evaluation made from `parent`, or None when it was invalid."""
        if not self.valid:
            return None
        return parent.child(code=self.code, reward=float(self.reward), score=self.score,
                            construction=self.construction, stdout=self.stdout, metadata=metadata)

    @classmethod
    def failure(cls, error: str, *, code: str | None = None, stdout: str = "", elapsed_s: float = 0.0,
                details: dict[str, Any] | None = None) -> Evaluation:
        return cls(reward=0.0, valid=False, error=error, code=code, stdout=stdout, elapsed_s=elapsed_s,
                   details=dict(details or {}))


def record_reward(problem: Any) -> float | None:
    """The record in reward units (what training curves show), for problems with `reward_for`."""
    record, convert = getattr(problem, "record", None), getattr(problem, "reward_for", None)
    if record is None or not callable(convert):
        return None
    try:
        return float(convert(record.score))
    except (ArithmeticError, TypeError, ValueError):
        return None


@runtime_checkable
class Problem(Protocol):
    """A discovery problem. Implementations are plain classes; `DiscoveryEnv` wraps any of them.

    `evaluate` must never raise because of the action's content: hostile or broken actions come
    back as `Evaluation.failure(...)` with a message saying what was wrong.

    Optional: `info_keys`, the names of the problem-specific `Evaluation.details` (the env's
    `info` then has each of them on every step, None when a step did not produce it), and
    `compact_prompt(state)` for problems the embedded policy can attempt.
    An initial state that has not been scored has `reward=None` and `score=None`.
    """

    name: str
    summary: str
    record: Record | None
    defaults: TrainerDefaults

    def initial_state(self, rng: np.random.Generator) -> State: ...

    def prompt(self, state: State) -> str: ...

    def evaluate(self, action: str, state: State) -> Evaluation: ...
