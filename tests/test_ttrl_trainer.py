"""The TTRL trainer end to end on CPU: metrics, checkpoints, resume, hostile samples, and learning.

The policies are real (the embedded transformer; the HF backend on a tiny random Llama). Policies
that write hostile text are real embedded policies whose sampled texts are replaced before the
trainer sees them; the trainer itself is never stubbed.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.ttrl_learning import run_once
from ttd_agent.policy.base import Sample
from ttd_agent.policy.embedded import EmbeddedConfig, EmbeddedPolicy
from ttd_agent.ttrl import arithmetic_questions
from ttd_agent.ttrl_trainer import (
    TTRLConfig,
    episode_order,
    learning_rate,
    resolve_config,
    set_learning_rate,
    train_ttrl,
)
from ttd_envs.problems.mathvote import PROMPT_SUFFIX

TRAIN_METRICS = (
    "majority_reward", "post_majority_reward", "majority_ratio", "answer_rate", "label_accuracy", "reward_accuracy",
    "post_reward_accuracy", "ground_truth_ratio", "post_ground_truth_ratio", "pass_at_n", "pass_at_m", "entropy",
    "post_entropy", "response_tokens", "truncated_rate", "answer_bins", "lr", "informative_groups", "updates",
    "update_loss", "update_kl", "update_clip_fraction", "update_grad_norm", "update_tokens", "time_sample_s",
    "time_judge_s", "time_update_s", "time_step_s",
)
EVAL_METRICS = ("avg_at_k", "maj_at_n", "answer_rate", "entropy", "time_eval_s")


class Interrupted(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast and immune to a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "arithmetic.json"
    path.write_text(json.dumps(arithmetic_questions(12, seed=3)))
    return path


def embedded(seed: int = 0) -> EmbeddedPolicy:
    return EmbeddedPolicy(EmbeddedConfig(d_model=32, n_layer=1, n_head=2, max_context=48, alphabet="-0123456789",
                                         seed=seed))


def small_config(dataset: Path, run_dir: Path | None, **overrides) -> TTRLConfig:
    settings = {"dataset": str(dataset), "votes": 8, "keep": 4, "questions_per_step": 4, "episodes": 1,
                "max_new_tokens": 3, "lr": 1e-3, "answer_fallback": "last_number", "eval_every": 2,
                "eval_samples": 4, "eval_votes": 6, "eval_temperature": 1.0, "plot_every": 0,
                "run_dir": None if run_dir is None else str(run_dir)}
    return TTRLConfig(**{**settings, **overrides})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_end_to_end_metrics_checkpoints_and_resume(questions_file: Path, tmp_path: Path) -> None:
    """12 questions, B = 4: 3 steps. A run interrupted after step 2 and resumed ends exactly like an
    uninterrupted run of the same seed (same question order, same samples, same rows)."""
    whole = tmp_path / "whole"
    result = train_ttrl(small_config(questions_file, whole, plot_every=1), embedded())
    assert result.step == 3 and result.config.questions_per_step == 4
    rows = read_jsonl(whole / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in rows] == [("eval", 0), ("train", 1), ("train", 2), ("eval", 2),
                                                      ("train", 3), ("eval", 3)]
    for row in (r for r in rows if r["kind"] == "train"):
        for name in TRAIN_METRICS:
            assert name in row and math.isfinite(row[name]), (row["step"], name)
        assert row["samples"] == 4 * 8 and row["questions"] == 4
        assert 0 <= row["majority_ratio"] <= 1 and 0 <= row["label_accuracy"] <= 1
        assert row["updates"] == row["informative_groups"] <= 4
    for row in (r for r in rows if r["kind"] == "eval"):
        for name in EVAL_METRICS:
            assert name in row and math.isfinite(row[name]), (row["step"], name)
        assert (row["k"], row["n"], row["questions"]) == (4, 6, 12)
    assert result.first_eval == rows[0] and result.last_eval == rows[-1]
    rollouts = read_jsonl(whole / "rollouts.jsonl")
    assert len(rollouts) == 3 * 4 * 8 and sum(r["kept"] for r in rollouts) == 3 * 4 * 4
    asked = [r["question_id"] for r in rollouts[::8]]
    assert len(set(asked)) == 12  # one episode, drop_last: every question exactly once
    order = episode_order(0, 0, 12)
    records = json.loads(questions_file.read_text())
    assert asked == [records[i]["id"] for i in order]
    assert json.loads((whole / "latest.json").read_text())["step"] == 3
    checkpoint = whole / "checkpoints" / "step-000003"
    assert (checkpoint / "policy" / "policy.pt").exists()
    assert json.loads((checkpoint / "trainer.json").read_text())["order"] == order
    assert {p.name for p in (whole / "plots").iterdir()} == {"ttrl_accuracy.png", "ttrl_training.png"}
    config = json.loads((whole / "config.json").read_text())
    assert config["total_steps"] == 3 and config["prompt_suffix_used"] == ""

    cut = tmp_path / "cut"
    seen: list[tuple[str, int]] = []

    def stop_after_two(row: dict) -> None:
        seen.append((row["kind"], row["step"]))
        if row["kind"] == "train" and row["step"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_ttrl(small_config(questions_file, cut), embedded(), on_step=stop_after_two)
    assert seen == [("eval", 0), ("train", 1), ("train", 2)]
    assert json.loads((cut / "latest.json").read_text())["step"] == 2
    with (cut / "metrics.jsonl").open("a") as out:  # a step 3 that died before its checkpoint
        out.write(json.dumps({"kind": "train", "step": 3, "partial": True}) + "\n")
    with pytest.raises(ValueError, match="different question order"):
        train_ttrl(small_config(questions_file, cut, resume=True, seed=5), embedded())
    resumed = train_ttrl(small_config(questions_file, cut, resume=True), embedded(seed=99))
    assert resumed.step == 3
    cut_rows = read_jsonl(cut / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in cut_rows] == [(r["kind"], r["step"]) for r in rows]
    assert not any(r.get("partial") for r in cut_rows)
    timing = ("time_sample_s", "time_judge_s", "time_update_s", "time_step_s", "time_eval_s")
    strip = lambda r: {k: v for k, v in r.items() if k not in timing}
    assert [strip(r) for r in cut_rows] == [strip(r) for r in rows]  # bit-for-bit the same run
    assert read_jsonl(cut / "rollouts.jsonl") == rollouts
    with pytest.raises(FileExistsError):
        train_ttrl(small_config(questions_file, cut), embedded())


def test_command_line_runs_and_resumes(questions_file: Path, tmp_path: Path) -> None:
    """`ttd-agent train --method ttrl` with the embedded policy: 2 steps, then --resume to step 3."""
    from ttd_agent.cli import main

    run = tmp_path / "cli-run"
    common = ["--votes", "8", "--keep", "4", "--questions-per-step", "4", "--eval-every", "2", "--run-dir", str(run)]
    assert main(["train", "--env", "ttd/MathVote-v0", "--method", "ttrl", "--model", "embedded", "--env-arg",
                 f"dataset={questions_file}", "--episodes", "1", "--steps", "2", *common]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["votes"], config["keep"], config["questions_per_step"], config["lr"]) == (8, 4, 4, 1e-3)
    assert config["answer_fallback"] == "last_number" and config["extra"]["policy"]["kind"] == "embedded"
    assert main(["train", "--method", "ttrl", "--run-dir", str(run), "--resume", "--steps", "3"]) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in rows] == [("eval", 0), ("train", 1), ("train", 2), ("eval", 2),
                                                      ("train", 3), ("eval", 3)]
    assert main(["train", "--env", "ttd/LABS-v0", "--method", "ttrl", "--model", "embedded"]) == 2
    assert main(["train", "--env", "ttd/MathVote-v0", "--method", "ttrl"]) == 2  # no --model


def test_true_answers_never_reach_training(tmp_path: Path) -> None:
    """The same questions with the true answers and with wrong ones give the same training run:
    every label-free metric and every update is identical; only the label metrics differ."""
    records = arithmetic_questions(8, seed=4)
    honest, lying = tmp_path / "honest.json", tmp_path / "lying.json"
    honest.write_text(json.dumps(records))
    lying.write_text(json.dumps([{**r, "answer": str(int(r["answer"]) + 1)} for r in records]))
    runs = [train_ttrl(small_config(path, None, episodes=2, eval_every=0), embedded(seed=1)).train_rows
            for path in (honest, lying)]
    label_free = ("majority_reward", "majority_ratio", "answer_rate", "entropy", "post_entropy", "update_loss",
                  "update_kl", "update_grad_norm", "informative_groups", "lr")
    for a, b in zip(*runs, strict=True):
        assert {k: a.get(k) for k in label_free} == {k: b.get(k) for k in label_free}
    assert any(a["ground_truth_ratio"] != b["ground_truth_ratio"] for a, b in zip(*runs))


class HostilePolicy(EmbeddedPolicy):
    """A real embedded policy whose sampled texts are replaced by hostile ones (tokens unchanged)."""

    TEXTS: ClassVar[list[str]] = [
        "", "\\boxed{", "\\boxed{}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "(" * 5000 + "}", "no answer here",
        "\\boxed{\\frac{1}{0}}", "\\boxed{x" * 300, "\x00\\boxed{7}", "\\boxed{7}", "\\boxed{07}", "\\boxed{7.0}",
    ]

    def sample(self, prompts, n, *, temperature, max_new_tokens):
        groups = super().sample(prompts, n, temperature=temperature, max_new_tokens=max_new_tokens)
        for g, group in enumerate(groups):
            for i, s in enumerate(group):
                group[i] = Sample(s.prompt, self.TEXTS[(g + i) % len(self.TEXTS)], s.prompt_ids,
                                  s.completion_ids if i % 5 else [], s.logprobs if i % 5 else np.zeros(0),
                                  s.entropy if i % 5 else np.zeros(0), s.finished)
        return groups


def test_hostile_samples_never_crash_the_trainer(questions_file: Path) -> None:
    """Empty texts, broken boxes, exponent towers, division by zero, huge and empty completions."""
    config = small_config(questions_file, None, votes=12, keep=12, answer_fallback="none", eval_every=3,
                          judge_timeout_s=1.0, max_questions=8)
    result = train_ttrl(config, HostilePolicy(EmbeddedConfig(d_model=32, n_layer=1, n_head=2, max_context=48,
                                                             alphabet="-0123456789")))
    assert result.step == 2
    for row in result.train_rows:
        # every group holds all 12 texts: 7, 07, 7.0 and "\x00 7" are one bin of 4; 7 of 12 have an answer
        assert row["majority_ratio"] == pytest.approx(4 / 12) and row["answer_rate"] == pytest.approx(7 / 12)
        assert row["answer_bins"] == 4 and row["updates"] == 4 and row["label_accuracy"] <= 1
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    assert result.last_eval is not None and result.last_eval["step"] == 2


def test_learning_rate_schedule_and_hook() -> None:
    """3 % warm-up then cosine, counted in rollout steps (ttrl.md §1.9-10): 240 AIME steps -> 7 warm-up."""
    lrs = [learning_rate(s, 240, 5e-7) for s in range(240)]
    assert lrs[0] == pytest.approx(5e-7 / 7) and lrs[6] == pytest.approx(5e-7)
    assert lrs[7] == pytest.approx(5e-7) and lrs[-1] < 1e-10 and all(a >= b for a, b in itertools.pairwise(lrs[6:]))
    assert learning_rate(7 + 233 // 2, 240, 5e-7) == pytest.approx(2.5e-7, rel=0.02)
    assert learning_rate(0, 3, 1e-3) == 1e-3  # floor(0.09) = 0 warm-up steps
    assert learning_rate(10, 20, 1.0, schedule="constant") == 1.0
    policy = embedded()
    set_learning_rate(policy, 1.25e-4)
    assert [g["lr"] for g in policy.optimizer.param_groups] == [1.25e-4]
    with pytest.raises(TypeError, match="set_learning_rate"):
        set_learning_rate(object(), 1e-3)  # type: ignore[arg-type]


def test_config_defaults_follow_the_paper(questions_file: Path) -> None:
    aime = resolve_config(TTRLConfig(dataset="aime24"), 30)
    math500 = resolve_config(TTRLConfig(dataset="math500"), 500)
    assert (aime.votes, aime.keep, aime.questions_per_step, aime.episodes) == (64, 32, 8, 80)
    assert (math500.questions_per_step, math500.episodes) == (32, 10)
    assert (aime.lr, aime.clip_eps, aime.kl_coef, aime.temperature, aime.max_new_tokens) == (5e-7, 0.2, 1e-3, 1.0, 3072)
    assert (aime.eval_every, aime.eval_samples, aime.keep_mode, aime.answer_fallback) == (2, 16, "first", "none")
    assert resolve_config(TTRLConfig(dataset=str(questions_file)), 5).questions_per_step == 5  # clamped, warned
    with pytest.raises(ValueError, match="keep must be"):
        resolve_config(TTRLConfig(votes=8, keep=9), 30)
    with pytest.raises(ValueError, match="questions_per_step must be"):
        resolve_config(TTRLConfig(questions_per_step=40), 30)
    with pytest.raises(ValueError, match="resume needs a run_dir"):
        resolve_config(TTRLConfig(resume=True, run_dir=None), 30)


def test_llm_policy_gets_the_boxed_suffix_and_trains(tmp_path: Path) -> None:
    """The HF backend (LoRA on a tiny random Llama): prompts carry the \\boxed{} instruction, and a
    step with informative groups updates the adapter and checkpoints it."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from ttd_agent.policy import make_policy
    from ttd_agent.policy.tiny import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "tiny-lm")
    path = tmp_path / "q.json"
    path.write_text(json.dumps(arithmetic_questions(4, seed=0)))
    config = TTRLConfig(dataset=str(path), votes=6, keep=4, questions_per_step=2, episodes=1, max_new_tokens=6,
                        lr=1e-3, answer_fallback="last_number", eval_every=2, eval_samples=2, eval_temperature=1.0,
                        run_dir=str(tmp_path / "run"), plot_every=0, temperature=1.5)
    policy = make_policy("hf", model=str(model), lora_rank=4, seed=0)
    result = train_ttrl(config, policy)
    assert result.step == 2 and [r["step"] for r in result.eval_rows] == [0, 2]
    rollouts = read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert len(rollouts) == 2 * 2 * 6
    assert json.loads((tmp_path / "run" / "config.json").read_text())["prompt_suffix_used"] == PROMPT_SUFFIX
    assert any((tmp_path / "run" / "checkpoints" / "step-000002" / "policy").iterdir())
    assert sum(r["updates"] for r in result.train_rows) >= 1  # random text still yields a few numbers
    for row in result.train_rows:
        assert all(math.isfinite(row[k]) for k in ("majority_ratio", "entropy", "answer_rate", "lr"))


