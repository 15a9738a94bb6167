"""What the page draws, computed from what a run directory holds (see `RunFiles`).

Every field is optional in the run: a run that has not finished, lost a file, or was written
by a version that did not log something yet still gives a page, and `notes` says what is missing.
Numbers are rounded to 7 significant digits: the page of a 10^5-evaluation run stays small.

A problem whose states hold programs (AHC) draws its best state by running that program
(`program_drawing`, seconds): the served page gets it from a background thread, cached per state id,
and shows "drawing..." meanwhile; an export (`draw_inline`) waits for it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ttd_agent.view.reader import RunFiles

log = logging.getLogger(__name__)

TIMED_OUT = re.compile(r"time limit|timed? ?out|deadline", re.IGNORECASE)
CRASHED = re.compile(r"traceback|raised|exception|killed|exit code|exited|signal|segmentation|crash|"
                     r"memory|recursion", re.IGNORECASE)
OUTCOMES = ("valid", "unchanged", "timed out", "crashed", "invalid")
TOP_ERRORS = 5
MAX_TEXT = 20_000
"""Characters of one state's code or construction the page carries."""


@dataclass
class Prices:
    """What the user pays, for the money column of the cost section (None: not priced)."""

    usd_per_m_input: float | None = None
    usd_per_m_output: float | None = None
    usd_per_gpu_hour: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"input": self.usd_per_m_input, "output": self.usd_per_m_output, "gpu_hour": self.usd_per_gpu_hour}


def outcome(row: dict[str, Any]) -> str:
    """Which of OUTCOMES one rollout had: a valid answer is 'unchanged' when it handed back its
    start state; an invalid one is sorted by its error message (time limit, crash, else invalid)."""
    if row.get("valid"):
        return "unchanged" if row.get("unchanged") else "valid"
    error = row.get("error") or ""
    if TIMED_OUT.search(error):
        return "timed out"
    return "crashed" if CRASHED.search(error) else "invalid"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.7g}") if math.isfinite(value) else None
    return value


