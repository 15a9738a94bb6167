"""The trusted side every kernel problem shares: make-time checks, the sandbox run, the verdict.

A kernel problem's action is a Python module defining `custom_kernel(data)` with at least one
`@triton.jit` kernel. The sandbox runs `harness.serve` in a fresh process (on the GPU the caller
picked with `CUDA_VISIBLE_DEVICES`, or on the CPU under Triton's interpreter); the program only
computes. The judge (judge.py), in this process, drives it call by call over a socket pair,
times each call on its own clock and checks every output against its own reference: the report
scored here is the judge's, and nothing the program's process returns or writes is read.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from ttd_envs.core.program_problem import InvalidConstruction, ProgramBudget, PythonProgramProblem
from ttd_envs.core.sandbox import CHANNEL_FD, GiB, Grants, Limits, SandboxResult
from ttd_envs.core.state import State
from ttd_envs.problems.kernels.gpu_grants import gpu_grants
from ttd_envs.problems.kernels.harness import TASKS
from ttd_envs.problems.kernels.timing import TimingRule, geometric_mean, speed_of_light_ns

log = logging.getLogger(__name__)

BOOTSTRAP = "from ttd_envs.problems.kernels.harness import serve\n"
TIMED_TIMEOUT_S = 1200.0
"""The leaderboards' limit for one evaluation (tests, warm-up and every timed benchmark)."""
CHECK_TIMEOUT_S = 300.0
"""Correctness only (timing=False): the small tests take seconds even under the interpreter."""
GPU_HOST_MEMORY = 32 * GiB
"""Host memory of one GPU run, all its processes together (the sandbox's cgroup or init accounting);
RLIMIT_AS is off there because a CUDA context reserves far more address space than it uses."""


@dataclass(frozen=True)
class HarnessPlan:
    """What the judge runs (it never leaves the trusted side): which cases, how to time, where."""

    tests: list[dict[str, Any]]
    benchmarks: list[dict[str, Any]]
    rule: TimingRule | None
    device: str

    @property
    def interpret(self) -> bool:
        return not self.device.startswith("cuda")


