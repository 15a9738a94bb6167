"""The discovery trainer end to end: run directory, checkpoints, resume after a kill, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttd_agent.cli import main
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from timing import within

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"env": "ttd/LABS-v0", "env_kwargs": {"n": 16}, "groups_per_step": 4, "group_size": 8,
         "embedded": {"d_model": 32, "n_layer": 1, "n_head": 2}, "edit_prior": False}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_short_labs_run_writes_everything_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    best = DiscoveryTrainer(DiscoveryConfig(**{**SMALL, "edit_prior": True}, steps=3, run_dir=str(run), seed=1)).run()
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for key in ("reward_min", "reward_mean", "reward_max", "best_reward", "valid_fraction", "beta_mean",
                "buffer_size", "tokens", "time_sample_s", "time_eval_s", "time_update_s", "update_loss"):
        assert key in metrics[-1], key
    assert metrics[-1]["samples"] == 3 * 4 * 8
    assert metrics[-1]["valid_fraction"] == 1.0  # the embedded policy writes exactly 16 of '+'/'-'
    assert len(read_jsonl(run / "rollouts.jsonl")) == 3 * 4 * 8
    saved = json.loads((run / "best.json").read_text())
    assert saved["state"]["reward"] == best.reward == max(m["best_reward"] for m in metrics)
    assert best.reward >= max(m["reward_max"] for m in metrics)
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3
    assert (run / "plots" / "reward_distribution.png").stat().st_size > 1000
    assert (run / "plots" / "best_so_far.png").stat().st_size > 1000
    assert json.loads((run / "latest.json").read_text())["step"] == 3

    resumed = DiscoveryTrainer(DiscoveryConfig(env="", run_dir=str(run), steps=5), resume=True)
    assert resumed.step == 3 and resumed.config.env_kwargs == {"n": 16}
    resumed.run()
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert len(list((run / "checkpoints").glob("step-*"))) == 2  # the last two are kept


def test_resume_is_exact(tmp_path: Path) -> None:
    """3 steps, then 2 more after a resume, equal 5 steps straight: nothing is lost or redrawn."""
    straight = tmp_path / "straight"
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=5, run_dir=str(straight), seed=3)).run()
    split = tmp_path / "split"
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=3, run_dir=str(split), seed=3)).run()
    DiscoveryTrainer(DiscoveryConfig(env="", run_dir=str(split), steps=5), resume=True).run()
    rewards = [[r["reward"] for r in read_jsonl(d / "rollouts.jsonl")] for d in (straight, split)]
    assert rewards[0] == rewards[1]


def test_kill_at_any_moment_then_resume(tmp_path: Path) -> None:
    """SIGKILL mid-run through the CLI; --resume finishes with contiguous steps and no duplicates."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "ttd_agent.cli", "train", "--env", "ttd/LABS-v0", "--env-arg", "n=16",
               "--steps", "40", "--groups-per-step", "4", "--group-size", "8", "--run-dir", str(run),
               "--no-edit-prior"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads((run / "latest.json").read_text())["step"]
    assert killed_at >= 2
    resume = [sys.executable, "-m", "ttd_agent.cli", "train", "--run-dir", str(run), "--resume", "--steps", str(killed_at + 2)]
    done = subprocess.run(resume, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = [m["step"] for m in read_jsonl(run / "metrics.jsonl")]
    assert steps == list(range(1, killed_at + 3))
    rollout_steps = [r["step"] for r in read_jsonl(run / "rollouts.jsonl")]
    assert rollout_steps == sorted(rollout_steps) and len(rollout_steps) == 32 * (killed_at + 2)


def test_a_code_writing_env_without_a_model_fails_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    started = time.perf_counter()
    status = main(["train", "--env", "ttd/ErdosOverlap-v0", "--run-dir", str(tmp_path / "r")])
    assert status == 2
    within(time.perf_counter() - started, 5, "refusing ErdosOverlap without a model")
    out = capsys.readouterr().out
    assert "--model" in out and "code LLM" in out
    assert not (tmp_path / "r").exists()


def test_a_fresh_run_refuses_an_existing_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=1, run_dir=str(tmp_path))).run()
    started = time.perf_counter()
    assert main(["train", "--env", "ttd/LABS-v0", "--run-dir", str(tmp_path)]) == 2
    within(time.perf_counter() - started, 2, "refusing a used run dir (a set-up first would take seconds)")
    assert "--resume" in capsys.readouterr().out


def test_cli_envs_and_best(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs"]) == 0
    listing = capsys.readouterr().out
    for env_id in ("ttd/ErdosOverlap-v0", "ttd/LABS-v0", "ttd/AHC039-v0", "ttd/MathVote-v0"):
        assert env_id in listing
    best = DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=1, run_dir=str(tmp_path))).run()
    assert main(["best", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert best.construction in shown and repr(best.score) in shown


def test_an_answer_that_repeats_its_start_state_is_recognised() -> None:
    from ttd_agent.puct import same_solution
    from ttd_envs.core.problem import Evaluation
    from ttd_envs.core.state import State

    start = State(construction="+-+-", reward=1.0)
    same = Evaluation(reward=1.0, valid=True, construction="+-+-").child_of(start)
    edited = Evaluation(reward=2.0, valid=True, construction="++--").child_of(start)
    assert same_solution(start, same) and not same_solution(start, edited)
    assert Evaluation.failure("bad").child_of(start) is None
    program = State(code="def run(): pass")
    assert same_solution(program, Evaluation(reward=1.0, valid=True, code="def run(): pass").child_of(program))
    assert not same_solution(program, Evaluation(reward=1.0, valid=True, code="def run(): return 1").child_of(program))


@pytest.mark.parametrize("mode", ["zero", "drop", "keep"])
def test_unchanged_answers_in_the_advantages(tmp_path: Path, mode: str) -> None:
    """Group of 4: two copies of the start (reward 3), two edits (rewards 1 and 2)."""
    import numpy as np

    from ttd_agent.objective import group_advantages
    from ttd_agent.policy.base import Sample
    from ttd_agent.trainer import training_rewards

    trainer = DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=1, run_dir=str(tmp_path), unchanged=mode))
    samples = [Sample(prompt="p", text=t, prompt_ids=[], completion_ids=[1], logprobs=np.zeros(1)) for t in "abcd"]
    rewards = np.array([[3.0, 3.0, 1.0, 2.0]])
    unchanged = np.array([[True, True, False, False]])
    train, trained = training_rewards(rewards, unchanged, mode)
    items, _, advantages = trainer._advantages([samples], train, trained)
    informative = sum(any(a is not None for a in group) for group in advantages)
    trainer.close()
    assert informative == 1
    if mode == "drop":
        assert [it.sample.text for it in items] == ["c", "d"]
        expected, _ = group_advantages(np.array([1.0, 2.0]), "entropic-adaptive")
    else:
        assert [it.sample.text for it in items] == list("abcd")
        expected, _ = group_advantages(train[0], "entropic-adaptive")
    assert [it.advantage for it in items] == pytest.approx(expected.tolist())
    if mode == "zero":
        assert train[0].tolist() == [0.0, 0.0, 1.0, 2.0]
        assert items[0].advantage < 0 < items[3].advantage
    if mode == "keep":
        assert items[0].advantage > 0 > items[2].advantage
