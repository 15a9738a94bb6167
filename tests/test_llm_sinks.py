"""TensorBoard and offline W&B sinks mirror metrics.jsonl (skipped with the reason when the extra is missing)."""

from __future__ import annotations

import pytest

from ttd_agent.sinks import check_sinks, make_sinks, numeric

ROW = {"step": 1, "reward_mean": 0.5, "best_reward": None, "improved": True, "label": "x", "nan": float("nan")}


def test_numeric_keeps_finite_numbers_only():
    assert numeric(ROW) == {"step": 1.0, "reward_mean": 0.5}
    with pytest.raises(ValueError, match="unknown sink"):
        check_sinks(["mlflow"])


def test_tensorboard_sink_writes_the_steps_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="the sinks extra is not installed (pip install 'ttd[sinks]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink, = make_sinks(["tensorboard"], tmp_path, {})
    for step in (1, 2):
        sink.log(step, {**ROW, "reward_mean": step / 4})
    sink.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward_mean")] == [(1, 0.25), (2, 0.5)]
    assert "best_reward" not in events.Tags()["scalars"]


def test_wandb_sink_runs_offline_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the sinks extra is not installed (pip install 'ttd[sinks]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first, = make_sinks(["wandb"], tmp_path, {"env": "x"})
    first.log(1, ROW)
    run_id = first.run.id
    first.close()
    again, = make_sinks(["wandb"], tmp_path, {"env": "x"})
    assert again.run.id == run_id
    again.log(2, ROW)
    again.close()
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
