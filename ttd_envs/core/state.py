"""A State is one candidate solution: what the trainer stores, reuses and resumes from."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


def new_state_id() -> str:
    return uuid.uuid4().hex[:12]


def _to_jsonable(value: Any) -> Any:
    """Arrays become lists so a State survives a JSON round trip; shapes are kept by nesting."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value.get("dtype", "float64"))
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


@dataclass
class State:
    """A candidate solution and where it came from.

    `reward` is the higher-is-better number the trainer optimises; `score` is the problem's own
    metric (e.g. the C5 bound, lower is better). `lineage` lists ancestor ids, root first, so
    reuse can block a whole family from one batch.
    """

    id: str = field(default_factory=new_state_id)
    code: str | None = None
    reward: float | None = None
    score: float | None = None
    construction: Any = None
    stdout: str = ""
    parent_id: str | None = None
    parent_reward: float | None = None
    parent_score: float | None = None
    lineage: tuple[str, ...] = ()
    is_initial: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def child(
        self,
        *,
        code: str | None,
        reward: float,
        score: float | None,
        construction: Any,
        stdout: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> State:
        """The state an action produced from this one."""
        return State(
            code=code,
            reward=reward,
            score=score,
            construction=construction,
            stdout=stdout,
            parent_id=self.id,
            parent_reward=self.reward,
            parent_score=self.score,
            lineage=(*self.lineage, self.id),
            metadata=dict(metadata or {}),
        )

    def with_updates(self, **changes: Any) -> State:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "reward": self.reward,
            "score": self.score,
            "construction": _to_jsonable(self.construction),
            "stdout": self.stdout,
            "parent_id": self.parent_id,
            "parent_reward": self.parent_reward,
            "parent_score": self.parent_score,
            "lineage": list(self.lineage),
            "is_initial": self.is_initial,
            "metadata": _to_jsonable(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown State fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        fields = dict(data)
        fields["construction"] = _from_jsonable(fields.get("construction"))
        fields["metadata"] = _from_jsonable(fields.get("metadata") or {})
        fields["lineage"] = tuple(fields.get("lineage") or ())
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> State:
        return cls.from_dict(json.loads(text))
