"""Evaluate on a Ray cluster: the local executor's contract, spread over many machines.

`RayExecutor` keeps a pool of Ray actors; each holds one copy of the problem, built once in its
worker process, so its sandbox (the warm zygote) stays up between evaluations. Every program still
runs inside that sandbox on the worker's node: the actor itself is trusted ttd code that only
dispatches. Each actor reserves the problem's resources (`cpus_per_eval`, and `gpus_per_eval`
for kernel problems) and runs one evaluation at a time, so at most `workers` are in flight.

Faults are rollouts, never crashes. A worker process or node that dies mid-evaluation, a task
killed by Ray's memory monitor, a lost object: the evaluation becomes `Evaluation.failure` with
the reason (or is retried, at most `retries` times, which is safe where evaluation is
deterministic), the dead actor is replaced, and the batch completes. An evaluation past its
deadline is stopped by killing its actor (and with it the sandbox). Jobs nobody can take (the
cluster lost every node that fits) fail once no actor has made progress for a deadline.

`judge_across_cluster` fans one C++ program's tests (AHC: 150) out over the cluster's CPUs.
Ray is an optional dependency (the `[ray]` extra); ttd imports without it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import itertools
import logging
import math
import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttd_agent.executor import _guarded
from ttd_envs.core.judge import JudgeBudget, JudgeReport, TestCase, TestResult, Verdict
from ttd_envs.core.problem import Evaluation, Problem
from ttd_envs.core.state import State

log = logging.getLogger(__name__)

RAY_INSTALL = 'pip install "ttd[ray]" (or pip install "ray>=2.9") on the driver and on every worker node'


def import_ray() -> Any:
    """Ray, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"--executor ray needs Ray: {RAY_INSTALL}") from exc
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at `address` ("auto", "host:port", or None for $RAY_ADDRESS, else a new
    local cluster). True when this call initialised Ray in this process, so the executor shuts it
    down when it closes: a local cluster it started stops; from a remote one it only disconnects."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return True


