"""Kernel rewards a program cannot forge (issue 22): the judge, outside the program's process,
makes the inputs, holds the reference, the tolerances, the plan and the clock; the sandboxed
program only computes. Every attack below ran against the old in-process harness and won there
(a forged report, a disarmed tolerance, a lazy or deferred result); here each ends as a
zero-reward step with a clear message, or is shown to have gained nothing (the time includes
the work it moved), in both privilege modes of the sandbox (root with cgroups; unprivileged).

Programs run for real under Triton's interpreter on N = 32 TriMul cases. Most attacks first
disarm the harness's own contract guard (tamper and thread checks, which a determined program
can always switch off in its own process) so that what stops them is the judge.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from conftest import SANDBOX_MODES, sandbox_in_mode  # noqa: E402
from kernel_programs import HONEST  # noqa: E402

from ttd_envs.core.program_problem import InvalidConstruction  # noqa: E402
from ttd_envs.problems.kernels.mla_decode import MLADecode  # noqa: E402
from ttd_envs.problems.kernels.problem import HarnessPlan  # noqa: E402
from ttd_envs.problems.kernels.timing import TimingRule  # noqa: E402
from ttd_envs.problems.kernels.trimul import TriMul  # noqa: E402

pytestmark = pytest.mark.slow
REPS = 3
SLEEP_S = 0.3

DISARM = '''
import gc


def disarm():
    """Switch the harness's contract guard off (tamper and thread checks): from here on only the
    judge stands between this program and the reward."""
    for obj in gc.get_objects():
        if type(obj).__name__ == "Worker" and hasattr(obj, "answer_requests"):
            type(obj).tampered = lambda self: None
            type(obj)._refuse_threads = lambda self, *a: None
            return obj
    raise RuntimeError("no harness found")


def tree(value):
    """The wire format's JSON tree of `value` (dicts, lists and scalars), written by hand."""
    if isinstance(value, dict):
        return {"__dict__": {k: tree(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"__seq__": [tree(v) for v in value], "tuple": False}
    return value


def wire_message(value):
    """A well-formed wire message (header only, no arrays), as the sandbox's own encoder makes."""
    import json, struct
    header = json.dumps({"value": tree(value), "blob_sizes": []}).encode()
    header += b" " * (-(8 + len(header)) % 64)
    return struct.pack("<Q", len(header)) + header


def frame(message):
    """One channel frame written by hand: its length, then a wire message."""
    import struct
    payload = wire_message(message)
    return struct.pack("<Q", len(payload)) + payload


CALLS = []
'''
BASE = HONEST + DISARM


def program(body: str) -> str:
    return BASE + body


def judged(box, code: str, timed: bool, timeout_s: float | None = None) -> tuple[dict, str]:
    """Judge `code` with the sandbox `box` (a worker's, in the unprivileged mode): one checked
    N = 32 test, then (`timed`) that shape checked once and timed REPS times. (report, stdout)."""
    problem = TriMul(timing=False, timeout_s=timeout_s)
    problem._sandbox = box
    specs = problem.plan().tests
    rule = TimingRule(max_reps=REPS, min_reps=REPS, warmup_s=0.0, warmup_max_reps=1) if timed else None
    try:
        result = problem.run_plan(code, HarnessPlan(tests=specs[:1], benchmarks=specs[:1], rule=rule,
                                                    device=problem.device()))
    finally:
        problem._sandbox = None  # the box outlives the problem
    return result.value, result.stdout


@pytest.fixture(scope="module", params=SANDBOX_MODES)
def box(request):
    preload = ("numpy", "torch", "ttd_envs.problems.kernels.harness", "ttd_envs.problems.kernels.trimul_task")
    sandbox = sandbox_in_mode(request.param, preload=preload, threads=1)  # TriMul's on a CPU
    yield sandbox
    sandbox.close()


def rejected(box, code: str, timed: bool = True) -> str:
    report, _ = box.call(judged, code, timed)
    assert report["error"], "the attack was not caught"
    return report["error"]


# -- the honest baseline, in both modes -----------------------------------------------------------
def test_honest_program_passes_checked_and_timed(box) -> None:
    report, _ = box.call(judged, BASE, True)
    assert report["error"] is None, report["error"]
    assert report["tests"][0]["max_abs_error"] < 1e-3 and report["benchmarks"][0]["runs"] == REPS
    assert report["bandwidth_bytes_per_s"] > 0 and report["device_name"] == "cpu"


# -- forged reports and forged messages ----------------------------------------------------------
FORGED_REPORT = '''
import os
def custom_kernel(data):
    report = {"error": None, "tests": [{"name": "test 1", "max_abs_error": 0.0}], "benchmarks": [],
              "device_name": "cpu", "bandwidth_bytes_per_s": None}
    os.write(3, wire_message(report))  # the sandbox's result pipe, as a returning entry writes it
    os._exit(0)
'''


def test_a_report_written_to_the_result_pipe_counts_for_nothing(box) -> None:
    message = rejected(box, program(FORGED_REPORT), timed=False)
    assert "channel to the judge broke" in message and "closed" in message


@pytest.mark.parametrize("problem_cls,kwargs", [(TriMul, {}), (MLADecode, {"config": "small"})])
def test_a_forged_report_is_a_zero_reward_step(problem_cls, kwargs) -> None:
    """The issue's first attack, through env-level evaluate, on both kernel problems."""
    problem = problem_cls(timing=False, **kwargs)
    try:
        code = HONEST + DISARM + FORGED_REPORT
        evaluation = problem.evaluate(f"```python\n{code}```", problem.initial_state(np.random.default_rng(0)))
    finally:
        problem.close()
    assert not evaluation.valid and evaluation.reward == 0.0
    assert "a report written by the program, its own messages or its exit count for nothing" in evaluation.error


@pytest.mark.parametrize("forged,expected", [
    ('frame({"op": "done", "modified": []})', "expected 'slice', got 'done'"),
    ('frame({"op": "slice", "values": 0})', "expected 'done', got 'slice'"),
    ('struct.pack("<Q", 1 << 40)', "a message of 1099511627776 bytes"),
    ('struct.pack("<Q", 16) + b"not a wire frame"', "malformed message"),
    ('frame(["op", "done"])', "not an operation"),
])
def test_messages_written_on_the_channel_by_hand_are_refused(box, forged: str, expected: str) -> None:
    code = program(f'''
import os, struct
def custom_kernel(data):
    disarm()
    os.write(4, {forged})  # the judge's channel, before the harness answers
    return triton_copy(trimul_torch(*data))
''')
    report, _ = box.call(judged, code, False, 60.0)
    message = report["error"]
    assert expected in message and "channel to the judge broke" in message
    assert "time limit" not in message  # the judge hangs up: a harness blocked writing to it ends at once


def test_a_program_that_answers_the_judge_itself_fails_the_check(box) -> None:
    """It takes the channel over at load time and answers every request with zeros: nothing of
    what it says is believed, so the judge's own comparison fails it."""
    code = program('''
import os, socket
import numpy as np
channel = sys._getframe(1).f_globals["channel"]  # the harness module's, reached through the frames
sock = socket.socket(fileno=os.dup(4))
while True:
    request = channel.receive(sock, 1 << 26, float("inf"))
    op = request["op"]
    if op == "prepare":
        channel.send(sock, {"op": "ready"})
    elif op == "go":
        channel.send(sock, {"op": "done", "modified": []})
    elif op == "slice":
        channel.send(sock, {"op": "slice", "values": np.zeros(request["stop"] - request["start"], np.float32)})
    elif op == "digest":
        channel.send(sock, {"op": "digest", "sums": [0.0],
                            "values": [np.zeros(len(p), np.float32) for p in request["picks"]]})
    else:
        os._exit(0)
''')
    message = rejected(box, code)
    assert "test 1 (N=32" in message and "does not match the reference" in message


# -- the trusted constants are out of reach -----------------------------------------------------
def test_tolerances_patched_through_gc_and_sys_modules_change_nothing(box) -> None:
    """The issue's third attack: set every RTOL/ATOL the program can reach to infinity, then
    return zeros. The sandbox's copy of the task module is patched for real (it is printed); the
    judge's tolerances are in another process."""
    code = program('''
import types
def custom_kernel(data):
    disarm()
    patched = []
    for module in [o for o in gc.get_objects() if isinstance(o, types.ModuleType)] + list(sys.modules.values()):
        if hasattr(module, "RTOL"):
            module.RTOL = module.ATOL = float("inf")
            patched.append(module.__name__)
    print("patched", sorted(set(patched)))
    out = torch.zeros_like(data[0])
    return triton_copy(out)
''')
    report, stdout = box.call(judged, code, False)
    assert "ttd_envs.problems.kernels.trimul_task" in stdout
    assert "does not match the reference" in report["error"] and "atol 0.02 + rtol 0.02" in report["error"]


def test_there_is_no_plan_clock_or_reference_output_to_find(box) -> None:
    """The issue's second attack found the timing plan through the frames and rewrote the times.
    Here the program searches everything it can reach for the plan, the judge and the reference,
    patches every clock, and still gets the judge's honest time."""
    code = program(f'''
import time, types
def custom_kernel(data):
    disarm()
    if not CALLS:
        names = {{type(o).__name__ for o in gc.get_objects()}}
        modules = {{o.__name__ for o in gc.get_objects() if isinstance(o, types.ModuleType)}}
        print("found", sorted(names & {{"TimingRule", "HarnessPlan", "Judge", "Tolerance"}}),
              sorted(m for m in modules if m.endswith(("judge", "timing", "problem"))))
    CALLS.append(1)
    time.perf_counter_ns = time.monotonic_ns = time.time_ns = lambda: 0
    time.perf_counter = time.monotonic = time.time = lambda: 0.0
    time.sleep({SLEEP_S})
    return triton_copy(trimul_torch(*data))
''')
    report, stdout = box.call(judged, code, True)
    assert report["error"] is None, report["error"]
    found = next(line for line in stdout.splitlines() if line.startswith("found"))
    assert found.startswith("found [] ") and "kernels." not in found, found
    assert report["benchmarks"][0]["best_ns"] >= SLEEP_S * 1e9


def test_the_checkers_reference_outputs_are_not_in_the_process(box) -> None:
    """Return any tensor shaped like the output that the program did not make (the old harness
    kept the previous call's checked output and computed the reference in this process)."""
    code = program('''
import torch
def custom_kernel(data):
    disarm()
    mine = {id(t) for t in (data[0], data[1], *data[2].values())}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.shape == data[0].shape and id(obj) not in mine:
            return triton_copy(obj)
    return triton_copy(torch.zeros_like(data[0]))
''')
    assert "does not match the reference" in rejected(box, code, timed=False)


@pytest.mark.parametrize("patch", [
    "torch.Tensor.__sub__ = lambda a, b: a * 0",
    "torch.Tensor.abs = lambda a: a * 0",
    "torch.isnan = torch.isfinite = lambda a: torch.ones_like(a, dtype=torch.bool)",
    "torch.equal = torch.allclose = lambda *a, **k: True",
    "F.layer_norm = lambda x, *a, **k: x",
])
def test_torch_patched_against_the_checker_changes_only_the_program(box, patch: str) -> None:
    code = program(f'''
def custom_kernel(data):
    disarm()
    {patch}
    return triton_copy(torch.zeros_like(data[0]))
''')
    assert "does not match the reference" in rejected(box, code, timed=False)


# -- results that are not the call's work --------------------------------------------------------
def test_outputs_cached_across_timed_calls_fail(box) -> None:
    """Honest until the timed repetitions, then the last output again: fresh inputs defeat it."""
    code = program('''
CACHE = {}
def custom_kernel(data):
    CALLS.append(1)
    if len(CALLS) <= 2:
        CACHE["last"] = triton_copy(trimul_torch(*data))
    return triton_copy(CACHE["last"])
''')
    message = rejected(box, code)
    assert "timed repetition 1" in message and "does not match the reference" in message


def test_a_program_that_detects_the_timed_calls_fails_them(box) -> None:
    """It behaves in the checked calls and returns zeros in every later one."""
    code = program('''
def custom_kernel(data):
    CALLS.append(1)
    if len(CALLS) > 2:
        return triton_copy(torch.zeros_like(data[0]))
    return triton_copy(trimul_torch(*data))
''')
    message = rejected(box, code)
    assert "timed repetition 1" in message and "sampled elements" in message


def test_outputs_aliasing_the_inputs(box) -> None:
    """The input handed back as the output is caught; the true result written into the input's
    own memory is fine (the judge compares against its own reference, not the program's buffers)."""
    lazy = program('''
def custom_kernel(data):
    x = data[0]
    triton_copy(x)
    return x
''')
    assert "does not match the reference" in rejected(box, lazy)
    in_place = program('''
def custom_kernel(data):
    x = data[0]
    x.copy_(triton_copy(trimul_torch(*data)))
    return x
''')
    report, _ = box.call(judged, in_place, True)
    assert report["error"] is None, report["error"]


def test_a_lazy_result_that_is_right_only_where_sampled_fails_the_signed_sums(box) -> None:
    """Timed calls return zeros and fill in the true values only at the elements the judge asks
    for, when it asks: every sampled element is right, and only the signed sums of all of them,
    over signs and groups drawn after the call, show the rest was never computed."""
    code = program('''
STATE = {}
real_as_tensor = torch.as_tensor
def as_tensor(picks, *args, **kwargs):
    wanted = real_as_tensor(picks, *args, **kwargs)
    if "out" in STATE and wanted.dtype == torch.int64:
        STATE["out"].view(-1)[wanted] = STATE["full"].view(-1)[wanted]
    return wanted
def custom_kernel(data):
    CALLS.append(1)
    if len(CALLS) <= 2:
        return triton_copy(trimul_torch(*data))
    disarm()
    torch.as_tensor = as_tensor
    STATE["full"] = trimul_torch(*data)  # stands for computing only the requested elements
    STATE["out"] = triton_copy(torch.zeros_like(data[0]))
    return STATE["out"]
''')
    message = rejected(box, code)
    assert "timed repetition 1" in message and "fails the check of all 131072 elements" in message
    assert "of 16 signed sums over random groups" in message


def test_the_signed_sums_pass_every_honest_error_and_fail_unfinished_outputs() -> None:
    """The digest's statistics, over 20 draws: an output off by 0.999 of the tolerance at every
    element, all in one direction (the worst an honest kernel may do), always passes; an output
    left at zero, or zero at every other element, always fails. (One signed sum let the zero
    output through about one draw in six.)"""
    import torch

    from ttd_envs.problems.kernels import channel, trimul_task
    from ttd_envs.problems.kernels.judge import Judge, Rejected

    judge = Judge(trimul_task, "cpu", [], [], None, timeout_s=10.0)
    spec = TriMul(timing=False).plan().tests[0]
    with torch.no_grad():
        (output,) = trimul_task.reference(trimul_task.generate(spec, 0, "cpu"))
    want = channel.comparable(torch, output, trimul_task.COMPARE_DTYPE)
    worst_honest = want + 0.999 * (trimul_task.ATOL + trimul_task.RTOL * want.abs())
    every_other = want.clone()
    every_other[::2] = 0
    for seed in range(20):
        judge._check_digest("call", "out", want, channel.signed_sums(torch, worst_honest, seed), seed)
        for unfinished in (torch.zeros_like(want), every_other):
            with pytest.raises(Rejected, match="signed sums over random groups"):
                judge._check_digest("call", "out", want, channel.signed_sums(torch, unfinished, seed), seed)


def test_work_left_running_after_the_call_fails_or_is_timed(box) -> None:
    """Guards off, the timed calls return a zero buffer that a thread fills SLEEP_S later: the
    judge asks for every element's signed sum right after `done`, so the unfinished result fails
    (on a GPU, the same holds for work left on another stream)."""
    code = program(f'''
def custom_kernel(data):
    CALLS.append(1)
    if len(CALLS) <= 2:
        return triton_copy(trimul_torch(*data))
    disarm()
    out = triton_copy(torch.zeros_like(data[0]))
    def finish():
        time.sleep({SLEEP_S})
        out.copy_(trimul_torch(*data))
    threading.Thread(target=finish).start()
    return out
''')
    message = rejected(box, code)
    assert "timed repetition 1" in message and "does not match the reference" in message


def test_work_deferred_into_the_judges_questions_is_timed(box) -> None:
    """A lazily computed result: `done` at once, the work (SLEEP_S of it) done only when the
    judge asks for values. It passes, because it is correct, and its time includes the work."""
    code = program(f'''
STATE = {{}}
disarm()
channel = next(o for o in gc.get_objects() if type(o).__name__ == "module" and o.__name__ == "ttd_envs.problems.kernels.channel")
real_comparable = channel.comparable
def lazy_comparable(torch_module, tensor, dtype_name):
    if "pending" in STATE:
        time.sleep({SLEEP_S})
        STATE["result"] = trimul_torch(*STATE.pop("pending"))
    return real_comparable(torch_module, STATE.get("result", tensor), dtype_name)
channel.comparable = lazy_comparable
def custom_kernel(data):
    STATE.pop("result", None)
    STATE["pending"] = data
    return triton_copy(torch.zeros_like(data[0]))  # the placeholder handed back at `done`
''')
    report, _ = box.call(judged, code, True)
    assert report["error"] is None, report["error"]
    assert report["benchmarks"][0]["best_ns"] >= SLEEP_S * 1e9


def test_a_program_that_never_answers_is_stopped() -> None:
    """The sandbox's wall clock ends it; the judge reports why."""
    problem = TriMul(timing=False, timeout_s=8.0)
    try:
        code = program('''
def custom_kernel(data):
    time.sleep(600)
''')
        specs = problem.plan().tests
        report = problem.run_plan(code, HarnessPlan(tests=specs[:1], benchmarks=[], rule=None,
                                                    device=problem.device())).value
    finally:
        problem.close()
    assert "channel to the judge broke" in report["error"] and "time limit exceeded" in report["error"]


# -- the speed-of-light floor ------------------------------------------------------------------
def test_the_floor_applies_whenever_timing_does() -> None:
    """The issue's second attack reported no bandwidth, and the floor was skipped because the
    figure was falsy; now the judge measures it, and a missing one fails the step."""
    problem = TriMul(timing=False)
    rows = [{"name": spec["name"], "best_ns": 1.0, "mean_ns": 1.0} for spec in problem.plan().benchmarks]
    with pytest.raises(InvalidConstruction, match="measured no copy bandwidth"):
        problem.score_benchmarks(rows, bandwidth=0.0)
    with pytest.raises(InvalidConstruction, match="impossible speed-up"):
        problem.score_benchmarks(rows, bandwidth=3e12)
