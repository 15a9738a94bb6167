"""Runs inside the sandbox, in the program's own process: load it, check it, time it.

The sandbox bootstrap calls `run_submission(...)`. Because the program shares this process, the
harness captures what it relies on *before* the program is loaded (the clock, device synchronise,
the random source, the torch functions its reference uses), hides itself and the reference from
`import`, and after every call verifies that none of it was replaced. Every call gets inputs
generated from a seed drawn from the OS after the previous call returned, and a clone of them;
the check runs the reference on the harness's own copies. Between calls, freed device memory is
filled with NaN (stale results read back from uninitialised memory fail) and, when timing on a
GPU, the L2 cache is flushed. A call's time is host wall clock between two device-wide
synchronisations, so work left on another stream is counted.

What it cannot do: a program that deliberately walks the interpreter's frames or the garbage
collector can reach any object in this process. Everything that decides the reward is therefore
re-derived on the trusted side from plain numbers (see problem.py); the sandbox's wall clock,
enforced from outside, bounds the whole run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any

from ttd_envs.problems.kernels.timing import TimingRule, rep_stats, should_stop

TASKS = {"trimul": "ttd_envs.problems.kernels.trimul_task", "mla_decode": "ttd_envs.problems.kernels.mla_task"}
HIDDEN_PACKAGE = "ttd_envs"
SUBMISSION_FILE = "submission.py"
POISON_BYTE = 0xFF  # every fp32 / bf16 / fp16 word of 0xFF bytes is a NaN
BANDWIDTH_PROBE_BYTES = 256 << 20
MIN_FLUSH_BYTES = 64 << 20
SHADOWABLE = {"torch.Tensor": (), "torch._C.TensorBase": (), "Harness": (), "the harness": ("entry",)}
"""Owners where a newly added callable shadows a watched one (a method defined on the class the
real one is inherited from, or an instance attribute over a method), with the names allowed."""


class Rejected(Exception):
    """The program broke a rule; the message says which, and is what the model sees."""


def run_submission(task: str, source: str, tests: list[dict[str, Any]], benchmarks: list[dict[str, Any]],
                   rule: dict[str, Any] | None, device: str, interpret: bool, gpu: str | None) -> dict[str, Any]:
    """Check `source` on every test spec, then (when `rule` is given) time it on every benchmark.

    Returns plain data: per-test maximum errors, per-benchmark statistics (ns), the measured copy
    bandwidth, and `error` (None, or the first rule the program broke).
    """
    _configure_process(interpret, gpu)
    import torch

    harness = Harness(importlib.import_module(TASKS[task]), torch, device)
    report: dict[str, Any] = {"error": None, "tests": [], "benchmarks": [], "device_name": harness.device_name,
                              "bandwidth_bytes_per_s": harness.bandwidth, "interpreted": interpret,
                              "l2_flush_bytes": None if harness.flush_buffer is None else harness.flush_buffer.numel()}
    try:
        with harness.program_loaded(source):
            for spec in tests:
                report["tests"].append(harness.check_once(spec, spec["name"]))
            if rule is not None:
                timing = TimingRule(**rule)
                harness.warm_up(benchmarks[0], timing)
                for spec in benchmarks:
                    report["benchmarks"].append(harness.time_benchmark(spec, timing))
    except Rejected as exc:
        report["error"] = str(exc)
    return report


def _configure_process(interpret: bool, gpu: str | None) -> None:
    """Environment the runtime reads lazily: set before any kernel is defined or CUDA starts."""
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(os.getcwd(), ".triton"))  # the GPU grant sets it


class _HideHarness(importlib.abc.MetaPathFinder):
    """While the program is loaded, `import ttd_envs...` (the reference, the harness) fails."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == HIDDEN_PACKAGE or name.startswith(HIDDEN_PACKAGE + "."):
            raise ImportError(f"{name} is not importable from the program: the reference and the harness are "
                              "hidden; write the computation yourself")
        return None


