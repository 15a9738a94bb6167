"""Issue 26 item 13: `--debug` works after the subcommand too, and `--env` help names FILE.py:Class."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttd_agent.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"})


@pytest.mark.parametrize("args", [("--debug", "train", "--env", "ttd/Nope-v0"),
                                  ("train", "--env", "ttd/Nope-v0", "--debug")])
def test_debug_shows_the_traceback_before_or_after_train(tmp_path, args):
    done = cli(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "unknown discovery env id 'ttd/Nope-v0'" in done.stderr, done.stderr
    assert "unrecognized arguments" not in done.stderr


def test_without_debug_the_error_is_one_line(tmp_path):
    done = cli("train", "--env", "ttd/Nope-v0", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout
    lines = (done.stderr + done.stdout).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown discovery env id"), lines


def test_env_help_names_the_file_form(tmp_path):
    done = cli("train", "--help", cwd=tmp_path)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "FILE.py:ProblemClass" in text and "module:ProblemClass" in text, text
    assert all(len(line) <= 80 for line in done.stdout.splitlines())


def test_a_mistyped_env_id_gets_the_close_ids_in_one_short_line(tmp_path):
    done = cli("train", "--env", "ttd/Labs-v0", cwd=tmp_path)
    lines = (done.stderr + done.stdout).strip().splitlines()
    print(lines)
    assert done.returncode != 0 and len(lines) == 1
    assert "did you mean 'ttd/LABS-v0'?" in lines[0] and "ttd-agent envs" in lines[0]
    assert len(lines[0]) < 160, len(lines[0])  # it listed all 18 ids, about 500 columns
    far = cli("train", "--env", "ttd/Nope-v0", cwd=tmp_path)
    said = far.stderr + far.stdout
    assert "did you mean" not in said and "ttd-agent envs" in said, said
