"""LLM settings: every one a flag and a --config key, stored in config.json, rebuilt on --resume;
speed/memory settings may change on resume, the others are refused."""

from __future__ import annotations

import argparse
import json

import pytest
from toy_problems import distinct_characters

from ttd_agent.policy.settings import (
    FIELDS,
    RESUMABLE,
    LLMSettings,
    add_arguments,
    from_args,
    resume_llm,
)

Distinct = distinct_characters(group_size=2, steps=1, max_new_tokens=6)


def test_every_setting_is_a_flag_and_values_are_checked():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--micro-batch-tokens", "4096", "--sleep", "false", "--renderer", "qwen3",
                              "--thinking-budget", "512"])
    assert from_args(args) == {"micro_batch_tokens": 4096, "sleep": False, "renderer": "qwen3",
                               "thinking_budget": 512}
    assert {a.dest for a in parser._actions} >= FIELDS and set(RESUMABLE) <= FIELDS
    with pytest.raises(ValueError, match="micro-batch-tokens must be >= 1"):
        LLMSettings(micro_batch_tokens=0)
    with pytest.raises(ValueError, match="unknown LLM setting"):
        LLMSettings.from_dict({"micro_batch": 3})
    assert LLMSettings(sleep=False).changed() == {"sleep": False}


def test_resume_applies_speed_settings_and_refuses_the_rest():
    saved = {"renderer": "qwen3", "micro_batch_tokens": 4096}
    assert resume_llm(saved, {"micro_batch_tokens": 2048, "gradient_checkpointing": False}) == \
        {"renderer": "qwen3", "micro_batch_tokens": 2048, "gradient_checkpointing": False}
    assert resume_llm(saved, {"renderer": "qwen3"}) == saved  # asking for the saved value is fine
    with pytest.raises(ValueError, match="renderer .saved 'qwen3', asked 'chat'"):
        resume_llm(saved, {"renderer": "chat"})


@pytest.mark.slow
def test_settings_round_trip_through_config_file_and_resume(tmp_path, monkeypatch):
    pytest.importorskip("peft")
    from ttd_agent.cli import main
    from ttd_agent.policy.tiny import build_tiny_causal_lm

    monkeypatch.chdir(tmp_path)
    model = str(build_tiny_causal_lm(tmp_path / "lm"))
    (tmp_path / "run.toml").write_text('micro-batch-tokens = 4096\nrenderer = "plain"\nkeep-adapters = 2\n')
    run = tmp_path / "run"
    env = f"{__name__}:Distinct"
    assert main(["train", "--config", "run.toml", "--env", env, "--model", model, "--device", "cpu",
                 "--lora-rank", "4", "--sample-batch-size", "3", "--run-dir", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())["llm"]
    assert saved == {"micro_batch_tokens": 4096, "renderer": "plain", "keep_adapters": 2, "sample_batch_size": 3}

    from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

    resumed = DiscoveryTrainer(DiscoveryConfig(env="", run_dir=str(run), steps=2), resume=True,
                               changes={"steps": 2, "llm": {"micro_batch_size": 2}})
    policy = resumed.policy
    assert policy.settings.micro_batch_tokens == 4096 and policy.settings.micro_batch_size == 2
    assert policy.renderer.family == "plain" and policy.settings.sample_batch_size == 3
    resumed.close()
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "2", "--renderer", "chat"]) == 2
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "2", "--micro-batch-size", "2"]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
