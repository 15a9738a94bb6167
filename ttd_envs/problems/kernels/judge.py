"""The trusted side of one kernel evaluation: it picks the inputs, times the calls and checks the
outputs, and runs none of the program's code (docs/envs/trimul.md, "Computing and judging").

Per call the judge draws a seed from the OS, computes the reference on its own copy of the
inputs, and only then sends the seed to the harness in the sandbox (`prepare`). The clock is
this process's. A checked call (`timed=False`) fetches every output element, in slices, and
compares each one. A timed call runs from the moment `go` is sent until the answer to `digest`
arrives: after `done`, the judge draws fresh signs, groups and a sample of elements, and the
harness must answer with the signed sum of every group of elements and the sampled values. Only a
finished output answers both, so work deferred past `done` (another stream, a thread, a lazy
tensor, a forged `done`) is inside the measured time; the judge's own cost of that digest,
measured before the program started, is subtracted. Tolerances, the plan and the bandwidth
behind the speed-of-light floor exist only here. Imported only on the trusted side, when a kernel
problem evaluates (it needs torch).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import numbers
import os
import socket
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ttd_envs.problems.kernels import channel
from ttd_envs.problems.kernels.timing import TimingRule, rep_stats, should_stop

log = logging.getLogger(__name__)

GPU_BANDWIDTH_PROBE_BYTES = 256 << 20
CPU_BANDWIDTH_PROBE_BYTES = 32 << 20
MESSAGE_SLACK_BYTES = 1 << 20
"""Room for a message's JSON and `.npy` headers beyond the arrays it must hold."""
SLICE_ELEMENTS = 8 << 20
"""Elements per `slice` message of a checked call (32 MiB of float32): memory stays bounded."""
SAMPLE_ELEMENTS = 4096
"""Elements per output compared one by one in a timed call (besides the signed sums of all)."""
DIGEST_FALSE_ALARM = 2 * math.exp(-18)
"""The chance that an honest output fails the signed sums (about 3e-8 per timed call)."""
DIGEST_SIGMAS = math.sqrt(2 * math.log(2 * channel.DIGEST_GROUPS / DIGEST_FALSE_ALARM))
"""An honest output's error in one group's signed sum, each |error_i| <= t_i = atol + rtol·|ref_i|
with signs drawn after the call, exceeds this many sqrt(Σ_group t_i²) with probability at most
2·exp(-DIGEST_SIGMAS²/2) (Hoeffding); over all groups (union bound), DIGEST_FALSE_ALARM. An
output left at zero misses each group's sum by a Gaussian of about 28 such units on TriMul."""
CALIBRATION_RUNS = 3
_forked = False
"""Set in a child forked from this process (an executor's worker): libgomp's thread pool does not
survive fork, so torch in the child must run single-threaded or its first parallel op hangs."""


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class Rejected(Exception):
    """The program failed the check or broke the contract; the message is what the model sees."""


@dataclass(frozen=True)
class Tolerance:
    """|got - want| <= atol + rtol·|want| after casting both to the task's compared dtype."""

    rtol: float
    atol: float


@dataclass
class Mismatches:
    """Element-wise comparison of one output of `shape`, accumulated over its slices."""

    shape: tuple[int, ...]
    checked: int = 0
    count: int = 0
    first: list[int] = field(default_factory=list)
    max_abs_error: float = 0.0
    nan_where_finite: int = 0

    def add(self, got: torch.Tensor, want: torch.Tensor, positions: torch.Tensor, tolerance: Tolerance) -> None:
        """Compare flat float32 `got` with `want` at flat `positions` of the output. NaN matches
        only NaN and an infinity only the same infinity."""
        close = (got - want).abs() <= tolerance.atol + tolerance.rtol * want.abs()
        close |= got == want
        close |= got.isnan() & want.isnan()
        bad = ~close
        self.checked += bad.numel()
        self.count += int(bad.sum())
        if len(self.first) < 5 and self.count:
            self.first += positions[bad][:5 - len(self.first)].tolist()
        finite = got.isfinite() & want.isfinite()
        errors = (got - want).abs()[finite]
        if errors.numel():
            self.max_abs_error = max(self.max_abs_error, float(errors.max()))
        self.nan_where_finite += int((got.isnan() & want.isfinite()).sum())

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def first_indices(self) -> list[tuple[int, ...]]:
        """The first failing elements as full indices of the output."""
        if not self.first:
            return []
        return [tuple(int(i) for i in index) for index in zip(*np.unravel_index(self.first, self.shape))]


