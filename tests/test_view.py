"""`ttd-agent view` in a real headless Chromium: real runs (LABS with the embedded policy, a
program problem with `--model tiny`, TTRL, one still training, a damaged one), each page checked
for drawn plots, the state tree, a program diff and a console without errors; the exported file
opened with the network off; the page of a 10^5-evaluation LABS run timed in the browser."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser import Browser, needs_chromium
from ttd_agent.view.page import PAGE_TRACES

pytest.importorskip("plotly", reason="the viewer needs the [view] extra (plotly)")
pytestmark = [needs_chromium, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
DRAWN_PLOTS = """[...document.querySelectorAll('div.plot')].map(d => [d.id,
  [...d.querySelectorAll('g.trace path, g.shapelayer path')]
    .filter(p => (p.getAttribute('d') || '').length > 8).length])"""


def cli(*args: str, cwd: Path = ROOT, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}
    return subprocess.Popen([sys.executable, "-m", "ttd_agent.cli", *args], cwd=cwd, env=env, text=True, **kwargs)


def export(run: Path, out: Path) -> Path:
    assert cli("view", str(run), "--html", str(out), stdout=subprocess.DEVNULL).wait(timeout=120) == 0
    return out


@contextlib.contextmanager
def offline(browser: Browser):
    """The browser's network switched off (DevTools emulation) while the block runs."""
    conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.call("Network.emulateNetworkConditions", offline=True, **conditions)
    try:
        yield
    finally:
        browser.call("Network.emulateNetworkConditions", offline=False, **conditions)


