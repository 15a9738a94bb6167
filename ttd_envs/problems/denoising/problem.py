"""ttd/Denoising-v0: write a Python function that denoises a single-cell RNA-seq count matrix.

The trusted side splits a count matrix into train and test molecules (MCV, 90/10) and keeps the
test half. The program runs in the sandbox, sees only the train counts and returns a dense
prediction; the OpenProblems MSE and Poisson metrics (see `metrics`) are recomputed here.

Reward and validity (TTT-Discover's choices):
- reward = normalised MSE clipped to [0, 1]; `score` is the unclipped normalised MSE;
- valid only inside the Poisson gate: poisson >= poisson_perfect (not better than perfect
  denoising, which blocks the unbounded swapped-Poisson exploit) and poisson_norm >= 0.97;
- `info` also carries mse, poisson, poisson_norm and the headline score (mean of the two
  normalised scores, the number the leaderboards report).
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from importlib import resources
from typing import Any, Literal

import numpy as np

from ttd_envs.core.arguments import one_of
from ttd_envs.core.problem import Evaluation, TrainerDefaults
from ttd_envs.core.program_problem import (
    DEFAULT_PRELOAD,
    RESULT_SLACK_BYTES,
    InvalidConstruction,
    ProgramBudget,
    PythonProgramProblem,
    previous_attempt_section,
)
from ttd_envs.core.sandbox import GiB, Grants, SandboxResult
from ttd_envs.core.state import State
from ttd_envs.records import record_for
from ttd_envs.problems.denoising.datasets import BUILTIN, CountSplit, load_split, require_bio, scanpy_bundled_data
from ttd_envs.problems.denoising.metrics import Controls, DenoisingMetrics, Scores

log = logging.getLogger(__name__)

DATA_PACKAGE = "ttd_envs.data.denoising"
MAGIC_MODULE = "magic_denoise.py"
REFERENCE_FILE = "reference_scores.json"
POISSON_GATE = 0.97
RANDOM_STATE = 42
ALLOWED_LIBRARIES = "numpy, scipy, scikit-learn, scanpy/anndata and the standard library"
_ENTRY = "_ttd_call_denoise"
_WRAPPER = f'''

def {_ENTRY}(random_state={RANDOM_STATE}):
    import numpy as _ttd_np
    _fn = globals().get("denoise")
    if not callable(_fn):
        raise NameError("define a top-level function denoise(X, **kwargs) that returns the denoised matrix")
    _result = _fn(X_train.copy(), random_state=random_state)
    if type(_result).__module__.startswith("scipy.sparse"):
        raise TypeError(f"denoise returned a sparse {{type(_result).__name__}}; return a dense numpy array "
                        "(e.g. result.toarray())")
    if isinstance(_result, _ttd_np.matrix):
        _result = _ttd_np.asarray(_result)
    return _result
'''


def validate_prediction(value: Any, shape: tuple[int, int], max_value: float) -> np.ndarray:
    """The returned matrix as float64, or InvalidConstruction saying which rule it broke: a dense
    real array of the train shape, finite, non-negative, no entry above the total train count."""
    if not isinstance(value, np.ndarray):
        raise InvalidConstruction(f"denoise must return a dense numpy array of shape {shape}; got a "
                                  f"{type(value).__name__}")
    if value.dtype.kind not in "iuf":
        raise InvalidConstruction(f"the returned array must hold real numbers; got dtype {value.dtype}")
    if value.shape != shape:
        raise InvalidConstruction(f"the returned array has shape {value.shape}; expected {shape} (cells x genes, "
                                  "the shape of X)")
    prediction = value.astype(np.float64, copy=False)
    finite = np.isfinite(prediction)
    if not finite.all():
        raise InvalidConstruction(f"the returned array has {int((~finite).sum())} NaN or inf entries; every entry "
                                  "must be finite")
    low = float(prediction.min())
    if low < 0:
        raise InvalidConstruction(f"the returned array has negative entries (min {low:.6g}); denoised counts must "
                                  "be >= 0 (clip with np.maximum(Y, 0))")
    high = float(prediction.max())
    if high > max_value:
        raise InvalidConstruction(f"the returned array has an entry of {high:.6g}, more than all train molecules "
                                  f"together ({max_value:.0f}); keep predictions on the scale of the counts")
    return prediction


def gate_violation(scores: Scores, poisson_perfect: float, gate: float) -> str | None:
    """Why a prediction falls outside the Poisson gate, or None if it is inside."""
    numbers = (f"mse {scores.mse:.6f} (mse_norm {scores.mse_norm:.4f}), poisson {scores.poisson:.6f} "
               f"(poisson_norm {scores.poisson_norm:.4f})")
    if scores.poisson < poisson_perfect:
        return (f"rejected by the Poisson gate: {numbers} is better than perfect denoising ({poisson_perfect:.6f}). "
                "The leaderboard Poisson term is linear in the prediction and rewards piling mass on high-count "
                f"entries; predictions that exploit it are invalid. Keep poisson_norm within [{gate}, 1].")
    if scores.poisson_norm < gate:
        return (f"rejected by the Poisson gate: {numbers}; poisson_norm must be >= {gate} (MAGIC-level). "
                "Keep each cell's denoised profile close to the scale of its train counts and small where "
                "counts are low.")
    return None


def refuse_inverted_gate(controls: Controls, name: str) -> None:
    """Refuse a split on which perfect denoising (Y = T) has no lower Poisson loss than no denoising
    (Y = X). The gate assumes poisson_perfect < poisson_none; inverted, poisson_norm changes sign,
    so the gate would accept noise and reject near-perfect answers."""
    if not controls.poisson_perfect < controls.poisson_none:
        raise ValueError(f"{name}: on this split the Poisson loss of the perfect prediction "
                         f"({controls.poisson_perfect:.6g}) is not below that of no denoising "
                         f"({controls.poisson_none:.6g}), so the Poisson gate would reward the wrong answers; "
                         "use more cells or deeper counts, or another split_seed")


def magic_source() -> str:
    """The shipped MAGIC-style program (the initial state's code)."""
    return resources.files(DATA_PACKAGE).joinpath(MAGIC_MODULE).read_text()


def reference_key(dataset: str, split_seed: int, data_seed: int) -> str:
    return f"{dataset}|split={split_seed}|data={data_seed}"


def shipped_references() -> dict[str, Any]:
    """Controls, shapes and MAGIC scores measured for the built-in datasets (see `reference`)."""
    return json.loads(resources.files(DATA_PACKAGE).joinpath(REFERENCE_FILE).read_text())


class Denoising(PythonProgramProblem):
    """ttd/Denoising-v0. Kwargs: `dataset` ("synthetic-pbmc" | "synthetic-unit" | "pbmc68k-reduced" |
    path to an .h5ad with integer counts), `layer` and `subset` (for .h5ad), `split_seed`,
    `data_seed` (synthetic generator), `initial` ("magic" | "empty"), `budget_s`, `timeout_s`,
    `cpus`, `memory_gb`, `poisson_gate`."""

    name = "Denoising"
    info_keys = ("sandbox", *Scores.__dataclass_fields__)
    summary = "scRNA-seq denoising scored with the OpenProblems MSE and Poisson metrics (MCV split)"
    record = record_for("Denoising")
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=600.0, cpus_per_eval=2, max_new_tokens=20000)
    entry = _ENTRY
    preload = (*DEFAULT_PRELOAD, "scipy.sparse", "scipy.sparse.linalg", "scipy.spatial", "sklearn.decomposition",
               "sklearn.neighbors")

    def __init__(self, dataset: str = "synthetic-pbmc", layer: str | None = None, subset: dict[str, Any] | None = None,
                 split_seed: int = 0, data_seed: int = 0, initial: Literal["magic", "empty"] = "magic",
                 budget_s: float = 300.0, timeout_s: float | None = None, cpus: int = 2, memory_gb: float = 8.0,
                 poisson_gate: float = POISSON_GATE) -> None:
        require_bio("ttd/Denoising-v0")
        one_of("initial", initial, ("magic", "empty"))
        if not 0.0 < poisson_gate <= 1.0:
            raise ValueError(f"poisson_gate must lie in (0, 1], got {poisson_gate}")
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, memory_bytes=int(memory_gb * GiB),
                                       cpus=cpus))
        self.dataset, self.layer, self.subset = dataset, layer, dict(subset) if subset else None
        self.split_seed, self.data_seed = split_seed, data_seed
        self.initial = initial
        self.poisson_gate = poisson_gate
        self.shape = self.split.shape  # loads and validates the data now, so bad options fail at make time
        refuse_inverted_gate(self.metrics.controls, self.split.name)
        self.result_bytes = 8 * self.shape[0] * self.shape[1] + RESULT_SLACK_BYTES  # one float64 prediction

    def __getstate__(self) -> dict[str, Any]:
        """Workers reload the data themselves rather than receive it pickled."""
        state = super().__getstate__()
        for cached in ("split", "metrics", "_initial_scores"):
            state.pop(cached, None)
        return state

    @cached_property
    def split(self) -> CountSplit:
        return load_split(self.dataset, self.split_seed, layer=self.layer, subset=self.subset,
                          data_seed=self.data_seed)

    @cached_property
    def metrics(self) -> DenoisingMetrics:
        return DenoisingMetrics(self.split.train, self.split.test)

    # -- the program -------------------------------------------------------------------------
    def grants(self) -> Grants:
        """scanpy is importable, but the data its wheel ships (pbmc68k_reduced) is hidden."""
        return Grants(hidden_paths=scanpy_bundled_data())

    def program_inputs(self, state: State) -> dict[str, Any]:
        return {"X_train": self.split.train.astype(np.float64)}

    def program_kwargs(self) -> dict[str, Any]:
        return {"random_state": RANDOM_STATE}

    def run_program(self, code: str, state: State) -> SandboxResult:
        """Append the trusted call of `denoise(X_train, random_state=...)` to the program."""
        return super().run_program(code + _WRAPPER, state)

    def check(self, value: Any) -> tuple[dict[str, float], float]:
        prediction = validate_prediction(value, self.shape, float(self.split.train.sum()))
        scores = self.metrics.scores(prediction)
        violation = gate_violation(scores, self.metrics.controls.poisson_perfect, self.poisson_gate)
        if violation:
            raise InvalidConstruction(violation, details=scores.to_dict())
        return scores.to_dict(), scores.mse_norm

    def reward_for(self, score: float) -> float:
        return float(min(max(score, 0.0), 1.0))

    def evaluate(self, action: str, state: State) -> Evaluation:
        evaluation = super().evaluate(action, state)
        if evaluation.valid:
            evaluation.details.update(evaluation.construction)
        return evaluation

    # -- states and prompt -------------------------------------------------------------------
    @cached_property
    def _initial_scores(self) -> Scores:
        """MAGIC's scores on this split: shipped for built-in datasets, else measured once here."""
        if self.dataset in BUILTIN:
            entry = shipped_references().get(reference_key(self.dataset, self.split_seed, self.data_seed))
            if entry is not None:
                return Scores(**entry["magic"])
        from ttd_envs.data.denoising.magic_denoise import denoise

        log.info("measuring the MAGIC initial program on %s (split %d)", self.dataset, self.split_seed)
        return self.metrics.scores(denoise(self.split.train, random_state=RANDOM_STATE))

    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "empty":
            return State(is_initial=True)
        scores = self._initial_scores
        inside = gate_violation(scores, self.metrics.controls.poisson_perfect, self.poisson_gate) is None
        return State(code=magic_source(), score=scores.mse_norm,
                     reward=self.reward_for(scores.mse_norm) if inside else 0.0,
                     construction=scores.to_dict(), is_initial=True)

    def prompt(self, state: State) -> str:
        b, c = self.budget, self.metrics.controls
        n, g = self.shape
        poisson_limit = c.poisson_none - self.poisson_gate * (c.poisson_none - c.poisson_perfect)
        parts = [
            "# Denoise a single-cell RNA-seq count matrix",
            f"X is a cells x genes matrix of raw UMI counts ({n} x {g}, dataset {self.split.name}). Each molecule "
            "was assigned to a train half with probability 0.9, else to a hidden test half (molecular "
            "cross-validation). You see only the train counts X; predict the expression of every entry so "
            "that it matches the hidden test molecules.",
            "",
            "## Contract",
            f"Write one ```python block defining a top-level `denoise(X, random_state={RANDOM_STATE}, **kwargs)`. "
            "X is a dense float64 numpy array of integer counts; return a dense numpy array of the same shape "
            "with finite, non-negative denoised counts, no entry above X.sum(). Sparse matrices, DataFrames "
            "and other objects are rejected.",
            f"Libraries: {ALLOWED_LIBRARIES}. Preloaded (free to import): numpy, scipy, "
            "sklearn.decomposition, sklearn.neighbors. Helpers must be top-level functions. No file or network "
            "access.",
            f"Budget: finish within {b.budget_s:g} s wall time on {b.cpus} CPU(s) and {b.memory_bytes / GiB:g} GiB "
            f"of address space; the program is killed at {b.timeout_s:g} s.",
            "",
            "## Scoring (recomputed from your matrix; T = test counts, Y = your prediction, N = cells*genes)",
            "L(A)_ij = log1p(10^4 * A_ij / sum_j A_ij)   (each cell scaled to 10^4, so a cell's overall scale is "
            "irrelevant to MSE)",
            "MSE = (1/N) * sum_ij (L(T)_ij - L(Y)_ij)^2",
            "Poisson = (1/N) * sum_ij [T_ij - c * Y_ij * ln(T_ij + 1e-6)],  c = sum(T) / sum(X)   (the leaderboards' "
            "argument order: linear in Y; mass on entries with T = 0 costs about 13.8 per unit)",
            "Each metric is normalised: s_norm = (s_none - s) / (s_none - s_perfect), where 'none' is Y = X and "
            f"'perfect' is Y = T. On this dataset: MSE none {c.mse_none:.6f}, perfect 0; Poisson none "
            f"{c.poisson_none:.6f}, perfect {c.poisson_perfect:.6f}.",
            f"Reward = mse_norm clipped to [0, 1]. Valid only inside the Poisson gate: poisson_norm >= "
            f"{self.poisson_gate} and not better than perfect, i.e. {c.poisson_perfect:.6f} <= Poisson <= "
            f"{poisson_limit:.6f}; anything else scores 0. The headline score is (mse_norm + poisson_norm) / 2.",
            "Hints: variance-stabilising transforms (sqrt) and smoothing over similar cells help; MSE compares "
            "log profiles at 10 % depth, so values far below one molecule behave very differently from zero.",
            "",
            "Records on PBMC 1k (headline): MAGIC 0.64 (mse_norm 0.30), TTT-Discover 0.71 (mse_norm 0.43).",
            "",
            "## Current state",
        ]
        if state.code is None:
            parts.append("There is no program yet: write one from scratch.")
        else:
            scores = state.construction if isinstance(state.construction, dict) else {}
            if scores:
                parts.append("Current program: " + ", ".join(f"{k} {float(v):.4f}" for k, v in scores.items()))
            parts += ["", previous_attempt_section(state, value_name="mse_norm", digits=4)]
        return "\n".join(parts)
