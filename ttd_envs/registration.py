"""Every ttd env id in one place. Problems are imported lazily, at `make` time."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from ttd_envs.core.env import DiscoveryEnv


@dataclass(frozen=True)
class EnvEntry:
    env_id: str
    target: str  # "module:ProblemClass" wrapped in DiscoveryEnv, or "module:factory" of a vector env
    vector_env: bool = False  # made with gymnasium.make_vec, e.g. one sub-env per majority vote


ENVS: tuple[EnvEntry, ...] = (
    EnvEntry("ttd/ErdosOverlap-v0", "ttd_envs.problems.erdos:ErdosOverlap"),
    EnvEntry("ttd/AutocorrelationAC1-v0", "ttd_envs.problems.autocorrelation:AutocorrelationAC1"),
    EnvEntry("ttd/AutocorrelationAC2-v0", "ttd_envs.problems.autocorrelation:AutocorrelationAC2"),
    EnvEntry("ttd/CirclePacking26-v0", "ttd_envs.problems.circle_packing:CirclePacking26"),
    EnvEntry("ttd/CirclePacking32-v0", "ttd_envs.problems.circle_packing:CirclePacking32"),
    EnvEntry("ttd/AHC039-v0", "ttd_envs.problems.ahc.ahc039:AHC039"),
    EnvEntry("ttd/AHC058-v0", "ttd_envs.problems.ahc.ahc058:AHC058"),
    EnvEntry("ttd/Denoising-v0", "ttd_envs.problems.denoising:Denoising"),
    EnvEntry("ttd/LABS-v0", "ttd_envs.problems.labs:LABS"),
    EnvEntry("ttd/MathVote-v0", "ttd_envs.problems.mathvote:make_vote_env", vector_env=True),
    EnvEntry("ttd/MathAnswer-v0", "ttd_envs.problems.mathvote:MathAnswer"),
)


def load_target(target: str) -> Any:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def problem_class(env_id: str) -> Any:
    """The Problem class behind an id (for the trainer, which evaluates without env instances).

    Besides the registered ids, "package.module:ClassName" names any Problem class directly, so a
    new problem can be trained on before it is registered.
    """
    if ":" in env_id and not env_id.startswith("ttd/"):
        try:
            return load_target(env_id)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"cannot load the Problem class {env_id!r}: {exc}") from exc
    for entry in ENVS:
        if entry.env_id == env_id and not entry.vector_env:
            return load_target(entry.target)
    known = ", ".join(e.env_id for e in ENVS if not e.vector_env)
    raise KeyError(f"unknown discovery env id {env_id!r}; known ids: {known}")


def make_problem(env_id: str, **kwargs: Any) -> Any:
    return problem_class(env_id)(**kwargs)


class _Factory:
    """A picklable entry point that builds the DiscoveryEnv of one registered problem."""

    def __init__(self, entry: EnvEntry) -> None:
        self.entry = entry

    def __call__(self, max_turns: int = 1, **kwargs: Any) -> gym.Env:
        return DiscoveryEnv(load_target(self.entry.target)(**kwargs), max_turns=max_turns)


def register_envs() -> None:
    for entry in ENVS:
        if entry.env_id in gym.registry:
            continue
        if entry.vector_env:
            gym.register(id=entry.env_id, vector_entry_point=entry.target)
        else:
            gym.register(id=entry.env_id, entry_point=_Factory(entry))
