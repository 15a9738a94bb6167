"""TTRL math envs: a label-free majority-vote vector env and a true-label single-answer problem.

`ttd/MathVote-v0` is a `gymnasium.vector.VectorEnv` whose sub-envs are the N votes on one
question: `step` takes the N responses and returns N majority-vote rewards (the group reward of
TTRL cannot come from one response alone). `ttd/MathAnswer-v0` scores one response against the
dataset's true answer: the "RL with leakage" ceiling of the TTRL paper, and the evaluator.

Question sets: "aime24" (30), "amc" (83), "math500" (500), shipped in `ttd_envs/data/ttrl/`, or a
path to a user .json (array of records) or .jsonl (one record per line) with fields `prompt`
(required), `answer` (optional; without it no true-label metric exists), `id`, `source`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ttd_envs.answers import AnswerJudge, extract_answer
from ttd_envs.core.problem import Evaluation, TrainerDefaults
from ttd_envs.core.state import State
from ttd_envs.core.text import CHARSET, MAX_ACTION_CHARS, MAX_PROMPT_CHARS, sanitize

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "ttrl"
DATASETS = {"aime24": "AIME-TTT/test.json", "amc": "AMC-TTT/test.json", "math500": "MATH-TTT/test.json"}
PROMPT_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

# TTRL paper settings (ttrl.md section 1): votes N, kept M, questions per step B, episodes, temperature
PAPER_SETTINGS = {
    "aime24": {"n_votes": 64, "keep": 32, "questions_per_step": 8, "episodes": 80},
    "amc": {"n_votes": 64, "keep": 32, "questions_per_step": 8, "episodes": 30},
    "math500": {"n_votes": 64, "keep": 32, "questions_per_step": 32, "episodes": 10},
}


@dataclass(frozen=True)
class Question:
    prompt: str
    answer: str | None
    id: str
    source: str


def load_questions(dataset: str | Path) -> list[Question]:
    """The questions of a shipped set ("aime24", "amc", "math500") or of a user .json/.jsonl file."""
    if isinstance(dataset, str) and dataset in DATASETS:
        path = DATA_DIR / DATASETS[dataset]
    else:
        path = Path(dataset)
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {str(dataset)!r} is neither a shipped set ({', '.join(DATASETS)}) nor an existing file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid {'JSONL' if path.suffix == '.jsonl' else 'JSON'} ({exc})") from exc
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty array of records (or one record per line in .jsonl)")
    questions = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise ValueError(f"{path}: record {i} needs a non-empty string field 'prompt', got {str(record)[:120]!r}")
        answer = record.get("answer")
        if answer is not None and not isinstance(answer, (str, int, float)):
            raise ValueError(f"{path}: record {i} has an 'answer' of type {type(answer).__name__}; use a string")
        questions.append(Question(prompt=record["prompt"], answer=None if answer is None else str(answer),
                                  id=str(record.get("id", i)), source=str(record.get("source", path.stem))))
    return questions


def _validated_prompt(question: Question, suffix: str) -> str:
    return sanitize(question.prompt + suffix)[:MAX_PROMPT_CHARS]


class MathVoteEnv(VectorEnv):
    """N sub-envs = the N votes on one question; one step = one question (autoreset in the same step).

    `reset` puts every sub-env on the next question (in order, wrapping around; `shuffle=True`
    draws a fresh permutation per pass from the seed; `options={"question": i}` picks one).
    `step(actions)` takes N response strings and returns the N majority-vote rewards, all
    `terminated=True`, and the observation of the next question (SAME_STEP autoreset).
    `info` holds, per sub-env (numpy arrays with the usual `_key` masks): `answer`, `pseudo_label`,
    `majority_ratio`, `question_index`, `question_id`; and, when the question has a true answer,
    the metrics-only keys `metric_true_label`, `metric_true_reward`, `metric_label_correct`,
    `metric_reward_correct`. Nothing named `metric_*` may be used for training.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, dataset: str | Path = "aime24", n_votes: int = 64, shuffle: bool = False,
                 prompt_suffix: str = PROMPT_SUFFIX, answer_fallback: str = "none", timeout_s: float = 2.0) -> None:
        if n_votes < 1:
            raise ValueError(f"n_votes must be >= 1, got {n_votes}")
        if answer_fallback not in ("none", "last_number"):
            raise ValueError(f"answer_fallback must be 'none' or 'last_number', got {answer_fallback!r}")
        self.questions = load_questions(dataset)
        self.num_envs = n_votes
        self.shuffle = shuffle
        self.prompt_suffix = prompt_suffix
        self.answer_fallback = answer_fallback
        self.judge = AnswerJudge(timeout_s=timeout_s)
        self.single_observation_space = spaces.Text(max_length=MAX_PROMPT_CHARS, min_length=0, charset=CHARSET)
        self.single_action_space = spaces.Text(max_length=MAX_ACTION_CHARS, min_length=0, charset=CHARSET)
        self.observation_space = batch_space(self.single_observation_space, n_votes)
        self.action_space = batch_space(self.single_action_space, n_votes)
        self._order = np.arange(len(self.questions))
        self._cursor = 0
        self.question_index: int | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[tuple[str, ...], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
            self._order = self._permutation()
        chosen = (options or {}).get("question")
        if chosen is not None:
            if not isinstance(chosen, (int, np.integer)) or not 0 <= chosen < len(self.questions):
                raise ValueError(f"options['question'] must be an index in [0, {len(self.questions)}), got {chosen!r}")
            self.question_index = int(chosen)
        else:
            self.question_index = self._next_index()
        return self._observation(), self._question_info()

    def step(self, actions: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self.question_index is None:
            raise RuntimeError("call reset() before step()")
        if isinstance(actions, str) or len(actions) != self.num_envs:
            got = "one string" if isinstance(actions, str) else f"{len(actions)} actions"
            raise ValueError(f"step expects {self.num_envs} responses (one per vote), got {got}")
        question = self.questions[self.question_index]
        answers = [extract_answer(a if isinstance(a, str) else str(a), self.answer_fallback) for a in actions]
        vote = self.judge.vote(answers)
        rewards = np.asarray(vote.rewards, dtype=np.float64)
        info = self._question_info()
        n = self.num_envs
        info.update(_per_env("answer", np.array(answers, dtype=object)))
        info.update(_per_env("pseudo_label", np.array([vote.label] * n, dtype=object)))
        info.update(_per_env("majority_ratio", np.full(n, vote.ratio)))
        if question.answer is not None:
            true_rewards = np.asarray(self.judge.rewards_against(answers, question.answer), dtype=np.float64)
            label_correct = self.judge.equivalent(vote.label, question.answer)
            info.update(_per_env("metric_true_label", np.array([question.answer] * n, dtype=object)))
            info.update(_per_env("metric_true_reward", true_rewards))
            info.update(_per_env("metric_label_correct", np.full(n, label_correct)))
            info.update(_per_env("metric_reward_correct", rewards == true_rewards))
        self.question_index = self._next_index()
        terminated = np.ones(n, dtype=np.bool_)
        truncated = np.zeros(n, dtype=np.bool_)
        return self._observation(), rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.judge.close()

    def _permutation(self) -> np.ndarray:
        if self.shuffle:
            return self.np_random.permutation(len(self.questions))
        return np.arange(len(self.questions))

    def _next_index(self) -> int:
        if self._cursor >= len(self._order):
            self._cursor = 0
            self._order = self._permutation()
        index = int(self._order[self._cursor])
        self._cursor += 1
        return index

    def _observation(self) -> tuple[str, ...]:
        assert self.question_index is not None
        return (_validated_prompt(self.questions[self.question_index], self.prompt_suffix),) * self.num_envs

    def _question_info(self) -> dict[str, Any]:
        assert self.question_index is not None
        n = self.num_envs
        info = _per_env("question_index", np.full(n, self.question_index, dtype=np.int64))
        info.update(_per_env("question_id", np.array([self.questions[self.question_index].id] * n, dtype=object)))
        return info


def _per_env(key: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """A vector-env info entry: the values and the `_key` mask saying every sub-env has one."""
    return {key: values, f"_{key}": np.ones(len(values), dtype=np.bool_)}


def make_vote_env(num_envs: int | None = None, n_votes: int | None = None, **kwargs: Any) -> MathVoteEnv:
    """Entry point for `ttd/MathVote-v0`; `num_envs` (gymnasium.make_vec) and `n_votes` are one setting."""
    if num_envs is not None and n_votes is not None and num_envs != n_votes:
        raise ValueError(f"num_envs={num_envs} and n_votes={n_votes} disagree; pass one of them")
    votes = n_votes if n_votes is not None else num_envs if num_envs is not None else 64
    return MathVoteEnv(n_votes=votes, **kwargs)


class MathAnswer:
    """One response scored against the true answer (reward 1 if equivalent, else 0).

    The "RL with leakage" ceiling of the TTRL paper and the evaluator of avg@k. `question=None`
    draws a question per reset from the env's seed; an index fixes it. The question index travels
    in `State.construction`, so a reset from any earlier state continues on the same question.
    """

    name = "MathAnswer"
    info_keys = ("answer", "correct", "question_id")
    summary = "Answer a competition math question; reward 1 when the boxed answer equals the true answer."
    record = None
    defaults = TrainerDefaults(model_kind="llm", group_size=32, groups_per_step=8, steps=240,
                               max_new_tokens=3072, temperature=1.0, eval_timeout_s=10.0)

    def __init__(self, dataset: str | Path = "aime24", question: int | None = None,
                 prompt_suffix: str = PROMPT_SUFFIX, answer_fallback: str = "none", timeout_s: float = 2.0) -> None:
        self.questions = load_questions(dataset)
        unlabelled = [q.id for q in self.questions if q.answer is None]
        if unlabelled:
            raise ValueError(f"MathAnswer scores against true answers, but {len(unlabelled)} questions have no "
                             f"'answer' (first: id {unlabelled[0]!r}); use ttd/MathVote-v0 for unlabelled sets")
        if question is not None and not 0 <= question < len(self.questions):
            raise ValueError(f"question must be an index in [0, {len(self.questions)}), got {question}")
        if answer_fallback not in ("none", "last_number"):
            raise ValueError(f"answer_fallback must be 'none' or 'last_number', got {answer_fallback!r}")
        self.question = question
        self.prompt_suffix = prompt_suffix
        self.answer_fallback = answer_fallback
        self.judge = AnswerJudge(timeout_s=timeout_s)

    def initial_state(self, rng: np.random.Generator) -> State:
        index = self.question if self.question is not None else int(rng.integers(len(self.questions)))
        return State(construction={"question_index": index}, is_initial=True,
                     metadata={"question_id": self.questions[index].id})

    def _index(self, state: State) -> int:
        construction = state.construction if isinstance(state.construction, dict) else {}
        index = construction.get("question_index")
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.questions):
            raise ValueError(f"state has no valid construction['question_index'] for this dataset: {construction!r}")
        return int(index)

    def prompt(self, state: State) -> str:
        return _validated_prompt(self.questions[self._index(state)], self.prompt_suffix)

    def evaluate(self, action: str, state: State) -> Evaluation:
        index = self._index(state)
        question = self.questions[index]
        answer = extract_answer(action, self.answer_fallback)
        construction = {"question_index": index, "answer": answer}
        if answer is None:
            return Evaluation.failure(
                "no final answer found: end the response with the answer inside \\boxed{...} "
                "(e.g. \\boxed{42}); a box with unbalanced braces or empty content does not count",
                details={"answer": None, "question_id": question.id})
        correct = self.judge.equivalent(answer, question.answer)
        reward = 1.0 if correct else 0.0
        return Evaluation(reward=reward, valid=True, score=reward, construction=construction,
                          details={"answer": answer, "correct": correct, "question_id": question.id})
