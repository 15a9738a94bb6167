"""The discovery trainer with the Hugging Face backend: a tiny random Llama with LoRA, built from a
config in the test (no download), a few steps, a checkpoint and a resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("peft", reason="the HF backend needs the [agent] extra (transformers, peft)")

from ttd_agent.policy.tiny import build_tiny_causal_lm
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.core.problem import Evaluation, Record, TrainerDefaults
from ttd_envs.core.state import State


class DistinctCharacters:
    """A problem any text can score on: reward = distinct characters in the answer / 10, capped at 1.

    A random tiny model's answers then differ in reward, so groups carry signal and LoRA updates run.
    """

    name, summary = "DistinctCharacters", "write text with many distinct characters"
    record = Record(10.0, "the cap", higher_is_better=True)
    defaults = TrainerDefaults(model_kind="llm", group_size=4, groups_per_step=2, steps=2, max_new_tokens=12,
                               eval_timeout_s=5.0)

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(code="", reward=0.0, score=0.0)

    def prompt(self, state: State) -> str:
        return f"Write something with more distinct characters than {state.code!r}."

    def evaluate(self, action: str, state: State) -> Evaluation:
        distinct = len(set(action))
        return Evaluation(reward=min(distinct, 10) / 10, valid=True, score=float(distinct), code=action)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama")))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lora_run_updates_checkpoints_and_resumes(tiny_model: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = DiscoveryConfig(env=f"{__name__}:DistinctCharacters", model=tiny_model, lora_rank=4, steps=2,
                             run_dir=str(run), seed=0, device="cpu")
    trainer = DiscoveryTrainer(config)
    base_before = {k: v.clone() for k, v in trainer.policy.model.named_parameters() if "lora_" not in k}
    trainer.run()
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["informative_groups"] >= 1 and m["update_tokens"] > 0 for m in metrics), metrics
    assert all(np.isfinite(m["update_loss"]) for m in metrics)
    checkpoint = run / json.loads((run / "latest.json").read_text())["path"]
    assert any(checkpoint.rglob("adapter_model.safetensors")), sorted(p.name for p in checkpoint.rglob("*"))
    unchanged = all((base_before[k] == v).all() for k, v in trainer.policy.model.named_parameters() if k in base_before)
    assert unchanged, "LoRA training changed base weights"

    resumed = DiscoveryTrainer(DiscoveryConfig(env="", run_dir=str(run), steps=3), resume=True)
    assert resumed.step == 2 and resumed.config.model == tiny_model
    resumed.run()
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((run / "best.json").read_text())["state"]["reward"] > 0


def test_lora_run_on_a_ttd_env(tiny_model: str, tmp_path: Path) -> None:
    """ttd/LABS-v0 through the full LLM prompt: a random model's answers are invalid, and the run
    says so per rollout instead of failing."""
    run = tmp_path / "labs"
    DiscoveryTrainer(DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": 8}, model=tiny_model, lora_rank=4,
                                     steps=1, groups_per_step=2, group_size=2, max_new_tokens=8,
                                     run_dir=str(run), device="cpu")).run()
    rollouts = read_jsonl(run / "rollouts.jsonl")
    assert len(rollouts) == 4
    assert all(not r["valid"] and r["error"] for r in rollouts if r["reward"] == 0)