LEARNING = {"questions": 8, "episodes": 16, "votes": 16, "keep": 8, "imitate_steps": 500, "imitate_batch": 32,
            "imitate_lr": 1e-2, "d_model": 32, "n_layer": 1, "lr": 1e-3, "eval_samples": 32}


LEARNING_SEEDS = (0, 1, 2, 3)


@pytest.mark.slow
def test_majority_vote_rewards_alone_raise_true_accuracy() -> None:
    """Learning check at CPU scale (`benchmarks.ttrl_learning.run_once` with LEARNING).

    The embedded policy imitates a noisy prior on 8 arithmetic questions (imitation data: the true
    answer 40 %, six scattered wrong answers 10 % each; on 2 of the 8 questions a decoy answer 45 %
    and the truth 30 %), then TTRL runs 16 steps (N = 16 votes, M = 8 kept, lr 1e-3, k3 KL 0.001)
    on majority-vote rewards only. Before -> after avg@32 at T = 1 on the held-out true answers
    (the trainer's first and last eval rows), and the rise on the non-decoy questions (one thread).

    One seed's run is chaotic in floating-point rounding: the same seed gives different numbers on
    CPUs whose torch kernels differ (AVX-512 against AVX2), so the check is on the mean of four
    seeds, not on each. Measured rises on an AVX-512 Xeon (torch 2.13.0+cpu), seeds 0-9:

        seed        0     1     2     3     4     5     6     7     8     9    mean
        rise      .223  .148  .027  .328  .410  .312  .082  .207  .254  .047  .204
        non-decoy .276  .167  .005  .464  .333  .453  .240  .318  .401  .182  .284

    and with ATEN_CPU_CAPABILITY=avx2 on the same machine, seeds 0-2: rise .305 .379 .332,
    non-decoy .286 .411 .339 (an earlier AVX2 machine: rise .114-.407, non-decoy .287-.417 over
    0-9). Small rises come from decoys (TTRL locks in a wrong majority, as the paper's failure
    analysis predicts) and from seeds whose prior is already sharp. Asserted over seeds 0-3: mean
    rise >= 0.10, mean non-decoy rise >= 0.15, a rise on every seed, and answers that concentrate
    on average (majority ratio up, entropy down).
    """
    runs = [run_once(seed, **LEARNING) for seed in LEARNING_SEEDS]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    assert mean["after_avg"] - mean["before_avg"] >= 0.10, runs
    assert mean["after_normal"] - mean["before_normal"] >= 0.15, runs
    assert all(r["after_avg"] > r["before_avg"] for r in runs), runs
    assert mean["majority_ratio_last"] > mean["majority_ratio_first"], runs
    assert mean["entropy_last"] < mean["entropy_first"], runs


