"""The state buffer: which states exist to start from, and which to start from next (PUCT reuse).

Every step the trainer asks `select` for B start states, expands each with a group of G rollouts,
and reports each group back with `record_expansion`. PUCT (agent.md §3) scores a buffer state i as

    score(i) = Q(i) + c * scale * P(i) * sqrt(1 + T) / (1 + n_i)

Q(i)   the best reward among states generated from i (its descendants), or R(i) before any
       valid descendant exists: what matters is the best that can be reached from a state.
P(i)   a rank prior: the worst buffer state has weight 1, the best weight N, normalised.
scale  max - min reward over the non-initial buffer states (>= 1e-6), so c is unit-free.
T, n_i expansions so far, and expansions of i or of any of its descendants.

Conventions where agent.md is silent, chosen to be deterministic (save -> load -> same picks):
- an initial state with reward None counts as reward 0.0 (an unevaluated empty start);
- tied rewards share the average of their ranks in P, so equal states get equal priors;
- remaining ties (score, then reward) are broken by insertion order, oldest first;
- statistics live only for states in the buffer: an evicted state can never be selected again
  (ids are unique), so its n and m are never read; backups update the ancestors still present.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ttd_agent.rundir import write_json_atomic
from ttd_envs.core.state import State

Sampler = Literal["puct", "greedy", "fixed"]
SAMPLERS: tuple[Sampler, ...] = ("puct", "greedy", "fixed")
MIN_SCALE = 1e-6


def reward_of(state: State) -> float:
    """A state's reward, with an unevaluated (None) initial state counted as 0.0."""
    return 0.0 if state.reward is None else float(state.reward)


