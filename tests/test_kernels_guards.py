"""Every reward hack the kernel harness guards against fails, each with its own message.

Programs run for real in the sandbox on N = 32 TriMul cases, under Triton's interpreter on a CPU
(compiled where there is a GPU). The honest baseline computes the operation in PyTorch and passes
it through one small Triton copy kernel, so each hack differs from a passing program only by the
hack itself. Timed runs on the CPU give meaningless numbers, but every guard of the timing loop
is active; guards only a GPU can exercise are in test_kernels_gpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from kernel_programs import HONEST  # noqa: E402

from ttd_envs.problems.kernels.problem import HarnessPlan  # noqa: E402
from ttd_envs.problems.kernels.timing import TimingRule  # noqa: E402
from ttd_envs.problems.kernels.trimul import TriMul  # noqa: E402



@pytest.fixture(scope="module")
def trimul() -> TriMul:
    problem = TriMul(timing=False)
    yield problem
    problem.close()


def plan_for(problem: TriMul, tests: int = 2, timed: bool = False) -> HarnessPlan:
    """`tests` N = 32 checks (test 1, then test 2 with its random mask, ...); `timed` adds a
    3-repetition timing of test 1's shape (on the CPU here; compiled, on the GPU where there is one)."""
    specs = problem.plan().tests
    rule = TimingRule(max_reps=3, min_reps=3, warmup_s=0.0, warmup_max_reps=1) if timed else None
    return HarnessPlan(tests=specs[:tests], benchmarks=specs[:1], rule=rule, device=problem.device())


def run(problem: TriMul, code: str, tests: int = 2, timed: bool = False) -> dict:
    result = problem.run_plan(code, plan_for(problem, tests, timed))
    assert result.ok, result.error
    return result.value


def error_of(problem: TriMul, code: str, tests: int = 2, timed: bool = False) -> str:
    report = run(problem, code, tests, timed)
    assert report["error"], "the hack was not caught"
    return report["error"]


@pytest.mark.slow
def test_honest_program_passes_checked_and_timed(trimul: TriMul) -> None:
    report = run(trimul, HONEST, timed=True)
    assert report["error"] is None
    assert len(report["tests"]) == 2 and report["benchmarks"][0]["runs"] == 3


def test_no_triton_kernel_is_rejected_before_running(trimul: TriMul) -> None:
    code = HONEST.replace("@triton.jit\n", "")
    evaluation = trimul.evaluate(f"```python\n{code}```", trimul.initial_state(np.random.default_rng(0)))
    assert not evaluation.valid and "defines no @triton.jit kernel" in evaluation.error


@pytest.mark.slow
def test_fallback_to_pytorch_in_try_except_is_rejected(trimul: TriMul) -> None:
    code = HONEST + '''
def custom_kernel(data):
    result = trimul_torch(*data)
    try:
        out = torch.empty_like(result)
        _copy[(1,)](result, out, result.numel())  # BLOCK missing: the launch raises
        return out
    except Exception:
        return result
'''
    assert "without launching any @triton.jit kernel" in error_of(trimul, code)


@pytest.mark.slow
def test_the_reference_is_not_importable(trimul: TriMul) -> None:
    code = HONEST + '''
from ttd_envs.problems.kernels.trimul_task import reference
'''
    message = error_of(trimul, code)
    assert "failed while loading" in message and "is not importable from the program" in message


@pytest.mark.slow
def test_cached_previous_output_fails_the_recheck(trimul: TriMul) -> None:
    code = HONEST + '''
CACHE = []
def custom_kernel(data):
    if not CACHE:
        CACHE.append(triton_copy(trimul_torch(*data)))
    return triton_copy(CACHE[0])
'''
    message = error_of(trimul, code)
    assert message.startswith("test 2 (N=32") and "identical to the previous call's output" in message