@pytest.fixture(scope="module")
def browser():
    chrome = Browser()
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def labs_run(tmp_path_factory) -> tuple[Path, subprocess.Popen]:
    """A real LABS run with the embedded policy, started once: the live test watches it train,
    the finished-run test waits for its end."""
    run = tmp_path_factory.mktemp("labs") / "run"
    process = cli("train", "--env", "ttd/LABS-v0", "--steps", "8", "--run-dir", str(run),
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield run, process
    if process.poll() is None:
        process.kill()
        process.wait()


def check_page(browser: Browser, shot: Path, plots: set[str], diff: bool = True) -> None:
    """Every named plot has drawn paths, the screenshot is not blank, the console has no error."""
    browser.screenshot(shot)  # a viewport as tall as the page: every plot is on screen
    drawn = dict(browser.evaluate(DRAWN_PLOTS))
    assert plots <= set(drawn), f"missing plots: {plots - set(drawn)}"
    blank = [name for name in plots if drawn[name] == 0]
    assert not blank, f"plots drawn without marks: {blank} ({drawn})"
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").resize((200, 400)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is nearly uniform"
    if diff:
        assert browser.evaluate("document.querySelector('#state h3').textContent").startswith("state ")
        marks = browser.evaluate("document.querySelectorAll('#diff .chg, #diff .add, #diff .del').length")
        assert marks > 0, "the selected state shows no diff against its parent"
    assert browser.errors() == []


DISCOVERY_PLOTS = {"plot-samples", "plot-wall", "plot-tokens", "plot-tree", "plot-groups", "plot-weights",
                   "plot-outcomes", "plot-beta", "plot-phases", "plot-cost"}


def test_a_run_still_training_updates_the_page(browser, labs_run, tmp_path: Path) -> None:
    run, process = labs_run
    deadline = time.monotonic() + 180  # a busy machine takes long to import torch
    while not (run / "config.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the LABS run did not start"
        time.sleep(0.2)
    viewer = cli("view", str(run), "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = viewer.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert "ssh -L" in viewer.stdout.readline()
        browser.reset()
        browser.open(url)
        first = int(browser.evaluate("document.body.dataset.version"))
        first_steps = browser.evaluate("document.querySelector('.status').textContent")
        # the page polls version.json and redraws itself when the run writes another step
        browser.wait_for(f"Number(document.body.dataset.version) > {first} && "
                         f"document.querySelector('.status').textContent !== {json.dumps(first_steps)}", timeout=90)
        browser.wait_for("document.querySelector('.status').textContent.includes('finished')", timeout=120)
        # the run still writes its checkpoint and best state after its last step: once it has exited, the page
        # must reach the server's last version and finish drawing it (a redraw empties the lower sections)
        assert process.wait(timeout=180) == 0
        final = json.loads(urllib.request.urlopen(url + "version.json", timeout=10).read())["version"]
        browser.wait_for(f"Number(document.body.dataset.version) === {final} && document.body.dataset.ready === '1'",
                         timeout=30)
        check_page(browser, tmp_path / "live.png", DISCOVERY_PLOTS)
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)


def test_finished_labs_run_and_its_offline_export(browser, labs_run, tmp_path: Path) -> None:
    run, process = labs_run
    assert process.wait(timeout=180) == 0, process.stderr.read()
    page = export(run, tmp_path / "labs.html")
    browser.reset()
    with offline(browser):
        browser.open(page.as_uri())
        assert browser.requests() == [page.as_uri()], "the exported page fetched something"
        check_page(browser, tmp_path / "labs.png", DISCOVERY_PLOTS | {"plot-drawing"})
        text = browser.evaluate("document.body.innerText")
        assert "hill climbing (same evaluations)" in text and "Packebusch" in text  # baselines and the record
        # a real click on another state of the tree shows that state
        before = browser.evaluate("document.querySelector('#state h3').textContent")
        browser.click("#plot-tree g.trace:nth-of-type(2) path.point")
        browser.wait_for(f"document.querySelector('#state h3').textContent !== {json.dumps(before)}", timeout=10)
        assert browser.errors() == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real program-problem run: the toy problem's programs written by the tiny random LM."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    train = cli("train", "--env", "toy_problems:DistinctCharacters", "--model", "tiny", "--steps", "2",
                "--run-dir", str(run), cwd=TESTS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert train.wait(timeout=180) == 0, train.stderr.read()
    return run


def test_program_problem_run_with_the_tiny_model(browser, tiny_run: Path, tmp_path: Path) -> None:
    browser.reset()
    browser.open(export(tiny_run, tmp_path / "tiny.html").as_uri())
    check_page(browser, tmp_path / "tiny.png", DISCOVERY_PLOTS)
    assert browser.evaluate("document.querySelector('#state h4').textContent") == "program"


def test_huge_and_hostile_programs_show_a_clear_message(browser, tiny_run: Path, tmp_path: Path) -> None:
    """A state whose program is megabytes long (and tries to break out of the page's script and
    markup) is cut with a note, diffed against its parent, and runs nothing; a state whose parent
    the run lost says so."""
    run = tmp_path / "huge"
    shutil.copytree(tiny_run, run)
    states = [json.loads(line) for line in (run / "states.jsonl").read_text().splitlines()]
    parent = next(s for s in states if s["code"])
    hostile = "</script><script>document.title='escaped'</script><img src=x onerror=\"document.title='escaped'\">"
    huge = {**parent, "id": "huge0program", "parent": parent["id"], "step": 2, "initial": False,
            "code": parent["code"] + "\n" + hostile + "\n" + "\n".join(f"x{i} = {i} * 2" for i in range(300_000))}
    orphan = {**parent, "id": "orphan0state", "parent": "gone00parent", "step": 2, "initial": False}
    with (run / "states.jsonl").open("a") as handle:
        handle.write(json.dumps(huge) + "\n" + json.dumps(orphan) + "\n")
    page = export(run, tmp_path / "huge.html")
    assert page.stat().st_size < 8_000_000, "the huge program was carried whole"
    browser.reset()
    browser.open(page.as_uri() + "#state=huge0program")
    assert browser.evaluate("document.querySelector('#state h3').textContent") == "state huge0program"
    shown = browser.evaluate("document.getElementById('state-text').textContent")
    assert hostile in shown and shown.endswith("characters in all)") and len(shown) < 25_000
    assert browser.evaluate("document.querySelectorAll('#diff .add').length") > 100
    assert browser.evaluate("document.title") != "escaped" and browser.requests() == [page.as_uri()]
    check_page(browser, tmp_path / "huge.png", DISCOVERY_PLOTS)
    browser.open(page.as_uri() + "#state=orphan0state")  # a link to a state: the same page shows it
    browser.wait_for("document.querySelector('#state h3').textContent === 'state orphan0state'", timeout=10)
    assert "the parent is not in the run directory" in browser.evaluate("document.getElementById('diff').textContent")
    assert browser.errors() == []


def test_a_server_run_without_token_counts_says_so(browser, tiny_run: Path, tmp_path: Path) -> None:
    """A run sampled through an OpenAI-compatible chat server that sent no `usage`: the chat sampler
    sees no token ids, so every token count it logged is 0. The page says the counts are missing
    instead of drawing zeros as if the run were free."""
    run = tmp_path / "chat"
    shutil.copytree(tiny_run, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # what metrics.jsonl holds when the server reports no usage
        row.update(requests=8, requests_failed=0, requests_retried=0, request_retries=0, prompt_tokens=0,
                   completion_tokens=0, tokens=0)
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    browser.reset()
    browser.open(export(run, tmp_path / "chat.html").as_uri())
    assert "reported no token usage" in browser.evaluate("document.getElementById('notes').innerText")
    assert "logged no token counts" in browser.evaluate("document.getElementById('plot-tokens').innerText")
    cost = browser.evaluate("document.getElementById('cost-table').innerText")
    assert "not reported by the server" in cost, cost
    check_page(browser, tmp_path / "chat.png", DISCOVERY_PLOTS - {"plot-tokens"})


def test_a_missing_run_directory_is_one_line(tmp_path: Path) -> None:
    viewer = cli("view", str(tmp_path / "nowhere"), "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = viewer.communicate(timeout=60)
    assert viewer.returncode != 0
    assert out.strip().splitlines() == [f"error: {tmp_path / 'nowhere'} is not a directory: pass a run directory "
                                        "(the --run-dir of a run)"], out


def test_ttrl_run_has_its_own_view(browser, tmp_path: Path) -> None:
    from ttd_agent.policy.embedded import EmbeddedConfig, EmbeddedPolicy
    from ttd_agent.ttrl import arithmetic_questions
    from ttd_agent.ttrl_trainer import TTRLConfig, train_ttrl

    questions = tmp_path / "arithmetic.json"
    questions.write_text(json.dumps(arithmetic_questions(12, seed=3)))
    config = TTRLConfig(dataset=str(questions), votes=8, keep=4, questions_per_step=4, episodes=1, max_new_tokens=3,
                        lr=1e-3, answer_fallback="last_number", eval_every=1, eval_samples=4, eval_votes=6,
                        plot_every=0, run_dir=str(tmp_path / "ttrl"))
    policy = EmbeddedPolicy(EmbeddedConfig(d_model=32, n_layer=1, n_head=2, max_context=48, alphabet="-0123456789"))
    train_ttrl(config, policy)
    browser.reset()
    browser.open(export(tmp_path / "ttrl", tmp_path / "ttrl.html").as_uri())
    check_page(browser, tmp_path / "ttrl.png", {"plot-ttrl-accuracy", "plot-ttrl-votes"}, diff=False)
    text = browser.evaluate("document.body.innerText")
    assert "vote entropy" in text and "majority agreement" in text


def test_damaged_run_directory_still_opens_with_notes(browser, labs_run, tmp_path: Path) -> None:
    run, process = labs_run
    assert process.wait(timeout=180) == 0
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "best.json").unlink()
    shutil.rmtree(damaged / "checkpoints")
    lines = (damaged / "rollouts.jsonl").read_text().splitlines(keepends=True)
    (damaged / "rollouts.jsonl").write_text("".join(lines[:40]) + "{not json}\n" + "".join(lines[41:]) + lines[41][:25])
    metrics = (damaged / "metrics.jsonl").read_text()
    (damaged / "metrics.jsonl").write_text(metrics[:len(metrics) - 40])  # the last step cut mid-line
    browser.reset()
    browser.open(export(damaged, tmp_path / "damaged.html").as_uri())
    notes = browser.evaluate("document.getElementById('notes').innerText")
    for expected in ("damaged line", "unfinished last line", "best.json is missing",
                     "buffer cannot be read (checkpoints/step-000008/buffer.json is missing)"):
        assert expected in notes, notes
    check_page(browser, tmp_path / "damaged.png", DISCOVERY_PLOTS)


class StubPolicy:
    """What the trainer asks of a policy, minus the learning: a subclass says what it answers."""

    kind = "embedded"

    def logprobs(self, samples):
        return [np.zeros(len(s.completion_ids)) for s in samples]

    def update(self, items, loss):
        return {"loss": 0.0}

    def save(self, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)

    def load(self, directory: Path) -> None:
        pass


class FlipPolicy(StubPolicy):
    """A stand-in for a learned LABS policy, so the real trainer writes a 10^5-evaluation run in
    seconds: each answer flips one to three random signs of the sequence it is shown."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def sample(self, prompts, n, *, temperature, max_new_tokens):
        from ttd_agent.policy.base import Sample

        groups = []
        for prompt in prompts:
            group = []
            for _ in range(n):
                signs = np.frombuffer(prompt.encode(), dtype=np.uint8).copy()
                flip = self.rng.choice(signs.size, size=int(self.rng.integers(1, 4)), replace=False)
                signs[flip] = np.where(signs[flip] == ord("+"), ord("-"), ord("+"))
                text = signs.tobytes().decode()
                group.append(Sample(prompt=prompt, text=text, prompt_ids=[], completion_ids=[0] * len(text),
                                    logprobs=np.zeros(len(text))))
            groups.append(group)
        return groups


def test_page_of_a_hundred_thousand_evaluations_loads_in_two_seconds(tmp_path: Path) -> None:
    from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

    config = DiscoveryConfig(env="ttd/LABS-v0", model="embedded", steps=98, groups_per_step=16, group_size=64,
                             run_dir=str(tmp_path / "big"), checkpoint_every=49, plot_every=1000, eval_workers=1)
    trainer = DiscoveryTrainer(config, policy=FlipPolicy())
    trainer.run()
    assert trainer.samples >= 100_000
    page = export(tmp_path / "big", tmp_path / "big.html")
    chrome = Browser()  # a fresh browser: nothing of Plotly is compiled or cached yet
    try:
        chrome.open(page.as_uri(), timeout=60)
        loaded_ms = float(chrome.evaluate("document.body.dataset.loadedMs"))  # the first screen drawn
        drawn_ms = float(chrome.evaluate("document.body.dataset.drawnMs"))  # every section drawn
        assert chrome.errors() == []
        assert sorted(chrome.evaluate("Object.keys(Plotly.PlotSchema.get().traces)")) == sorted(PAGE_TRACES)
        assert chrome.evaluate("document.querySelectorAll('#plot-tree path.point').length") > 100
        assert chrome.evaluate("document.querySelectorAll('#diff .chg, #diff .add, #diff .del').length") > 0
        drawn = dict(chrome.evaluate(DRAWN_PLOTS))
        assert all(drawn.get(name, 0) > 0 for name in DISCOVERY_PLOTS), drawn
    finally:
        chrome.close()
    print(f"first screen drawn at {loaded_ms:.0f} ms, every section at {drawn_ms:.0f} ms")
    assert loaded_ms < 2000, f"the page took {loaded_ms:.0f} ms to show its first screen drawn"
    assert drawn_ms < 3000, f"the page took {drawn_ms:.0f} ms to draw every section"


WHOLE_SQUARE = '#include <cstdio>\nint main() { std::puts("4\\n0 0\\n100000 0\\n100000 100000\\n0 100000"); }\n'
"""An AHC039 net around every fish: valid, score 1 (as many mackerels as sardines caught)."""


class ProgramPolicy(StubPolicy):
    """A stand-in for an LLM on AHC039: in each group, one answer is the shipped baseline program
    (the best axis-parallel rectangle) and the others a net around the whole square, so the real
    trainer and judge make a run whose best state is a program, with rewards that differ."""

    kind = "llm"

    def sample(self, prompts, n, *, temperature, max_new_tokens):
        from ttd_agent.policy.base import Sample
        from ttd_envs.problems.ahc.common import data_dir

        programs = [(data_dir("solutions") / "ahc039_rectangle.cpp").read_text()] + [WHOLE_SQUARE] * (n - 1)
        return [[Sample(prompt=prompt, text=f"```cpp\n{code}```", prompt_ids=[0], completion_ids=[0] * 8,
                        logprobs=np.zeros(8)) for code in programs] for prompt in prompts]


@pytest.fixture(scope="module")
def ahc_run(tmp_path_factory) -> tuple[Path, Path]:
    """A real AHC039 run on 2 tests: (run directory, the judge's binary cache)."""
    from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

    root = tmp_path_factory.mktemp("ahc")
    config = DiscoveryConfig(env="ttd/AHC039-v0", env_kwargs={"num_tests": 2, "workers": 1, "cache_dir": str(root / "cpp")},
                             model="stub", steps=1, groups_per_step=1, group_size=2, run_dir=str(root / "run"),
                             plot_every=1000, eval_workers=1)
    trainer = DiscoveryTrainer(config, policy=ProgramPolicy())
    trainer.run()
    assert trainer.best is not None and trainer.best.code and trainer.best.score > 1
    return root / "run", root / "cpp"


NET = "document.getElementById('plot-drawing').data.find((t) => t.name.startsWith('net'))"


def check_fishing_drawing(browser: Browser, shot: Path) -> None:
    """The best state's net is drawn over both schools of fish, the caption names the test it was run on, and
    the polygon drawn catches what the caption's score says (rescored here with the judge's own geometry)."""
    from ttd_envs.problems.ahc import ahc039
    from ttd_envs.problems.ahc.common import data_dir

    assert browser.evaluate("document.querySelectorAll('#plot-drawing path.point').length") == 10_000
    lines = browser.evaluate("[...document.querySelectorAll('#plot-drawing g.trace path.js-line')].map(p => p.getAttribute('d'))")
    assert len(lines) == 1 and lines[0].count("L") >= 4, lines  # the closed rectangle
    assert browser.evaluate("document.querySelectorAll('#plot-drawing g.trace path.js-fill').length") == 1
    xs, ys = browser.evaluate(f"[{NET}.x, {NET}.y]")
    assert len(xs) == 5 and (xs[0], ys[0]) == (xs[-1], ys[-1])  # 4 vertices, closed
    caption = browser.evaluate("document.getElementById('drawing-caption').textContent")
    assert "running this program on test 0 (seed 0, the shipped input ahc039/inputs/0000.txt)" in caption, caption
    points, n = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
    net = ("4\n" + "".join(f"{x} {y}\n" for x, y in zip(xs[:4], ys[:4]))).encode()
    assert caption.endswith(f"score on that test {ahc039.polygon_score(points, n, net):.1f}"), caption
    check_page(browser, shot, DISCOVERY_PLOTS | {"plot-drawing"}, diff=False)


def test_an_ahc_run_draws_its_best_program_live_and_exported(browser, ahc_run, tmp_path: Path) -> None:
    """The served page shows "drawing..." or the drawing, never waits for it, and redraws when the
    viewer has run the best program; the offline export carries the drawing; the judge's binary is
    reused (nothing compiles again)."""
    run, cache = ahc_run
    binaries = {path: path.stat().st_mtime_ns for path in cache.glob("*.bin")}
    assert len(binaries) == 2  # the two programs the policy wrote
    viewer = cli("view", str(run), "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = viewer.stdout.readline().strip()
        browser.reset()
        browser.open(url)
        note = browser.evaluate("(document.getElementById('drawing-note') || {}).textContent || ''")
        assert note == "" or note.startswith("drawing..."), note
        browser.wait_for("document.getElementById('plot-drawing') && document.body.dataset.ready === '1'", timeout=60)
        check_fishing_drawing(browser, tmp_path / "ahc-live.png")
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)
    page = export(run, tmp_path / "ahc.html")
    browser.reset()
    with offline(browser):
        browser.open(page.as_uri())
        assert browser.requests() == [page.as_uri()], "the exported page fetched something"
        check_fishing_drawing(browser, tmp_path / "ahc.png")
    assert {path: path.stat().st_mtime_ns for path in cache.glob("*.bin")} == binaries


def test_a_slow_program_leaves_the_page_drawing_and_answering(browser, ahc_run, tmp_path: Path) -> None:
    """The best program sleeps 3 s before it answers: the served page shows "drawing...", the server
    answers at once meanwhile, and the picture replaces the note when the run of the program ends."""
    run = tmp_path / "slow"
    shutil.copytree(ahc_run[0], run)
    best = json.loads((run / "best.json").read_text())
    best["state"]["code"] = best["state"]["code"].replace("int main() {", "#include <unistd.h>\nint main() {\n    sleep(3);", 1)
    (run / "best.json").write_text(json.dumps(best))
    viewer = cli("view", str(run), "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = viewer.stdout.readline().strip()
        browser.reset()
        browser.open(url)
        assert browser.evaluate("document.getElementById('drawing-note').textContent").startswith("drawing...")
        started = time.monotonic()
        urllib.request.urlopen(url + "data.json", timeout=10).read()
        assert time.monotonic() - started < 2, "the server waited for the program"
        browser.wait_for("document.getElementById('drawing-caption') && document.body.dataset.ready === '1'", timeout=90)
        assert browser.evaluate("document.getElementById('drawing-note')") is None
        assert browser.evaluate("document.querySelectorAll('#plot-drawing g.trace path.js-line').length") == 1
        assert browser.errors() == []
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)
