"""Evaluate a batch of actions in parallel; a broken evaluation is a failed rollout, never a crash.

Two local executors share one contract, `evaluate(jobs) -> list[Evaluation]` in job order:
- "thread" (default): `workers` threads call `problem.evaluate`. Code-writing problems run each
  program in their sandbox, a separate process, so the threads only wait; pure-data problems
  (LABS) are cheap enough to score in the thread.
- "process": a pool of `workers` processes, each with its own copy of the problem (a Problem
  pickles without its sandbox and starts a fresh one where it lands). Use it when the trusted side
  of scoring is heavy Python (judges, metrics) and threads would contend for the GIL.
Every evaluation has a deadline (`timeout_s`, above the problem's own hard kill); one that raises,
hangs past it, or takes its worker process down becomes `Evaluation.failure` with the reason.

Streaming (to overlap evaluation with sampling): `submit(action, state)` starts one evaluation now
and returns a `Future`; `gather(futures)` waits for them, in order, with the same deadline and
failure rules as `evaluate` (which is `gather` over `submit`s). A trainer submits each completion
as soon as the sampler finishes it, and gathers once the last one is sampled. Any executor (the
Ray one too) offers `submit`, `gather`, `evaluate` and `close` with these meanings.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from ttd_envs.core.problem import Evaluation, Problem
from ttd_envs.core.state import State

log = logging.getLogger(__name__)

_WORKER_PROBLEM: Any = None


def _init_worker(problem: Problem) -> None:
    global _WORKER_PROBLEM
    _WORKER_PROBLEM = problem


def _evaluate_in_worker(action: str, state: State) -> Evaluation:
    return _WORKER_PROBLEM.evaluate(action, state)


def _guarded(problem: Problem, action: str, state: State) -> Evaluation:
    try:
        return problem.evaluate(action, state)
    except Exception as exc:
        log.exception("evaluate raised")
        return Evaluation.failure(f"the evaluator raised {type(exc).__name__}: {exc}")


class Executor:
    """Runs `problem.evaluate(action, state)` for many jobs at once, at most `workers` at a time.

    `kind="ray"` returns a `ttd_agent.ray_executor.RayExecutor` (same methods; the cluster comes
    from `ray_options`, e.g. `address=`, else $RAY_ADDRESS, else a new local one)."""

    def __new__(cls, problem: Problem, workers: int = 2, timeout_s: float = 120.0,
                kind: Literal["thread", "process", "ray"] = "thread", **ray_options: Any) -> Any:
        if cls is Executor and kind == "ray":
            from ttd_agent.ray_executor import RayExecutor

            return RayExecutor(problem, workers, timeout_s, **ray_options)
        return super().__new__(cls)

    def __init__(self, problem: Problem, workers: int = 2, timeout_s: float = 120.0,
                 kind: Literal["thread", "process", "ray"] = "thread") -> None:
        if workers < 1:
            raise ValueError(f"--eval-workers must be >= 1, got {workers}")
        if kind not in ("thread", "process"):
            raise ValueError(f"executor kind must be 'thread', 'process' or 'ray', got {kind!r}")
        if getattr(getattr(problem, "defaults", None), "gpus_per_eval", 0) and workers > 1:
            # a timed kernel needs its GPU to itself, and every local evaluation sees the same GPU
            log.info("%s times programs on a GPU: evaluating one at a time (the Ray executor gives each "
                     "evaluation its own GPU)", type(problem).__name__)
            workers = 1
        self.problem, self.workers, self.timeout_s, self.kind = problem, workers, timeout_s, kind
        self._pool: cf.Executor | None = None

    def _ensure_pool(self) -> cf.Executor:
        if self._pool is None:
            if self.kind == "thread":
                self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="ttd-eval")
            else:
                self._pool = cf.ProcessPoolExecutor(self.workers, initializer=_init_worker, initargs=(self.problem,))
        return self._pool

    def submit(self, action: str, state: State) -> cf.Future[Evaluation]:
        """Start evaluating one answer now; the future's result is its Evaluation (see `gather`)."""
        if self.kind == "thread":
            return self._ensure_pool().submit(_guarded, self.problem, action, state)
        try:
            return self._ensure_pool().submit(_evaluate_in_worker, action, state)
        except BrokenProcessPool:  # a worker died while earlier jobs of this stream ran
            self._restart()
            return self._ensure_pool().submit(_evaluate_in_worker, action, state)

    def gather(self, futures: Sequence[cf.Future[Evaluation]]) -> list[Evaluation]:
        """The Evaluation of each future, in order. Never raises because of a job: an evaluation
        that fails, dies or is still running past its deadline becomes `Evaluation.failure`. The
        deadline counts from this call, `timeout_s` per round of `workers` unfinished jobs."""
        pending = sum(not f.done() for f in futures)
        deadline = time.monotonic() + self.timeout_s * (1 + max(0, pending - 1) // self.workers)
        results: list[Evaluation] = []
        broken = False
        for future in futures:
            try:
                results.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except cf.TimeoutError:
                future.cancel()
                results.append(Evaluation.failure(f"evaluation did not finish within its {self.timeout_s:g} s deadline"))
            except BrokenProcessPool:
                broken = True
                results.append(Evaluation.failure("the evaluation worker process died (killed or crashed)"))
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result from a worker
                results.append(Evaluation.failure(f"evaluation failed: {type(exc).__name__}: {exc}"))
        if broken:
            self._restart()
        return results

    def evaluate(self, jobs: Sequence[tuple[str, State]]) -> list[Evaluation]:
        """One Evaluation per (action, state), in order. Never raises because of a job."""
        return self.gather([self.submit(action, state) for action, state in jobs])

    def _restart(self) -> None:
        log.warning("restarting the evaluation pool after a worker died")
        self.close()

    def close(self) -> None:
        """Stop the pool (the problem belongs to the caller, who closes it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