class Harness:
    """The checks and the timing loop around one loaded program."""

    def __init__(self, task: types.ModuleType, torch: types.ModuleType, device: str) -> None:
        self.task, self.torch, self.device = task, torch, device
        self.cuda = device.startswith("cuda")
        # Captured before the program exists: the program may rebind the names, not these objects.
        self.clock: Callable[[], int] = time.perf_counter_ns
        self.urandom: Callable[[int], bytes] = os.urandom
        self.live_threads: Callable[[], list[threading.Thread]] = threading.enumerate
        self.sync: Callable[[], None] = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.event: Any = torch.cuda.Event if self.cuda else None
        self.device_name = torch.cuda.get_device_name() if self.cuda else "cpu"  # CUDA starts here
        self.bandwidth = self._copy_bandwidth() if self.cuda else None
        self.flush_buffer = self._l2_flush_buffer() if self.cuda else None
        self._count_triton_launches()
        self.watched = self._watched_bindings()  # after CUDA's start-up; before the mutable state
        self.launches = 0
        self.entry: Callable[[Any], Any] | None = None
        self.previous: tuple[Any, ...] | None = None

    # -- guards installed before the program loads ---------------------------------------------
    def _count_triton_launches(self) -> None:
        """Wrap Triton's launch paths (compiled and interpreted) so each call's launches are counted."""
        harness = self
        classes = [importlib.import_module("triton.runtime.jit").JITFunction]
        with contextlib.suppress(ImportError, AttributeError):
            classes.append(importlib.import_module("triton.runtime.interpreter").InterpretedFunction)
        for cls in classes:
            original = cls.run

            def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                launched = _original(self, *args, **kwargs)  # a launch that raised does not count
                if not kwargs.get("warmup", False):
                    harness.launches += 1
                return launched

            cls.run = counted

    def _watched_bindings(self) -> dict[tuple[str, str], Any]:
        """Every function the clock, the reference and the check go through, by (owner, name)."""
        torch = self.torch
        owners: dict[str, Any] = {"time": time, "os": os, "threading": threading, "torch": torch,
                                  "torch.nn.functional": torch.nn.functional, "torch.cuda": torch.cuda,
                                  "torch.Tensor": torch.Tensor, "torch._C.TensorBase": torch._C.TensorBase,
                                  "torch._C": torch._C, "harness": sys.modules[__name__], "task": self.task,
                                  "Harness": Harness, "the harness": self}
        for name in ("triton.runtime.jit", "triton.runtime.interpreter"):
            with contextlib.suppress(ImportError):
                module = importlib.import_module(name)
                for cls_name in ("JITFunction", "InterpretedFunction"):
                    if hasattr(module, cls_name):
                        owners[f"{name}.{cls_name}"] = getattr(module, cls_name)
        watched = {}
        for owner_name, owner in owners.items():
            for attr, value in list(vars(owner).items()):
                if callable(value) and not isinstance(value, types.ModuleType) or owner is self:
                    watched[(owner_name, attr)] = value  # the harness's own attributes: all of them
        self._owners = owners
        return watched

    def tampered(self) -> str | None:
        """The first watched binding the program replaced, or a callable it added where it
        would shadow one (e.g. Tensor.__sub__ over TensorBase's), or None."""
        for (owner_name, attr), value in self.watched.items():
            if vars(self._owners[owner_name]).get(attr) is not value:
                return f"{owner_name}.{attr}"
        for owner_name, allowed in SHADOWABLE.items():
            for attr, value in vars(self._owners[owner_name]).items():
                if callable(value) and attr not in allowed and (owner_name, attr) not in self.watched:
                    return f"{owner_name}.{attr}"
        return None

    def _copy_bandwidth(self) -> float:
        """Best of three device-to-device copies (bytes read + written per second)."""
        torch = self.torch
        source = torch.empty(BANDWIDTH_PROBE_BYTES, dtype=torch.uint8, device=self.device)
        target = torch.empty_like(source)
        best = float("inf")
        for _ in range(3):
            self.sync()
            start = self.clock()
            target.copy_(source)
            self.sync()
            best = min(best, self.clock() - start)
        return 2 * BANDWIDTH_PROBE_BYTES / (best / 1e9)

    def _l2_flush_buffer(self) -> Any:
        l2 = int(getattr(self.torch.cuda.get_device_properties(self.device), "L2_cache_size", 0))
        return self.torch.empty(max(2 * l2, MIN_FLUSH_BYTES), dtype=self.torch.uint8, device=self.device)

    # -- loading -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def program_loaded(self, source: str) -> Iterator[None]:
        """Hide the package, load the program as module `submission`, and restore afterwards."""
        hidden = {name: sys.modules.pop(name) for name in list(sys.modules)
                  if name in (HIDDEN_PACKAGE, "program") or name.startswith(HIDDEN_PACKAGE + ".")}
        blocker = _HideHarness()
        sys.meta_path.insert(0, blocker)
        try:
            self.entry = self._load(source)
            yield
        finally:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(blocker)
            sys.modules.update(hidden)

    def _load(self, source: str) -> Callable[[Any], Any]:
        path = os.path.join(os.getcwd(), SUBMISSION_FILE)
        with open(path, "w") as handle:
            handle.write(source)
        module = types.ModuleType("submission")
        module.__file__ = path
        sys.modules["submission"] = module
        try:
            exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the sandbox's purpose
        except Exception as exc:  # noqa: BLE001 - what the program raised is the message
            raise Rejected(f"the program failed while loading:\n{_program_traceback(exc, path)}") from None
        self._refuse_tampering("while loading")
        entry = module.__dict__.get("custom_kernel")
        if not callable(entry):
            raise Rejected("the program must define a function `custom_kernel(data)`")
        return entry

    def _refuse_tampering(self, when: str) -> None:
        replaced = self.tampered()
        if replaced:
            raise Rejected(f"the program replaced {replaced} {when}: the harness's clock, reference and checks "
                           "are not the program's to patch")

    # -- one call ----------------------------------------------------------------------------
    def _fresh_seed(self) -> int:
        return int.from_bytes(self.urandom(8), "little") & ((1 << 63) - 1)

    def _poison(self, sizes: list[int]) -> None:
        """Fill blocks the size of recent outputs with NaN and free them again, so memory the
        allocator hands out next holds NaN, never an earlier (correct) result."""
        torch = self.torch
        blocks = [torch.full((size,), POISON_BYTE, dtype=torch.uint8, device=self.device) for size in sizes]
        del blocks

    def call(self, inputs: Any, label: str, timed: bool) -> tuple[tuple[Any, ...], int, float | None, list[str]]:
        """Run custom_kernel once on fresh clones of `inputs`; return (output snapshot, wall ns,
        event ms or None, names of inputs it modified in place)."""
        assert self.entry is not None
        data = self.task.program_data(inputs)
        self._poison(self.task.output_nbytes(inputs))
        if timed and self.flush_buffer is not None:
            self.flush_buffer.zero_()
        threads_before = set(self.live_threads())
        launches_before = self.launches
        start_event = end_event = None
        self.sync()
        if self.event is not None:
            start_event, end_event = self.event(enable_timing=True), self.event(enable_timing=True)
            start_event.record()
        started = self.clock()
        try:
            result = self.entry(data)
        except Exception as exc:  # noqa: BLE001 - what the program raised is the message
            raise Rejected(f"{label}: custom_kernel raised\n{_program_traceback(exc, SUBMISSION_FILE)}") from None
        if end_event is not None:
            end_event.record()
        self.sync()
        elapsed_ns = self.clock() - started
        self._refuse_tampering(f"during {label}")
        left_running = [t for t in self.live_threads() if t not in threads_before and t.is_alive()]
        if left_running:
            raise Rejected(f"{label}: custom_kernel left {len(left_running)} thread(s) running after it returned; "
                           "all work must be finished when it returns (it is timed up to that point)")
        if self.launches == launches_before:
            raise Rejected(f"{label}: custom_kernel returned without launching any @triton.jit kernel (a "
                           "try/except that falls back to PyTorch does this); at least part of the work must run "
                           "in a Triton kernel")
        try:
            outputs = self.task.outputs(result, inputs)
        except ValueError as exc:
            raise Rejected(f"{label}: {exc}") from None
        snapshot = tuple(t.detach().clone() for t in outputs)  # later writes cannot change what is checked
        event_ms = start_event.elapsed_time(end_event) if start_event is not None else None
        modified = self.task.modified_inputs(inputs, data)
        return snapshot, elapsed_ns, event_ms, modified

    def check(self, inputs: Any, snapshot: tuple[Any, ...], modified: list[str], label: str) -> float:
        """Compare with the reference on the harness's copies; return the maximum abs error."""
        torch = self.torch
        with _reference_mode(torch):
            expected = self.task.reference(inputs)
        rtol, atol = self.task.RTOL, self.task.ATOL
        worst = 0.0
        for name, got, want in zip(self.task.OUTPUT_NAMES, snapshot, expected):
            verdict = compare(torch, got, want, rtol, atol, self.task.COMPARE_DTYPE)
            if verdict["mismatches"]:
                raise Rejected(self._mismatch_message(label, name, verdict, snapshot, modified, rtol, atol))
            worst = max(worst, verdict["max_abs_error"])
        del expected
        self.previous = snapshot
        return worst

    def _mismatch_message(self, label: str, name: str, verdict: dict[str, Any], snapshot: tuple[Any, ...],
                          modified: list[str], rtol: float, atol: float) -> str:
        message = (f"{label}: {name} does not match the reference: {verdict['mismatches']} of {verdict['total']} "
                   f"elements differ by more than atol {atol:g} + rtol {rtol:g}·|reference| "
                   f"(first at {verdict['first']}; largest abs error {verdict['max_abs_error']:.4g})")
        if verdict["nan_where_finite"]:
            message += (f"; {verdict['nan_where_finite']} are NaN where the reference is finite: output read from "
                        "uninitialised memory? (free memory is filled with NaN before every call)")
        previous = self.previous
        if previous is not None and all(a.shape == b.shape and self.torch.equal(a, b)
                                        for a, b in zip(snapshot, previous)):
            message += ("; it is identical to the previous call's output although the inputs are fresh: a cached "
                        "result (every call gets new inputs from an unpredictable seed)")
        if modified:
            message += (f"; custom_kernel also modified its inputs in place ({', '.join(modified)}), which cannot "
                        "help: the check uses the harness's own copies")
        return message

    # -- the phases ---------------------------------------------------------------------------
    def check_once(self, spec: dict[str, Any], label: str) -> dict[str, Any]:
        inputs = self.task.generate(spec, self._fresh_seed(), self.device)
        snapshot, _, _, modified = self.call(inputs, label, timed=False)
        return {"name": spec["name"], "max_abs_error": self.check(inputs, snapshot, modified, label)}

    def warm_up(self, spec: dict[str, Any], rule: TimingRule) -> None:
        """Repeat the first benchmark (unchecked, untimed for the score) so compilation is done."""
        spent_ns, reps = 0, 0
        while spent_ns < rule.warmup_s * 1e9 and reps < rule.warmup_max_reps:
            inputs = self.task.generate(spec, self._fresh_seed(), self.device)
            _, elapsed_ns, _, _ = self.call(inputs, f"warm-up on {spec['name']}", timed=True)
            spent_ns, reps = spent_ns + elapsed_ns, reps + 1

    def time_benchmark(self, spec: dict[str, Any], rule: TimingRule) -> dict[str, Any]:
        """One checked call, then timed repetitions on fresh inputs, each output re-checked."""
        self.check_once(spec, f"{spec['name']} (first call)")
        times_ns: list[int] = []
        events_ms: list[float] = []
        loop_started = self.clock()
        while not should_stop(times_ns, rule, (self.clock() - loop_started) / 1e9):
            label = f"{spec['name']}, timed repetition {len(times_ns) + 1}"
            inputs = self.task.generate(spec, self._fresh_seed(), self.device)
            snapshot, elapsed_ns, event_ms, modified = self.call(inputs, label, timed=True)
            self.check(inputs, snapshot, modified, label)
            times_ns.append(elapsed_ns)
            if event_ms is not None:
                events_ms.append(event_ms)
        stats = rep_stats(times_ns)
        stats["event_mean_ns"] = sum(events_ms) / len(events_ms) * 1e6 if events_ms else None
        return {"name": spec["name"], **stats}


