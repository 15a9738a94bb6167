"""The Ray executor on a real two-node Ray cluster started here (a head and a second raylet on this
machine, one CPU each): the trainer through it gives the local executor's rollouts and best state,
a killed node turns its evaluations into failed rollouts, and nothing is left running afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import descendants, process_table

from ttd_agent.executor import Executor
from ttd_agent.policy.base import LossConfig, Sample, TrainItem
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.core.judge import Verdict
from ttd_envs.core.problem import Evaluation, TrainerDefaults
from ttd_envs.core.state import State
from ttd_envs.registration import make_problem

ray = pytest.importorskip("ray", reason="the Ray tests need the [ray] extra (pip install 'ray>=2.9')")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow


def _descendants() -> dict[int, str]:
    """pid -> command line of every live process below this one (Ray's daemons, workers, sandboxes)."""
    table = process_table()
    live = {}
    for pid in descendants(os.getpid(), table):
        if pid in table and not table[pid].zombie:
            try:
                live[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return live


def _left_after(before: dict[int, str], wait_s: float = 20.0) -> dict[int, str]:
    deadline = time.monotonic() + wait_s
    while (left := {p: c for p, c in _descendants().items() if p not in before}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


class TwoNodes:
    """The shared cluster: the head (where this driver is connected) and one worker node."""

    def __init__(self) -> None:
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, connect=True)
        self.worker = self.add_worker()
        self.worker_alive = True

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        return node

    def kill_worker(self) -> None:
        """What a machine failure looks like: the node's raylet and every process on it die at once."""
        self.cluster.remove_node(self.worker, allow_graceful=False)
        self.worker_alive = False

    def kill_worker_once_busy(self, executor: Any, timeout_s: float = 60.0) -> threading.Thread:
        """In the background: kill the worker node as soon as an evaluation runs on it."""

        def watch() -> None:
            deadline = time.monotonic() + timeout_s
            while self.worker.node_id not in executor.busy_nodes() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.kill_worker()

        thread = threading.Thread(target=watch)
        thread.start()
        return thread

    def worker_daemons_running(self) -> list[int]:
        """Pids of the worker node's own daemons (raylet, ...) that are still running."""
        return [info.process.pid for infos in self.worker.all_processes.values() for info in infos
                if info.process.poll() is None]


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodes]:
    before = _descendants()
    nodes = TwoNodes()
    yield nodes
    ray.shutdown()
    nodes.cluster.shutdown()
    left = _left_after(before)
    assert not left, f"processes left after the Ray cluster was torn down: {left}"


@pytest.fixture
def two_nodes(cluster: TwoNodes) -> TwoNodes:
    """The cluster with its worker node alive (a fault test may have killed it)."""
    if not cluster.worker_alive:
        cluster.worker, cluster.worker_alive = cluster.add_worker(), True
    return cluster


class ProgramMenu:
    """A real policy for program envs that needs no model: each answer is drawn, with its own seeded
    generator, from a fixed menu of programs. It never learns (runs use update=False)."""

    kind = "llm"

    def __init__(self, programs: Sequence[str], seed: int = 0) -> None:
        self.programs, self.rng = list(programs), np.random.default_rng(seed)

    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int) -> list[list[Sample]]:
        return [[self._draw(prompt) for _ in range(n)] for prompt in prompts]

    def _draw(self, prompt: str) -> Sample:
        text = self.programs[int(self.rng.integers(len(self.programs)))]
        return Sample(prompt=prompt, text=text, prompt_ids=[], completion_ids=[0], logprobs=np.zeros(1))

    def logprobs(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [s.logprobs for s in samples]

    def update(self, items: Sequence[TrainItem], loss: LossConfig) -> dict[str, float]:
        return {}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rng.json").write_text(json.dumps(self.rng.bit_generator.state))

    def load(self, directory: Path) -> None:
        self.rng.bit_generator.state = json.loads((directory / "rng.json").read_text())


def packing(scale: float, sleep_s: float = 0.0) -> str:
    """26 circles on a 6 x 5 grid with radius scale/12: valid up to scale 1, overlapping above."""
    return ("```python\nimport time\nimport numpy as np\n\ndef run_packing():\n"
            f"    time.sleep({sleep_s})\n"
            "    xs, ys = (np.arange(6) + 0.5) / 6, (np.arange(5) + 0.5) / 5\n"
            "    centers = np.array([(x, y) for y in ys for x in xs])[:26]\n"
            f"    radii = np.full(26, {scale} / 12)\n"
            "    return centers, radii, float(radii.sum())\n```")


MENU = [packing(s) for s in (0.5, 0.8, 0.9, 1.0, 1.3)]
PACKING = {"env": "ttd/CirclePacking26-v0", "env_kwargs": {"budget_s": 5, "timeout_s": 10}, "model": "menu",
           "update": False}


def _run(tmp: Path, name: str, executor: str, policy: Any = None, **config: Any) -> DiscoveryTrainer:
    trainer = DiscoveryTrainer(DiscoveryConfig(run_dir=str(tmp / name), executor=executor, **config), policy=policy)
    trainer.run()
    return trainer


def _written(trainer: DiscoveryTrainer) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What a run leaves that must not depend on where it evaluated: every rollout and the best state.
    State ids are random (uuid4) in every run, so each becomes the order in which it first appears:
    equal results then also mean the same search tree."""
    run = trainer.run_dir
    rollouts, best = run.read(run.rollouts_file), json.loads(run.best_file.read_text())
    order: dict[str, int] = {}

    def number(state_id: str | None) -> int | None:
        return None if state_id is None else order.setdefault(state_id, len(order))

    for row in rollouts:
        row["parent"], row["child"] = number(row["parent"]), number(row["child"])
    state = best["state"]
    state["lineage"] = [number(i) for i in state["lineage"]]
    state["parent_id"], state["id"] = number(state["parent_id"]), number(state["id"])
    return rollouts, best


def test_labs_through_ray_writes_the_local_rollouts_and_best(two_nodes: TwoNodes, tmp_path: Path) -> None:
    config = {"env": "ttd/LABS-v0", "env_kwargs": {"n": 16}, "steps": 3, "groups_per_step": 2, "group_size": 8,
              "embedded": {"d_model": 32, "n_layer": 1, "n_head": 2}, "edit_prior": False, "seed": 3}
    local = _run(tmp_path, "local", "thread", **config)
    remote = _run(tmp_path, "ray", "ray", **config)
    assert _written(remote) == _written(local)
    assert len(remote.executor.nodes_used()) == 2, "the evaluations should have used both nodes"


def test_a_program_env_through_ray_writes_the_local_rollouts_and_best(two_nodes: TwoNodes, tmp_path: Path) -> None:
    config = {**PACKING, "steps": 2, "groups_per_step": 2, "group_size": 4, "seed": 1}
    local = _run(tmp_path, "local", "thread", ProgramMenu(MENU), **config)
    remote = _run(tmp_path, "ray", "ray", ProgramMenu(MENU), **config)
    rollouts, best = _written(remote)
    assert (rollouts, best) == _written(local)
    assert {r["valid"] for r in rollouts} == {True, False}  # the menu's scale 1.3 sticks out of the square
    assert best["state"]["score"] == pytest.approx(26 / 12)  # scale 1.0: the best of the menu
    assert len(remote.executor.nodes_used()) == 2


def test_a_node_killed_mid_step_gives_failed_rollouts_and_the_step_completes(two_nodes: TwoNodes,
                                                                             tmp_path: Path) -> None:
    """Every program sleeps 2 s; the worker node dies while it evaluates one of them."""
    config = {**PACKING, "steps": 1, "groups_per_step": 2, "group_size": 2, "seed": 0, "eval_workers": 2}
    trainer = DiscoveryTrainer(DiscoveryConfig(run_dir=str(tmp_path / "fault"), executor="ray", **config),
                               policy=ProgramMenu([packing(1.0, sleep_s=2.0)]))
    killer = two_nodes.kill_worker_once_busy(trainer.executor)
    started = time.monotonic()
    try:
        trainer.run()
    finally:
        killer.join()
    elapsed = time.monotonic() - started
    rollouts = trainer.run_dir.read(trainer.run_dir.rollouts_file)
    lost = [r for r in rollouts if not r["valid"]]
    assert len(rollouts) == 4 and trainer.step == 1
    assert lost and all("Ray worker evaluating this was lost" in r["error"] for r in lost), rollouts
    assert any(r["valid"] for r in rollouts), "the head node's evaluations should have finished"
    assert elapsed < 60, f"the step took {elapsed:.0f} s after the node died"
    assert not two_nodes.worker_daemons_running()


def test_a_lost_deterministic_evaluation_is_retried_elsewhere(two_nodes: TwoNodes) -> None:
    problem = make_problem("ttd/CirclePacking26-v0", budget_s=5, timeout_s=10)
    executor = Executor(problem, 2, 30.0, kind="ray", retries=1)
    try:
        jobs = [(packing(1.0, sleep_s=1.5), State()) for _ in range(2)]
        futures = [executor.submit(action, state) for action, state in jobs]
        two_nodes.kill_worker_once_busy(executor).join()
        results = executor.gather(futures)
    finally:
        executor.close()
        problem.close()
    assert [r.valid for r in results] == [True, True], [r.error for r in results]
    assert [r.score for r in results] == pytest.approx([26 / 12] * 2)


def test_an_evaluation_past_its_deadline_fails_and_the_pool_recovers(two_nodes: TwoNodes) -> None:
    """The deadline (8 s, above a cold sandbox's start under load) kills a program that sleeps 60 s."""
    problem = make_problem("ttd/CirclePacking26-v0", budget_s=60, timeout_s=90)
    executor = Executor(problem, 2, 8.0, kind="ray")
    try:
        slow, fast = executor.evaluate([(packing(1.0, sleep_s=60), State()), (packing(0.5), State())])
        again = executor.evaluate([(packing(0.8), State())])
    finally:
        executor.close()
        problem.close()
    assert not slow.valid and "8 s deadline" in slow.error
    assert fast.valid and again[0].valid and again[0].score == pytest.approx(0.8 * 26 / 12)


def test_a_request_no_node_can_hold_is_refused_at_once(two_nodes: TwoNodes) -> None:
    problem = make_problem("ttd/LABS-v0", n=8)
    with pytest.raises(ValueError, match="no node of the Ray cluster has 4 CPUs"):
        Executor(problem, 2, 10.0, kind="ray", cpus_per_eval=4)


RECTANGLE = (Path(__file__).resolve().parent.parent / "ttd_envs/data/ahc/solutions/ahc039_rectangle.cpp").read_text()
GARBAGE = '#include <cstdio>\nint main() { std::puts("not a number"); }\n'  # a wrong answer on every test


def test_the_ahc_judge_fanned_out_gives_the_local_verdicts_and_reward(two_nodes: TwoNodes) -> None:
    """12 tests of one program as Ray tasks on both nodes: the same per-test scores as judging here,
    and through the executor (fan_out_tests) the same Evaluation as the local problem gives."""
    from ttd_agent.ray_executor import judge_across_cluster

    problem = make_problem("ttd/AHC039-v0", num_tests=12, workers=2)
    executor = Executor(problem, 1, 120.0, kind="ray", fan_out_tests=True)
    try:
        local = problem.judge_source(RECTANGLE)
        spread = judge_across_cluster(problem, RECTANGLE, chunks=4)
        garbage_here, garbage_spread = problem.judge_source(GARBAGE), judge_across_cluster(problem, GARBAGE, chunks=4)
        answer = f"```cpp\n{RECTANGLE}\n```"
        remote, = executor.evaluate([(answer, State())])
        here = problem.evaluate(answer, State())
    finally:
        executor.close()
        problem.close()
    assert local.accepted and spread.accepted
    assert [(r.name, r.verdict, r.score) for r in spread.results] == [(r.name, r.verdict, r.score) for r in local.results]
    assert remote.valid and (remote.reward, remote.score) == (here.reward, here.score)
    assert garbage_spread.first_failure.name == garbage_here.first_failure.name == "0000"
    assert garbage_spread.first_failure.message == garbage_here.first_failure.message


def test_the_ahc_judge_fanned_out_keeps_the_whole_judge_budget(two_nodes: TwoNodes) -> None:
    """Each test sleeps 1.5 s, within its own 3 s wall limit; two chunks of 4 tests need 6 s each
    against a 4 s budget for the whole evaluation: each chunk's third test is cut (TOTAL_TLE), as
    in the local judge, instead of every test passing after 6 s."""
    from ttd_agent.ray_executor import judge_across_cluster

    problem = make_problem("ttd/AHC039-v0", num_tests=8, workers=1, cpu_limit_s=0.5, wall_limit_s=3.0,
                           total_wall_s=4.0)
    sleeper = "#include <unistd.h>\nint main() { usleep(1500000); return 0; }\n"  # empty output: valid, scores 1
    try:
        warm = judge_across_cluster(problem, "int main() { return 0; }\n", chunks=2)  # workers and sandboxes up
        report = judge_across_cluster(problem, sleeper, chunks=2)
    finally:
        problem.close()
    assert warm.accepted, warm.describe_failure()
    chunks = [report.results[:4], report.results[4:]]
    for chunk in chunks:
        verdicts = [r.verdict for r in chunk]
        spent = sum(r.wall_s for r in chunk)
        print(f"chunk verdicts {[v.value for v in verdicts]}; its tests took {spent:.2f} s against the 4 s budget")
        assert verdicts[0] is Verdict.AC and Verdict.TOTAL_TLE in verdicts, verdicts
        assert set(verdicts[2:]) <= {Verdict.TOTAL_TLE, Verdict.SKIPPED}, verdicts
        assert spent < 4.0 + 2.0  # the budget plus one sandbox start-up and tear-down under load (as locally)
    assert not report.accepted
    assert "judge time limit exceeded" in report.describe_failure() and "4 s" in report.describe_failure()


def test_the_driver_killed_mid_run_resumes_on_the_cluster(two_nodes: TwoNodes, tmp_path: Path) -> None:
    """`ttd-agent train --executor ray --ray-address ...` killed with SIGKILL after two steps: its
    actors go with it, and --resume on the same cluster finishes the run with contiguous steps."""
    root, run = Path(__file__).resolve().parents[1], tmp_path / "run"
    cluster = ["--ray-address", two_nodes.cluster.address]
    command = [sys.executable, "-m", "ttd_agent.cli", "train", "--env", "ttd/LABS-v0", "--env-arg", "n=16",
               "--steps", "30", "--groups-per-step", "2", "--group-size", "4", "--no-edit-prior",
               "--executor", "ray", *cluster, "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    driver = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ((run / "latest.json").exists() and json.loads((run / "latest.json").read_text())["step"] >= 2):
        assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed_at = json.loads((run / "latest.json").read_text())["step"]
    resume = [sys.executable, "-m", "ttd_agent.cli", "train", "--run-dir", str(run), "--resume",
              "--steps", str(killed_at + 2), *cluster]
    done = subprocess.run(resume, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, killed_at + 3))
    assert json.loads((run / "config.json").read_text())["executor"] == "ray"


CLOCK_BOUND = ("```python\nimport time\nimport numpy as np\n\ndef run_packing():\n"
               "    rng, end = np.random.default_rng(), time.perf_counter() + 0.02\n"
               "    x = rng.random()\n"
               "    while time.perf_counter() < end:  # a budget loop: how far it gets depends on the clock\n"
               "        x = rng.random()\n"
               "    xs, ys = (np.arange(6) + 0.5) / 6, (np.arange(5) + 0.5) / 5\n"
               "    centers = np.array([(x, y) for y in ys for x in xs])[:26]\n"
               "    return centers, np.full(26, (0.5 + 0.5 * x) / 12), 0.0\n```")


def test_a_clock_bound_program_has_the_same_distribution_and_sandbox_through_ray(two_nodes: TwoNodes) -> None:
    """A program whose outcome depends on its entropy and on the clock: 16 runs locally and 16
    through Ray are two samples of one distribution (two-sample Kolmogorov-Smirnov, p > 0.001),
    and on the worker node it ran under the same sandbox isolation as here."""
    from scipy.stats import ks_2samp

    problem = make_problem("ttd/CirclePacking26-v0", budget_s=5, timeout_s=10)
    jobs = [(CLOCK_BOUND, State())] * 16
    local, remote = Executor(problem, 2, 30.0), Executor(problem, 2, 30.0, kind="ray")
    try:
        runs = [executor.evaluate(jobs) for executor in (local, remote)]
    finally:
        local.close()
        remote.close()
        problem.close()
    here, there = [[e.score for e in evaluations] for evaluations in runs]
    assert None not in here + there
    assert len(set(here)) > 12 and len(set(there)) > 12, "the program should not repeat its outcome"
    assert ks_2samp(here, there).pvalue > 1e-3
    isolation = [{step for step in evaluations[0].details["sandbox"]["isolation"] if not step.startswith("private uid")}
                 for evaluations in runs]
    assert isolation[1] and isolation[0] == isolation[1]


class TimedOnGPU:
    """A problem whose evaluations each need a GPU to themselves; it records how many overlap."""

    name, summary, record = "TimedOnGPU", "evaluations that hold a GPU", None
    defaults = TrainerDefaults(model_kind="embedded", gpus_per_eval=1)

    def __init__(self) -> None:
        self.running, self.most, self.lock = 0, 0, threading.Lock()

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(reward=0.0, is_initial=True)

    def prompt(self, state: State) -> str:
        return "time a kernel"

    def evaluate(self, action: str, state: State) -> Evaluation:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return Evaluation(reward=1.0, valid=True, score=1.0)


def test_gpu_evaluations_run_one_at_a_time_locally_and_need_a_gpu_node_on_ray(two_nodes: TwoNodes) -> None:
    problem = TimedOnGPU()
    local = Executor(problem, 4, 10.0)
    try:
        assert all(e.valid for e in local.evaluate([("k", State())] * 6))
    finally:
        local.close()
    assert problem.most == 1
    with pytest.raises(ValueError, match="no node of the Ray cluster has 1 CPUs and 1 GPUs"):
        Executor(problem, 2, 10.0, kind="ray")


class DiesOnRequest:
    """A problem whose evaluator process exits when the answer says "die": a worker crash, or what
    Ray's memory monitor does to a worker it kills for memory."""

    name, summary, record = "DiesOnRequest", "an evaluator that takes its process down", None
    defaults = TrainerDefaults(model_kind="embedded")

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(reward=0.0, is_initial=True)

    def prompt(self, state: State) -> str:
        return "live or die"

    def evaluate(self, action: str, state: State) -> Evaluation:
        if action == "die":
            os._exit(1)
        return Evaluation(reward=float(len(action)), valid=True, score=float(len(action)))


def test_a_worker_process_that_dies_is_a_failed_rollout_and_the_pool_recovers(two_nodes: TwoNodes) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    executor = Executor(DiesOnRequest(), 2, 30.0, kind="ray")
    try:
        died, lived = executor.evaluate([("die", State()), ("live", State())])
        again = executor.evaluate([("again", State()), ("and again", State())])
    finally:
        executor.close()
    assert not died.valid and "the Ray worker evaluating this was lost" in died.error
    assert lived.valid and [e.reward for e in again] == [5.0, 9.0]
