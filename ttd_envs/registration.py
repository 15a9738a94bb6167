"""Every ttd env id in one place. Problems are imported lazily, at `make` time.

Each discovery id also has a vector entry point, so `gym.make_vec(id, num_envs=N)` gives N envs
that reset in the same step they terminate (Gymnasium's SAME_STEP autoreset): every vector step
scores every action. Gymnasium's default (NEXT_STEP) would spend every other step of a one-step
env on a reset and return reward 0 for the actions of that step. `asynchronous=True` runs the N
envs in subprocesses with the same autoreset mode.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from ttd_envs.core.env import DiscoveryEnv


@dataclass(frozen=True)
class EnvEntry:
    env_id: str
    target: str  # "module:ProblemClass" wrapped in DiscoveryEnv, or "module:factory" of a vector env
    vector_env: bool = False  # made with gymnasium.make_vec, e.g. one sub-env per majority vote
    summary: str | None = None  # for `ttd-agent envs` when the target has no `summary` of its own


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
    EnvEntry("ttd/MathVote-v0", "ttd_envs.problems.mathvote:make_vote_env", vector_env=True,
             summary="TTRL: N answers to one math question in, N majority-vote rewards out"),
    EnvEntry("ttd/MathAnswer-v0", "ttd_envs.problems.mathvote:MathAnswer"),
    EnvEntry("ttd/TriMul-v0", "ttd_envs.problems.kernels.trimul:TriMul"),
    EnvEntry("ttd/MLADecode-v0", "ttd_envs.problems.kernels.mla_decode:MLADecode"),
    EnvEntry("ttd/AutocorrelationAC3-v0", "ttd_envs.problems.autocorrelation_ac3:AutocorrelationAC3"),
    # Geometric constructions checked exactly (AlphaEvolve's B.8-B.13 problems)
    EnvEntry("ttd/MinMaxDistance-v0", "ttd_envs.problems.min_max_distance:MinMaxDistance"),
    EnvEntry("ttd/Heilbronn-v0", "ttd_envs.problems.heilbronn:Heilbronn"),
    EnvEntry("ttd/KissingNumber-v0", "ttd_envs.problems.kissing_number:KissingNumber"),
    EnvEntry("ttd/CirclePackingRectangle-v0", "ttd_envs.problems.circles_in_rectangle:CirclePackingRectangle"),
    EnvEntry("ttd/SumsDifferences-v0", "ttd_envs.problems.sums_differences:SumsDifferences"),
    EnvEntry("ttd/UncertaintyInequality-v0", "ttd_envs.problems.uncertainty_inequality:UncertaintyInequality"),
)


def load_target(target: str) -> Any:
    """`package.module:Name`, or `path/to/file.py:Name` (the file's directory joins sys.path, so it
    imports by name here and in worker processes, from any working directory)."""
    module_name, attr = target.rsplit(":", 1)
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ImportError(f"no such file: {path}")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module_name = path.stem
    return getattr(importlib.import_module(module_name), attr)


def problem_class(env_id: str) -> Any:
    """The Problem class behind an id (for the trainer, which evaluates without env instances).

    Besides the registered ids, "package.module:ClassName" or "path/to/file.py:ClassName" names
    any Problem class directly, so a new problem can be trained on before it is registered.
    """
    if ":" in env_id and not env_id.startswith("ttd/"):
        try:
            return load_target(env_id)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"cannot load the Problem class {env_id!r}: {exc}") from exc
    for entry in ENVS:
        if entry.env_id == env_id and entry.vector_env:
            raise KeyError(f"{env_id} is a vector env of majority votes: train on it with --method ttrl, "
                           f"or make it with gymnasium.make_vec")
        if entry.env_id == env_id:
            return load_target(entry.target)
    known = [e.env_id for e in ENVS if not e.vector_env]
    close = _close_names(env_id, known)
    guess = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"unknown discovery env id {env_id!r}{guess} (`ttd-agent envs` lists all {len(known)}, "
                   "or give FILE.py:ProblemClass)")


class UnknownOption(TypeError, ValueError):
    """A make() kwarg (`--env-arg`) the problem does not take."""


def _close_names(env_id: str, known: list[str]) -> list[str]:
    """The ids whose names look like `env_id`'s, compared without 'ttd/' and '-vN' (which every id
    shares) and without case."""
    by_name = {k.removeprefix("ttd/").rsplit("-v", 1)[0].lower(): k for k in known}
    name = env_id.removeprefix("ttd/").rsplit("-v", 1)[0].lower()
    return [by_name[n] for n in difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)]


def make_problem(env_id: str, **kwargs: Any) -> Any:
    """The Problem behind `env_id`, built with its options. An unknown option names the ones there
    are; a bad value keeps its exception type and says which env and options it came from."""
    return build_problem(problem_class(env_id), env_id, kwargs)


def build_problem(cls: Any, env_id: str, kwargs: dict[str, Any]) -> Any:
    """`cls(**kwargs)`, with the errors of `make_problem`."""
    unknown, options = unknown_options(cls, kwargs)
    if unknown:
        raise UnknownOption(f"{env_id} has no option {', '.join(map(repr, unknown))} (given with --env-arg or as a "
                            f"make() kwarg); its options: {', '.join(options) or 'none'}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        if type(error) not in (TypeError, ValueError):
            raise
        given = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        raise type(error)(f"{env_id} with {given or 'no options'}: {error}") from error


def unknown_options(cls: Any, kwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(the kwargs `cls` does not take, the names it does take); nothing is unknown when it takes **kwargs."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return [], []
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return [], []
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [key for key in kwargs if key not in names], names


def describe_entry(entry: EnvEntry) -> dict[str, str]:
    """What `ttd-agent envs` shows: a one-line summary, the record, and who can attempt the env."""
    target = load_target(entry.target)
    if entry.vector_env:
        return {"summary": entry.summary or "", "record": "none (a question set)", "policy": "vote"}
    source = target
    if getattr(target, "defaults", None) is None:  # set per instance (LABS sizes them to n): ask a default one
        source = target()
        getattr(source, "close", lambda: None)()
    record = getattr(source, "record", None)
    return {"summary": entry.summary or target.summary,
            "record": record.describe() if record is not None else "none (scored against true answers)",
            "policy": source.defaults.model_kind}


class _Factory:
    """A picklable entry point that builds the DiscoveryEnv of one registered problem."""

    def __init__(self, entry: EnvEntry, cls: type | None = None) -> None:
        self.entry, self.cls = entry, cls

    def __call__(self, max_turns: int = 1, **kwargs: Any) -> gym.Env:
        cls = self.cls or load_target(self.entry.target)
        return DiscoveryEnv(build_problem(cls, self.entry.env_id, kwargs), max_turns=max_turns)


class _VectorFactory:
    """`gym.make_vec` entry point: N copies of one problem's env, autoreset in the same step."""

    def __init__(self, entry: EnvEntry, cls: type | None = None) -> None:
        self.single = _Factory(entry, cls)

    def __call__(self, num_envs: int = 1, asynchronous: bool = False, **kwargs: Any) -> gym.vector.VectorEnv:
        vector = AsyncVectorEnv if asynchronous else SyncVectorEnv
        return vector([partial(self.single, **kwargs)] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


class _VectorOnly:
    """`gym.make` entry point of a vector-only id: says how to make it instead."""

    def __init__(self, entry: EnvEntry) -> None:
        self.env_id = entry.env_id

    def __call__(self, **kwargs: Any) -> gym.Env:
        raise ValueError(f"{self.env_id} is a vector env (N answers to one question vote together): make it "
                         f"with gymnasium.make_vec({self.env_id!r}, num_envs=N, ...), not gymnasium.make")


def register_problem(env_id: str, problem: str | type) -> None:
    """Register a Problem of your own as a Gymnasium id, like ours: `gym.make(id, max_turns=k, **options)`
    and `gym.make_vec(id, num_envs=N)` (same-step autoreset). `problem` is the class or a
    "module:Class" / "path/to/file.py:Class" string. Use your own namespace ("myproject/Name-v0"):
    `ttd/` belongs to this package. Registering an id again replaces it."""
    if env_id.startswith("ttd/"):
        raise ValueError(f"{env_id!r}: ttd/ is this package's namespace; register yours under your own, "
                         f"e.g. 'myproject/{env_id.removeprefix('ttd/')}'")
    target = problem if isinstance(problem, str) else f"{problem.__module__}:{problem.__qualname__}"
    cls = None if isinstance(problem, str) else problem
    entry = EnvEntry(env_id, target)
    gym.registry.pop(env_id, None)
    gym.register(id=env_id, entry_point=_Factory(entry, cls), vector_entry_point=_VectorFactory(entry, cls))


def register_envs() -> None:
    for entry in ENVS:
        if entry.env_id in gym.registry:
            continue
        if entry.vector_env:
            gym.register(id=entry.env_id, entry_point=_VectorOnly(entry), vector_entry_point=entry.target)
        else:
            gym.register(id=entry.env_id, entry_point=_Factory(entry), vector_entry_point=_VectorFactory(entry))