class UnanimousButOneFailed(EmbeddedPolicy):
    """A real embedded policy whose answers all agree, but one sample per group is a request that
    failed for good (as `--sampler openai` reports it: `Sample.error`, no text, no tokens)."""

    def sample(self, prompts, n, *, temperature, max_new_tokens):
        groups = super().sample(prompts, n, temperature=temperature, max_new_tokens=max_new_tokens)
        for group in groups:
            for i, s in enumerate(group):
                group[i] = Sample(s.prompt, "\\boxed{7}", s.prompt_ids, s.completion_ids, s.logprobs, s.entropy, True)
            group[0] = Sample(group[0].prompt, "", group[0].prompt_ids, [], np.zeros(0), None, False,
                              error="HTTP 503: overloaded (gave up after 9 attempts)")
        return groups


def test_a_failed_request_is_no_answer_to_learn_from(questions_file: Path) -> None:
    """Unanimous answers beside one failed request: the failure's 0 would make the group look
    informative and train on the server's fault; it is left out, so nothing is updated."""
    result = train_ttrl(small_config(questions_file, None, eval_every=0), UnanimousButOneFailed(
        EmbeddedConfig(d_model=32, n_layer=1, n_head=2, max_context=48, alphabet="-0123456789")))
    assert result.step == 3
    for row in result.train_rows:
        assert row["answer_rate"] == pytest.approx(7 / 8) and row["majority_ratio"] == pytest.approx(7 / 8)
        assert row["informative_groups"] == 0 and row["updates"] == 0
        assert row["truncated_rate"] == 0.0  # the failed request was not cut at max_new_tokens: it never came
