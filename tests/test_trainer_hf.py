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


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama")))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lora_run_updates_checkpoints_and_resumes(tiny_model: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = DiscoveryConfig(env="toy_problems:DistinctCharacters", model=tiny_model, lora_rank=4, steps=2,
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