def _text(value: Any) -> str | None:
    """A state's code or construction as text for the page (JSON for anything that is not a string)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value.get("__ndarray__", value) if isinstance(value, dict)
                                                          else value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n... ({len(text):,} characters in all)"


@dataclass
class RunView:
    """A run directory and the payload the page draws, refreshed incrementally by `refresh`."""

    files: RunFiles
    prices: Prices = field(default_factory=Prices)
    version: int = 0
    _problem: Any = None
    _problem_error: str | None = None
    draw_inline: bool = False
    """Run a program's drawing before the payload is returned (an export) instead of in the background."""
    _baselines: dict[int, dict[str, Any]] = field(default_factory=dict)
    _payload: dict[str, Any] | None = None
    _drawings: dict[str, tuple[dict[str, Any] | None, str | None]] = field(default_factory=dict)
    """Per state id: (drawing, None) or (None, the one-line note shown in its place)."""
    _drawings_shown: int = 0
    _drawing_thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Poll the files; True (and a new version) when anything changed, a drawing finished included."""
        if self.files.poll() or self._payload is None or len(self._drawings) != self._drawings_shown:
            self.version += 1
            self._payload = None
            return True
        return False

    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            self._payload = self._build()
        return self._payload

    # -- building ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the problem's sandbox, if making a drawing started one (a drawing still running then ends as a
        note; its thread is a daemon)."""
        if callable(getattr(self._problem, "close", None)):
            self._problem.close()

    def _build(self) -> dict[str, Any]:
        files = self.files
        self._drawings_shown = len(self._drawings)
        config = files.config.value if isinstance(files.config.value, dict) else {}
        notes: list[str] = []
        if not config:
            notes.append("config.json is missing or damaged" + (f" ({files.config.error})" if files.config.error else "")
                         + ": the run's settings are unknown")
        for part in (files.metrics, files.rollouts, files.states):
            if part.damaged:
                notes.append(f"{part.path.name}: {part.damaged} damaged line(s) skipped")
            if part.pending:
                notes.append(f"{part.path.name}: an unfinished last line ({part.pending} bytes) is not shown yet")
        ttrl = "votes" in config or any(row.get("kind") in ("train", "eval") for row in files.metrics.rows[:5])
        payload: dict[str, Any] = {
            "version": self.version, "run_dir": str(files.path), "kind": "ttrl" if ttrl else "discovery",
            "env": config.get("env") or config.get("dataset"), "config": _config_summary(config), "notes": notes,
            "prices": self.prices.to_dict(),
        }
        if not files.metrics.rows:
            notes.append("metrics.jsonl is missing or empty: no step has finished yet")
        if ttrl:
            payload.update(_ttrl(files.metrics.rows, files.rollouts.rows, notes))
        else:
            self._discovery(payload, config, notes)
        total = config.get("steps")
        done = max((row.get("step", 0) for row in files.metrics.rows), default=0)
        payload["steps_done"], payload["steps_total"] = done, total
        payload["finished"] = bool(total) and done >= total
        return payload

    def _discovery(self, payload: dict[str, Any], config: dict[str, Any], notes: list[str]) -> None:
        files = self.files
        metrics = files.metrics.rows
        problem = self._load_problem(config, notes)
        payload["record"] = _record(problem)
        payload["curves"] = _curves(metrics, notes)
        payload["steps"] = _steps(files.rollouts.rows, metrics, notes)
        payload["tree"] = self._tree(notes)
        payload["best"] = self._best(problem, notes)
        evaluations = (payload["curves"]["samples"][-1] if payload["curves"]["samples"] else 0) + \
            int(config.get("groups_per_step") or 0)
        payload["baselines"] = self._classic(problem, evaluations, int(config.get("seed") or 0))

    def _load_problem(self, config: dict[str, Any], notes: list[str]) -> Any:
        """The run's problem (for its record, its drawing and the classic baselines), made once."""
        if self._problem is None and self._problem_error is None and config.get("env"):
            from ttd_envs.registration import make_problem

            try:
                self._problem = make_problem(config["env"], **(config.get("env_kwargs") or {}))
            except Exception as error:  # noqa: BLE001 - an env that no longer loads still gets a page
                self._problem_error = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        if self._problem_error:
            notes.append(f"the problem {config.get('env')} cannot be made here ({self._problem_error}): "
                         "no record, drawing or baselines")
        return self._problem

    def _tree(self, notes: list[str]) -> dict[str, Any]:
        """Every state the run kept, with the PUCT statistics of the latest checkpoint's buffer."""
        files = self.files
        nodes: dict[str, dict[str, Any]] = {}
        texts: dict[str, dict[str, Any]] = {}

        def add(state: dict[str, Any], step: Any) -> None:
            if not isinstance(state.get("id"), str) or state["id"] in nodes:
                return
            nodes[state["id"]] = {"id": state["id"], "parent": state.get("parent", state.get("parent_id")),
                                  "step": step, "reward": _round(state.get("reward")),
                                  "score": _round(state.get("score")), "initial": bool(state.get("initial",
                                                                                                  state.get("is_initial")))}
            texts[state["id"]] = {"code": _text(state.get("code")), "construction": _text(state.get("construction"))}

        for row in files.states.rows:
            add(row, row.get("step"))
        buffer = files.buffer.value if isinstance(files.buffer.value, dict) else None
        if not files.states.rows:
            notes.append("states.jsonl is missing (a run from an older version, or none yet): the tree shows "
                         "only the states of the latest checkpoint's buffer")
        if buffer is not None:
            for state in buffer.get("states", []):
                add(state, (state.get("metadata") or {}).get("step", 0))
            self._puct(buffer, nodes)
        elif files.latest.value is not None or files.buffer.error:
            where = files.buffer.path.relative_to(files.path)
            notes.append(f"the latest checkpoint's buffer cannot be read ({files.buffer.error or f'{where} is missing'}): "
                         "no visit counts or PUCT values")
        else:
            notes.append("no checkpoint yet: no visit counts or PUCT values")
        return {"nodes": list(nodes.values()), "texts": texts}

    @staticmethod
    def _puct(buffer: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> None:
        from ttd_agent.puct import StateBuffer

        try:
            loaded = StateBuffer.from_dict(buffer)
            scores = loaded._scores()
        except Exception as error:  # noqa: BLE001 - a damaged buffer loses the statistics, not the page
            log.warning("buffer statistics unavailable: %s", error)
            return
        for state, score in zip(loaded.states(), scores):
            if state.id in nodes:
                nodes[state.id].update(visits=int(buffer["visits"].get(state.id, 0)), puct=_round(float(score)),
                                       in_buffer=True)

    def _best(self, problem: Any, notes: list[str]) -> dict[str, Any] | None:
        best = self.files.best.value
        if not isinstance(best, dict) or not isinstance(best.get("state"), dict):
            notes.append("best.json is missing or damaged: no best construction to draw")
            return None
        state = best["state"]
        result = {"id": state.get("id"), "reward": _round(state.get("reward")), "score": _round(state.get("score")),
                  "step": best.get("step"), "samples": best.get("samples"), "code": _text(state.get("code")),
                  "construction": _text(state.get("construction")), "drawing": None, "drawing_note": None,
                  "drawing_pending": False}
        drawing = getattr(problem, "drawing", None)
        run_program = getattr(problem, "program_drawing", None)
        if callable(run_program) and state.get("construction") is None and isinstance(state.get("code"), str) \
                and isinstance(state.get("id"), str):
            result.update(self._program_drawing(run_program, state["id"], state["code"]))
        elif callable(drawing) and state.get("construction") is not None:
            from ttd_envs.core.state import State

            try:
                result["drawing"] = drawing(State.from_dict(state).construction)
            except Exception as error:  # noqa: BLE001 - a drawing that fails falls back to text
                notes.append(f"the problem's drawing failed ({type(error).__name__}: {error}); shown as text")
        return result

    def _program_drawing(self, run_program: Any, state_id: str, code: str) -> dict[str, Any]:
        """The drawing of a state's program once made; until then "pending", with one thread making it."""
        if state_id not in self._drawings:
            if self.draw_inline:
                self._draw(run_program, state_id, code)
            elif self._drawing_thread is None or not self._drawing_thread.is_alive():
                self._drawing_thread = threading.Thread(target=self._draw, args=(run_program, state_id, code),
                                                        name="ttd-view-drawing", daemon=True)
                self._drawing_thread.start()
        done = self._drawings.get(state_id)
        if done is None:
            return {"drawing_pending": True}
        return {"drawing": done[0], "drawing_note": done[1]}

    def _draw(self, run_program: Any, state_id: str, code: str) -> None:
        from ttd_envs.core.drawing import NoDrawing

        try:
            self._drawings[state_id] = (run_program(code), None)
        except NoDrawing as why:
            self._drawings[state_id] = (None, str(why))
        except Exception as error:  # noqa: BLE001 - a drawing that cannot be made is a note, never a dead page
            log.warning("the drawing of state %s failed", state_id, exc_info=True)
            self._drawings[state_id] = (None, f"no drawing: making it failed ({type(error).__name__}: "
                                              f"{' '.join(str(error).split())[:200]})")

    def _classic(self, problem: Any, evaluations: int, seed: int) -> dict[str, Any]:
        """LABS: hill climbing and tabu search at the run's number of evaluations, as reward curves."""
        from ttd_envs.problems.labs import LABS

        if not isinstance(problem, LABS) or evaluations < 1:
            return {}
        if evaluations not in self._baselines:
            from ttd_agent.classic_search import hill_climb, tabu_search

            curves = {}
            for name, search in (("hill climbing", hill_climb), ("tabu search", tabu_search)):
                curve = search(problem.n, evaluations, seed).curve + [(evaluations, None)]
                last = curve[-2][1]
                curves[name] = {"samples": [c[0] for c in curve],
                                "reward": [_round(problem.reward_for(e if e is not None else last)) for _, e in curve]}
            self._baselines = {evaluations: curves}
        return self._baselines[evaluations]


def _config_summary(config: dict[str, Any]) -> dict[str, Any]:
    keys = ("env", "env_kwargs", "model", "steps", "groups_per_step", "group_size", "objective", "reuse", "seed",
            "dataset", "votes", "keep", "questions_per_step", "sampler", "device")
    return {key: config[key] for key in keys if config.get(key) is not None}


def _record(problem: Any) -> dict[str, Any] | None:
    from ttd_envs.core.problem import record_reward

    record = getattr(problem, "record", None)
    if record is None:
        return None
    return {"score": record.score, "holder": record.holder, "reward": _round(record_reward(problem)),
            "higher_is_better": record.higher_is_better}


def _cumulative(rows: list[dict[str, Any]], key: str) -> list[float] | None:
    if not rows or not any(key in row for row in rows):
        return None
    total, out = 0.0, []
    for row in rows:
        total += float(row.get(key) or 0.0)
        out.append(_round(total))
    return out


def _unreported_tokens(metrics: list[dict[str, Any]]) -> bool:
    """A run sampled through a server (`requests` logged) that answered yet gave no `usage`: its token
    counts are zeros that mean "unknown", not "free"."""
    answered = sum(int(row.get("requests") or 0) - int(row.get("requests_failed") or 0) for row in metrics)
    tokens = sum(int(row.get("prompt_tokens") or 0) + int(row.get("completion_tokens") or 0) for row in metrics)
    return answered > 0 and tokens == 0


def _curves(metrics: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """Per finished step: samples, best reward and score, and the cumulative costs."""
    curves: dict[str, Any] = {
        "step": [row.get("step") for row in metrics],
        "samples": [row.get("samples") for row in metrics],
        "best_reward": [_round(row.get("best_reward")) for row in metrics],
        "best_score": [_round(row.get("best_score")) for row in metrics],
        "reward_mean": [_round(row.get("reward_mean")) for row in metrics],
        "beta_mean": [_round(row.get("beta_mean")) for row in metrics],
        "wall_s": _cumulative(metrics, "time_step_s"),
        "time_sample_s": [_round(row.get("time_sample_s")) for row in metrics],
        "time_eval_s": [_round(row.get("time_eval_s")) for row in metrics],
        "time_update_s": [_round(row.get("time_update_s")) for row in metrics],
    }
    output = "completion_tokens" if any("completion_tokens" in row for row in metrics) else "tokens"
    curves["tokens_out"] = _cumulative(metrics, output)
    curves["tokens_in"] = _cumulative(metrics, "prompt_tokens")
    if _unreported_tokens(metrics):
        curves["tokens_out"] = curves["tokens_in"] = None
        notes.append("the server answered requests but reported no token usage (and a chat sampler sees no token "
                     "ids): tokens, their price and the curves against tokens are not shown")
    elif metrics and curves["tokens_in"] is None:
        notes.append("metrics.jsonl has no prompt_tokens (a run from an older version): input tokens and their "
                     "price are not shown")
    curves["cpu_sample_eval_s"] = _cumulative(metrics, "cpu_sample_eval_s")
    curves["cpu_update_s"] = _cumulative(metrics, "cpu_update_s")
    if metrics and curves["cpu_update_s"] is None:
        notes.append("metrics.jsonl has no CPU seconds (a run from an older version): only wall time by phase")
    gpus = [float(row.get("gpus") or 0) for row in metrics]
    curves["gpu_s"] = _cumulative([{"g": g * float((row.get("time_sample_s") or 0) + (row.get("time_update_s") or 0))}
                                   for g, row in zip(gpus, metrics)], "g") if any(gpus) else None
    return curves


def _steps(rollouts: list[dict[str, Any]], metrics: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """Per step: each group's rewards and advantages, β per group, outcome shares, top errors."""
    if not rollouts:
        notes.append("rollouts.jsonl is missing or empty: no per-step reward distributions or outcomes")
        return []
    betas = {row.get("step"): row.get("group_betas") for row in metrics}
    by_step: dict[Any, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rollouts:
        by_step[row.get("step")][row.get("group", 0)].append(row)
    if not any("unchanged" in row for row in rollouts[:50]):
        notes.append("rollouts.jsonl has no 'unchanged' or 'advantage' fields (an older version): unchanged answers "
                     "count as valid and the weights are not shown")
    steps = []
    for step in sorted(by_step, key=lambda s: (s is None, s)):
        groups = [by_step[step][g] for g in sorted(by_step[step], key=str)]
        rows = [row for group in groups for row in group]
        counts = Counter(outcome(row) for row in rows)
        errors = Counter(" ".join((row.get("error") or "no message").split())[:160] for row in rows if not row.get("valid"))
        steps.append({
            "step": step,
            "rewards": [[_round(float(row.get("reward") or 0.0)) for row in group] for group in groups],
            "advantages": [[_round(row.get("advantage")) for row in group] for group in groups],
            "betas": [_round(b) for b in betas.get(step) or []],
            "outcomes": [counts.get(name, 0) for name in OUTCOMES],
            "errors": errors.most_common(TOP_ERRORS),
        })
    return steps


def _vote_entropy(rollouts: list[dict[str, Any]]) -> dict[Any, float]:
    """Mean over a step's questions of the entropy (nats) of its answers' vote shares ('no answer' is a bin)."""
    votes: dict[Any, dict[Any, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for row in rollouts:
        votes[row.get("step")][row.get("question_id")][row.get("answer")] += 1
    result = {}
    for step, questions in votes.items():
        entropies = []
        for counter in questions.values():
            total = sum(counter.values())
            entropies.append(-sum(c / total * math.log(c / total) for c in counter.values()))
        result[step] = sum(entropies) / len(entropies)
    return result


def _ttrl(metrics: list[dict[str, Any]], rollouts: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """TTRL: accuracy, majority agreement and vote entropy by step; avg@k and maj@n of the evaluations."""
    train = [row for row in metrics if row.get("kind", "train") == "train"]
    evals = [row for row in metrics if row.get("kind") == "eval"]
    entropy = _vote_entropy(rollouts)
    if not rollouts:
        notes.append("rollouts.jsonl is missing or empty: no vote entropy")

    def column(rows: list[dict[str, Any]], key: str) -> list[Any]:
        return [_round(row.get(key)) for row in rows]

    return {"ttrl": {
        "step": [row.get("step") for row in train],
        **{key: column(train, key) for key in ("label_accuracy", "ground_truth_ratio", "majority_ratio",
                                               "answer_rate", "entropy", "reward_accuracy")},
        "vote_entropy": [_round(entropy.get(row.get("step"))) for row in train],
        "eval_step": [row.get("step") for row in evals],
        "avg_at_k": column(evals, "avg_at_k"), "maj_at_n": column(evals, "maj_at_n"),
        "k": evals[-1].get("k") if evals else None, "n": evals[-1].get("n") if evals else None,
        "wall_s": _cumulative(train, "time_step_s"),
    }}