class ProblemHost:
    """One Ray actor's state: a problem built once in the worker process, its sandbox kept warm."""

    def __init__(self, problem: Problem, fan_out_tests: bool = False) -> None:
        self.problem = problem
        if fan_out_tests:
            route_judging_to_cluster(problem)

    def node(self) -> str:
        """The id of the node this actor landed on (answered once it is ready)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def evaluate(self, action: str, state: State) -> Evaluation:
        return _guarded(self.problem, action, state)

    def close(self) -> None:
        close = getattr(self.problem, "close", None)
        if callable(close):
            close()


@dataclass
class _Job:
    action: str
    state: State
    future: cf.Future[Evaluation]
    attempts: int = 0


@dataclass
class _Slot:
    """One actor and what it is doing."""

    actor: Any
    node: str | None = None
    job: _Job | None = None
    started: float = 0.0
    ref: Any = None


class RayExecutor:
    """`evaluate(jobs)` and `submit(action, state)` on a pool of `workers` Ray actors.

    `address`: "auto", "host:port" or None (see `connect`). `retries`: how often an evaluation lost
    to the infrastructure (not to its program) is run again before it becomes a failed rollout.
    `cpus_per_eval`/`gpus_per_eval` default to the problem's `TrainerDefaults`.
    `fan_out_tests`: AHC problems judge each program's tests across the cluster.
    """

    def __init__(self, problem: Problem, workers: int = 2, timeout_s: float = 120.0, *,
                 address: str | None = None, retries: int = 0, cpus_per_eval: float | None = None,
                 gpus_per_eval: float | None = None, fan_out_tests: bool = False) -> None:
        if workers < 1:
            raise ValueError(f"--eval-workers must be >= 1, got {workers}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.problem, self.workers, self.timeout_s, self.retries = problem, workers, timeout_s, retries
        defaults = getattr(problem, "defaults", None)
        self.cpus = float(cpus_per_eval if cpus_per_eval is not None else getattr(defaults, "cpus_per_eval", 1))
        if fan_out_tests:  # the host only compiles and waits; holding CPUs would starve its own test tasks
            self.cpus = 0.0
        self.gpus = float(gpus_per_eval if gpus_per_eval is not None else getattr(defaults, "gpus_per_eval", 0))
        self.fan_out_tests = fan_out_tests
        self.ray = import_ray()
        self._owns_ray = connect(address)
        try:
            self._check_fits()
        except ValueError:
            self._stop_own_ray()
            raise
        self._host = self.ray.remote(ProblemHost).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD")
        self._problem_ref = self.ray.put(problem)  # shipped once, however often an actor is replaced
        self._start_failures = 0
        self._broken: str | None = None
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._pending: deque[_Job] = deque()
        self._slots: list[_Slot] = []
        self._nodes_seen: set[str] = set()
        self._last_progress = time.monotonic()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    # -- the public contract ---------------------------------------------------------------------
    def submit(self, action: str, state: State) -> cf.Future[Evaluation]:
        """Queue one evaluation; the future always resolves to an Evaluation (never an exception)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this RayExecutor is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="ttd-ray-dispatch", daemon=True)
                self._thread.start()
        future: cf.Future[Evaluation] = cf.Future()
        self._events.put(("job", _Job(action, state, future)))
        return future

    def gather(self, futures: Sequence[cf.Future[Evaluation]]) -> list[Evaluation]:
        """The Evaluation of each future, in order. Deadlines and faults were already turned into
        failed Evaluations by the dispatcher, so this only waits."""
        return [future.result() for future in futures]

    def evaluate(self, jobs: Sequence[tuple[str, State]]) -> list[Evaluation]:
        """One Evaluation per (action, state), in order. Never raises because of a job."""
        return self.gather([self.submit(action, state) for action, state in jobs])

    def busy_nodes(self) -> list[str]:
        """Node ids of the actors evaluating right now (one entry per evaluation in flight)."""
        return [slot.node for slot in list(self._slots) if slot.job is not None and slot.node is not None]

    def nodes_used(self) -> set[str]:
        """Ids of the nodes where evaluations have finished (for tests and logs)."""
        return set(self._nodes_seen)

    def close(self) -> None:
        """Stop the actors (and with them their sandboxes); stop Ray if this executor started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            self._events.put(("stop", None))
            self._thread.join(timeout=30)
        self._stop_own_ray()

    def _stop_own_ray(self) -> None:
        if self._owns_ray:
            self.ray.shutdown()
            self._owns_ray = False

    # -- set-up ------------------------------------------------------------------------------------
    def _check_fits(self) -> None:
        """Refuse at once a request no node of the cluster can ever satisfy."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= self.cpus and
                n["Resources"].get("GPU", 0) >= self.gpus]
        if not fits:
            largest = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
            raise ValueError(
                f"no node of the Ray cluster has {self.cpus:g} CPUs and {self.gpus:g} GPUs for one evaluation "
                f"(largest node: {largest:g} CPUs); start nodes with more (ray start --num-cpus/--num-gpus) or "
                "lower cpus_per_eval")

    def _new_slot(self) -> _Slot:
        slot = _Slot(self._host.remote(self._problem_ref, self.fan_out_tests))
        self._watch(slot.actor.node.remote(), ("ready", slot))
        return slot

    def _watch(self, ref: Any, tag: tuple[str, _Slot]) -> None:
        ref.future().add_done_callback(lambda _: self._events.put((tag[0], (tag[1], ref))))

    # -- the dispatcher thread ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Owns every actor: hands jobs to ready actors, collects results, handles faults and deadlines.
        Should it break itself, every waiting future still gets a failed Evaluation (nothing hangs)."""
        try:
            self._dispatch_loop()
        except Exception as exc:  # noqa: BLE001 - a bug here must not hang the trainer
            log.exception("the Ray dispatcher stopped")
            self._broken = f"the Ray dispatcher stopped: {type(exc).__name__}: {exc}"
            for slot in self._slots:
                if slot.job is not None and not slot.job.future.done():
                    slot.job.future.set_result(Evaluation.failure(self._broken))
                    slot.job = None
            with contextlib.suppress(Exception):
                self._shutdown_actors()
            while True:  # fail what is queued now and whatever is submitted later
                self._fail_pending(self._broken)
                kind, payload = self._events.get()
                if kind == "stop":
                    return
                if kind == "job":
                    self._pending.append(payload)

    def _dispatch_loop(self) -> None:
        self._slots = [self._new_slot() for _ in range(self.workers)]
        idle: deque[_Slot] = deque()
        while True:
            try:
                kind, payload = self._events.get(timeout=self._next_wakeup())
            except queue.Empty:
                kind, payload = "tick", None
            if kind == "stop":
                break
            if kind == "job":
                self._pending.append(payload)
                if self._broken is not None:
                    self._fail_pending(self._broken)
            elif kind == "ready":
                slot, ref = payload
                if slot in self._slots:
                    self._on_ready(slot, ref, idle)
            elif kind == "done":
                slot, ref = payload
                if slot in self._slots and slot.ref is ref:
                    self._on_done(slot, ref, idle)
            self._expire(idle)
            while self._pending and idle:
                self._start(idle.popleft(), self._pending.popleft())
        self._shutdown_actors()

    def _next_wakeup(self) -> float | None:
        deadlines = [slot.started + self.timeout_s for slot in self._slots if slot.job is not None]
        if self._pending:
            deadlines.append(self._last_progress + self._stall_s())
        return None if not deadlines else max(0.01, min(deadlines) - time.monotonic())

    def _stall_s(self) -> float:
        return self.timeout_s + 60.0

    def _on_ready(self, slot: _Slot, ref: Any, idle: deque[_Slot]) -> None:
        try:
            slot.node = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._start_failures += 1
            if self._start_failures > 2 * self.workers:  # the problem cannot be built there: stop trying
                self._slots.remove(slot)
                self._broken = f"no Ray evaluation actor could start ({_reason(exc)})"
                self._fail_pending(self._broken)
                return
            log.warning("a Ray evaluation actor failed to start (%s); replacing it", _reason(exc))
            self._replace(slot)
            return
        self._start_failures = 0
        self._last_progress = time.monotonic()
        idle.append(slot)

    def _start(self, slot: _Slot, job: _Job) -> None:
        job.attempts += 1
        slot.job, slot.started = job, time.monotonic()
        slot.ref = slot.actor.evaluate.remote(job.action, job.state)
        self._watch(slot.ref, ("done", slot))

    def _on_done(self, slot: _Slot, ref: Any, idle: deque[_Slot]) -> None:
        job, slot.job, slot.ref = slot.job, None, None
        assert job is not None
        self._last_progress = time.monotonic()
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # the actor lives; the call itself broke
            idle.append(slot)
            job.future.set_result(Evaluation.failure(f"evaluation failed on the Ray worker: {_reason(exc)}"))
            return
        except self.ray.exceptions.RayError as exc:  # the worker, its node or an object is gone
            self._replace(slot)
            self._retry_or_fail(job, f"the Ray worker evaluating this was lost ({_reason(exc)})")
            return
        if slot.node is not None:
            self._nodes_seen.add(slot.node)
        idle.append(slot)
        job.future.set_result(result)

    def _retry_or_fail(self, job: _Job, reason: str) -> None:
        if job.attempts <= self.retries:
            log.warning("%s; retrying (attempt %d of %d)", reason, job.attempts + 1, self.retries + 1)
            self._pending.appendleft(job)
        else:
            job.future.set_result(Evaluation.failure(reason))

    def _expire(self, idle: deque[_Slot]) -> None:
        now = time.monotonic()
        for slot in list(self._slots):
            if slot.job is not None and now - slot.started > self.timeout_s:
                job = slot.job
                self._replace(slot)  # killing the actor ends its sandbox and the program in it
                self._last_progress = now  # its replacement gets the time to start
                job.future.set_result(Evaluation.failure(
                    f"evaluation did not finish within its {self.timeout_s:g} s deadline"))
        if self._pending and now - self._last_progress > self._stall_s():
            self._fail_pending(f"no Ray worker could take this evaluation for {self._stall_s():g} s (the cluster "
                               f"has no live node with {self.cpus:g} free CPUs and {self.gpus:g} GPUs)")
            self._last_progress = now

    def _fail_pending(self, reason: str) -> None:
        while self._pending:
            self._pending.popleft().future.set_result(Evaluation.failure(reason))

    def _replace(self, slot: _Slot) -> None:
        self.ray.kill(slot.actor)
        self._slots[self._slots.index(slot)] = self._new_slot()

    def _shutdown_actors(self) -> None:
        for slot in self._slots:
            if slot.job is not None:
                slot.job.future.set_result(Evaluation.failure("the executor was closed before this evaluation ended"))
        closing = [slot.actor.close.remote() for slot in self._slots if slot.node is not None]
        try:
            self.ray.wait(closing, num_returns=len(closing), timeout=10)
        except self.ray.exceptions.RayError:
            pass
        for slot in self._slots:
            self.ray.kill(slot.actor)
        self._fail_pending("the executor was closed before this evaluation started")


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error, which names what happened (node died, OOM, object lost)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip(": ")


# -- the C++ judge's tests across the cluster ---------------------------------------------------------
_WORKER_PROBLEMS: dict[str, Any] = {}
"""Per Ray worker process: the problems its judge tasks use, so their sandboxes stay warm."""


def _problem_in_worker(token: str, problem: Any) -> Any:
    cached = _WORKER_PROBLEMS.get(token)
    if cached is None:
        problem.workers = 1  # a task runs its slice one test at a time: one warm sandbox runner is enough
        _WORKER_PROBLEMS[token] = cached = problem
    return cached


def _install_binary(judge: Any, source: str, key: str, binary: bytes) -> Path:
    """The compiled program on this node: the shipped bytes when this node builds the same binary
    (same compiler, flags and CPU: equal cache keys), else compiled here (-march=native differs)."""
    if judge.cache_key(source) != key:
        compiled = judge.compile(source)
        if compiled.binary is None:
            raise RuntimeError(f"the program compiled on one node but not on this one: {compiled.error}")
        return compiled.binary
    target = judge.cache_dir / (key + ".bin")
    if not target.is_file():
        judge.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=judge.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(binary)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    return target


def judge_chunk(token: str, problem: Any, source: str, key: str, binary: bytes, tests: list[TestCase],
                stop_early: bool, budget: JudgeBudget) -> list[TestResult]:
    """Runs on a Ray worker: one slice of the tests, in order, each in this node's sandbox, within
    the whole evaluation's `budget` (the local judge's TOTAL_TLE)."""
    problem = _problem_in_worker(token, problem)
    judge = problem.judge
    path = _install_binary(judge, source, key, binary)
    results: list[TestResult] = []
    for test in tests:
        if stop_early and any(not r.accepted for r in results):
            results.append(TestResult(test.name, Verdict.SKIPPED, message="not run: an earlier test failed"))
            continue
        results.append(judge.run_within(budget, path, test, problem.check))
    return results


def judge_across_cluster(problem: Any, source: str, *, chunks: int | None = None) -> JudgeReport:
    """Compile `source` here, then judge `problem.tests()` as `chunks` Ray tasks (default: one per
    CPU of the cluster), each on one CPU. Verdicts and scores are those of the local judge: a test's
    run does not depend on where it runs. With `stop_early`, each chunk skips its tests after its
    own first failure, so SKIPPED counts may differ from a local run; the first failure does not.
    The judge's wall-clock budget (`CppJudge.total_budget_s`, with one lane per chunk) starts once
    the program is compiled and bounds every chunk, as it bounds the local judge's threads."""
    ray = import_ray()
    started = time.perf_counter()
    judge = problem.judge
    compiled = judge.compile(source)
    report = JudgeReport(compiled.error, compile_s=compiled.elapsed_s, cached=compiled.cached)
    if compiled.binary is None:
        report.elapsed_s = time.perf_counter() - started
        return report
    tests = problem.tests()
    chunks = chunks or max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = math.ceil(len(tests) / chunks)
    slices = [tests[i:i + size] for i in range(0, len(tests), size)]
    token = f"{type(problem).__name__}:{id(problem)}:{os.getpid()}"
    shared = [ray.put(x) for x in (problem, compiled.binary.read_bytes())]
    task = ray.remote(judge_chunk).options(num_cpus=1, max_retries=1, scheduling_strategy="SPREAD")
    budget = judge.start_budget(len(tests), len(slices))
    refs = [task.remote(token, shared[0], source, judge.cache_key(source), shared[1], part, problem.stop_early, budget)
            for part in slices]
    try:
        report.results = list(itertools.chain.from_iterable(ray.get(refs)))
    except ray.exceptions.RayError as exc:
        raise RuntimeError(f"judging across the Ray cluster failed: {_reason(exc)}") from exc
    report.elapsed_s = time.perf_counter() - started
    return report


def route_judging_to_cluster(problem: Any) -> None:
    """Make an AHC problem judge every program across the cluster. `AHCProblem.evaluate` judges
    through its one `judge_source(source)` method; this instance's calls go to the cluster instead.
    A failure of the cluster itself reaches `evaluate` as a RuntimeError, which it reports as a
    failed rollout ("the judge could not run")."""
    if not callable(getattr(problem, "judge_source", None)):
        raise ValueError(f"{type(problem).__name__} has no C++ judge (judge_source) to fan out")
    shipped = copy.copy(problem)  # taken before the change below: what the judge tasks receive
    problem.judge_source = lambda source: judge_across_cluster(shipped, source)
