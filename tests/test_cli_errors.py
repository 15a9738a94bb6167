"""Every error of `ttd-agent` is one line that names the flag or file and says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttd_agent.cli import main
from ttd_agent.runconfig import RESUME_APPLY, reconcile_resume
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

ROOT = Path(__file__).resolve().parents[1]
TINY_LABS = ["--env", "ttd/LABS-v0", "--env-arg", "n=8", "--groups-per-step", "2", "--group-size", "2",
             "--no-edit-prior"]
SMALL = dict(env="ttd/LABS-v0", env_kwargs={"n": 8}, groups_per_step=2, group_size=2, edit_prior=False)


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and exactly one line of output; return it."""
    with pytest.raises(SystemExit) as exited:
        status = main(argv)
        raise SystemExit(status)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def run_cli(args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*(prefix or []), sys.executable, "-m", "ttd_agent.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]


def test_an_unknown_env_option(capsys, tmp_path):
    line = one_error_line(capsys, ["train", *TINY_LABS, "--env-arg", "bogus=1", "--run-dir", str(tmp_path / "r")])
    assert "no option 'bogus'" in line and "--env-arg" in line and "its options: n, initial" in line


def test_a_bad_env_option_value(capsys, tmp_path):
    line = one_error_line(capsys, ["train", "--env", "ttd/LABS-v0", "--env-arg", "n=abc",
                                   "--run-dir", str(tmp_path / "r")])
    assert "n='abc'" in line and "integer in 3..256" in line


def test_a_malformed_flag(capsys):
    line = one_error_line(capsys, ["train", "--steps", "x"])
    assert "--steps" in line and "--help" in line


def test_an_unknown_env_id(capsys, tmp_path):
    line = one_error_line(capsys, ["train", "--env", "ttd/Nope-v0", "--run-dir", str(tmp_path / "r")])
    assert "unknown discovery env id 'ttd/Nope-v0'" in line


def test_a_missing_model_directory(capsys, tmp_path):
    line = one_error_line(capsys, ["train", *TINY_LABS, "--model", "/nonexistent", "--run-dir", str(tmp_path / "r")])
    assert "model directory /nonexistent does not exist" in line and "'tiny'" in line


@pytest.mark.slow
def test_a_hub_model_that_cannot_be_reached(tmp_path):
    """Offline (as on a machine without internet): one line, at once, with what to pass instead."""
    done = run_cli(["train", *TINY_LABS, "--model", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                    "--run-dir", str(tmp_path / "r")], env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = error_lines(done)
    assert len(lines) == 1 and "Qwen/Qwen2.5-Coder-1.5B-Instruct" in lines[0] and "'tiny'" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_hub_id_that_is_not_there_fails_at_once_without_retries(tmp_path):
    """Without HF_HUB_OFFLINE: no network here (or a 404 where there is one), so no model; either
    way one line within seconds, not a minute of huggingface_hub retry warnings."""
    started = time.monotonic()
    done = run_cli(["train", *TINY_LABS, "--model", "ttd-tests/no-such-model-x9", "--run-dir", str(tmp_path / "r")],
                   env={"HF_HUB_OFFLINE": "", "HF_HUB_CACHE": str(tmp_path / "cache")})
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_lines(done) == [(done.stdout + done.stderr).strip()], done.stdout + done.stderr
    assert "ttd-tests/no-such-model-x9" in done.stdout and "'tiny'" in done.stdout
    assert "Retry" not in done.stdout + done.stderr
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert not (tmp_path / "r").exists(), "nothing is written for a run that cannot start"


def test_resume_without_a_run(capsys, tmp_path):
    line = one_error_line(capsys, ["train", "--resume", "--run-dir", str(tmp_path / "nothing")])
    assert "holds no run" in line


def test_best_of_a_directory_that_is_not_a_run(capsys, tmp_path):
    line = one_error_line(capsys, ["best", str(tmp_path)])
    assert "best.json does not exist" in line


def test_config_file_errors(capsys, tmp_path):
    assert "no such file" in one_error_line(capsys, ["train", "--config", str(tmp_path / "missing.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("group-size = [")
    assert "not valid TOML" in one_error_line(capsys, ["train", "--config", str(bad)])
    bad.write_text("group-sise = 4\n")
    assert "unknown setting(s) group_sise" in one_error_line(capsys, ["train", "--config", str(bad)])
    bad.write_text('group-size = "four"\n')
    assert "group-size must be a number" in one_error_line(capsys, ["train", "--config", str(bad)])
    bad.write_text('objective = "best"\n')
    assert "objective = 'best' is not one of" in one_error_line(capsys, ["train", "--config", str(bad)])


def test_config_file_values_are_used_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('env = "ttd/LABS-v0"\nenv-arg = {n = 8}\ngroup-size = 3\ngroups-per-step = 2\n'
                      'no-edit-prior = true\nsteps = 1\nseed = 5\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--group-size", "2", "--run-dir", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["env_kwargs"], saved["group_size"], saved["groups_per_step"], saved["seed"]) == ({"n": 8}, 2, 2, 5)
    assert saved["edit_prior"] is False


def test_resume_applies_safe_flags_and_refuses_the_rest(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY_LABS, "--steps", "1", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    line = one_error_line(capsys, ["train", "--run-dir", str(run), "--resume", "--steps", "2", "--lr", "0.5",
                                   "--seed", "3", "--eval-workers", "1"])
    assert "lr (saved 0.001, asked 0.5)" in line and "seed (saved 0, asked 3)" in line
    assert "these would apply: " in line and "steps" in line and "eval_workers" in line
    # the same flags as the saved run are not changes; safe ones apply
    assert main(["train", *TINY_LABS, "--run-dir", str(run), "--resume", "--steps", "2", "--eval-workers", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 1, "config.json keeps the run's original configuration"
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_the_resume_table_refuses_what_it_does_not_list():
    saved = {"steps": 5, "lr": 1e-3, "some_future_setting": 1}
    assert reconcile_resume(saved, {"steps": 9})[0]["steps"] == 9
    with pytest.raises(ValueError, match="some_future_setting"):
        reconcile_resume(saved, {"some_future_setting": 2})
    assert {"steps", "eval_workers", "executor", "eval_timeout_s", "device"} <= RESUME_APPLY
    assert not {"env", "env_kwargs", "model", "objective", "group_size", "seed", "lr"} & RESUME_APPLY


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    run = tmp_path / "run"
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=2, run_dir=str(run))).run()
    weights = next((run / "checkpoints" / "step-000002" / "policy").rglob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:100])
    resumed = DiscoveryTrainer(DiscoveryConfig(env="", run_dir=str(run), steps=3), resume=True)
    assert resumed.step == 1 and "falling back to the previous one" in caplog.text
    resumed.run()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_no_intact_checkpoint_is_one_line(capsys, tmp_path):
    run = tmp_path / "run"
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=1, run_dir=str(run))).run()
    for path in (run / "checkpoints").rglob("trainer.json"):
        path.write_text("{")
    line = one_error_line(capsys, ["train", "--run-dir", str(run), "--resume"])
    assert "no intact checkpoint" in line and "another --run-dir" in line


def test_best_json_is_written_before_the_checkpoint(tmp_path):
    """A kill between the two writes must not leave best.json older than the checkpoint."""
    run = tmp_path / "run"
    trainer = DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=1, run_dir=str(run)))
    order = []
    write_best, checkpoint = trainer._write_best, trainer._checkpoint
    trainer._write_best = lambda: (order.append("best"), write_best())[1]
    trainer._checkpoint = lambda: (order.append("checkpoint"), checkpoint())[1]
    trainer.train_step()
    trainer.close()
    assert order == ["best", "checkpoint"]


def _mounted(options: str) -> list[str] | None:
    """A command prefix that runs in a private mount namespace with a tmpfs at /mnt/ttd-test."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt && true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f"mkdir -p /mnt/ttd-test && mount -t tmpfs -o {options} tmpfs "
            f"/mnt/ttd-test && exec \"$0\" \"$@\""]


@pytest.mark.slow
@pytest.mark.parametrize("options,expected", [("size=16k", "the disk is full"), ("ro", "cannot write there")])
def test_a_full_disk_or_a_read_only_run_dir(tmp_path, options, expected):
    prefix = _mounted(options)
    if prefix is None:
        pytest.skip("no mount namespaces here (needs root or unprivileged user namespaces)")
    done = run_cli(["train", *TINY_LABS, "--steps", "2", "--run-dir", "/mnt/ttd-test/run"], prefix=prefix)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = error_lines(done)
    assert len(lines) == 1 and expected in lines[0], done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_ttrl_resume_refuses_flags_it_would_ignore(capsys, tmp_path):
    line = one_error_line(capsys, ["train", "--method", "ttrl", "--run-dir", str(tmp_path), "--resume",
                                   "--steps", "3", "--lr", "0.1", "--votes", "4"])
    assert "takes only --steps" in line and "--lr, --votes" in line


def test_the_summary_shows_the_record_as_a_reward(capsys, tmp_path):
    assert main(["train", *TINY_LABS, "--steps", "1", "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "record (score)" in out and "record (reward)" in out and "best reward" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_resume_before_the_first_checkpoint_starts_over(tmp_path):
    """A kill during set-up or the first step leaves config.json but no checkpoint."""
    run = tmp_path / "run"
    DiscoveryTrainer(DiscoveryConfig(**SMALL, steps=1, run_dir=str(run))).close()
    assert main(["train", "--run-dir", str(run), "--resume"]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_best_prints_the_program_raw_and_names_best_code_txt(tmp_path):
    """Never wrapped at the terminal width, even into a pipe: the printed program is valid Python."""
    code = "def run():\n    return [" + ", ".join(str(i) for i in range(60)) + "]  # one line well past 80 columns\n"
    state = {"id": "s1", "code": code, "reward": 0.5, "score": 2.0, "construction": list(range(100))}
    (tmp_path / "best.json").write_text(json.dumps({"env": "ttd/X-v0", "step": 3, "samples": 12, "state": state}))
    (tmp_path / "best_code.txt").write_text(code)
    done = run_cli(["best", str(tmp_path)], env={"COLUMNS": "40"})
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split(":\n", 1)[1].split("construction:")[0]
    assert printed == code
    compile(printed, "best", "exec")
    assert f"also in {tmp_path / 'best_code.txt'}" in done.stdout.replace("\n", "")
    assert json.dumps(list(range(100))) in done.stdout.splitlines()


def test_best_prints_a_text_construction_as_it_is(tmp_path):
    """A LABS sequence is text: printed bare, ready to paste back, not as a quoted JSON string."""
    signs = "+-" * 30 + "+"
    state = {"id": "s1", "code": None, "reward": 0.8, "score": 7.5, "construction": signs}
    (tmp_path / "best.json").write_text(json.dumps({"env": "ttd/LABS-v0", "step": 3, "samples": 12, "state": state}))
    done = run_cli(["best", str(tmp_path)], env={"COLUMNS": "40"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == signs


def test_best_of_a_ttrl_run_says_so(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "aime24", "votes": 4, "keep": 2}))
    line = one_error_line(capsys, ["best", str(tmp_path)])
    assert "is a TTRL run: it keeps no best state" in line and "metrics.jsonl" in line