@contextlib.contextmanager
def _reference_mode(torch: types.ModuleType) -> Iterator[None]:
    """The reference runs in exact fp32 (no TF32), deterministic, without autograd, whatever
    global switches the program flipped; the program's settings come back afterwards."""
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


def compare(torch: types.ModuleType, got: Any, want: Any, rtol: float, atol: float, dtype_name: str) -> dict[str, Any]:
    """Element-wise |got - want| <= atol + rtol·|want| after casting both to `dtype_name`;
    NaN matches only NaN and an infinity only the same infinity."""
    dtype = getattr(torch, dtype_name)
    a, b = got.to(dtype).float(), want.to(dtype).float()
    close = (a - b).abs() <= atol + rtol * b.abs()
    close |= a == b
    close |= a.isnan() & b.isnan()
    bad = ~close
    count = int(bad.sum())
    finite = a.isfinite() & b.isfinite()
    errors = (a - b).abs()[finite]
    first = [tuple(int(i) for i in index) for index in bad.nonzero()[:5].tolist()] if count else []
    return {"mismatches": count, "total": bad.numel(), "first": first,
            "max_abs_error": float(errors.max()) if errors.numel() else 0.0,
            "nan_where_finite": int((a.isnan() & b.isfinite()).sum())}


def _program_traceback(exc: BaseException, path: str) -> str:
    """The program's own frames (last 8) and the exception, not the harness's."""
    name = os.path.basename(path)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.basename(f.filename) == name]
    lines = traceback.format_list(frames[-8:]) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).replace(os.path.join(os.getcwd(), name), name).strip()[-3000:]
