"""Every file of a run directory damaged or missing: resume and `ttd-agent best` fall back to an
older intact copy where one exists, otherwise they stop with one line that names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli_errors import SMALL, one_error_line
from ttd_agent.cli import main
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run with both checkpoints; each test damages its own copy."""
    run = tmp_path_factory.mktemp("damage") / "run"
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=2, run_dir=str(run))).run()
    return run


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(finished, tmp_path / "run"))


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def resume(run: Path, to: int = 3) -> int:
    return main(["train", "--run-dir", str(run), "--resume", "--steps", str(to)])


@pytest.mark.parametrize("damage", ["garbage", "missing", "no step"])
def test_latest_json_falls_back_to_the_newest_checkpoint(run, damage, caplog):
    latest = run / "latest.json"
    if damage == "missing":
        latest.unlink()
    else:
        latest.write_text("{" if damage == "garbage" else '{"path": "checkpoints/step-000002"}')
    assert resume(run) == 0
    assert steps(run) == [1, 2, 3], "resumed from step 2, not started over"
    if damage != "missing":
        assert "latest.json is damaged" in caplog.text


def test_config_json_falls_back_to_the_checkpoint_copy(run, caplog):
    (run / "config.json").write_text("not json")
    assert resume(run) == 0
    assert steps(run) == [1, 2, 3]
    assert "config.json is damaged" in caplog.text and "using the copy in" in caplog.text
    assert json.loads((run / "config.json").read_text())["env"] == "ttd/LABS-v0", "restored from the copy"


def test_config_json_without_any_copy_is_one_line(capsys, run):
    (run / "config.json").write_text("{")
    for copy in (run / "checkpoints").rglob("config.json"):
        copy.unlink()
    line = one_error_line(capsys, ["train", "--run-dir", str(run), "--resume"])
    assert f"{run / 'config.json'} is damaged" in line and "another --run-dir" in line


def test_best_json_falls_back_to_the_checkpoint_best(capsys, run, caplog):
    expected = json.loads((run / "best.json").read_text())["state"]["reward"]
    (run / "best.json").write_text('{"env": "ttd/LA')
    assert main(["best", str(run)]) == 0
    assert f"reward {expected!r}" in capsys.readouterr().out
    assert "best.json is damaged" in caplog.text
    assert resume(run) == 0
    assert json.loads((run / "best.json").read_text())["state"]["reward"] >= expected, "rewritten on resume"


def test_best_json_without_any_checkpoint_is_one_line(capsys, run):
    (run / "best.json").write_text("[")
    for trainer_state in (run / "checkpoints").rglob("trainer.json"):
        trainer_state.write_text("{")
    line = one_error_line(capsys, ["best", str(run)])
    assert f"{run / 'best.json'} is damaged" in line and "no checkpoint holds the best state" in line


@pytest.mark.parametrize("damage", ["middle line", "missing"])
def test_metrics_jsonl_damage_is_survived(run, damage, caplog):
    metrics = run / "metrics.jsonl"
    if damage == "missing":
        metrics.unlink()
    else:
        lines = metrics.read_text().splitlines()
        metrics.write_text("\n".join(["{\"step\": 1, cut", *lines[1:]]) + "\n")
    assert resume(run) == 0
    assert steps(run) == [2, 3] if damage == "middle line" else [3]
    if damage == "middle line":
        assert "metrics.jsonl: 1 damaged line(s) skipped" in caplog.text


def test_checkpoints_deleted_is_one_line(capsys, run):
    import shutil

    shutil.rmtree(run / "checkpoints")
    line = one_error_line(capsys, ["train", "--run-dir", str(run), "--resume"])
    assert "no intact checkpoint" in line and "checkpoints/step-000002" in line