@pytest.mark.slow
def test_inputs_come_from_seeds_nobody_can_predict(trimul: TriMul) -> None:
    """The leaderboard's seeds are public (seed, seed + 13, ...), so answers could be precomputed
    outside the timed calls. Ours are drawn from the OS after the previous call returned: every
    call and every run sees different inputs and weights, and nothing in the program's reach
    (its environment, its files) names a seed."""
    code = HONEST + '''
import os
def custom_kernel(data):
    x, mask, w, config = data
    print("seen", float(x.sum()), float(w["to_out.weight"].sum()), sorted(os.environ), sorted(os.listdir(".")))
    return triton_copy(trimul_torch(*data))
'''
    lines = []
    for _ in range(2):
        result = trimul.run_plan(code, plan_for(trimul, tests=2))
        assert result.ok and result.value["error"] is None, result.error or result.value["error"]
        lines += [line for line in result.stdout.splitlines() if line.startswith("seen")]
    sums = [tuple(line.split()[1:3]) for line in lines]
    assert len(sums) == 4 and len(set(sums)) == 4, sums
    assert not any("SEED" in line.upper() for line in lines)


@pytest.mark.slow
def test_modified_inputs_cannot_corrupt_the_check(trimul: TriMul) -> None:
    """Zero the input and the weights in place, then answer for zeros: the check uses its own copies."""
    code = HONEST + '''
def custom_kernel(data):
    x, mask, w, config = data
    x.zero_()
    for t in w.values():
        t.zero_()
    return triton_copy(trimul_torch(x, mask, w, config))
'''
    message = error_of(trimul, code)
    assert "does not match the reference" in message and "modified its inputs in place (input, weights[" in message


@pytest.mark.slow
def test_output_read_from_poisoned_memory_is_named(trimul: TriMul) -> None:
    """What stale-memory reads produce after poisoning: NaN where the reference is finite."""
    code = HONEST + '''
def custom_kernel(data):
    out = triton_copy(trimul_torch(*data))
    out[0, :4] = float("nan")
    return out
'''
    message = error_of(trimul, code)
    assert "are NaN where the reference is finite: output read from uninitialised memory?" in message


@pytest.mark.slow
def test_work_left_running_in_a_thread_is_rejected(trimul: TriMul) -> None:
    code = HONEST + '''
def custom_kernel(data):
    out = torch.zeros_like(data[0])
    def finish():
        time.sleep(0.2)
        out.copy_(triton_copy(trimul_torch(*data)))
    threading.Thread(target=finish).start()
    return out
'''
    assert "left 1 thread(s) running after it returned" in error_of(trimul, code)


@pytest.mark.slow
@pytest.mark.parametrize("patch,name", [
    ("time.perf_counter_ns = lambda: 0", "time.perf_counter_ns"),
    ("torch.cuda.synchronize = lambda *a, **k: None", "torch.cuda.synchronize"),
    ("F.layer_norm = lambda *a, **k: a[0]", "torch.nn.functional.layer_norm"),
    ("torch.Tensor.__sub__ = lambda a, b: a * 0", "torch.Tensor.__sub__"),
    ("sys._getframe(1).f_locals['self'].clock = lambda: 0", "the harness.clock"),
    ("type(sys._getframe(1).f_locals['self']).check = lambda *a: 0.0", "Worker.check"),
    ("sys._getframe(1).f_locals['self'].check = lambda *a: 0.0", "the harness.check"),
])
def test_patching_clocks_torch_or_the_harness_is_rejected(trimul: TriMul, patch: str, name: str) -> None:
    code = HONEST + f'''
def custom_kernel(data):
    {patch}
    return triton_copy(trimul_torch(*data))
'''
    message = error_of(trimul, code)
    assert f"the program replaced {name}" in message and "not the program's to patch" in message


@pytest.mark.slow
def test_a_timer_patched_only_during_the_call_cannot_shrink_the_time(trimul: TriMul) -> None:
    """The harness captured its clock before the program loaded: a fake clock installed for the
    call and removed before returning (so no binding is left changed) changes nothing."""
    code = HONEST + '''
def custom_kernel(data):
    real = time.perf_counter_ns
    time.perf_counter_ns = lambda: 0
    time.sleep(0.05)
    time.perf_counter_ns = real
    return triton_copy(trimul_torch(*data))
'''
    report = run(trimul, code, tests=1, timed=True)
    assert report["error"] is None
    assert report["benchmarks"][0]["best_ns"] >= 50e6