def kernel_stack_missing() -> list[str]:
    """Which of torch and triton cannot be imported here (imported only when a kernel env is made)."""
    missing = []
    for name in ("torch", "triton"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def cuda_available() -> bool:
    import torch  # only kernel problems pay for torch, and only when they are made

    return bool(torch.cuda.is_available())


def missing_triton_kernel(code: str) -> str | None:
    """Why `code` cannot be a Triton submission (no parse, no @triton.jit function), or None."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"the program does not parse: {exc.msg} (line {exc.lineno})"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name == "jit":
                    return None
    return ("the program defines no @triton.jit kernel: at least part of custom_kernel must run as a Triton "
            "kernel (decorate a function with @triton.jit and launch it as kernel[grid](...))")


class KernelProblem(PythonProgramProblem):
    """Base of ttd/TriMul-v0 and ttd/MLADecode-v0. Subclasses set `task`, `env_id`, the plans
    and the prompt sections. Timing: score = runtime in µs, reward = `reward_scale` / score.
    `timing=False` (correctness only): score = the largest abs error over the tests, reward 1."""

    task: str
    env_id: str
    entry = "serve"
    result_bytes = 1 << 20
    info_keys = ("sandbox", "kernel_tests")

    @property
    def preload(self) -> tuple[str, ...]:
        """Programs cannot read our package from disk: the zygote imports the harness and the task.
        Triton only on a GPU: its interpreter must be switched on before triton is first imported."""
        triton = ("triton",) if self.on_gpu else ()
        return ("numpy", "torch", *triton, "ttd_envs.problems.kernels.harness", TASKS[self.task])
    def __init__(self, *, timing: bool, timeout_s: float | None, gpu: str | int | None, reward_scale: float) -> None:
        missing = kernel_stack_missing()
        if missing:
            raise RuntimeError(f"{self.env_id} needs {' and '.join(missing)}: pip install 'ttd[kernels]' "
                               "(torch + triton). With them, timing=False checks correctness only, on the CPU "
                               "under Triton's interpreter when there is no GPU")
        self.on_gpu = cuda_available()
        importlib.import_module("ttd_envs.problems.kernels.judge")  # before any fork: it registers a fork hook
        if timing and not self.on_gpu:
            raise RuntimeError(f"{self.env_id} needs a CUDA GPU for timing; pass timing=False to check "
                               "correctness only (on the CPU it runs under Triton's interpreter)")
        if reward_scale <= 0:
            raise ValueError(f"reward_scale must be positive, got {reward_scale}")
        timeout_s = timeout_s or (TIMED_TIMEOUT_S if timing else CHECK_TIMEOUT_S)
        super().__init__(ProgramBudget(budget_s=timeout_s * 0.9, timeout_s=timeout_s, cpus=1))
        self.timing = timing
        self.gpu = gpu
        self.reward_scale = reward_scale
        if not self.on_gpu:  # the interpreter runs on the CPU: no executor should wait for a GPU
            self.defaults = dataclasses.replace(self.defaults, gpus_per_eval=0)

    # -- what subclasses provide -------------------------------------------------------------
    def plan(self) -> HarnessPlan:
        raise NotImplementedError

    def min_traffic_bytes(self, benchmark: dict[str, Any]) -> int:
        """Bytes any correct run on `benchmark` must move through device memory."""
        raise NotImplementedError

    # -- the sandbox run -----------------------------------------------------------------------
    def device(self) -> str:
        return "cuda" if self.on_gpu else "cpu"

    def grants(self) -> Grants:
        """On a GPU: `gpu_grants` (devices, driver libraries, memfds, ...). On the CPU (interpreter)
        the default closed view is enough."""
        return gpu_grants() if self.on_gpu else Grants()

    def limits(self) -> Limits:
        if not self.on_gpu:
            return Limits(wall_s=self.budget.timeout_s, memory_bytes=8 * GiB, result_bytes=self.result_bytes)
        return Limits(wall_s=self.budget.timeout_s, memory_bytes=GPU_HOST_MEMORY, max_processes=256,
                      disk_bytes=1 * GiB, result_bytes=self.result_bytes)

    def run_program(self, code: str, state: State) -> SandboxResult:
        reason = missing_triton_kernel(code)
        if reason:
            return SandboxResult(ok=False, error=reason)
        return self.run_plan(code, self.plan())

    def run_plan(self, code: str, plan: HarnessPlan) -> SandboxResult:
        """Judge `code` on `plan`: the harness computes in the sandbox while the judge drives it
        from a thread of this process; the result's value is the judge's report (tests use this
        to time on the CPU, where the numbers mean nothing but every step of the timed path runs)."""
        from ttd_envs.problems.kernels.judge import Judge, judge_device  # torch: only kernel problems

        gpu = str(self.gpu) if self.gpu is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
        judge = Judge(importlib.import_module(TASKS[self.task]), judge_device(plan.device, gpu), plan.tests,
                      plan.benchmarks, plan.rule, timeout_s=self.budget.timeout_s + 10.0)
        kwargs = {"task": self.task, "source": code, "channel_fd": CHANNEL_FD, "device": plan.device,
                  "interpret": plan.interpret, "gpu": gpu}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        verdict: dict[str, Any] = {}
        thread = threading.Thread(target=_judge_into, args=(judge, ours, verdict), name="kernel-judge", daemon=True)
        thread.start()
        try:
            result = self.sandbox.run_python(BOOTSTRAP, self.entry, kwargs=kwargs, preset_modules={},
                                             limits=self.limits(), channel=theirs)
        finally:
            theirs.close()  # the program's end is gone: the judge sees the channel close
            thread.join()
            ours.close()
        report = verdict["report"]
        if report["error"] and report["error"].startswith("the harness's channel") and result.error:
            report["error"] += f". The sandbox reported: {result.error}"
        return dataclasses.replace(result, ok=True, error=None, value=report)

    def preset_modules(self) -> dict[str, str]:
        return {}

    # -- the verdict ---------------------------------------------------------------------------
    def check(self, value: Any) -> tuple[Any, float]:
        if not isinstance(value, dict) or "error" not in value:
            raise InvalidConstruction("the harness returned no report (did the program exit the process?)")
        if value["error"]:
            raise InvalidConstruction(value["error"], details={"kernel_tests": value.get("tests", [])})
        report = {k: value.get(k) for k in ("tests", "benchmarks", "device_name", "bandwidth_bytes_per_s")}
        if not self.timing:
            return report, max((t["max_abs_error"] for t in value["tests"]), default=0.0)
        return report, self.score_benchmarks(value["benchmarks"], value["bandwidth_bytes_per_s"])

    def score_benchmarks(self, stats: list[dict[str, Any]], bandwidth: float) -> float:
        """Geometric mean of the benchmarks' mean times, in µs, after the speed-of-light check
        (always: the judge measured `bandwidth` itself, before the program started)."""
        plan = self.plan()
        if len(stats) != len(plan.benchmarks):
            raise InvalidConstruction(f"expected {len(plan.benchmarks)} timed benchmarks, got {len(stats)}")
        if not bandwidth > 0:
            raise InvalidConstruction("the judge measured no copy bandwidth, so no speed-of-light floor: not scored")
        for spec, row in zip(plan.benchmarks, stats):
            floor = speed_of_light_ns(self.min_traffic_bytes(spec), bandwidth)
            if row["best_ns"] < floor:
                raise InvalidConstruction(
                    f"{spec['name']}: a run took {row['best_ns'] / 1e3:.1f} µs, but moving the bytes it must "
                    f"read and write takes at least {floor / 1e3:.1f} µs at this device's measured bandwidth: "
                    "the time was not measured honestly (impossible speed-up)")
        return geometric_mean([row["mean_ns"] for row in stats]) / 1e3

    def reward_for(self, score: float) -> float:
        return self.reward_scale / score if self.timing else 1.0

    # -- prompts -------------------------------------------------------------------------------
    def initial_code(self) -> str:
        raise NotImplementedError

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(code=self.initial_code(), is_initial=True)

    def program_section(self, state: State) -> list[str]:
        """The end of every kernel prompt: the program to improve, its runtime, its output."""
        if state.score is None:
            value = "Runtime of this program: not measured yet."
        elif not self.timing:
            value = (f"This program is correct (largest abs error {state.score:.3g}); it was not timed "
                     "(timing=False).")
        else:
            parent = "n/a" if state.parent_score is None else f"{state.parent_score:.1f} µs"
            value = (f"Runtime of this program: {state.score:.1f} µs (its parent: {parent}); reward "
                     f"{self.reward_scale:g} / runtime in µs.")
        lines = ["## The program to improve", "```python", (state.code or "").rstrip(), "```", value]
        if state.stdout.strip():
            lines += ["Its output (tail):", "```text", state.stdout.rstrip(), "```"]
        return lines + ["Make it faster; a different idea is welcome if the current one has stalled."]


def _judge_into(judge: Any, sock: socket.socket, verdict: dict[str, Any]) -> None:
    """The judge thread: its report, or (a bug of ours, never the program's doing) an error report."""
    try:
        verdict["report"] = judge.run(sock)
    except Exception as exc:  # noqa: BLE001 - the step must end with a message, never a crash
        log.warning("the kernel judge failed", exc_info=True)
        verdict["report"] = {"error": f"the judge failed ({type(exc).__name__}: {exc}); not scored", "tests": [],
                             "benchmarks": []}
    finally:  # the verdict is in: hang up, so a harness blocked writing to us stops now, not at the wall limit
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def read_program(name: str) -> str:
    """A shipped program's text (programs/<name>.py)."""
    return resources.files("ttd_envs.problems.kernels.programs").joinpath(f"{name}.py").read_text()


def function_source(module: str, name: str) -> str:
    """The source text of function `name` in sandbox-side module `module` of this package, read
    without importing it (prompts show the reference; the trusted side never imports torch for it)."""
    text = resources.files("ttd_envs.problems.kernels").joinpath(f"{module}.py").read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node) or ""
    raise KeyError(f"{module}.py defines no function {name}")
