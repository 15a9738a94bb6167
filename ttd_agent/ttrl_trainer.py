"""TTRL trainer: label-free test-time RL with majority-vote rewards, read top to bottom.

Each rollout step (specs: ttrl.md §1):
  1. take the next `questions_per_step` questions of this episode's shuffled order (drop_last);
  2. sample `votes` (N) responses per question from the current policy;
  3. extract each response's final answer and take the majority vote: the pseudo-label;
  4. keep M of the N (the first M by default) and reward each 1 if it agrees with the label, else 0;
  5. GRPO advantages within each kept group; groups whose rewards are all equal are dropped;
  6. one optimizer step per question's group (so up to B steps per rollout step), PPO-clipped
     surrogate, token-mean, plus a k3 KL penalty to the initial policy;
  7. log the step's metrics (true labels only for metrics), evaluate avg@k and maj@n on the true
     answers every `eval_every` steps, checkpoint policy + trainer state, plot.

The true answers never reach the reward: they are read only by `group_metrics` and `evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ttd_agent.objective import grpo_advantages, is_informative
from ttd_agent.plots import plot_ttrl
from ttd_agent.policy import settings as llm_settings
from ttd_agent.policy.base import LossConfig, Policy, Sample, TrainItem, request_metrics, usage_summary
from ttd_agent.rundir import RunDir, write_json_atomic
from ttd_agent.ttrl import avg_at_k, group_metrics, group_outcome, mean_metrics
from ttd_envs.answers import AnswerJudge, extract_answer
from ttd_envs.problems.mathvote import (
    PAPER_SETTINGS,
    PROMPT_SUFFIX,
    Question,
    load_questions,
)

log = logging.getLogger(__name__)

DEFAULT_QUESTIONS_PER_STEP = 8
DEFAULT_EPISODES = 10
_ORDER_FIELDS = ("dataset", "max_questions", "questions_per_step", "seed")
"""Fields that fix the question order; a resumed run must keep them."""


@dataclass
class TTRLConfig:
    """One TTRL run. `None` fields take the paper's value for the dataset (ttrl.md §1) when it has
    one (aime24, amc, math500), else the default named in the field's comment."""

    dataset: str = "aime24"
    """"aime24", "amc", "math500", or a path to a .json/.jsonl question file (fields prompt, answer)."""
    votes: int = 64
    """N: responses sampled per question for the vote."""
    keep: int = 32
    """M: responses per question used for the update (vote-then-sample)."""
    questions_per_step: int | None = None
    """B: questions per rollout step (paper: 8 for AIME/AMC, 32 for MATH-500; else 8)."""
    episodes: int | None = None
    """Passes over the question set (paper: 80 AIME, 30 AMC, 10 MATH-500; else 10)."""
    steps: int | None = None
    """Total rollout steps; overrides episodes (None = episodes x (questions // B))."""
    temperature: float = 1.0
    max_new_tokens: int = 3072
    lr: float = 5e-7
    """Peak learning rate (the paper's full fine-tune value; see docs/ttrl.md for LoRA)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    """Linear warm-up over floor(warmup_ratio x total steps) rollout steps, then cosine decay."""
    min_lr_ratio: float = 0.0
    clip_eps: float = 0.2
    kl_coef: float = 0.001
    max_grad_norm: float = 1.0
    keep_mode: Literal["first", "random"] = "first"
    answer_fallback: Literal["none", "last_number"] = "none"
    prompt_suffix: str | None = None
    """Appended to every question; None = the \\boxed{} instruction for LLMs, nothing for the embedded policy."""
    eval_every: int = 2
    """Evaluate on the true answers before training, every this many steps and at the end; 0 = never."""
    eval_samples: int = 16
    """k of avg@k (the paper's pass@1 is avg@16)."""
    eval_votes: int | None = None
    """n of maj@n on the true answers (None = eval_samples; the same samples serve both)."""
    eval_temperature: float = 0.6
    eval_max_new_tokens: int | None = None
    """None = max_new_tokens."""
    max_questions: int | None = None
    """Use only the first this many questions (quick runs); training and evaluation share them."""
    judge_timeout_s: float = 2.0
    seed: int = 0
    run_dir: str | None = "runs/ttrl"
    """None keeps everything in memory (no metrics files, checkpoints or plots)."""
    resume: bool = False
    """Continue the run in run_dir from its latest checkpoint (same question order)."""
    log_rollouts: bool = True
    """One rollouts.jsonl row per response (answer, rewards, tokens); off saves disk at paper scale."""
    plot_every: int = 10
    """Redraw plots/ every this many steps and at the end; 0 = never."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the config (e.g. model name), never read by the trainer."""


@dataclass
class TTRLResult:
    config: TTRLConfig
    """The resolved configuration."""
    step: int
    """The last finished rollout step."""
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    run_dir: Path | None

    @property
    def first_eval(self) -> dict[str, Any] | None:
        return self.eval_rows[0] if self.eval_rows else None

    @property
    def last_eval(self) -> dict[str, Any] | None:
        return self.eval_rows[-1] if self.eval_rows else None


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def resolve_config(config: TTRLConfig, n_questions: int) -> TTRLConfig:
    """Fill the per-dataset defaults and reject settings that cannot work (clear messages)."""
    c = TTRLConfig(**asdict(config))
    paper = PAPER_SETTINGS.get(str(c.dataset), {})
    if c.questions_per_step is None:
        wanted = paper.get("questions_per_step", DEFAULT_QUESTIONS_PER_STEP)
        if wanted > n_questions:
            log.warning("only %d questions; using questions_per_step=%d instead of %d", n_questions, n_questions, wanted)
        c.questions_per_step = min(wanted, n_questions)
    if c.episodes is None:
        c.episodes = paper.get("episodes", DEFAULT_EPISODES)
    checks = [
        (c.votes >= 1, f"votes must be >= 1, got {c.votes}"),
        (1 <= c.keep <= c.votes, f"keep must be in [1, votes={c.votes}], got {c.keep}"),
        (1 <= c.questions_per_step <= n_questions,
         (f"questions_per_step must be in [1, {n_questions}] (the set has {n_questions} questions), "
          f"got {c.questions_per_step}; lower it or leave it unset")),
        (c.episodes >= 1, f"episodes must be >= 1, got {c.episodes}"),
        (c.steps is None or c.steps >= 1, f"steps must be >= 1 or None, got {c.steps}"),
        (c.temperature > 0 and c.eval_temperature > 0,
         f"temperatures must be > 0, got {c.temperature} and eval {c.eval_temperature}"),
        (c.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {c.max_new_tokens}"),
        (c.lr >= 0 and 0 <= c.warmup_ratio < 1 and 0 <= c.min_lr_ratio <= 1,
         f"need lr >= 0, warmup_ratio in [0, 1), min_lr_ratio in [0, 1]; got {c.lr}, {c.warmup_ratio}, {c.min_lr_ratio}"),
        (c.lr_schedule in ("cosine", "constant"), f"lr_schedule must be 'cosine' or 'constant', got {c.lr_schedule!r}"),
        (c.clip_eps > 0 and c.kl_coef >= 0, f"need clip_eps > 0 and kl_coef >= 0, got {c.clip_eps}, {c.kl_coef}"),
        (c.keep_mode in ("first", "random"), f"keep_mode must be 'first' or 'random', got {c.keep_mode!r}"),
        (c.answer_fallback in ("none", "last_number"),
         f"answer_fallback must be 'none' or 'last_number', got {c.answer_fallback!r}"),
        (c.eval_every >= 0 and c.eval_samples >= 1,
         f"need eval_every >= 0 and eval_samples >= 1, got {c.eval_every}, {c.eval_samples}"),
        (c.eval_votes is None or c.eval_votes >= 1, f"eval_votes must be >= 1 or None, got {c.eval_votes}"),
        (c.max_questions is None or c.max_questions >= 1, f"max_questions must be >= 1 or None, got {c.max_questions}"),
        (c.plot_every >= 0, f"plot_every must be >= 0, got {c.plot_every}"),
        (c.judge_timeout_s > 0, f"judge_timeout_s must be > 0, got {c.judge_timeout_s}"),
        (not c.resume or c.run_dir is not None, "resume needs a run_dir"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return c


def steps_per_episode(config: TTRLConfig, n_questions: int) -> int:
    assert config.questions_per_step is not None
    return n_questions // config.questions_per_step


def total_steps(config: TTRLConfig, n_questions: int) -> int:
    """Rollout steps of the run: `steps`, or episodes x (questions // B) (drop_last)."""
    if config.steps is not None:
        return config.steps
    assert config.episodes is not None
    return config.episodes * steps_per_episode(config, n_questions)


def learning_rate(step: int, total: int, peak: float, warmup_ratio: float = 0.03,
                  schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    """LR of rollout step `step` (0-based) of `total`: linear warm-up then cosine decay.

    W = floor(warmup_ratio * total) warm-up steps reach the peak at step W-1 (lr = peak * (step+1)/W,
    so the first step already learns); after them lr = peak * (m + (1-m) * (1 + cos(pi * p)) / 2)
    with p = (step - W) / (total - W) in [0, 1) and m = min_ratio. "constant" keeps the peak after
    the warm-up.
    """
    warmup = int(warmup_ratio * total)
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_learning_rate(policy: Policy, lr: float) -> None:
    """Set the policy's optimizer LR: its own `set_learning_rate`/`set_lr` if it has one, else
    every `policy.optimizer.param_groups[i]["lr"]`."""
    for name in ("set_learning_rate", "set_lr"):
        method = getattr(policy, name, None)
        if callable(method):
            method(lr)
            return
    optimizer = getattr(policy, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "param_groups"):
        raise TypeError(f"{type(policy).__name__} has no set_learning_rate(lr) and no torch optimizer at "
                        f".optimizer; the TTRL trainer needs one of them for its LR schedule")
    for group in optimizer.param_groups:
        group["lr"] = lr


def episode_order(seed: int, episode: int, n_questions: int) -> list[int]:
    """The shuffled question order of one episode; a pure function of (seed, episode)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, episode, 0x77]))
    return [int(i) for i in rng.permutation(n_questions)]


def default_suffix(policy: Policy) -> str:
    return "" if getattr(policy, "kind", "llm") == "embedded" else PROMPT_SUFFIX


# --------------------------------------------------------------------------------------------
# Pieces of a step
# --------------------------------------------------------------------------------------------


def safe_answer(sample: Sample, fallback: str) -> str | None:
    """The final answer of a sample; None for anything unusable (never raises)."""
    try:
        text = sample.text if isinstance(sample.text, str) else str(sample.text)
        return extract_answer(text, fallback)  # type: ignore[arg-type]
    except Exception:
        log.debug("answer extraction failed", exc_info=True)
        return None


def token_entropy(samples: Sequence[Sample]) -> float | None:
    """Mean entropy over every completion token of `samples` (None when the backend gave none)."""
    parts = [np.asarray(s.entropy, dtype=np.float64).ravel() for s in samples if s.entropy is not None]
    parts = [p for p in parts if p.size]
    if not parts:
        return None
    values = np.concatenate(parts)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def evaluate(policy: Policy, questions: Sequence[Question], judge: AnswerJudge, *, k: int, n: int,
             temperature: float, max_new_tokens: int, prompt_suffix: str, fallback: str = "none",
             batch_questions: int = 8) -> dict[str, float]:
    """avg@k and maj@n on the true answers (questions without one are skipped).

    Draws max(k, n) samples per question: avg@k is the mean correctness of the first k, maj@n the
    share of questions whose majority answer over the first n is the true answer.
    """
    labelled = [q for q in questions if q.answer is not None]
    if not labelled:
        return {}
    draws = max(k, n)
    correct_rows, majority_hits, answered, entropies = [], [], [], []
    for start in range(0, len(labelled), batch_questions):
        chunk = labelled[start:start + batch_questions]
        groups = policy.sample([q.prompt + prompt_suffix for q in chunk], draws, temperature=temperature,
                               max_new_tokens=max_new_tokens)
        for question, group in zip(chunk, groups):
            answers = [safe_answer(s, fallback) for s in group]
            truth = judge.rewards_against(answers, question.answer)
            correct_rows.append(truth[:k])
            majority_hits.append(float(judge.equivalent(judge.vote(answers[:n]).label, question.answer)))
            answered.extend(a is not None for a in answers)
            entropy = token_entropy(group)
            if entropy is not None:
                entropies.append(entropy)
    result = {"avg_at_k": avg_at_k(np.asarray(correct_rows)), "maj_at_n": float(np.mean(majority_hits)),
              "k": k, "n": n, "questions": len(labelled), "answer_rate": float(np.mean(answered))}
    if entropies:
        result["entropy"] = float(np.mean(entropies))
    return result


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class TTRLTrainer:
    """Owns the question set, judge, run directory and trainer state of one TTRL run."""

    def __init__(self, config: TTRLConfig, policy: Policy) -> None:
        config = replace(config)
        self.run_dir = RunDir(config.run_dir) if config.run_dir is not None else None
        if config.resume:
            assert self.run_dir is not None
            saved = self.run_dir.config()
            changed = [f"{name} ({saved.get(name)!r} -> {getattr(config, name)!r})" for name in _ORDER_FIELDS
                       if name in saved and getattr(config, name) is not None and saved[name] != getattr(config, name)]
            if changed:
                raise ValueError(f"cannot resume {self.run_dir.path} with a different question order: "
                                 f"{', '.join(changed)}; start a new run_dir instead")
            # fields that fix the order/schedule come from the saved run unless given
            for name in (*_ORDER_FIELDS, "episodes"):
                if getattr(config, name) is None and saved.get(name) is not None:
                    setattr(config, name, saved[name])
        questions = load_questions(config.dataset)
        if config.max_questions is not None:
            questions = questions[:config.max_questions]
        self.questions = questions
        self.config = resolve_config(config, len(questions))
        self.policy = policy
        self.suffix = self.config.prompt_suffix if self.config.prompt_suffix is not None else default_suffix(policy)
        self.total = total_steps(self.config, len(questions))
        self.per_episode = steps_per_episode(self.config, len(questions))
        self.loss = LossConfig(clip_eps=self.config.clip_eps, kl_coef=self.config.kl_coef, kl_mode="k3",
                               aggregation="token-mean", max_grad_norm=self.config.max_grad_norm)
        self.rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, 0x7771]))
        self.step = 0
        self.order_episode = -1
        self.order: list[int] = []
        self.entropy_history: list[float] = []
        self.train_rows: list[dict[str, Any]] = []
        self.eval_rows: list[dict[str, Any]] = []
        self.judge = AnswerJudge(timeout_s=self.config.judge_timeout_s)
        if not any(q.answer is not None for q in questions):
            log.warning("no question in %s has a true answer: label metrics and evaluation are off", config.dataset)
        limitation = policy_limitation(policy, questions, self.suffix, self.config.max_new_tokens)
        if limitation:
            log.warning("%s: %s; its majority votes are noise, so this run only checks the plumbing (pass --model "
                        "with a math LLM to learn anything)", config.dataset, limitation)
        if self.config.resume and self._restore():
            log.info("resumed %s at step %d of %d", self.run_dir.path if self.run_dir else "", self.step, self.total)
        elif self.run_dir is not None:
            if self.config.resume:  # no checkpoint yet: start over in the same directory
                self.run_dir.truncate_logs(-1)
            else:
                self.run_dir.create(asdict(self.config) | {"total_steps": self.total, "prompt_suffix_used": self.suffix})

    # -- resume ----------------------------------------------------------------------------------
    def _restore(self) -> bool:
        assert self.run_dir is not None
        latest = self.run_dir.latest_checkpoint()
        if latest is None:
            return False
        step, path = latest
        self.policy.load(path / "policy")
        state = json.loads((path / "trainer.json").read_text())
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.order_episode = int(state["order_episode"])
        self.order = [int(i) for i in state["order"]]
        self.entropy_history = [float(x) for x in state.get("entropy_history", [])]
        if self.order_episode >= 0 and self.order != episode_order(self.config.seed, self.order_episode, len(self.questions)):
            raise ValueError(f"{path}: the saved question order does not match this question set; the dataset "
                             f"file changed since the run started")
        self.run_dir.truncate_logs(step)
        rows = self.run_dir.read(self.run_dir.metrics_file)
        self.train_rows = [r for r in rows if r.get("kind") == "train"]
        self.eval_rows = [r for r in rows if r.get("kind") == "eval"]
        return True

    def _checkpoint(self) -> None:
        if self.run_dir is None:
            return

        def write(directory: Path) -> None:
            self.policy.save(directory / "policy")
            write_json_atomic(directory / "trainer.json", {
                "step": self.step, "rng": self.rng.bit_generator.state, "order_episode": self.order_episode,
                "order": self.order, "entropy_history": self.entropy_history[-50:],
            })

        self.run_dir.save_checkpoint(self.step, write)

    # -- one step --------------------------------------------------------------------------------
    def batch_for(self, step: int) -> tuple[int, list[int]]:
        """(episode, question indices) of rollout step `step` (1-based)."""
        episode, position = divmod(step - 1, self.per_episode)
        if episode != self.order_episode:
            self.order_episode = episode
            self.order = episode_order(self.config.seed, episode, len(self.questions))
        b = self.config.questions_per_step
        assert b is not None
        return episode, self.order[position * b:(position + 1) * b]

    def train_step(self) -> dict[str, Any]:
        cfg = self.config
        t0 = time.perf_counter()
        step = self.step + 1
        episode, batch = self.batch_for(step)
        lr = learning_rate(step - 1, self.total, cfg.lr, cfg.warmup_ratio, cfg.lr_schedule, cfg.min_lr_ratio)
        set_learning_rate(self.policy, lr)
        questions = [self.questions[i] for i in batch]
        groups = self.policy.sample([q.prompt + self.suffix for q in questions], cfg.votes,
                                    temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        if len(groups) != len(questions) or any(len(g) != cfg.votes for g in groups):
            raise RuntimeError(f"policy.sample returned {[len(g) for g in groups]} samples for {len(questions)} "
                               f"prompts x {cfg.votes}; a backend must return exactly n per prompt")
        t_sample = time.perf_counter()
        usage = request_metrics(self.policy, [s for g in groups for s in g])

        per_question, updates, rollouts = [], [], []
        judge_s = update_s = 0.0
        informative = 0
        for question, group in zip(questions, groups):
            tj = time.perf_counter()
            answers = [safe_answer(s, cfg.answer_fallback) for s in group]
            outcome = group_outcome(answers, self.judge, keep=cfg.keep, mode=cfg.keep_mode, rng=self.rng)
            metrics = group_metrics(outcome, question.answer, self.judge, answers)
            kept = [group[i] for i in outcome.kept]
            for name, samples in (("entropy", group), ("post_entropy", kept)):
                value = token_entropy(samples)
                if value is not None:
                    metrics[name] = value
            received = [s for s in group if s.error is None] or group  # a failed request is no response (nor cut)
            metrics.update({"response_tokens": float(np.mean([len(s.completion_ids) for s in received])),
                            "truncated_rate": float(np.mean([not s.finished and s.error is None for s in received])),
                            "answer_bins": float(outcome.vote.bins)})
            per_question.append(metrics)
            if cfg.log_rollouts:
                rollouts.extend(self._rollout_rows(step, question, group, answers, outcome))
            tu = time.perf_counter()
            judge_s += tu - tj
            answered = [k for k, sample in enumerate(kept) if sample.error is None]  # a failed request is no answer:
            rewards = outcome.rewards[answered]  # its 0 would make the others' advantages a server artefact
            if len(rewards) < 2 or not is_informative(rewards):
                continue
            informative += 1
            advantages = grpo_advantages(rewards)
            items = [TrainItem(kept[k], float(a)) for k, a in zip(answered, advantages) if len(kept[k].completion_ids)]
            if items:
                updates.append(self.policy.update(items, self.loss))
            update_s += time.perf_counter() - tu

        self.step = step
        row: dict[str, Any] = {"kind": "train", "step": step, "episode": episode, "lr": lr,
                               "questions": len(questions), "informative_groups": informative,
                               "updates": len(updates), "samples": len(questions) * cfg.votes}
        row.update(mean_metrics(per_question))
        row.update(_update_stats(updates))
        row.update(usage)
        row.update({"time_sample_s": t_sample - t0, "time_judge_s": judge_s, "time_update_s": update_s})
        if "entropy" in row:
            self.entropy_history.append(row["entropy"])
        self._warn(row)
        row["time_step_s"] = time.perf_counter() - t0
        self.train_rows.append(row)
        if self.run_dir is not None:
            self.run_dir.log_step(row, rollouts)
        return row

    def _rollout_rows(self, step: int, question: Question, group: Sequence[Sample], answers: Sequence[str | None],
                      outcome: Any) -> list[dict[str, Any]]:
        kept = {int(i) for i in outcome.kept}
        truth = (self.judge.rewards_against(answers, question.answer) if question.answer is not None
                 else [None] * len(answers))
        return [{"step": step, "question_id": question.id, "index": i,
                 "answer": None if a is None else a[:100], "reward": outcome.vote.rewards[i], "kept": i in kept,
                 "valid": a is not None, "correct": truth[i], "tokens": len(s.completion_ids),
                 "finished": bool(s.finished)} for i, (s, a) in enumerate(zip(group, answers))]

    def _warn(self, row: dict[str, Any]) -> None:
        """The failure signatures of ttrl.md §5, as log warnings (the run goes on)."""
        if row.get("answer_rate", 1.0) < 0.2:
            log.warning("step %d: only %.0f%% of responses have a final answer (truncation or format trouble: check "
                        "max_new_tokens and the prompt suffix)", row["step"], 100 * row["answer_rate"])
        if row["informative_groups"] == 0:
            log.warning("step %d: every group's rewards were equal; no update this step", row["step"])
        history = self.entropy_history
        if len(history) >= 20 and len(history) % 10 == 0 and np.mean(history[-5:]) >= np.mean(history[:5]):
            log.warning("step %d: mean entropy has not fallen since the start (%.3f -> %.3f); failed TTRL runs show "
                        "this (temperature, LR or too hard a set)", row["step"], np.mean(history[:5]),
                        np.mean(history[-5:]))

    def eval_step(self) -> dict[str, Any] | None:
        cfg = self.config
        t0 = time.perf_counter()
        result = evaluate(self.policy, self.questions, self.judge, k=cfg.eval_samples,
                          n=cfg.eval_votes if cfg.eval_votes is not None else cfg.eval_samples,
                          temperature=cfg.eval_temperature,
                          max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
                          prompt_suffix=self.suffix, fallback=cfg.answer_fallback,
                          batch_questions=cfg.questions_per_step or DEFAULT_QUESTIONS_PER_STEP)
        if not result:
            return None
        row = {"kind": "eval", "step": self.step, **result, **request_metrics(self.policy, None),
               "time_eval_s": time.perf_counter() - t0}
        self.eval_rows.append(row)
        if self.run_dir is not None:
            self.run_dir.log_step(row, [])
        log.info("eval at step %d: avg@%d %.3f, maj@%d %.3f", self.step, row["k"], row["avg_at_k"], row["n"],
                 row["maj_at_n"])
        return row

    def _eval_due(self) -> bool:
        every = self.config.eval_every
        return every > 0 and (self.step % every == 0 or self.step == self.total)

    def plot(self) -> None:
        if self.run_dir is None or self.config.plot_every <= 0 or not self.train_rows:
            return
        try:
            plot_ttrl(self.train_rows, self.eval_rows, self.run_dir.plots, str(self.config.dataset))
        except Exception:
            log.warning("plotting failed", exc_info=True)

    def run(self, on_step: Callable[[dict[str, Any]], None] | None = None) -> TTRLResult:
        """Train until the last step; safe to interrupt (resume=True continues from the checkpoint)."""
        try:
            self.judge.warm_up()
            if self.step == 0 and self.config.eval_every > 0 and not self.eval_rows:
                row = self.eval_step()
                if row is not None and on_step is not None:
                    on_step(row)
            while self.step < self.total:
                row = self.train_step()
                eval_row = self.eval_step() if self._eval_due() else None
                self._checkpoint()
                if on_step is not None:
                    on_step(row)
                    if eval_row is not None:
                        on_step(eval_row)
                if self.config.plot_every > 0 and self.step % self.config.plot_every == 0 and self.step < self.total:
                    self.plot()
            self.plot()
        finally:
            self.judge.close()
        return TTRLResult(config=self.config, step=self.step, train_rows=self.train_rows, eval_rows=self.eval_rows,
                          run_dir=self.run_dir.path if self.run_dir is not None else None)


def train_ttrl(config: TTRLConfig, policy: Policy,
               on_step: Callable[[dict[str, Any]], None] | None = None) -> TTRLResult:
    """Run TTRL on `config.dataset` with `policy`; `on_step(row)` sees every train and eval row.

    Train rows have kind "train", eval rows kind "eval" (step 0 = before training). With
    `config.resume` the run continues from run_dir's latest checkpoint.
    """
    return TTRLTrainer(config, policy).run(on_step)


# --------------------------------------------------------------------------------------------
# Command line (called by `ttd-agent train --method ttrl`; the console and progress come from it)
# --------------------------------------------------------------------------------------------

TTRL_ENVS = ("ttd/MathVote-v0",)
EMBEDDED_ALPHABET = "-0123456789"
_ENV_ARGS = {"dataset": "dataset", "n_votes": "votes", "num_envs": "votes", "prompt_suffix": "prompt_suffix",
             "answer_fallback": "answer_fallback", "timeout_s": "judge_timeout_s", "max_questions": "max_questions"}
LORA_LR = 5e-6
"""Default peak LR with LoRA: 10x the paper's full fine-tuning 5e-7 (the usual LoRA rule of thumb)."""
EMBEDDED_LR = 1e-3


def config_from_args(args: Any) -> tuple[TTRLConfig, dict[str, Any]]:
    """The TTRLConfig and the policy settings of a `ttd-agent train --method ttrl` command line.

    Dataset options come as --env-arg (dataset, n_votes, prompt_suffix, answer_fallback,
    timeout_s, max_questions); the policy settings are stored in `config.extra["policy"]` so that
    --resume can rebuild the same policy.
    """
    if args.env not in TTRL_ENVS:
        raise ValueError(f"--method ttrl trains on {', '.join(TTRL_ENVS)} (majority-vote rewards over a question "
                         f"set), got --env {args.env!r}")
    if not args.model:
        raise ValueError("--method ttrl needs --model: a causal LM path or hub id (e.g. Qwen/Qwen2.5-Math-1.5B; "
                         "a GPU and the [agent] extra), or 'embedded' for a CPU smoke run on integer answers")
    fields: dict[str, Any] = {}
    for key, value in getattr(args, "env_arg", []):
        if key not in _ENV_ARGS:
            raise ValueError(f"unknown --env-arg {key!r} for TTRL; expected one of {', '.join(_ENV_ARGS)}")
        fields[_ENV_ARGS[key]] = value
    embedded = args.model == "embedded"
    def arg(name: str) -> Any:
        return getattr(args, name, None)

    flags = {"votes": arg("votes") if arg("votes") is not None else arg("group_size"), "keep": arg("keep"),
             "questions_per_step": arg("questions_per_step") if arg("questions_per_step") is not None
             else arg("groups_per_step"), "episodes": arg("episodes"), "steps": arg("steps"),
             "temperature": arg("temperature"), "max_new_tokens": arg("max_new_tokens"), "kl_coef": arg("kl_coef"),
             "clip_eps": arg("clip_eps"), "eval_every": arg("eval_every"), "seed": arg("seed")}
    fields.update({k: v for k, v in flags.items() if v is not None})
    if "votes" in fields and "keep" not in fields:
        fields["keep"] = max(1, fields["votes"] // 2)
    fields["lr"] = arg("lr") if arg("lr") is not None else EMBEDDED_LR if embedded else LORA_LR
    if embedded:
        fields.setdefault("max_new_tokens", 4)
        fields.setdefault("answer_fallback", "last_number")
    dataset = str(fields.get("dataset", "aime24"))
    fields["run_dir"] = arg("run_dir") or default_run_dir(dataset, fields.get("seed", 0))
    llm = llm_settings.from_args(args)  # --renderer, --base-url, --micro-batch-tokens, ... (docs/llm.md)
    if embedded and llm:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(llm))
        raise ValueError(f"{flags} set the LLM policy; the embedded policy takes none of them")
    policy = ({"kind": "embedded", "alphabet": EMBEDDED_ALPHABET, "seed": fields.get("seed", 0), "max_context": 256}
              if embedded else
              {"kind": "hf", "model": args.model, "lora_rank": arg("lora_rank") or 32, "lora_alpha": arg("lora_alpha"),
               "target_modules": arg("lora_target_modules"), "full_finetune": bool(arg("full_finetune")),
               "device": arg("device"), "sampler": arg("sampler") or "hf", "seed": fields.get("seed", 0),
               "weight_decay": 0.01, "settings": llm_settings.LLMSettings.from_dict(llm).changed()})
    config = TTRLConfig(**fields, extra={"policy": policy})
    return config, policy


def default_run_dir(dataset: str, seed: int) -> str:
    """runs/ttrl-<dataset file stem>-seed<seed>: where `--method ttrl` writes without --run-dir."""
    return f"runs/ttrl-{Path(str(dataset)).stem}-seed{seed}"


def build_policy(settings: dict[str, Any], lr: float) -> Policy:
    """The policy a TTRL command line asked for (`settings` as made by `config_from_args`)."""
    from ttd_agent.policy import make_policy

    kwargs = {k: v for k, v in settings.items() if k != "kind"}
    if "settings" in kwargs:  # the LLM settings, stored as the fields that differ from the defaults
        kwargs["settings"] = llm_settings.LLMSettings.from_dict(kwargs["settings"])
    return make_policy(settings["kind"], lr=lr, **kwargs)


def policy_limitation(policy: Policy, questions: Sequence[Question], suffix: str,
                      max_new_tokens: int) -> str | None:
    """Why a character-level embedded policy cannot answer this question set, or None.

    It writes only the characters of its alphabet, at most `max_new_tokens` of them, and reads
    only the last `max_context` characters of a prompt: a true answer outside that reach cannot
    win a vote, and a question longer than its context is never read whole.
    """
    config = getattr(policy, "config", None)
    alphabet, context = getattr(config, "alphabet", None), getattr(config, "max_context", None)
    if getattr(policy, "kind", None) != "embedded" or alphabet is None:
        return None
    labelled = [q for q in questions if q.answer is not None]
    unwritable = sum(1 for q in labelled if len(q.answer) > max_new_tokens or set(q.answer) - set(alphabet))
    unread = sum(1 for q in questions if context is not None and len(q.prompt + suffix) + max_new_tokens > context)
    reasons = []
    if unwritable:
        reasons.append(f"{unwritable} of {len(labelled)} true answers need characters outside {alphabet!r} "
                       f"or more than {max_new_tokens} of them")
    if unread:
        reasons.append(f"{unread} of {len(questions)} questions are longer than its {context}-character context")
    return "the embedded policy cannot answer it (" + "; ".join(reasons) + ")" if reasons else None


def cli_main(args: Any, console: Any, progress_factory: Callable[[], Any]) -> int:
    """`ttd-agent train --method ttrl`: build the config and policy, train with a progress bar, summarise."""
    if args.resume:
        if not args.run_dir:
            raise ValueError("--resume needs --run-dir (the run to continue)")
        saved = RunDir(args.run_dir).config()
        known = {f.name for f in TTRLConfig.__dataclass_fields__.values()}
        config = TTRLConfig(**{k: v for k, v in saved.items() if k in known})
        config.resume, config.run_dir = True, args.run_dir
        if args.steps is not None:
            config.steps = args.steps
        settings = config.extra.get("policy")
        if not settings:
            raise ValueError(f"{args.run_dir}/config.json names no policy; start a new run instead")
    else:
        config, settings = config_from_args(args)
    trainer = TTRLTrainer(config, build_policy(settings, config.lr))
    cfg = trainer.config
    console.print(f"[bold]TTRL[/] on {cfg.dataset} ({len(trainer.questions)} questions) with "
                  f"{settings.get('model', 'the embedded policy')}: {trainer.total} steps x {cfg.questions_per_step} "
                  f"questions x {cfg.votes} votes (keep {cfg.keep}), lr {cfg.lr:g} -> {cfg.run_dir}")
    with progress_factory() as progress:
        task = progress.add_task("train", total=trainer.total, completed=trainer.step, status="")
        latest: dict[str, str] = {"eval": ""}

        def on_step(row: dict[str, Any]) -> None:
            if row["kind"] == "eval":
                latest["eval"] = f"avg@{row['k']} {row['avg_at_k']:.3f}  maj@{row['n']} {row['maj_at_n']:.3f}"
                progress.update(task, status=latest["eval"])
                return
            status = f"majority ratio {row['majority_ratio']:.2f}  answers {row['answer_rate']:.0%}"
            if "label_accuracy" in row:
                status += f"  label acc {row['label_accuracy']:.2f}"
            progress.update(task, completed=row["step"], status=f"{status}  {latest['eval']}")

        result = trainer.run(on_step)
    first, last = result.first_eval, result.last_eval
    if first is not None and last is not None:
        console.print(f"avg@{last['k']} (true answers): {first['avg_at_k']:.3f} at step {first['step']} -> "
                      f"{last['avg_at_k']:.3f} at step {last['step']};  maj@{last['n']}: {first['maj_at_n']:.3f} -> "
                      f"{last['maj_at_n']:.3f}")
    for name, value in usage_summary(result.train_rows + result.eval_rows):
        console.print(f"{name}: {value}")
    console.print(f"metrics: {cfg.run_dir}/metrics.jsonl   plots: {cfg.run_dir}/plots/")
    return 0


def _update_stats(updates: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each statistic over the step's optimizer steps (tokens summed), prefixed update_."""
    if not updates:
        return {}
    names = sorted({k for u in updates for k in u})
    out = {}
    for name in names:
        values = [float(u[name]) for u in updates if name in u]
        out[f"update_{name}"] = float(np.sum(values)) if name == "tokens" else float(np.mean(values))
    return out


__all__ = ["TTRLConfig", "TTRLResult", "TTRLTrainer", "build_policy", "cli_main", "config_from_args", "evaluate",
           "learning_rate", "resolve_config", "set_learning_rate", "train_ttrl"]