def rank_prior(rewards: np.ndarray) -> np.ndarray:
    """P(i) ∝ the ascending rank of reward i (worst 1, best N), ties sharing their average rank."""
    _, inverse, counts = np.unique(rewards, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    weights = (first_rank + (counts - 1) / 2.0)[inverse]
    return weights / weights.sum()


def dedup_keys(state: State) -> list[str]:
    """Keys under which two states count as the same solution: same construction or same code.

    Only SHA-256 digests are kept, so a buffer of long sequences stays small. An array
    construction is hashed from its dtype, shape and bytes (JSON-printing 10^4 floats costs
    milliseconds per child); any other construction from its canonical JSON (the State's own
    serialisation, keys sorted).
    """
    keys = []
    construction = state.construction
    if isinstance(construction, np.ndarray):
        array = np.ascontiguousarray(construction)
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()
        keys.append(f"construction:{digest}")
    elif construction is not None:
        canonical = json.dumps(state.to_dict()["construction"], sort_keys=True, separators=(",", ":"))
        keys.append("construction:" + hashlib.sha256(canonical.encode()).hexdigest())
    if state.code:
        keys.append("code:" + hashlib.sha256(state.code.encode()).hexdigest())
    return keys


def same_solution(a: State, b: State) -> bool:
    """True when the buffer would count `a` and `b` as one solution (a shared `dedup_keys` key)."""
    return not set(dedup_keys(a)).isdisjoint(dedup_keys(b))


def pick_lineage_disjoint(ranked: Sequence[State], count: int, blocked_by: Callable[[State], set[str]],
                          rng: np.random.Generator, epsilon: float = 0.0) -> list[State]:
    """Walk `ranked` best first, taking states outside the lineage of every earlier pick.

    With probability `epsilon` a slot takes a uniformly random still-allowed state instead of the
    best one. When fewer than `count` lineage-disjoint states exist, the picks are repeated in
    order (p0, p1, p0, p1, ...) so the caller always gets `count` start states; a repeated state
    is simply expanded by several groups.
    """
    picked: list[State] = []
    blocked: set[str] = set()
    while len(picked) < count:
        allowed = [s for s in ranked if s.id not in blocked]
        if not allowed:
            break
        explore = epsilon > 0 and rng.random() < epsilon
        state = allowed[int(rng.integers(len(allowed)))] if explore else allowed[0]
        picked.append(state)
        blocked |= blocked_by(state)
    return [picked[j % len(picked)] for j in range(count)]


class StateBuffer:
    """Start states for the next step, with the PUCT statistics that rank them.

    `sampler` picks the reuse rule: "puct" (the paper's), "greedy" (epsilon-greedy by reward) or
    "fixed" (always the initial states: no reuse). All three keep inserting children, so `best()`
    and the buffer statistics mean the same thing in every ablation.
    """

    def __init__(self, initial_states: Sequence[State], *, capacity: int = 1000, children_per_parent: int = 2,
                 c: float = 1.0, sampler: Sampler = "puct", epsilon: float = 0.1) -> None:
        if not initial_states:
            raise ValueError("the buffer needs at least one initial state")
        if len({s.id for s in initial_states}) != len(initial_states):
            raise ValueError("initial states must have distinct ids")
        if capacity < len(initial_states):
            raise ValueError(f"capacity {capacity} cannot hold the {len(initial_states)} initial states")
        if children_per_parent < 1:
            raise ValueError(f"children_per_parent must be >= 1, got {children_per_parent}")
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"c must be finite and >= 0, got {c}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        for state in initial_states:
            if not math.isfinite(reward_of(state)):
                raise ValueError(f"initial state {state.id} has a non-finite reward {state.reward}")
        self.capacity = capacity
        self.children_per_parent = children_per_parent
        self.c = float(c)
        self.sampler = sampler
        self.epsilon = float(epsilon)
        self._states: dict[str, State] = {}
        """Buffer states by id, in insertion order (the final tie-breaker)."""
        self._owner: dict[str, str] = {}
        """Dedup key -> id of the buffer state that holds it."""
        self._initial_ids = [s.id for s in initial_states]
        self._visits: dict[str, int] = {}
        """n_i; absent means 0."""
        self._best_reached: dict[str, float] = {}
        """m_i, the best reward among i's descendants; absent until i has one."""
        self._expansions = 0
        """T."""
        self._best = max(initial_states, key=reward_of)
        for state in initial_states:
            self._add(state)

    # -- reading -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._states)

    def states(self) -> list[State]:
        """Buffer states in insertion order (initial states first)."""
        return list(self._states.values())

    def best(self) -> State:
        """The highest-reward state ever seen, kept even after eviction, so it never gets worse.

        "Seen" means an initial state or any valid child passed to `record_expansion`, inserted
        or not; ties keep the earlier state.
        """
        return self._best

    def scale(self) -> float:
        """max - min reward over the non-initial buffer states, floored at 1e-6.

        Before any child is inserted this is the floor, so the exploration bonus is negligible
        and selection is by reward: there is nothing else to go on yet.
        """
        initial = set(self._initial_ids)
        rewards = [reward_of(s) for s in self._states.values() if s.id not in initial]
        return max(max(rewards) - min(rewards), MIN_SCALE) if rewards else MIN_SCALE

    def _scores(self) -> np.ndarray:
        """PUCT scores of all buffer states, in insertion order."""
        states = self.states()
        rewards = np.array([reward_of(s) for s in states])
        q = np.array([self._best_reached.get(s.id, r) for s, r in zip(states, rewards)])
        n = np.array([self._visits.get(s.id, 0) for s in states], dtype=np.float64)
        bonus = self.c * self.scale() * rank_prior(rewards) * math.sqrt(1 + self._expansions) / (1 + n)
        return q + bonus

    def score(self, state_id: str) -> float:
        """score(i) = Q(i) + c * scale * P(i) * sqrt(1 + T) / (1 + n_i) for a buffer state."""
        if state_id not in self._states:
            raise KeyError(f"state {state_id!r} is not in the buffer (never inserted, or evicted)")
        return float(self._scores()[list(self._states).index(state_id)])

    def stats(self) -> dict[str, float]:
        """Numbers worth logging every step."""
        rewards = np.array([reward_of(s) for s in self._states.values()])
        return {
            "size": float(len(self._states)),
            "expansions": float(self._expansions),
            "best_reward": reward_of(self._best),
            "reward_mean": float(rewards.mean()),
            "reward_max": float(rewards.max()),
            "reward_min": float(rewards.min()),
            "scale": self.scale(),
            "max_visits": float(max(self._visits.values(), default=0)),
            "max_depth": float(max(len(s.lineage) for s in self._states.values())),
        }

    # -- selecting ---------------------------------------------------------------------------------
    def select(self, count: int, rng: np.random.Generator) -> list[State]:
        """Exactly `count` start states for the next step (see `pick_lineage_disjoint` for repeats).

        puct: by score, then reward, then insertion order; no two picks in one lineage.
        greedy: by reward then insertion order, each slot random with probability epsilon; no two
        picks in one lineage. fixed: the initial states in turn, starting from the first each
        call (`rng` is not used).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        states = self.states()
        if self.sampler == "fixed":
            initial = [self._states[i] for i in self._initial_ids]
            return [initial[j % len(initial)] for j in range(count)]
        rewards = [reward_of(s) for s in states]
        if self.sampler == "puct":
            scores = self._scores()
            order = sorted(range(len(states)), key=lambda j: (-scores[j], -rewards[j], j))
            epsilon = 0.0
        else:
            order = sorted(range(len(states)), key=lambda j: (-rewards[j], j))
            epsilon = self.epsilon
        descendants: dict[str, set[str]] = defaultdict(set)
        for state in states:
            for ancestor in state.lineage:
                descendants[ancestor].add(state.id)

        def lineage(state: State) -> set[str]:
            return {state.id, *state.lineage, *descendants[state.id]}

        return pick_lineage_disjoint([states[j] for j in order], count, lineage, rng, epsilon)

    # -- updating ----------------------------------------------------------------------------------
    def record_expansion(self, parent: State, children: Sequence[State | None]) -> list[State]:
        """Account for one expansion of `parent` by a group, and insert its best new children.

        `children` has one entry per rollout: the valid new State, or None for a failed rollout.
        Statistics: T += 1; n += 1 for the parent and every ancestor still in the buffer; if any
        rollout was valid, m = max(m, best child reward) for the same states. A failed rollout
        generates no state, so it leaves m alone but still counts as a visit (even when the whole
        group failed).
        Insertion: children that repeat a buffer state or an earlier child (same id, construction,
        or code) are dropped, the best-rewarded of equal children surviving; the rest compete with
        the parent's children already in the buffer for `children_per_parent` places (ties go to
        the incumbent), and displaced incumbents leave the buffer. Then the buffer is cut to
        `capacity` by dropping the lowest-reward non-initial states (newest first among ties).
        Returns the children that were inserted and survived the cut, best first.
        """
        if not children:
            raise ValueError("an expansion needs at least one rollout (use None for a failed one)")
        valid = [child for child in children if child is not None]
        for child in valid:
            if child.parent_id != parent.id:
                raise ValueError(f"child {child.id} has parent {child.parent_id}, not {parent.id}; use parent.child(...)")
            if child.reward is None or not math.isfinite(child.reward):
                raise ValueError(f"child {child.id} needs a finite reward, got {child.reward}")
        self._backup(parent, max((reward_of(c) for c in valid), default=None))
        for child in valid:
            if reward_of(child) > reward_of(self._best):
                self._best = child
        inserted = self._insert_children(parent, sorted(valid, key=lambda s: -reward_of(s)))
        self._enforce_capacity()
        return [child for child in inserted if child.id in self._states]

    def _backup(self, parent: State, best_child_reward: float | None) -> None:
        """T += 1; n += 1 and m = max(m, y) along the parent's lineage (states still present)."""
        self._expansions += 1
        for state_id in (*parent.lineage, parent.id):
            if state_id not in self._states:
                continue
            self._visits[state_id] = self._visits.get(state_id, 0) + 1
            if best_child_reward is not None:
                self._best_reached[state_id] = max(self._best_reached.get(state_id, -math.inf), best_child_reward)

    def _insert_children(self, parent: State, ranked: list[State]) -> list[State]:
        """Dedup `ranked` (best first), then keep the parent's top-k children old and new."""
        fresh: list[State] = []
        taken: set[str] = set()
        for child in ranked:
            keys = dedup_keys(child)
            if child.id in self._states or any(k in self._owner or k in taken for k in keys):
                continue
            fresh.append(child)
            taken.update(keys)
        initial = set(self._initial_ids)
        incumbents = [s for s in self._states.values() if s.parent_id == parent.id and s.id not in initial]
        kept = sorted(incumbents + fresh, key=lambda s: -reward_of(s))[:self.children_per_parent]
        kept_ids = {s.id for s in kept}
        for state in incumbents:
            if state.id not in kept_ids:
                self._remove(state.id)
        inserted = [child for child in fresh if child.id in kept_ids]
        for child in inserted:
            self._add(child)
        return inserted

    def _enforce_capacity(self) -> None:
        excess = len(self._states) - self.capacity
        if excess <= 0:
            return
        initial = set(self._initial_ids)
        candidates = [(reward_of(s), -j, s.id) for j, s in enumerate(self._states.values()) if s.id not in initial]
        for _, _, state_id in sorted(candidates)[:excess]:
            self._remove(state_id)

    def _add(self, state: State) -> None:
        self._states[state.id] = state
        for key in dedup_keys(state):
            self._owner.setdefault(key, state.id)

    def _remove(self, state_id: str) -> None:
        state = self._states.pop(state_id)
        for key in dedup_keys(state):
            if self._owner.get(key) == state_id:
                del self._owner[key]
        self._visits.pop(state_id, None)
        self._best_reached.pop(state_id, None)

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to resume: settings, states in insertion order, statistics, best."""
        return {
            "capacity": self.capacity,
            "children_per_parent": self.children_per_parent,
            "c": self.c,
            "sampler": self.sampler,
            "epsilon": self.epsilon,
            "initial_ids": list(self._initial_ids),
            "states": [s.to_dict() for s in self._states.values()],
            "visits": dict(self._visits),
            "best_reached": dict(self._best_reached),
            "expansions": self._expansions,
            "best": self._best.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateBuffer:
        states = [State.from_dict(s) for s in data["states"]]
        by_id = {s.id: s for s in states}
        buffer = cls([by_id[i] for i in data["initial_ids"]], capacity=data["capacity"],
                     children_per_parent=data["children_per_parent"], c=data["c"],
                     sampler=data["sampler"], epsilon=data["epsilon"])
        initial = set(data["initial_ids"])
        for state in states:
            if state.id not in initial:
                buffer._add(state)
        buffer._visits = {k: int(v) for k, v in data["visits"].items()}
        buffer._best_reached = {k: float(v) for k, v in data["best_reached"].items()}
        buffer._expansions = int(data["expansions"])
        buffer._best = State.from_dict(data["best"])
        return buffer

    def save(self, path: Path) -> None:
        """Write atomically (`rundir.write_json_atomic`): a crash leaves the old file or the new one."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> StateBuffer:
        return cls.from_dict(json.loads(Path(path).read_text()))