def copy_bandwidth(device: str) -> float:
    """Best of three copies on `device` (bytes read + written per second), measured here."""
    size = GPU_BANDWIDTH_PROBE_BYTES if device.startswith("cuda") else CPU_BANDWIDTH_PROBE_BYTES
    source = torch.ones(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(3):
        _synchronize(device)
        start = time.perf_counter_ns()
        target.copy_(source)
        _synchronize(device)
        best = min(best, max(1, time.perf_counter_ns() - start))
    return 2 * size / (best / 1e9)


def judge_device(harness_device: str, gpu: str | None) -> str:
    """The device of this process that is the harness's GPU (`gpu` is the harness's
    CUDA_VISIBLE_DEVICES), or "cpu" when the harness runs under the interpreter."""
    if not harness_device.startswith("cuda"):
        return "cpu"
    if gpu is None:
        return "cuda"
    ours = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = gpu.split(",")[0].strip()
    if ours is None:
        return f"cuda:{wanted}" if wanted.isdigit() else "cuda"
    visible = [v.strip() for v in ours.split(",")]
    return f"cuda:{visible.index(wanted)}" if wanted in visible else "cuda"


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class Judge:
    """Drives one connected harness through a plan; `run` returns the report the problem scores.
    Construct it (bandwidth and digest cost are measured then) before the program starts."""

    def __init__(self, task: types.ModuleType, device: str, tests: list[dict[str, Any]],
                 benchmarks: list[dict[str, Any]], rule: TimingRule | None, timeout_s: float) -> None:
        if _forked and not device.startswith("cuda"):
            torch.set_num_threads(1)
        self.task, self.device = task, device
        self.tests, self.benchmarks, self.rule = tests, benchmarks, rule
        self.timeout_s = timeout_s
        self.tolerance = Tolerance(task.RTOL, task.ATOL)
        self.dtype = getattr(torch, task.COMPARE_DTYPE)
        self.device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
        self.bandwidth = copy_bandwidth(device) if rule is not None else None
        self.overhead_ns = {spec["name"]: self._digest_cost(spec) for spec in benchmarks} if rule is not None else {}
        self.previous_hash: bytes | None = None
        self.modified: list[str] = []
        self.sock: socket.socket | None = None
        self.deadline = math.inf

    # -- the run -------------------------------------------------------------------------------
    def run(self, sock: socket.socket) -> dict[str, Any]:
        self.sock, self.deadline = sock, time.monotonic() + self.timeout_s
        report: dict[str, Any] = {"error": None, "tests": [], "benchmarks": [], "device_name": self.device_name,
                                  "bandwidth_bytes_per_s": self.bandwidth, "l2_flush_bytes": None}
        try:
            hello = self._expect("hello")
            flush = hello.get("l2_flush_bytes")
            report["l2_flush_bytes"] = flush if isinstance(flush, int) and not isinstance(flush, bool) else None
            for spec in self.tests:
                report["tests"].append(self.check_once(spec, spec["name"]))
            if self.rule is not None:
                self.warm_up(self.benchmarks[0], self.rule)
                for spec in self.benchmarks:
                    report["benchmarks"].append(self.time_benchmark(spec, self.rule))
        except Rejected as exc:
            report["error"] = str(exc)
        except channel.ChannelError as exc:
            report["error"] = (f"the harness's channel to the judge broke: {exc}. Results are judged outside the "
                               "program's process, call by call: a report written by the program, its own messages "
                               "or its exit count for nothing")
        with contextlib.suppress(channel.ChannelError):
            channel.send(sock, {"op": "end"}, min(self.deadline, time.monotonic() + 5.0))
        return report

    # -- the phases ---------------------------------------------------------------------------
    def check_once(self, spec: dict[str, Any], label: str) -> dict[str, Any]:
        expected = self._reference(spec, label)
        return {"name": spec["name"], "max_abs_error": self._check_every_element(expected, label)}

    def warm_up(self, spec: dict[str, Any], rule: TimingRule) -> None:
        """Repeat the first benchmark (checked like a timed call, not scored) so compilation is done."""
        spent_ns, reps = 0, 0
        while spent_ns < rule.warmup_s * 1e9 and reps < rule.warmup_max_reps:
            spent_ns, reps = spent_ns + self.timed_call(spec, f"warm-up on {spec['name']}"), reps + 1

    def time_benchmark(self, spec: dict[str, Any], rule: TimingRule) -> dict[str, Any]:
        """One call checked in full, then timed repetitions on fresh inputs, each checked by digest."""
        self.check_once(spec, f"{spec['name']} (first call)")
        times_ns: list[int] = []
        loop_started = time.perf_counter_ns()
        while not should_stop(times_ns, rule, (time.perf_counter_ns() - loop_started) / 1e9):
            times_ns.append(self.timed_call(spec, f"{spec['name']}, timed repetition {len(times_ns) + 1}"))
        return {"name": spec["name"], **rep_stats(times_ns), "overhead_ns": self.overhead_ns[spec["name"]]}

    # -- one call ------------------------------------------------------------------------------
    def _reference(self, spec: dict[str, Any], label: str) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
        """Draw a seed, compute the reference on the judge's own inputs, then have the harness
        prepare the same inputs; return each output flat (comparable) with its shape."""
        seed = fresh_seed()
        inputs = self.task.generate(spec, seed, self.device)
        with _reference_mode():
            expected = [(channel.comparable(torch, t, self.task.COMPARE_DTYPE), tuple(t.shape))
                        for t in self.task.reference(inputs)]
        del inputs
        _synchronize(self.device)  # none of the judge's work overlaps the program's call
        self._send({"op": "prepare", "spec": spec, "seed": seed, "label": label})
        self._expect("ready")
        return expected

    def _go(self) -> None:
        self._send({"op": "go"})
        modified = self._expect("done").get("modified")
        self.modified = [m[:80] for m in modified if isinstance(m, str)][:20] if isinstance(modified, list) else []

    def timed_call(self, spec: dict[str, Any], label: str) -> int:
        """One call timed from `go` to the digest's arrival, minus the judge's own digest cost;
        its output checked by digest and sample. Returns ns."""
        expected = self._reference(spec, label)
        started = time.perf_counter_ns()
        self._go()
        digest_seed = fresh_seed()
        picks = [self._sample(t.numel()) for t, _ in expected]
        self._send({"op": "digest", "seed": digest_seed, "picks": [p.cpu().numpy() for p in picks]})
        answer = self._expect("digest", limit=len(expected) * SAMPLE_ELEMENTS * 4 + MESSAGE_SLACK_BYTES)
        elapsed_ns = time.perf_counter_ns() - started
        sums = answer.get("sums")
        values = self._arrays(answer.get("values"), [p.numel() for p in picks])
        if not isinstance(sums, list) or len(sums) != len(expected) or not all(
                isinstance(group, list) and len(group) == channel.DIGEST_GROUPS
                and all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in group) for group in sums):
            raise channel.ChannelError(f"expected {len(expected)} list(s) of {channel.DIGEST_GROUPS} signed sums")
        for name, (want, shape), got, positions, claimed in zip(self.task.OUTPUT_NAMES, expected, values, picks, sums):
            found = Mismatches(shape)
            found.add(got.to(self.device), want[positions], positions, self.tolerance)
            if found.count:
                raise Rejected(self._mismatch_message(label, name, found, sampled=True))
            self._check_digest(label, name, want, [float(c) for c in claimed], digest_seed)
        return max(1, elapsed_ns - self.overhead_ns.get(spec["name"], 0))

    def _check_every_element(self, expected: list[tuple[torch.Tensor, tuple[int, ...]]], label: str) -> float:
        """Run the call, fetch every element of every output in slices and compare; return the
        largest abs error."""
        self._go()
        digest = hashlib.blake2b(digest_size=16)
        verdicts = []
        for index, (want, shape) in enumerate(expected):
            found = Mismatches(shape)
            for start in range(0, want.numel(), SLICE_ELEMENTS):
                stop = min(start + SLICE_ELEMENTS, want.numel())
                self._send({"op": "slice", "output": index, "start": start, "stop": stop})
                answer = self._expect("slice", limit=(stop - start) * 4 + MESSAGE_SLACK_BYTES)
                (got,) = self._arrays([answer.get("values")], [stop - start])
                digest.update(got.numpy().tobytes())
                positions = torch.arange(start, stop, device=self.device)
                found.add(got.to(self.device), want[start:stop], positions, self.tolerance)
            verdicts.append(found)
        same_as_previous = digest.digest() == self.previous_hash
        for name, found in zip(self.task.OUTPUT_NAMES, verdicts):
            if found.count:
                raise Rejected(self._mismatch_message(label, name, found, sampled=False,
                                                      same_as_previous=same_as_previous))
        self.previous_hash = digest.digest()
        return max((found.max_abs_error for found in verdicts), default=0.0)

    def _check_digest(self, label: str, name: str, want: torch.Tensor, claimed: list[float], seed: int) -> None:
        if not bool(want.isfinite().all()):
            return  # no sound bound on a sum with infinities; the sample still checked it
        expected = channel.signed_sums(torch, want, seed)
        bound = (self.tolerance.atol + self.tolerance.rtol * want.abs()) ** 2
        allowed = [DIGEST_SIGMAS * math.sqrt(total) for total in channel.signed_sums(torch, bound, seed, signed=False)]
        failed = [g for g, (c, e, a) in enumerate(zip(claimed, expected, allowed)) if not abs(c - e) <= a]
        if failed:
            g = failed[0]
            raise Rejected(
                f"{label}: {name} fails the check of all {want.numel()} elements: {len(failed)} of "
                f"{channel.DIGEST_GROUPS} signed sums over random groups of them (signs and groups drawn after the "
                f"call returned) differ from the reference's, e.g. {claimed[g]:.6g} against {expected[g]:.6g}, allowed "
                f"difference {allowed[g]:.3g}. Some elements are wrong, or were not finished when custom_kernel "
                "returned (work deferred past the call, on another stream or in a thread, is counted in the time "
                "and checked)")

    def _digest_cost(self, spec: dict[str, Any]) -> int:
        """What answering `digest` costs an honest harness on `spec`'s outputs, measured on the
        judge's own device before any program runs (best of a few): subtracted from timed calls."""
        with _reference_mode():
            outputs = [channel.comparable(torch, t, self.task.COMPARE_DTYPE)
                       for t in self.task.reference(self.task.generate(spec, fresh_seed(), self.device))]
        best = math.inf
        for _ in range(CALIBRATION_RUNS):
            _synchronize(self.device)
            start = time.perf_counter_ns()
            for flat in outputs:
                channel.signed_sums(torch, flat, fresh_seed())
                flat[self._sample(flat.numel())].cpu().numpy()
            _synchronize(self.device)
            best = min(best, time.perf_counter_ns() - start)
        return int(best)

    # -- messages --------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        assert self.sock is not None
        try:
            channel.send(self.sock, message, self.deadline)
        except channel.ChannelError:
            self._raise_pending_rejection()
            raise

    def _raise_pending_rejection(self) -> None:
        """A harness that rejected the program says so, then hangs up: read what it left."""
        assert self.sock is not None
        with contextlib.suppress(channel.ChannelError):
            message = channel.receive(self.sock, MESSAGE_SLACK_BYTES, min(self.deadline, time.monotonic() + 1.0))
            if message["op"] == "rejected" and isinstance(message.get("error"), str):
                raise Rejected(message["error"][-4000:])

    def _expect(self, op: str, limit: int = MESSAGE_SLACK_BYTES) -> dict[str, Any]:
        assert self.sock is not None
        message = channel.receive(self.sock, limit, self.deadline)
        if message["op"] == "rejected" and isinstance(message.get("error"), str):
            raise Rejected(message["error"][-4000:])
        if message["op"] != op:
            raise channel.ChannelError(f"expected {op!r}, got {message['op'][:40]!r}")
        return message

    def _sample(self, numel: int) -> torch.Tensor:
        """A secret random sample of flat indices, sorted (all of them when the output is small)."""
        if numel <= SAMPLE_ELEMENTS:
            return torch.arange(numel, device=self.device)
        rng = np.random.default_rng(fresh_seed())
        chosen = np.sort(rng.choice(numel, size=SAMPLE_ELEMENTS, replace=False)).astype(np.int64)
        return torch.from_numpy(chosen).to(self.device)

    @staticmethod
    def _arrays(arrays: Any, sizes: list[int]) -> list[torch.Tensor]:
        """The harness's arrays as flat float32 CPU tensors, after checking their form."""
        if not isinstance(arrays, list) or len(arrays) != len(sizes):
            raise channel.ChannelError(f"expected {len(sizes)} array(s) of values")
        tensors = []
        for array, size in zip(arrays, sizes):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != (size,):
                raise channel.ChannelError(f"expected a flat float32 array of {size} elements")
            tensors.append(torch.from_numpy(np.ascontiguousarray(array)))
        return tensors

    def _mismatch_message(self, label: str, name: str, found: Mismatches, sampled: bool,
                          same_as_previous: bool = False) -> str:
        rtol, atol = self.tolerance.rtol, self.tolerance.atol
        what = "sampled elements" if sampled and found.checked < found.size else "elements"
        message = (f"{label}: {name} does not match the reference: {found.count} of {found.checked} {what} "
                   f"differ by more than atol {atol:g} + rtol {rtol:g}·|reference| (first at "
                   f"{found.first_indices()}; largest abs error {found.max_abs_error:.4g})")
        if found.nan_where_finite:
            message += (f"; {found.nan_where_finite} are NaN where the reference is finite: output read from "
                        "uninitialised memory? (free memory is filled with NaN before every call)")
        if same_as_previous:
            message += ("; it is identical to the previous call's output although the inputs are fresh: a cached "
                        "result (every call gets new inputs from an unpredictable seed)")
        if self.modified:
            message += (f"; custom_kernel also modified its inputs in place ({', '.join(self.modified)}), which "
                        "cannot help: the judge checks against its own copy of the inputs")
        return message


@contextlib.contextmanager
def _reference_mode() -> Iterator[None]:
    """The reference runs in exact fp32 (no TF32), deterministic, without autograd."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.get_default_dtype())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.set_default_dtype(torch.float32)
    try:
        with torch.no_grad():
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic) = saved[:3]
        torch.set_default_dtype(saved[3])
