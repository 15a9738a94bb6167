"""docs/adding_a_problem.md is checked by running every command it shows, as a reader would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding_a_problem.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def runnable_python() -> list[str]:
    """Whole programs: excerpts (indented, or with '...') are shown, not run."""
    return [b for b in blocks("python") if "..." not in b and not b.startswith(" ")]


def shell_commands() -> list[str]:
    return [line for block in blocks("bash") for line in block.splitlines() if line.strip()
            and not line.startswith("#")]


def test_the_page_counts_what_it_lists_and_shows_runnable_commands():
    first = DOC.read_text().split("\n\n")[1]
    assert "six things" in first
    assert all(f"`{name}" in first for name in ("name", "record", "defaults", "initial_state", "prompt", "evaluate"))
    assert len(runnable_python()) >= 1 and len(shell_commands()) >= 5
    assert "ttd/" not in "".join(runnable_python()), "user envs go under their own namespace"


@pytest.mark.slow
def test_every_command_of_adding_a_problem_runs(tmp_path: Path) -> None:
    """In a copy of the examples, outside the repository, so relative paths are the reader's."""
    shutil.copytree(ROOT / "docs" / "examples", tmp_path / "docs" / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    for code in runnable_python():
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
    outputs = []
    for command in shell_commands():
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stdout + done.stderr, command
        outputs.append(done.stdout)
    joined = "\n".join(outputs)
    # the tiny LM is taught golomb.py's example_answer(), so `best` shows a valid ruler program (docs say so)
    assert "MaxCut" in joined and "def ruler():" in joined and "[0, 1, 3, 7, 15" in joined


def section_python(doc: Path, heading: str) -> list[str]:
    """The ```python blocks between `heading` and the next heading of its level."""
    text = doc.read_text().split(f"\n{heading}\n", 1)[1]
    text = re.split(rf"\n{heading.split()[0]} ", text, maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_the_trl_example_of_integrations_runs_as_written_on_a_cpu(tmp_path: Path) -> None:
    """Offline, in an empty directory: the page's own snippet, not a copy of it, trains 2 steps."""
    pytest.importorskip("trl", reason="needs the trl extra: pip install -e '.[trl]'")
    (code,) = section_python(ROOT / "docs" / "integrations.md", "## TRL")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    code += "\nprint('global_step', trainer.state.global_step)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "global_step 2" in done.stdout
    assert (tmp_path / "tiny-lm" / "config.json").is_file() and (tmp_path / "out").is_dir()
