"""The AHC drawing hook (`AHCProblem.program_drawing`): an AHC state holds a program, so its picture
comes from running that program on test 0 in the judge's sandbox, under the training limits. The
shipped baselines are drawn (and the picture agrees with the judge's score); hostile programs give a
one-line note instead; the viewer makes the drawing in the background, one per state id, and an
export waits for it."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from ttd_envs.core.drawing import NoDrawing
from ttd_envs.core.state import State
from ttd_envs.problems.ahc import ahc039, ahc058
from ttd_envs.problems.ahc.common import data_dir

SOLUTIONS = data_dir("solutions")
RECTANGLE = (SOLUTIONS / "ahc039_rectangle.cpp").read_text()
FISH0 = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
WHERE = "test 0 (seed 0, the shipped input ahc039/inputs/0000.txt)"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cpp-cache")


@pytest.fixture(scope="module")
def fishing(cache: Path):
    problem = ahc039.AHC039(num_tests=2, workers=1, cache_dir=str(cache), cpu_limit_s=0.5)
    yield problem
    problem.close()


def polygon_bytes(path: dict) -> bytes:
    return (f"{len(path['x'])}\n" + "".join(f"{x} {y}\n" for x, y in zip(path["x"], path["y"]))).encode()


def test_ahc039_draws_the_fish_and_the_net_the_judge_scored(fishing: ahc039.AHC039, cache: Path) -> None:
    report = fishing.judge_source(RECTANGLE)
    assert report.accepted
    binary = next(cache.glob("*.bin"))
    compiled_at = binary.stat().st_mtime_ns
    drawing = fishing.program_drawing(RECTANGLE)
    assert [b.stat().st_mtime_ns for b in cache.glob("*.bin")] == [compiled_at]  # the judge's binary, reused
    assert drawing["kind"] == "plane" and drawing["box"] == [0, 0, 100_000, 100_000]
    mackerels, sardines = drawing["points"]
    points, n = FISH0
    assert np.array_equal(np.column_stack([mackerels["x"], mackerels["y"]]), points[:n])
    assert np.array_equal(np.column_stack([sardines["x"], sardines["y"]]), points[n:])
    (net,) = drawing["paths"]
    assert len(net["x"]) == 4 and len(set(net["x"])) == 2 and len(set(net["y"])) == 2  # a rectangle
    score = ahc039.polygon_score(points, n, polygon_bytes(net))
    assert score == report.results[0].score > 1
    assert drawing["caption"].startswith(f"drawn from running this program on {WHERE}")
    assert drawing["caption"].endswith(f"score on that test {score:.1f}")
    json.dumps(drawing, allow_nan=False)  # what the page carries


def test_ahc058_draws_its_apples_by_turn(cache: Path) -> None:
    problem = ahc058.AHC058(num_tests=1, workers=1, cache_dir=str(cache))
    try:
        drawing = problem.program_drawing((SOLUTIONS / "ahc058_greedy.cpp").read_text())
        score = problem.judge_source((SOLUTIONS / "ahc058_greedy.cpp").read_text()).results[0].score
    finally:
        problem.close()
    assert drawing["kind"] == "series"
    (curve,) = drawing["series"]
    assert curve["x"] == list(range(1, 501))
    assert math.isclose(curve["y"][-1], score / 100_000, abs_tol=1e-4)  # score = 100000 log2(S), S large
    assert "ahc058/inputs/0000.txt" in drawing["caption"] and f"{score:.0f}" in drawing["caption"]


HOSTILE = [
    ("#include <cstdlib>\nint main() { std::abort(); }", "the program got RE: runtime error: killed by SIGABRT"),
    ('#include <cstdio>\nint main() { std::puts("hello"); }', "the program got WA: wrong answer: parse error"),
    ("int main() { volatile unsigned x = 0; for (;;) x++; }", "the program got TLE: time limit exceeded"),
    ("#include <unistd.h>\nint main() { for (;;) sleep(1); }", "the program got TLE: time limit exceeded: killed after"),
    ('#include <cstdio>\nint main() { std::puts("4\\n0 0\\n0 10\\n10 20\\n10 0"); }',
     "WA: wrong answer: edge 1->2 is neither horizontal nor vertical"),
    ("int main() { syntax error }", "the program does not compile (Main.cpp:1:14: error:"),
]


@pytest.mark.parametrize(("code", "message"), HOSTILE, ids=["crash", "garbage", "cpu", "sleep", "bad-net", "no-compile"])
def test_a_hostile_program_gives_a_one_line_note(fishing: ahc039.AHC039, code: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(NoDrawing) as caught:
        fishing.program_drawing(code)
    note = str(caught.value)
    assert note.startswith("no drawing: ") and message in note and "\n" not in note and len(note) < 400, note
    if "compile" not in message:
        assert WHERE in note
    assert time.monotonic() - started < 30  # the training limits stop it: 0.5 s CPU, 4.5 s wall


def write_run(run: Path, code: str, cache: Path) -> Path:
    """A run directory as far as the viewer's best construction needs: config.json and best.json."""
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"env": "ttd/AHC039-v0", "steps": 1, "env_kwargs": {
        "num_tests": 2, "workers": 1, "cache_dir": str(cache)}}))
    state = State(code=code, reward=1.0, score=1500.0, construction=None)
    (run / "best.json").write_text(json.dumps({"state": state.to_dict(), "step": 1, "samples": 2}))
    return run


def test_the_viewer_draws_in_the_background_once_per_state(tmp_path: Path, cache: Path) -> None:
    from ttd_agent.view.payload import RunView
    from ttd_agent.view.reader import RunFiles

    slow = RECTANGLE.replace("int main() {", "#include <unistd.h>\nint main() {\n    sleep(2);", 1)
    view = RunView(RunFiles(write_run(tmp_path / "slow", slow, cache)))
    try:
        started = time.monotonic()
        view.refresh()
        best = view.payload()["best"]
        assert time.monotonic() - started < 1.5, "the payload waited for the program"
        assert best["drawing_pending"] and best["drawing"] is None
        version = view.version
        deadline = time.monotonic() + 60
        while not view.refresh():  # a finished drawing is a new version: the page reloads its data
            assert time.monotonic() < deadline, "the drawing never finished"
            time.sleep(0.1)
        assert view.version == version + 1
        best = view.payload()["best"]
        assert not best.get("drawing_pending") and best["drawing"]["kind"] == "plane" and best["drawing_note"] is None
        made = best["drawing"]
        view.refresh()
        assert view.payload()["best"]["drawing"] is made  # cached per state id: run once
        assert not view.refresh()
    finally:
        view.close()


def test_an_export_waits_for_the_drawing_and_a_failure_is_a_note(tmp_path: Path, cache: Path) -> None:
    from ttd_agent.view.payload import RunView
    from ttd_agent.view.reader import RunFiles

    garbage = '#include <cstdio>\nint main() { std::puts("4 a b"); }'
    view = RunView(RunFiles(write_run(tmp_path / "garbage", garbage, cache)), draw_inline=True)
    try:
        view.refresh()
        best = view.payload()["best"]
    finally:
        view.close()
    assert best["drawing"] is None and not best["drawing_pending"]
    assert best["drawing_note"].startswith(f"no drawing: on {WHERE} the program got WA: wrong answer: parse error")
