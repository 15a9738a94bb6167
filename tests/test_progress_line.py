"""The training progress line fits an 80-column terminal whole: rich shrinks the bar and cuts the
times to "0:00:…" when a line is too wide, which is what a new user saw on every "new best" step."""

from __future__ import annotations

import io

from rich.console import Console

import ttd_agent.cli as cli


def rendered_line(row: dict, improved: bool, step: int, steps: int, width: int = 80) -> str:
    out = io.StringIO()
    cli.console = Console(file=out, width=width, force_terminal=True, color_system=None)
    progress = cli._progress()
    task = progress.add_task("train", total=steps, status=cli.step_status(row, improved))
    progress.update(task, completed=step)
    cli.console.print(progress.make_tasks_table(progress.tasks))
    return out.getvalue().strip("\n")


def test_a_new_best_line_fits_80_columns_with_its_bar_and_time_left(monkeypatch):
    monkeypatch.setattr(cli, "console", cli.console)  # restored after the test
    row = {"best_reward": 2.635983084, "reward_mean": 1.2345678, "valid_fraction": 1.0}
    line = rendered_line(row, improved=True, step=199, steps=200)
    print(repr(line))
    assert len(line) <= 80 and "\n" not in line, line
    assert "…" not in line, line
    assert "new best" in line and "ETA" in line and "199/200" in line
    assert "━━━━━━━━━━" in line.replace("╸", "━").replace("╺", "━"), line  # the bar keeps its 10 cells


def test_a_run_without_a_valid_answer_yet_says_so_within_80_columns(monkeypatch):
    monkeypatch.setattr(cli, "console", cli.console)
    row = {"best_reward": None, "reward_mean": 0.0, "valid_fraction": 0.0}
    line = rendered_line(row, improved=False, step=3, steps=40)
    print(repr(line))
    assert len(line) <= 80 and "…" not in line and "no valid answer yet" in line, line
